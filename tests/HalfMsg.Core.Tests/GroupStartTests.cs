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

    /// <summary>
    /// A reset forgets the group and starts it again at the target. Done as two steps, a receive of the group woken by
    /// the forgetting re-created it at the earliest retained message before the second step ran: the group got every
    /// message it had acked again, and the reset answered that the group already existed. One step now, so the woken
    /// receive finds the group already at its new place.
    /// </summary>
    [Fact]
    public async Task A_reset_to_latest_with_a_receive_waiting_delivers_nothing_the_group_had_acked()
    {
        await using var h = await EngineHarness.StartAsync();
        for (int i = 0; i < 4; i++) await SendAsync(h, $"old-{i}");
        foreach (var m in await h.ReceiveWhenVisibleAsync("g", "events"))
            Assert.True((await h.Engine.AckAsync("g", "events", m.ReceiptHandle)).IsOk);

        for (int round = 0; round < 20; round++)
        {
            using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(60));
            var waiting = h.Engine.ReceiveAsync(new ReceiveRequest
            {
                ConsumerGroup = "g", Topic = "events", InvisibleDuration = TimeSpan.FromSeconds(30), LongPollTimeout = TimeSpan.FromHours(1),
            }, cts.Token).AsTask();
            Assert.False(waiting.IsCompleted);
            Assert.True((await h.Engine.ResetGroupAsync("g", "events", GroupStartFrom.Latest)).IsOk);
            await SendAsync(h, $"new-{round}");
            var got = await waiting;
            Assert.True(got.IsOk, got.Error.ToString());
            Assert.Equal(new[] { $"new-{round}" }, got.Messages.Select(m => m.Text()));
            foreach (var m in got.Messages) Assert.True((await h.Engine.AckAsync("g", "events", m.ReceiptHandle)).IsOk);
        }
    }

    [Fact]
    public async Task A_reset_needs_the_group_on_that_topic_alone()
    {
        await using var h = await EngineHarness.StartAsync();
        await SendAsync(h, "one");
        Assert.Equal(BrokerStatus.IllegalConsumerGroup, (await h.Engine.ResetGroupAsync("nobody", "events", GroupStartFrom.Latest)).Status);
        Assert.Single(await h.ReceiveAsync("g", "events"));
        Assert.True((await h.Engine.SendAsync(h.Draft("other", "x"))).IsOk);
        Assert.Single(await h.ReceiveAsync("g", "other"));
        Assert.Equal(BrokerStatus.BadRequest, (await h.Engine.ResetGroupAsync("g", "events", GroupStartFrom.Latest)).Status);
        Assert.Equal(BrokerStatus.TopicNotFound, (await h.Engine.ResetGroupAsync("g", "nope", GroupStartFrom.Latest)).Status);
    }

    /// <summary>
    /// A reset forgets a group's leases on its topic, not the pull offsets a pull consumer of the same name committed,
    /// on that topic or another (a start does not touch them either). Until late on 2026-12-06 a reset removed them on
    /// every topic, and the pull consumer, asking for its offset, was told none and read from 0 again (found by review).
    /// The same after a replay of the log and after a restart from a checkpoint.
    /// </summary>
    [Fact]
    public async Task A_reset_keeps_the_pull_offsets_the_group_committed()
    {
        await using var h = await EngineHarness.StartAsync(o => o with { QueuesPerTopic = 1 });
        for (int i = 0; i < 3; i++)
        {
            await h.SendNormalAsync("t", "x" + i);
            await h.SendNormalAsync("u", "y" + i);
        }
        Assert.True((await h.Engine.CommitConsumerOffsetAsync("G", "u", 0, 2)).IsOk);   // a pull consumer of G on u
        Assert.True((await h.Engine.CommitConsumerOffsetAsync("G", "t", 0, 1)).IsOk);   // and on t
        Assert.Equal(3, (await h.ReceiveWhenVisibleAsync("G", "t")).Count);            // a lease consumer of G on t
        Assert.True((await h.Engine.ResetGroupAsync("G", "t", GroupStartFrom.Latest)).IsOk);

        void OffsetsKept()
        {
            Assert.Equal(2, h.Engine.QueryConsumerOffset("G", "u", 0));
            Assert.Equal(1, h.Engine.QueryConsumerOffset("G", "t", 0));
        }
        OffsetsKept();
        await h.Engine.DisposeAsync(); // from the log alone
        Directory.Delete(Path.Combine(h.DataDir, "checkpoints"), recursive: true);
        await h.RestartAfterDeletedCheckpointAsync();
        OffsetsKept();
        await h.RestartAsync(); // from the checkpoint
        OffsetsKept();
        // The reset itself holds: the lease group starts after what was there.
        await h.SendNormalAsync("t", "new");
        Assert.Equal(["new"], (await h.ReceiveWhenVisibleAsync("G", "t")).Select(m => m.Text()));
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
