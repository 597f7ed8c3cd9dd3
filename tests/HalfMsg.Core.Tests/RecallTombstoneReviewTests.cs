using System.Text;
using HalfMsg.Broker.Core;
using HalfMsg.Broker.Core.Model;
using HalfMsg.Broker.Core.Storage;

namespace HalfMsg.Core.Tests;

/// <summary>Recall against copies stored while it runs.</summary>
public sealed class RecallTombstoneReviewTests
{
    private static async Task<SendResult> SendDelayedAsync(EngineHarness h, MessageDraft draft)
    {
        var sent = await h.Engine.SendAsync(draft);
        Assert.True(sent.IsOk, sent.Error.ToString());
        Assert.Equal(-1, sent.QueueId);
        return sent;
    }

    /// <summary>Found by the review of the recall tombstones (it failed on them): a copy stored while a recall reads its candidates' bodies (after WaitingCopiesAsync listed
    /// them, before the recall's lock) is neither recalled nor dropped: it stays waiting and is delivered.</summary>
    [Fact]
    public async Task A_copy_stored_while_the_recall_reads_the_copies_is_not_left_waiting()
    {
        FaultInjectionDevice? device = null;
        await using var h = await EngineHarness.StartAsync(o => o with { WrapLogDevice = d => device = new FaultInjectionDevice(d) });
        long dueAt = h.Clock.GetUtcNow().AddMinutes(30).ToUnixTimeMilliseconds();
        var draft = h.Draft("timers", "m", deliverAt: dueAt);
        var first = await SendDelayedAsync(h, draft);
        await SendDelayedAsync(h, draft); // an earlier copy: the recall reads its body outside the lock
        var held1 = new TaskCompletionSource();
        device!.ReadsWaitFor = held1.Task;
        var recall = h.Engine.RecallDelayedAsync("timers", first.LogAddress, dueAt, first.MessageId).AsTask();
        await Conditions.WaitUntil(() => Volatile.Read(ref device.HeldReads) >= 1, () => "the handle's read never started");
        var held2 = new TaskCompletionSource();
        device.ReadsWaitFor = held2.Task;
        held1.SetResult();
        await Conditions.WaitUntil(() => Volatile.Read(ref device.HeldReads) >= 2, () => "the copy's read never started");
        var late = await SendDelayedAsync(h, draft); // stored now: after the copies were listed, before the recall's record
        held2.SetResult();
        var (error, outcome) = await recall.WaitAsync(TimeSpan.FromSeconds(60));
        Assert.True(error.IsOk, error.ToString());
        Assert.Equal(RecallOutcome.Recalled, outcome);
        lock (h.Engine.GateForTests)
            Assert.False(h.Engine.DelayedForTests.TryGetSentAt(late.LogAddress, out _), "a copy of the recalled message is left waiting: it will be delivered");
    }
}
