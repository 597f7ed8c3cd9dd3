using HalfMsg.Broker.Core;
using HalfMsg.Broker.Core.Model;
using HalfMsg.Broker.Core.Storage;

namespace HalfMsg.Core.Tests;

/// <summary>
/// A destructive admin operation (topic delete, group delete, group reset) and new work after it, while a fuzzy
/// checkpoint captures: the checkpoint plus replay must give the live state. Replay re-applies the destructive record
/// over a copy that may already hold what came after it; a later record that cannot rebuild what it wiped loses it.
/// Until 2026-12-06 a topic deleted and then given a committed half during a capture lost the acknowledged commit after a
/// kill -9: the copy had the commit's entry and no pending half, replay of the delete dropped the entry, and replay of
/// the commit found no half to commit (found by review).
/// </summary>
public sealed class DestructiveAdminDuringCaptureTests
{
    /// <summary>
    /// Runs <paramref name="work"/> when the capture reaches <paramref name="atPart"/>, and lets the capture go on once
    /// the work is done or is held off by the capture (the admin operations wait for a running capture to end); the
    /// work is awaited after the checkpoint. Then kill -9 and restart from this checkpoint: the recovered state must be
    /// the live one.
    /// </summary>
    private static async Task CaptureWhileAsync(EngineHarness h, int atPart, Func<Task> work)
    {
        await h.Engine.CheckpointAsync();   // an older one: what the test set up is before the next one's start
        var checkpointer = h.Engine.CheckpointerForTests;
        Task? running = null;
        long heldBefore = h.Engine.AdminHeldByCaptureForTests;
        checkpointer.BeforePartForTests = async part =>
        {
            if (part != atPart) return;
            checkpointer.BeforePartForTests = null;
            running = Task.Run(work);
            await Conditions.WaitUntil(() => running.IsCompleted || h.Engine.AdminHeldByCaptureForTests > heldBefore);
        };
        await h.Engine.CheckpointAsync();
        await running!;
        long ours = h.Engine.LastCheckpointAddress;
        string live = h.Engine.DescribeState();

        // kill -9 after our checkpoint: the restart loads it (the shutdown checkpoint is removed).
        await h.Engine.DisposeAsync();
        foreach (var f in Directory.GetFiles(Path.Combine(h.DataDir, "checkpoints"), "checkpoint-*.bin").Where(f => CheckpointStoreNames.Covered(f) > ours)) File.Delete(f);
        await h.RestartAfterDeletedCheckpointAsync();
        Assert.Equal(ours, h.Engine.LastCheckpointAddress);
        States.AssertSame(live, h.Engine.DescribeState(), $"part {atPart}");
    }

    private static async Task Commit(EngineHarness h, string tx)
    {
        var r = await h.Engine.EndTransactionAsync(tx, null, TransactionResolution.Commit, DecisionSource.Client);
        Assert.True(r.IsOk, r.ToString());
    }

    [Theory]
    [InlineData(0)]
    [InlineData(2)]
    [InlineData(3)]
    public async Task A_half_committed_after_its_topic_was_deleted_during_a_capture_is_not_lost(int atPart)
    {
        await using var h = await EngineHarness.StartAsync();
        await h.SendNormalAsync("doomed", "old");
        string tx = await h.SendHalfAsync("doomed", "committed after the delete");
        await CaptureWhileAsync(h, atPart, async () =>
        {
            Assert.True((await h.Engine.DeleteTopicAsync("doomed")).IsOk);
            await Commit(h, tx);                               // creates the topic again, with the commit's entry
        });
        var got = await h.ReceiveWhenVisibleAsync("g", "doomed");
        Assert.Equal("committed after the delete", Assert.Single(got).Text());
    }

    [Theory]
    [InlineData(0)]
    [InlineData(2)]
    [InlineData(3)]
    public async Task A_delayed_half_committed_after_its_topic_was_deleted_during_a_capture_is_not_lost(int atPart)
    {
        await using var h = await EngineHarness.StartAsync();
        await h.SendNormalAsync("doomed", "old");
        long due = h.Clock.GetUtcNow().AddSeconds(60).ToUnixTimeMilliseconds();
        string tx = await h.SendHalfAsync("doomed", "delayed commit", deliverAt: due);
        await CaptureWhileAsync(h, atPart, async () =>
        {
            Assert.True((await h.Engine.DeleteTopicAsync("doomed")).IsOk);
            await Commit(h, tx);                               // a delayed message of the deleted topic's name
        });
        h.Clock.Advance(TimeSpan.FromSeconds(61));
        h.Engine.RunSweep();
        var got = await h.ReceiveWhenVisibleAsync("g", "doomed");
        Assert.Equal("delayed commit", Assert.Single(got).Text());
    }

    [Theory]
    [InlineData(0)]
    [InlineData(2)]
    [InlineData(3)]
    public async Task A_topic_deleted_and_sent_to_again_during_a_capture_recovers_to_the_live_state(int atPart)
    {
        await using var h = await EngineHarness.StartAsync();
        await h.SendNormalAsync("doomed", "old");
        Assert.Single(await h.ReceiveWhenVisibleAsync("g", "doomed"));
        Assert.True((await h.Engine.CommitConsumerOffsetAsync("p", "doomed", 0, 1)).IsOk);
        long due = h.Clock.GetUtcNow().AddSeconds(60).ToUnixTimeMilliseconds();
        await CaptureWhileAsync(h, atPart, async () =>
        {
            Assert.True((await h.Engine.DeleteTopicAsync("doomed")).IsOk);
            await h.SendNormalAsync("doomed", "new");
            Assert.True((await h.Engine.SendAsync(h.Draft("doomed", "new, delayed", deliverAt: due))).Error.IsOk);
            Assert.True((await h.Engine.CommitConsumerOffsetAsync("p", "doomed", 0, 0)).IsOk);
        });
        var got = await h.ReceiveWhenVisibleAsync("g", "doomed");
        Assert.Equal("new", Assert.Single(got).Text());
    }

    [Theory]
    [InlineData(0)]
    [InlineData(2)]
    [InlineData(3)]
    public async Task A_group_deleted_and_consuming_again_during_a_capture_recovers_to_the_live_state(int atPart)
    {
        await using var h = await EngineHarness.StartAsync(o => o with { QueuesPerTopic = 1 });
        for (int i = 0; i < 3; i++) await h.SendNormalAsync("t", $"m{i}");
        foreach (var m in await h.ReceiveWhenVisibleAsync("A", "t")) Assert.True((await h.Engine.AckAsync("A", "t", m.ReceiptHandle)).IsOk);
        Assert.True((await h.Engine.CommitConsumerOffsetAsync("A", "t", 0, 3)).IsOk);
        await CaptureWhileAsync(h, atPart, async () =>
        {
            Assert.True((await h.Engine.DeleteGroupAsync("A")).IsOk);
            var again = await h.ReceiveWhenVisibleAsync("A", "t");  // starts again from the retained messages
            Assert.Equal(3, again.Count);
            Assert.True((await h.Engine.AckAsync("A", "t", again[0].ReceiptHandle)).IsOk);
            Assert.True((await h.Engine.CommitConsumerOffsetAsync("A", "t", 0, 1)).IsOk);
        });
    }

    [Theory]
    [InlineData(0)]
    [InlineData(2)]
    [InlineData(3)]
    public async Task A_group_reset_and_consuming_again_during_a_capture_recovers_to_the_live_state(int atPart)
    {
        await using var h = await EngineHarness.StartAsync(o => o with { QueuesPerTopic = 1 });
        for (int i = 0; i < 3; i++) await h.SendNormalAsync("t", $"m{i}");
        foreach (var m in await h.ReceiveWhenVisibleAsync("A", "t")) Assert.True((await h.Engine.AckAsync("A", "t", m.ReceiptHandle)).IsOk);
        await CaptureWhileAsync(h, atPart, async () =>
        {
            Assert.True((await h.Engine.ResetGroupAsync("A", "t", GroupStartFrom.Earliest)).IsOk);
            var again = await h.ReceiveWhenVisibleAsync("A", "t");
            Assert.Equal(3, again.Count);
            Assert.True((await h.Engine.AckAsync("A", "t", again[1].ReceiptHandle)).IsOk);
        });
    }
    /// <summary>
    /// A topic delete waits for a running capture to end; its caller can give up meanwhile, and then nothing is written
    /// and the next capture is not held off. The answers are the ones a delete gives without a capture.
    /// </summary>
    [Fact]
    public async Task A_delete_waiting_for_a_capture_can_be_cancelled_and_then_writes_nothing()
    {
        await using var h = await EngineHarness.StartAsync();
        await h.SendNormalAsync("kept", "m");
        var checkpointer = h.Engine.CheckpointerForTests;
        using var cts = new CancellationTokenSource();
        checkpointer.BeforePartForTests = async part =>
        {
            if (part != 2) return;
            checkpointer.BeforePartForTests = null;
            var deleting = h.Engine.DeleteTopicAsync("kept", cts.Token).AsTask();
            await Conditions.WaitUntil(() => h.Engine.AdminHeldByCaptureForTests > 0);
            cts.Cancel();
            await Assert.ThrowsAnyAsync<OperationCanceledException>(() => deleting);
        };
        await h.Engine.CheckpointAsync();
        Assert.Contains(h.Engine.ListTopics(), t => t.Name == "kept");
        await h.Engine.CheckpointAsync();                       // not held off by the cancelled delete
        Assert.True((await h.Engine.DeleteTopicAsync("kept")).IsOk);
        Assert.Equal(BrokerStatus.TopicNotFound, (await h.Engine.DeleteTopicAsync("kept")).Status);
        Assert.Equal(1, h.Engine.AdminHeldByCaptureForTests);   // the two deletes after the capture did not wait
    }
}
