using HalfMsg.Broker.Core;
using HalfMsg.Broker.Core.Delivery;
using HalfMsg.Broker.Core.Storage;

namespace HalfMsg.Core.Tests;

/// <summary>
/// A topic deleted while a fuzzy checkpoint captures, and what happens to its delayed messages: the checkpoint copies
/// the delayed messages before the topics, so a delete between the two leaves a file with the topic's delayed messages
/// and without the topic. Until 2026-12-06 replay of the delete found no topic and stopped before dropping them, and
/// their release re-created the topic in memory and delivered them (found by review). Since the same day a topic's delete
/// waits for a running capture to end (see DestructiveAdminDuringCaptureTests), so these tests ask for it during one.
/// </summary>
public sealed class TopicDeleteDuringCaptureTests
{
    [Theory]
    [InlineData(0)]
    [InlineData(2)]
    [InlineData(3)]
    public async Task A_topic_deleted_during_a_capture_recovers_to_the_live_state_without_its_delayed_messages(int atPart)
    {
        await using var h = await EngineHarness.StartAsync();
        long due = h.Clock.GetUtcNow().AddSeconds(60).ToUnixTimeMilliseconds();
        var sent = await h.Engine.SendAsync(h.Draft("doomed", "late", deliverAt: due));
        Assert.True(sent.Error.IsOk, sent.Error.ToString());
        await h.Engine.CheckpointAsync();                       // an older one: the delayed message is before the next one's start

        var checkpointer = h.Engine.CheckpointerForTests;
        Task<BrokerError>? deleting = null;
        checkpointer.BeforePartForTests = async part =>
        {
            if (part != atPart) return;                         // 2: delayed messages captured, topics not yet
            checkpointer.BeforePartForTests = null;
            // Since 2026-12-06 a delete waits for the capture to end: asked here, it is written after it.
            deleting = h.Engine.DeleteTopicAsync("doomed").AsTask();
            await Conditions.WaitUntil(() => h.Engine.AdminHeldByCaptureForTests > 0);
            Assert.False(deleting.IsCompleted);
        };
        await h.Engine.CheckpointAsync();
        var deleted = await deleting!;
        Assert.True(deleted.IsOk, deleted.ToString());
        long ours = h.Engine.LastCheckpointAddress;
        string live = h.Engine.DescribeState();

        // kill -9 after our checkpoint: the restart loads it (the shutdown checkpoint is removed).
        await h.Engine.DisposeAsync();
        var dir = Path.Combine(h.DataDir, "checkpoints");
        foreach (var f in Directory.GetFiles(dir, "checkpoint-*.bin").Where(f => CheckpointStoreNames.Covered(f) > ours)) File.Delete(f);
        await h.RestartAfterDeletedCheckpointAsync();
        Assert.Equal(ours, h.Engine.LastCheckpointAddress);
        States.AssertSame(live, h.Engine.DescribeState(), $"part {atPart}");

        h.Clock.Advance(TimeSpan.FromSeconds(61));
        h.Engine.RunSweep();
        Assert.DoesNotContain(h.Engine.ListTopics(), t => t.Name == "doomed");
    }

    /// <summary>
    /// The release of a delayed message whose topic no longer exists (the delete drops them, so only a state that
    /// missed a delete has one) drops it: until 2026-12-06 it created the topic in memory, with no record of it, past
    /// AutoCreateTopics=false and MaxTopics, and delivered the message there.
    /// </summary>
    [Fact]
    public async Task A_delayed_message_whose_topic_is_gone_at_its_time_is_dropped_not_delivered_into_a_made_up_topic()
    {
        await using var h = await EngineHarness.StartAsync(o => o with { AutoCreateTopics = false });
        Assert.True((await h.Engine.CreateTopicAsync("gone")).Error.IsOk);
        Assert.True((await h.Engine.CreateTopicAsync("other")).Error.IsOk);
        long due = h.Clock.GetUtcNow().AddSeconds(10).ToUnixTimeMilliseconds();
        Assert.True((await h.Engine.SendAsync(h.Draft("gone", "late", deliverAt: due))).Error.IsOk);
        Assert.True((await h.Engine.SendAsync(h.Draft("other", "on time", deliverAt: due))).Error.IsOk);
        // The state a missed delete leaves: the topic gone, its delayed message still waiting.
        var topics = (TopicQueues)typeof(BrokerEngine)
            .GetField("_topics", System.Reflection.BindingFlags.NonPublic | System.Reflection.BindingFlags.Instance)!.GetValue(h.Engine)!;
        lock (h.Engine.GateForTests) Assert.True(topics.Remove("gone", out _));

        h.Clock.Advance(TimeSpan.FromSeconds(11));
        h.Engine.RunSweep();
        Assert.DoesNotContain(h.Engine.ListTopics(), t => t.Name == "gone");
        Assert.DoesNotContain("delayed @", h.Engine.DescribeState());
        Assert.Equal("on time", Assert.Single(await h.ReceiveWhenVisibleAsync("g", "other")).Text());
    }
}
