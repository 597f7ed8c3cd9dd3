using HalfMsg.Broker.Core;
using HalfMsg.Broker.Core.Model;

namespace HalfMsg.Core.Tests;

public sealed class TransactionTests
{
    [Fact]
    public async Task Half_message_is_invisible_until_commit_then_delivered_once()
    {
        await using var h = await EngineHarness.StartAsync();
        var tx = await h.SendHalfAsync("orders", "order-1");
        Assert.Empty(await h.ReceiveAsync("g", "orders"));

        var commit = await h.Engine.EndTransactionAsync(tx, null, TransactionResolution.Commit, DecisionSource.Client);
        Assert.True(commit.IsOk);
        var got = await h.ReceiveAsync("g", "orders");
        var m = Assert.Single(got);
        Assert.Equal("order-1", m.Text());
        Assert.Equal(tx, m.Message.MessageId);
        Assert.Equal(MessageKind.Transaction, m.Message.Kind);
        Assert.Equal(1, m.DeliveryAttempt);
    }

    [Fact]
    public async Task Rollback_discards_the_half_and_nothing_is_ever_delivered()
    {
        await using var h = await EngineHarness.StartAsync();
        var tx = await h.SendHalfAsync("orders");
        Assert.True((await h.Engine.EndTransactionAsync(tx, null, TransactionResolution.Rollback, DecisionSource.Client)).IsOk);
        await h.RestartAsync();
        Assert.Empty(await h.ReceiveAsync("g", "orders"));
        Assert.Equal(0, h.Engine.PendingCount);
    }

    [Fact]
    public async Task Racing_client_commit_and_check_back_commit_yield_exactly_one_message()
    {
        await using var h = await EngineHarness.StartAsync();
        var tx = await h.SendHalfAsync("orders");
        // Its check-back is out, so the check-back answers answer a check that was sent (ReusedTransactionIdTests).
        using (h.Engine.Producers.Register("orders", new RecordingChannel("p1")))
        {
            h.Clock.Advance(TimeSpan.FromSeconds(7));
            Assert.Equal(1, await h.Engine.RunCheckPassAsync());
        }
        var decisions = Enumerable.Range(0, 32).Select(i => Task.Run(async () =>
            await h.Engine.EndTransactionAsync(tx, null, TransactionResolution.Commit, i % 2 == 0 ? DecisionSource.Client : DecisionSource.CheckBack))).ToArray();
        var results = await Task.WhenAll(decisions);
        Assert.All(results, r => Assert.True(r.IsOk));
        Assert.Equal(31, results.Count(r => r.WasDuplicate));
        Assert.Single(await h.ReceiveAsync("g", "orders"));
        Assert.Single(await h.ReceiveAsync("another-group", "orders"));
    }

    [Fact]
    public async Task Repeated_commit_returns_success_and_changes_nothing()
    {
        await using var h = await EngineHarness.StartAsync();
        var tx = await h.SendHalfAsync("orders");
        Assert.False((await h.Engine.EndTransactionAsync(tx, null, TransactionResolution.Commit, DecisionSource.Client)).WasDuplicate);
        var again = await h.Engine.EndTransactionAsync(tx, null, TransactionResolution.Commit, DecisionSource.Client);
        Assert.True(again.IsOk);
        Assert.True(again.WasDuplicate);
        Assert.Single(await h.ReceiveAsync("g", "orders"));
    }

    [Fact]
    public async Task Rollback_after_commit_is_rejected_and_changes_nothing()
    {
        await using var h = await EngineHarness.StartAsync();
        var tx = await h.SendHalfAsync("orders");
        await h.Engine.EndTransactionAsync(tx, null, TransactionResolution.Commit, DecisionSource.Client);
        var late = await h.Engine.EndTransactionAsync(tx, null, TransactionResolution.Rollback, DecisionSource.CheckBack);
        Assert.Equal(BrokerStatus.TransactionConflict, late.Error.Status);
        Assert.Contains("already committed", late.Error.Message);
        Assert.Single(await h.ReceiveAsync("g", "orders"));
    }

    [Fact]
    public async Task Commit_after_rollback_stays_rolled_back_also_after_restart()
    {
        await using var h = await EngineHarness.StartAsync();
        var tx = await h.SendHalfAsync("orders");
        await h.Engine.EndTransactionAsync(tx, null, TransactionResolution.Rollback, DecisionSource.Client);
        await h.RestartAsync();
        var late = await h.Engine.EndTransactionAsync(tx, null, TransactionResolution.Commit, DecisionSource.CheckBack);
        Assert.Equal(BrokerStatus.TransactionConflict, late.Error.Status);
        Assert.Empty(await h.ReceiveAsync("g", "orders"));
    }

    [Fact]
    public async Task Decision_for_an_unknown_transaction_is_not_found()
    {
        await using var h = await EngineHarness.StartAsync();
        var r = await h.Engine.EndTransactionAsync("nope", null, TransactionResolution.Commit, DecisionSource.Client);
        Assert.Equal(BrokerStatus.TransactionNotFound, r.Error.Status);
        var empty = await h.Engine.EndTransactionAsync("", null, TransactionResolution.Commit, DecisionSource.Client);
        Assert.Equal(BrokerStatus.InvalidTransactionId, empty.Error.Status);
    }

    [Fact]
    public async Task Decision_with_a_message_id_of_another_transaction_is_rejected()
    {
        await using var h = await EngineHarness.StartAsync();
        var tx = await h.SendHalfAsync("orders");
        var r = await h.Engine.EndTransactionAsync(tx, "someone-else", TransactionResolution.Commit, DecisionSource.Client);
        Assert.Equal(BrokerStatus.InvalidTransactionId, r.Error.Status);
        Assert.Equal(1, h.Engine.PendingCount);
    }

    [Fact]
    public async Task Half_on_a_system_topic_or_with_an_oversized_body_gets_a_clear_error()
    {
        await using var h = await EngineHarness.StartAsync(o => o with { MaxMessageSize = 10 });
        var sys = await h.Engine.SendHalfAsync(h.Draft(BrokerEngine.CheckMaxTopic), "g", "p", null);
        Assert.Equal(BrokerStatus.IllegalTopic, sys.Error.Status);
        var big = await h.Engine.SendHalfAsync(h.Draft("orders", new string('x', 11)), "orders", "p", null);
        Assert.Equal(BrokerStatus.MessageTooLarge, big.Error.Status);
        var bad = await h.Engine.SendHalfAsync(h.Draft("bad topic!"), "g", "p", null);
        Assert.Equal(BrokerStatus.IllegalTopic, bad.Error.Status);
    }
}
