using HalfMsg.Broker.Core;
using HalfMsg.Broker.Core.Model;

namespace HalfMsg.Core.Tests;

/// <summary>Issue 12: a new consumer group chooses where it starts; operators see a half's last answer.</summary>
public sealed class GroupStartTests
{
    private static async Task SendAsync(EngineHarness h, string body) => Assert.True((await h.Engine.SendAsync(h.Draft("events", body))).IsOk);

    [Fact]
    public async Task A_group_started_from_latest_gets_only_new_messages_and_keeps_that_start_after_a_restart()
    {
        await using var h = await EngineHarness.StartAsync();
        for (int i = 0; i < 5; i++) await SendAsync(h, $"old-{i}");
        Assert.True((await h.Engine.StartGroupAsync("late", "events", GroupStartFrom.Latest)).IsOk);
        await h.RestartAsync();
        await SendAsync(h, "new");
        Assert.Equal(new[] { "new" }, (await h.ReceiveWhenVisibleAsync("late", "events")).Select(m => m.Text()));
        Assert.Equal(6, (await h.ReceiveAsync("fresh", "events")).Count);   // a group that just receives starts at the earliest
    }

    [Fact]
    public async Task A_group_started_from_a_time_gets_what_was_stored_from_then_on()
    {
        await using var h = await EngineHarness.StartAsync();
        for (int i = 0; i < 3; i++) await SendAsync(h, $"before-{i}");
        h.Clock.Advance(TimeSpan.FromMinutes(1));
        long from = h.Clock.GetUtcNow().ToUnixTimeMilliseconds();
        for (int i = 0; i < 2; i++) await SendAsync(h, $"after-{i}");
        Assert.True((await h.Engine.StartGroupAsync("replay", "events", GroupStartFrom.Timestamp, from)).IsOk);
        Assert.Equal(new[] { "after-0", "after-1" }, (await h.ReceiveAsync("replay", "events")).Select(m => m.Text()).Order());
    }

    [Fact]
    public async Task An_existing_group_is_not_moved_and_an_unknown_topic_is_refused()
    {
        await using var h = await EngineHarness.StartAsync();
        await SendAsync(h, "one");
        Assert.Single(await h.ReceiveAsync("g", "events"));
        Assert.Equal(BrokerStatus.BadRequest, (await h.Engine.StartGroupAsync("g", "events", GroupStartFrom.Latest)).Status);
        Assert.Equal(BrokerStatus.TopicNotFound, (await h.Engine.StartGroupAsync("g", "nope", GroupStartFrom.Earliest)).Status);
    }

    [Fact]
    public async Task The_last_unknown_answer_of_a_check_back_is_shown_for_the_pending_half()
    {
        await using var h = await EngineHarness.StartAsync();
        var p = new RecordingChannel("p1");
        using var reg = h.Engine.Producers.Register("orders", p);
        var tx = await h.SendHalfAsync("orders");
        Assert.Null(h.Engine.FindTransaction(tx)!.LastAnswer);
        h.Clock.Advance(TimeSpan.FromSeconds(7));
        await h.Engine.RunCheckPassAsync();
        Assert.True((await h.Engine.EndTransactionAsync(tx, null, TransactionResolution.Unknown, DecisionSource.CheckBack)).IsOk);
        var view = h.Engine.FindTransaction(tx)!;
        Assert.Equal("unknown (check-back)", view.LastAnswer);
        Assert.NotNull(view.LastCheckAt);
        Assert.Equal(1, view.Checks);
    }
}
