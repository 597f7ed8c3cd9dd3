using System.Collections.Concurrent;
using HalfMsg.Broker.Core;
using HalfMsg.Broker.Core.Delivery;
using HalfMsg.Broker.Core.Model;
using HalfMsg.Broker.Core.Storage;
using HalfMsg.Broker.Core.Transactions;

namespace HalfMsg.Core.Tests;

public sealed class CheckBackTests
{
    [Fact]
    public async Task A_half_younger_than_the_transaction_timeout_is_not_checked()
    {
        await using var h = await EngineHarness.StartAsync();
        var p1 = new RecordingChannel("p1");
        using var reg = h.Engine.Producers.Register("orders", p1);
        await h.SendHalfAsync("orders");
        h.Clock.Advance(TimeSpan.FromSeconds(5));
        Assert.Equal(0, await h.Engine.RunCheckPassAsync());
        h.Clock.Advance(TimeSpan.FromSeconds(1));
        Assert.Equal(1, await h.Engine.RunCheckPassAsync());
        var check = Assert.Single(p1.Checks);
        Assert.Equal(1, check.CheckNumber);
        Assert.Equal("body", System.Text.Encoding.UTF8.GetString(check.HalfMessage.Body.Span));
    }

    [Fact]
    public async Task A_due_half_is_checked_once_per_interval_not_on_every_pass()
    {
        await using var h = await EngineHarness.StartAsync();
        var p1 = new RecordingChannel("p1");
        using var reg = h.Engine.Producers.Register("orders", p1);
        await h.SendHalfAsync("orders");
        h.Clock.Advance(TimeSpan.FromSeconds(7));
        await h.Engine.RunCheckPassAsync();
        await h.Engine.RunCheckPassAsync();
        h.Clock.Advance(TimeSpan.FromSeconds(29));
        await h.Engine.RunCheckPassAsync();
        Assert.Single(p1.Checks);
        h.Clock.Advance(TimeSpan.FromSeconds(1));
        await h.Engine.RunCheckPassAsync();
        Assert.Equal(2, p1.Checks.Count);
    }

    [Fact]
    public async Task The_producer_instance_that_sent_the_half_is_preferred()
    {
        await using var h = await EngineHarness.StartAsync();
        var other = new RecordingChannel("other");
        var origin = new RecordingChannel("origin");
        using var r1 = h.Engine.Producers.Register("orders", other);
        using var r2 = h.Engine.Producers.Register("orders", origin);
        for (int i = 0; i < 5; i++) await h.SendHalfAsync("orders", clientId: "origin");
        h.Clock.Advance(TimeSpan.FromSeconds(7));
        await h.Engine.RunCheckPassAsync();
        Assert.Equal(5, origin.Checks.Count);
        Assert.Empty(other.Checks);
    }

    [Fact]
    public async Task When_the_origin_is_gone_checks_go_round_robin_to_the_other_live_producers()
    {
        await using var h = await EngineHarness.StartAsync();
        var a = new RecordingChannel("a");
        var b = new RecordingChannel("b");
        using var r1 = h.Engine.Producers.Register("orders", a);
        using var r2 = h.Engine.Producers.Register("orders", b);
        for (int i = 0; i < 10; i++) await h.SendHalfAsync("orders", clientId: "gone");
        h.Clock.Advance(TimeSpan.FromSeconds(7));
        Assert.Equal(10, await h.Engine.RunCheckPassAsync());
        Assert.Equal(5, a.Checks.Count);
        Assert.Equal(5, b.Checks.Count);
    }

    [Fact]
    public async Task A_check_for_a_channel_that_died_is_retried_on_another_live_producer()
    {
        await using var h = await EngineHarness.StartAsync();
        var dead = new RecordingChannel("origin");
        var alive = new RecordingChannel("alive");
        using var r1 = h.Engine.Producers.Register("orders", dead);
        using var r2 = h.Engine.Producers.Register("orders", alive);
        var tx = await h.SendHalfAsync("orders", clientId: "origin");
        h.Clock.Advance(TimeSpan.FromSeconds(7));
        // The channel dies between the lookup and the send: it refuses, and the next instance gets the check.
        var candidates = h.Engine.Producers.Candidates("orders", "origin");
        dead.IsAlive = false;
        Assert.Equal(1, await h.Engine.RunCheckPassAsync());
        Assert.Equal(tx, Assert.Single(alive.Checks).TransactionId);
        Assert.Empty(dead.Checks);
    }

    [Fact]
    public async Task Without_a_live_producer_a_due_half_waits_without_burning_a_check_and_a_restarted_producer_gets_it()
    {
        await using var h = await EngineHarness.StartAsync(o => o with { TransactionCheckMax = 2 });
        var tx = await h.SendHalfAsync("orders", clientId: "p-old");
        for (int i = 0; i < 10; i++)
        {
            h.Clock.Advance(TimeSpan.FromSeconds(31));
            Assert.Equal(0, await h.Engine.RunCheckPassAsync());
        }
        Assert.Equal(0, h.Engine.FindTransaction(tx)!.Checks);
        Assert.False(h.Engine.FindTransaction(tx)!.Parked);

        var restarted = new RecordingChannel("p-new");          // same group, new connection and client id
        using var reg = h.Engine.Producers.Register("orders", restarted);
        Assert.Equal(1, await h.Engine.RunCheckPassAsync());
        Assert.Equal(tx, Assert.Single(restarted.Checks).TransactionId);
    }

    [Fact]
    public async Task Answer_to_a_check_is_an_ordinary_decision_and_a_decided_half_is_never_checked_again_even_after_restart()
    {
        await using var h = await EngineHarness.StartAsync();
        var p = new RecordingChannel("p1");
        var reg = h.Engine.Producers.Register("orders", p);
        var tx = await h.SendHalfAsync("orders");
        h.Clock.Advance(TimeSpan.FromSeconds(7));
        await h.Engine.RunCheckPassAsync();
        var check = Assert.Single(p.Checks);
        Assert.True((await h.Engine.EndTransactionAsync(check.TransactionId, check.HalfMessage.MessageId, TransactionResolution.Commit, DecisionSource.CheckBack)).IsOk);
        reg.Dispose();

        await h.RestartAsync();
        var p2 = new RecordingChannel("p2");
        using var reg2 = h.Engine.Producers.Register("orders", p2);
        for (int i = 0; i < 5; i++) { h.Clock.Advance(TimeSpan.FromSeconds(31)); await h.Engine.RunCheckPassAsync(); }
        Assert.Empty(p2.Checks);
        Assert.Single(await h.ReceiveAsync("g", "orders"));
    }

    /// <summary>
    /// A producer instance that, on its first check-back, decides another transaction: what a producer's own late
    /// EndTransaction does while the pass is still working through the halves it took (one disk read each).
    /// </summary>
    private sealed class DecidingChannel(string clientId, Func<ValueTask<DecisionResult>> onFirstCheck) : ICheckBackChannel
    {
        public string ClientId { get; } = clientId;
        public bool IsAlive => true;
        public ConcurrentQueue<CheckBackRequest> Checks { get; } = new();
        public Task<DecisionResult>? Decision { get; private set; }
        public bool TrySendCheck(CheckBackRequest request)
        {
            Checks.Enqueue(request);
            // The decision is applied before its durable wait; only that wait is left for the test to await.
            Decision ??= onFirstCheck().AsTask();
            return true;
        }
    }

    [Fact]
    public async Task A_half_decided_after_the_pass_took_it_gets_no_check_back_and_is_not_counted_as_checked()
    {
        await using var h = await EngineHarness.StartAsync();
        var tx1 = await h.SendHalfAsync("orders");
        h.Clock.Advance(TimeSpan.FromSeconds(1));                // tx1 is due first, so the pass handles it first
        var tx2 = await h.SendHalfAsync("orders");
        var p = new DecidingChannel("p1", () => h.Engine.EndTransactionAsync(tx2, null, TransactionResolution.Commit, DecisionSource.Client));
        using var reg = h.Engine.Producers.Register("orders", p);
        h.Clock.Advance(TimeSpan.FromSeconds(7));

        // The pass takes both halves; tx2 is committed while the pass is on tx1.
        Assert.Equal(1, await h.Engine.RunCheckPassAsync());
        Assert.Equal(tx1, Assert.Single(p.Checks).TransactionId);
        Assert.True((await p.Decision!).IsOk);
        Assert.Equal(1, h.Engine.Metrics.ChecksSent);
        Assert.Equal(1, h.Engine.FindTransaction(tx1)!.Checks);
        Assert.Null(h.Engine.FindTransaction(tx2));

        // Nothing in the log says tx2 was checked (replay would not show it: a check of a decided half applies to nothing).
        await h.Engine.DisposeAsync();
        var checkedTxs = CheckedTransactionsInLog(h);
        await h.RestartAfterDeletedCheckpointAsync();            // the harness disposes an open engine
        Assert.Equal([tx1], checkedTxs);
    }

    /// <summary>The transaction id of every TxChecked record in the (closed) log, in log order.</summary>
    private static List<string> CheckedTransactionsInLog(EngineHarness h)
    {
        var found = new List<string>();
        var log = new RecordLog(Path.Combine(h.DataDir, "log"), h.Options.Flush, h.Options.AsyncFlushInterval, h.Options.SegmentSizeBits, h.Options.MemorySizeBits);
        try
        {
            var collector = new CheckedCollector(found);
            log.Replay(log.BeginAddress, ref collector);
        }
        finally
        {
            log.DisposeAsync().AsTask().GetAwaiter().GetResult();
        }
        return found;
    }

    private struct CheckedCollector(List<string> found) : IRecordConsumer
    {
        public void Consume(ReadOnlySpan<byte> record, long address)
        {
            if (RecordHeader.TryOpen(record, out var kind, out var r, out _) && kind == RecordKind.TxChecked)
                found.Add(TxCheckedRecord.Read(ref r).TransactionId);
        }
    }

    [Fact]
    public async Task After_the_check_limit_a_half_is_parked_visibly_and_an_operator_can_resume_or_decide_it()
    {
        await using var h = await EngineHarness.StartAsync(o => o with { TransactionCheckMax = 2 });
        var p = new RecordingChannel("p1");
        using var reg = h.Engine.Producers.Register("orders", p);
        var tx = await h.SendHalfAsync("orders");
        for (int i = 0; i < 4; i++) { h.Clock.Advance(TimeSpan.FromSeconds(31)); await h.Engine.RunCheckPassAsync(); }
        Assert.Equal(2, p.Checks.Count);
        var parked = Assert.Single(h.Engine.ListTransactions(parked: true, -1, 10, out _));
        Assert.Equal(tx, parked.TransactionId);
        Assert.Empty(h.Engine.ListTransactions(parked: false, -1, 10, out _));
        Assert.DoesNotContain(h.Engine.ListTopics(), t => t.Name == BrokerEngine.CheckMaxTopic); // a parked half is no message

        await h.RestartAsync();                                  // parking is durable
        Assert.True(h.Engine.FindTransaction(tx)!.Parked);
        using var reg2 = h.Engine.Producers.Register("orders", p);

        Assert.True((await h.Engine.ResumeTransactionAsync(tx)).IsOk);
        await h.Engine.RunCheckPassAsync();
        Assert.Equal(3, p.Checks.Count);
        Assert.Equal(1, h.Engine.FindTransaction(tx)!.Checks);

        var op = await h.Engine.EndTransactionAsync(tx, null, TransactionResolution.Commit, DecisionSource.Operator);
        Assert.True(op.IsOk);
        Assert.Single(await h.ReceiveAsync("g", "orders"));
    }

    [Fact]
    public async Task Check_counts_survive_a_restart()
    {
        await using var h = await EngineHarness.StartAsync(o => o with { TransactionCheckMax = 10 });
        var p = new RecordingChannel("p1");
        var reg = h.Engine.Producers.Register("orders", p);
        var tx = await h.SendHalfAsync("orders");
        for (int i = 0; i < 3; i++) { h.Clock.Advance(TimeSpan.FromSeconds(31)); await h.Engine.RunCheckPassAsync(); }
        reg.Dispose();
        await h.RestartAsync();
        Assert.Equal(3, h.Engine.FindTransaction(tx)!.Checks);
    }

    [Fact]
    public async Task A_delayed_transactional_message_is_delivered_after_commit_no_earlier_than_its_time()
    {
        await using var h = await EngineHarness.StartAsync();
        long at = h.Clock.GetUtcNow().AddSeconds(60).ToUnixTimeMilliseconds();
        var tx = await h.SendHalfAsync("orders", deliverAt: at);
        await h.Engine.EndTransactionAsync(tx, null, TransactionResolution.Commit, DecisionSource.Client);
        h.Engine.RunSweep();
        Assert.Empty(await h.ReceiveAsync("g", "orders"));
        Assert.Equal(0, h.Engine.PendingCount);             // not a half any more: no check storm, no loop
        h.Clock.Advance(TimeSpan.FromSeconds(61));
        h.Engine.RunSweep();
        // The release record rides the next group commit: long-poll until it is visible.
        Assert.Single(await h.ReceiveWhenVisibleAsync("g", "orders"));
    }

    [Fact]
    public async Task A_scheduler_pass_over_many_pending_halves_that_are_not_due_sends_nothing()
    {
        await using var h = await EngineHarness.StartAsync();
        var p = new RecordingChannel("p1");
        using var reg = h.Engine.Producers.Register("orders", p);
        for (int i = 0; i < 2000; i++) await h.SendHalfAsync("orders");
        Assert.Equal(0, await h.Engine.RunCheckPassAsync());
        Assert.Empty(p.Checks);
        Assert.Equal(2000, h.Engine.PendingCount);
    }

    [Fact]
    public async Task A_parked_half_cannot_be_received_or_pulled_from_the_check_max_topic_and_a_rollback_leaves_it_undelivered()
    {
        // Review 2026-12-02, transactions, finding 4: parking put a queue entry for the half's body into
        // TRANS_CHECK_MAX_TIME_TOPIC, and any consumer of that topic received it though the half was still pending
        // (then rolled back by an operator, or delivered a second time by a late commit); each re-park added another.
        await using var h = await EngineHarness.StartAsync(o => o with { TransactionCheckMax = 1 });
        var p = new RecordingChannel("p1");
        using var reg = h.Engine.Producers.Register("orders", p);
        var tx = await h.SendHalfAsync("orders", "still pending");
        for (int i = 0; i < 2; i++) { h.Clock.Advance(TimeSpan.FromSeconds(31)); await h.Engine.RunCheckPassAsync(); }
        Assert.True(h.Engine.FindTransaction(tx)!.Parked);
        await h.SendNormalAsync("other", "after the park");       // durable, so the park record before it is too

        var receive = await h.Engine.ReceiveAsync(new ReceiveRequest { ConsumerGroup = "g", Topic = BrokerEngine.CheckMaxTopic, BatchSize = 32, InvisibleDuration = TimeSpan.FromSeconds(30) });
        Assert.Equal(BrokerStatus.IllegalTopic, receive.Error.Status);
        Assert.Empty(receive.Messages);
        var pull = await h.Engine.PullAsync(BrokerEngine.CheckMaxTopic, 0, 0, 32, TagFilter.All, TimeSpan.Zero);
        Assert.Equal(PullStatus.NotReadable, pull.Status);
        Assert.Empty(pull.Messages);

        // A resume and a second park add nothing either: parking is a state of the half, not a message.
        Assert.True((await h.Engine.ResumeTransactionAsync(tx)).IsOk);
        for (int i = 0; i < 2; i++) { h.Clock.Advance(TimeSpan.FromSeconds(31)); await h.Engine.RunCheckPassAsync(); }
        Assert.True(h.Engine.FindTransaction(tx)!.Parked);
        Assert.False(h.Engine.TryGetQueueOffsets(BrokerEngine.CheckMaxTopic, 0, out _, out long max) && max > 0, "no queue entry for a parked half");

        Assert.True((await h.Engine.EndTransactionAsync(tx, null, TransactionResolution.Rollback, DecisionSource.Operator)).IsOk);
        Assert.Empty(await h.ReceiveAsync("g", "orders"));
    }
}
