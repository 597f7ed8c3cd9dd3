using System.Text;
using HalfMsg.Broker.Core;
using HalfMsg.Broker.Core.Delivery;
using HalfMsg.Broker.Core.Model;

namespace HalfMsg.Core.Tests;

/// <summary>
/// A recalled delay message is never delivered, also by a send-back of its address (CONSUMER_SEND_MSG_BACK with the
/// producer's offsetMsgId) or a read by offset (VIEW_MESSAGE_BY_ID) once its delivery time has passed. Until 2026-12-07 a
/// recall was remembered only until its delivery time: past it, the recalled body (and a copy dropped because the recall
/// was remembered) read as a message by offset, and a send-back copied it into the group's retry topic, from which it was
/// delivered (found by review). The recalled bodies are kept, with a checkpoint part of their own, until retention cuts
/// them.
/// </summary>
public sealed class RecalledSendBackTests
{
    private static async Task<SendResult> SendDelayedAsync(EngineHarness h, MessageDraft draft)
    {
        var sent = await h.Engine.SendAsync(draft);
        Assert.True(sent.IsOk, sent.Error.ToString());
        Assert.Equal(-1, sent.QueueId);
        return sent;
    }

    private static async Task RecallAsync(EngineHarness h, SendResult sent, long dueAt)
    {
        var (error, outcome) = await h.Engine.RecallDelayedAsync("timers", sent.LogAddress, dueAt, sent.MessageId);
        Assert.True(error.IsOk, error.ToString());
        Assert.Equal(RecallOutcome.Recalled, outcome);
    }

    /// <summary>Neither read nor sent back by <paramref name="address"/>, and nothing reached the group's retry or
    /// dead-letter topic.</summary>
    private static async Task AssertRefusedAsync(EngineHarness h, long address, string when)
    {
        var read = await h.Engine.ReadMessageAtAsync(address);
        Assert.True(read is null, $"{when}: the recalled message at {address} was read by offset ('{(read is null ? "" : Encoding.UTF8.GetString(read.Body.Span))}')");
        var back = await h.Engine.SendBackAsync("G", address, 1, 16, null);
        Assert.False(back.Error.IsOk, $"{when}: the recalled message at {address} was sent back into {back.Topic}");
        Assert.Equal(BrokerStatus.BadRequest, back.Error.Status);
        Assert.Contains("no message at commit log offset", back.Error.Message);
        var dead = await h.Engine.SendBackAsync("G", address, -1, 16, null);
        Assert.False(dead.Error.IsOk, $"{when}: the recalled message at {address} was dead-lettered into {dead.Topic}");
        foreach (string topic in new[] { "%RETRY%G", "%DLQ%G" })
            Assert.False(h.Engine.TryGetQueueOffsets(topic, 0, out _, out long stored) && stored > 0, $"{when}: a message reached {topic}");
    }

    /// <summary>What the topic's one queue delivered, once the control (due after the recalled message) is there.</summary>
    private static async Task<List<string>> PulledOnceControlCameAsync(EngineHarness h)
    {
        var bodies = new List<string>();
        await Conditions.WaitUntil(() =>
        {
            h.Engine.RunSweep();
            bodies = h.Engine.PullAsync("timers", 0, 0, 32, TagFilter.All, TimeSpan.Zero).AsTask().Result.Messages
                .Select(m => Encoding.UTF8.GetString(m.Message.Body.Span)).ToList();
            return bodies.Contains("control");
        }, () => $"pulled [{string.Join(", ", bodies)}]");
        return bodies;
    }

    private static int RecalledBodies(EngineHarness h)
    {
        lock (h.Engine.GateForTests) return h.Engine.DelayedForTests.RecalledBodiesCount;
    }

    public enum Restart { None, FromCheckpoint, FromLogOnly }

    [Theory]
    [InlineData(Restart.None)]
    [InlineData(Restart.FromCheckpoint)]
    [InlineData(Restart.FromLogOnly)]
    public async Task A_recalled_message_and_a_dropped_copy_past_their_time_cannot_be_read_or_sent_back_by_offset(Restart restart)
    {
        await using var h = await EngineHarness.StartAsync(o => o with { QueuesPerTopic = 1 });
        long dueAt = h.Clock.GetUtcNow().AddMinutes(10).ToUnixTimeMilliseconds();
        var draft = h.Draft("timers", "recalled", deliverAt: dueAt);
        var recalled = await SendDelayedAsync(h, draft);
        await SendDelayedAsync(h, h.Draft("timers", "control", deliverAt: dueAt + 1));
        await RecallAsync(h, recalled, dueAt);
        var copy = await SendDelayedAsync(h, draft); // the producer's retry after the recall: accepted, dropped
        // Before its time as well.
        await AssertRefusedAsync(h, recalled.LogAddress, "before its time");
        await AssertRefusedAsync(h, copy.LogAddress, "the copy before its time");

        h.Clock.Advance(TimeSpan.FromMinutes(11));
        Assert.Equal(["control"], await PulledOnceControlCameAsync(h));
        lock (h.Engine.GateForTests) Assert.Equal(0, h.Engine.DelayedForTests.RecallCount); // the recall itself is forgotten at its time
        await AssertRefusedAsync(h, recalled.LogAddress, "past its time");
        await AssertRefusedAsync(h, copy.LogAddress, "the copy past its time");

        if (restart != Restart.None)
        {
            await h.Engine.DisposeAsync(); // a shutdown checkpoint, written past the recall's time
            if (restart == Restart.FromLogOnly) Directory.Delete(Path.Combine(h.DataDir, "checkpoints"), recursive: true);
            await h.RestartAfterDeletedCheckpointAsync();
            Assert.Equal(1, RecalledBodies(h));
            Assert.Equal(["control"], await PulledOnceControlCameAsync(h));
            await AssertRefusedAsync(h, recalled.LogAddress, $"after a restart ({restart})");
            await AssertRefusedAsync(h, copy.LogAddress, $"the copy after a restart ({restart})");
        }
    }

    /// <summary>
    /// A body retention moved while it waited, then recalled: past its time neither the address it was moved to nor
    /// the one it was sent at reads or sends back, also after a restart; once a cut has passed every body of it, it is
    /// forgotten (memory follows the retained log), and a checkpoint after that carries none.
    /// </summary>
    [Fact]
    public async Task A_recalled_message_retention_moved_cannot_be_sent_back_and_is_forgotten_once_cut()
    {
        await using var h = await EngineHarness.StartAsync(o => o with { QueuesPerTopic = 1 });
        long dueAt = h.Clock.GetUtcNow().AddMinutes(10).ToUnixTimeMilliseconds();
        var recalled = await SendDelayedAsync(h, h.Draft("timers", "recalled", deliverAt: dueAt));
        await SendDelayedAsync(h, h.Draft("timers", "control", deliverAt: dueAt + 1));
        await h.SendNormalAsync("filler", "f");
        Assert.True(await h.Engine.TruncateBeforeAsync(h.Engine.LogTailAddress) >= 1); // moves both waiting bodies to the tail
        long movedTo;
        lock (h.Engine.GateForTests)
        {
            Assert.True(h.Engine.DelayedForTests.TryGetSentAt(recalled.LogAddress, out var entry));
            movedTo = entry.BodyAddress;
        }
        Assert.NotEqual(recalled.LogAddress, movedTo);
        await RecallAsync(h, recalled, dueAt);

        h.Clock.Advance(TimeSpan.FromMinutes(11));
        Assert.Equal(["control"], await PulledOnceControlCameAsync(h));
        await AssertRefusedAsync(h, movedTo, "moved, past its time");
        await AssertRefusedAsync(h, recalled.LogAddress, "by its send address, past its time");
        await h.RestartAsync();
        await AssertRefusedAsync(h, movedTo, "moved, after a restart");
        Assert.Equal(1, RecalledBodies(h));

        // A cut past the moved body: nothing of it is left to read, and nothing of it is kept.
        await h.SendNormalAsync("filler", "g");
        Assert.True(await h.Engine.TruncateBeforeAsync(h.Engine.LogTailAddress) >= 0);
        Assert.True(h.Engine.LogBeginAddress > movedTo);
        Assert.Equal(0, RecalledBodies(h));
        await AssertRefusedAsync(h, movedTo, "cut");
        await h.RestartAsync();
        Assert.Equal(0, RecalledBodies(h));
    }

    /// <summary>
    /// A recall made while a checkpoint captures, before it copies the delayed messages: the file has neither the
    /// message nor (once its time has passed) a use for the recall, and replay of the recall's record over it finds
    /// nothing to take out. The file's own part of recalled bodies is what refuses the body after a restart from it.
    /// </summary>
    [Fact]
    public async Task A_recall_made_during_a_checkpoints_capture_is_refused_by_offset_after_a_restart_from_that_checkpoint()
    {
        await using var h = await EngineHarness.StartAsync(o => o with { QueuesPerTopic = 1 });
        long dueAt = h.Clock.GetUtcNow().AddMinutes(10).ToUnixTimeMilliseconds();
        var recalled = await SendDelayedAsync(h, h.Draft("timers", "recalled", deliverAt: dueAt));
        await SendDelayedAsync(h, h.Draft("timers", "control", deliverAt: dueAt + 1));
        var checkpointer = h.Engine.CheckpointerForTests;
        checkpointer.BeforePartForTests = async part =>
        {
            checkpointer.BeforePartForTests = null;
            await RecallAsync(h, recalled, dueAt); // before the halves, so before the delayed messages are copied
        };
        await h.Engine.CheckpointAsync();
        Assert.Null(checkpointer.BeforePartForTests);

        h.Clock.Advance(TimeSpan.FromMinutes(11));
        Assert.Equal(["control"], await PulledOnceControlCameAsync(h));
        await h.Engine.DisposeAsync();
        File.Delete(Directory.GetFiles(Path.Combine(h.DataDir, "checkpoints"), "checkpoint-*.bin").Order().Last()); // the shutdown one
        await h.RestartAfterDeletedCheckpointAsync();
        Assert.Equal(["control"], await PulledOnceControlCameAsync(h)); // its sweep forgets the recall, due long ago
        await AssertRefusedAsync(h, recalled.LogAddress, "after a restart from the checkpoint captured around the recall");
    }
}
