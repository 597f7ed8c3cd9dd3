using System.Text;
using HalfMsg.Broker.Core;
using HalfMsg.Broker.Core.Delivery;
using HalfMsg.Broker.Core.Model;

namespace HalfMsg.Core.Tests;

/// <summary>
/// A recall outlives its record: a retention cut past the record of a recall that is still remembered (its delivery
/// time ahead), or whose dropped copies are still in the log, carries the recall forward (a fresh DelayRecalled record at
/// the tail), so that a replay from the log alone still drops a copy of the message stored after the recall. Until the
/// late-morning session of 2026-12-07 such a replay (every checkpoint lost) took the copy for a waiting message and delivered
/// it at its time, while a restart from a checkpoint dropped it (left by the review of the morning session).
/// </summary>
public sealed class RecallCarryTests
{
    public enum Restart { None, FromCheckpoint, FromLogOnly }

    private static async Task<SendResult> SendDelayedAsync(EngineHarness h, MessageDraft draft)
    {
        var sent = await h.Engine.SendAsync(draft);
        Assert.True(sent.IsOk, sent.Error.ToString());
        Assert.Equal(-1, sent.QueueId); // accepted, waiting for its time as far as the producer can tell
        return sent;
    }

    private static async Task RecallAsync(EngineHarness h, SendResult sent, long dueAt)
    {
        var (error, outcome) = await h.Engine.RecallDelayedAsync("timers", sent.LogAddress, dueAt, sent.MessageId);
        Assert.True(error.IsOk, error.ToString());
        Assert.Equal(RecallOutcome.Recalled, outcome);
    }

    private static async Task RestartAsync(EngineHarness h, Restart restart)
    {
        if (restart == Restart.None) return;
        if (restart == Restart.FromCheckpoint)
        {
            await h.RestartAsync();
            return;
        }
        // Every checkpoint lost: the state comes from the retained log alone.
        await h.Engine.DisposeAsync();
        Directory.Delete(Path.Combine(h.DataDir, "checkpoints"), recursive: true);
        await h.RestartAfterDeletedCheckpointAsync();
    }

    /// <summary>Sweeps at <paramref name="lastDueAt"/> + 10 ms and returns what the topic's one queue holds once the
    /// control (due last) is there: a copy left waiting would be among it.</summary>
    private static async Task<List<string>> PulledOnceControlCameAsync(EngineHarness h, long lastDueAt)
    {
        long now = h.Clock.GetUtcNow().ToUnixTimeMilliseconds();
        if (lastDueAt + 10 > now) h.Clock.Advance(TimeSpan.FromMilliseconds(lastDueAt + 10 - now));
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

    private static int RecallCount(EngineHarness h)
    {
        lock (h.Engine.GateForTests) return h.Engine.DelayedForTests.RecallCount;
    }

    // The delayed messages of the state (a replay of the log alone after a cut does not rebuild topics the cut emptied).
    private static string Delayed(EngineHarness h)
        => string.Join('\n', h.Engine.DescribeState().Split('\n').Where(l => l.StartsWith("delayed ", StringComparison.Ordinal)));

    private static bool Waits(EngineHarness h, SendResult sent)
    {
        lock (h.Engine.GateForTests) return h.Engine.DelayedForTests.TryGetSentAt(sent.LogAddress, out _);
    }

    /// <summary>
    /// The case the review left: a recall, a copy of the message stored after it (the producer's retry), a retention cut
    /// past the recall's record (the copy stays above it, or is stored after the cut), then a restart: live, from a
    /// checkpoint, and from the log alone, the copy is not waiting, reads as recalled (no message by offset, "recalled"
    /// in the message index), a retry after the restart is dropped too, and only the control is delivered.
    /// </summary>
    [Theory]
    [InlineData(true, Restart.None)]
    [InlineData(true, Restart.FromCheckpoint)]
    [InlineData(true, Restart.FromLogOnly)]
    [InlineData(false, Restart.None)]
    [InlineData(false, Restart.FromCheckpoint)]
    [InlineData(false, Restart.FromLogOnly)]
    public async Task A_copy_stored_after_a_recall_whose_record_retention_cut_is_never_delivered(bool copyBeforeCut, Restart restart)
    {
        await using var h = await EngineHarness.StartAsync(o => o with { QueuesPerTopic = 1 });
        await h.Engine.MessageIndexReady;
        long dueAt = h.Clock.GetUtcNow().AddMinutes(10).ToUnixTimeMilliseconds();
        var draft = h.Draft("timers", "recalled", deliverAt: dueAt);
        var first = await SendDelayedAsync(h, draft);
        await RecallAsync(h, first, dueAt);
        // The control before the cut's boundary: the cut moves it, and a replay of the log alone rebuilds it from its
        // move's record (before the evening session of 2026-12-07 it did not, and the control was sent after the cut).
        await SendDelayedAsync(h, h.Draft("timers", "control", deliverAt: dueAt + 1));
        await h.SendNormalAsync("filler", "f");
        long boundary = h.Engine.LogTailAddress; // past the recall's record
        SendResult copy = default;
        if (copyBeforeCut) copy = await SendDelayedAsync(h, draft); // above the boundary: dropped, and kept by the cut
        Assert.Equal(1, await h.Engine.TruncateBeforeAsync(boundary)); // the control moved; the recall's record cut
        Assert.True(h.Engine.LogBeginAddress >= boundary);
        if (!copyBeforeCut) copy = await SendDelayedAsync(h, draft); // or stored after the cut: dropped
        Assert.False(Waits(h, copy), "live: the copy waits");

        await RestartAsync(h, restart);
        Assert.True(RecallCount(h) == 1, $"{restart}: the recall is not remembered ({RecallCount(h)})");
        Assert.False(Waits(h, copy), $"{restart}: the copy stored after the recall waits for its time");
        Assert.Null(await h.Engine.ReadMessageAtAsync(copy.LogAddress));
        await h.Engine.MessageIndexReady;
        Assert.True(h.Engine.MessageIndex.Find(draft.MessageId)!.Recalled, $"{restart}: the message index does not show the copy recalled");
        var again = await SendDelayedAsync(h, draft); // a retry after the restart
        Assert.False(Waits(h, again), $"{restart}: a copy stored after the restart waits for its time");

        Assert.Equal(["control"], await PulledOnceControlCameAsync(h, dueAt + 1));
    }

    /// <summary>
    /// A cut between the recalled message's body and its recall's record: the record stays, naming a body a replay of the
    /// log alone no longer finds; the delivery time it carries (since the late-morning session of 2026-12-07) has the replay
    /// remember the recall all the same, so a copy stored after it is dropped again. Before, the record was a no-op there.
    /// </summary>
    [Fact]
    public async Task A_recalls_record_whose_message_body_retention_cut_still_drops_a_later_copy_after_a_log_only_replay()
    {
        await using var h = await EngineHarness.StartAsync(o => o with { QueuesPerTopic = 1 });
        long dueAt = h.Clock.GetUtcNow().AddMinutes(10).ToUnixTimeMilliseconds();
        var draft = h.Draft("timers", "recalled", deliverAt: dueAt);
        var first = await SendDelayedAsync(h, draft);
        await h.SendNormalAsync("filler", "f");
        long boundary = h.Engine.LogTailAddress; // past the message's body, before its recall's record
        await RecallAsync(h, first, dueAt);
        var copy = await SendDelayedAsync(h, draft);
        Assert.Equal(0, await h.Engine.TruncateBeforeAsync(boundary)); // the recalled body is not live: cut, not moved
        Assert.Equal(0, h.Engine.RecallsCarriedForTests); // its record is above the cut: nothing to carry
        await SendDelayedAsync(h, h.Draft("timers", "control", deliverAt: dueAt + 1));

        await RestartAsync(h, Restart.FromLogOnly);
        Assert.Equal(1, RecallCount(h));
        Assert.False(Waits(h, copy), "the copy stored after the recall waits for its time");
        Assert.Equal(["control"], await PulledOnceControlCameAsync(h, dueAt + 1));
    }

    /// <summary>
    /// A recall whose time has passed (forgotten by the sweep) while a copy dropped because of it is still in the log:
    /// the cut past the recall's record carries it too, naming that copy, so that a replay from the log alone does not
    /// take the copy, past its time, for a message to deliver at once.
    /// </summary>
    [Fact]
    public async Task A_copy_past_its_time_is_not_delivered_after_a_log_only_replay_once_the_recalls_record_is_cut()
    {
        await using var h = await EngineHarness.StartAsync(o => o with { QueuesPerTopic = 1 });
        long dueAt = h.Clock.GetUtcNow().AddMinutes(10).ToUnixTimeMilliseconds();
        var draft = h.Draft("timers", "recalled", deliverAt: dueAt);
        var first = await SendDelayedAsync(h, draft);
        await SendDelayedAsync(h, h.Draft("timers", "control", deliverAt: dueAt + 1));
        await RecallAsync(h, first, dueAt);
        await h.SendNormalAsync("filler", "f");
        long boundary = h.Engine.LogTailAddress;
        var copy = await SendDelayedAsync(h, draft);
        Assert.Equal(["control"], await PulledOnceControlCameAsync(h, dueAt + 1));
        Assert.Equal(0, RecallCount(h)); // forgotten at its time
        Assert.True(await h.Engine.TruncateBeforeAsync(boundary) >= 0);
        Assert.True(h.Engine.LogBeginAddress >= boundary);

        await RestartAsync(h, Restart.FromLogOnly);
        Assert.False(Waits(h, copy), "the copy dropped after the recall waits (past its time: delivered at the first sweep)");
        Assert.Null(await h.Engine.ReadMessageAtAsync(copy.LogAddress));
        Assert.Equal(["control"], await PulledOnceControlCameAsync(h, dueAt + 1));
        Assert.Equal(0, RecallCount(h)); // forgotten again by that sweep
    }

    /// <summary>
    /// Two copies above the cut: the carried record names the last one, which replay takes out; the other is a waiting
    /// copy of a remembered recall after replay, and the broker takes it out at start, before its first sweep (as one a
    /// crash left after a recall's records), reading its id. Nothing is delivered but the control, and the recovered
    /// delayed messages are the live ones.
    /// </summary>
    [Fact]
    public async Task Two_copies_above_the_cut_are_both_taken_out_after_a_log_only_replay_before_the_first_sweep()
    {
        await using var h = await EngineHarness.StartAsync(o => o with { QueuesPerTopic = 1 });
        long dueAt = h.Clock.GetUtcNow().AddMinutes(10).ToUnixTimeMilliseconds();
        var draft = h.Draft("timers", "recalled", deliverAt: dueAt);
        var first = await SendDelayedAsync(h, draft);
        await RecallAsync(h, first, dueAt);
        await SendDelayedAsync(h, h.Draft("timers", "control", deliverAt: dueAt + 1)); // moved by the cut, as above
        await h.SendNormalAsync("filler", "f");
        long boundary = h.Engine.LogTailAddress;
        var copy1 = await SendDelayedAsync(h, draft);
        var copy2 = await SendDelayedAsync(h, draft);
        Assert.Equal(1, await h.Engine.TruncateBeforeAsync(boundary));
        string live = Delayed(h);

        await RestartAsync(h, Restart.FromLogOnly);
        Assert.Equal(1, RecallCount(h));
        Assert.False(Waits(h, copy2), "the copy the carried record names waits");
        await h.Engine.RecallCopiesLeftByCrashAsync(CancellationToken.None); // what the broker runs before its first sweep
        Assert.False(Waits(h, copy1), "the earlier copy waits after the start's pass");
        States.AssertSame(live, Delayed(h), "log-only replay after a cut that carried a recall");
        Assert.Equal(["control"], await PulledOnceControlCameAsync(h, dueAt + 1));
    }

    /// <summary>
    /// Bounded: a remembered recall is carried by each cut past its record while its time lies ahead, and no longer once
    /// its time has passed and its bodies are cut; the broker then keeps nothing of it, and a replay from the log alone
    /// remembers nothing of it either.
    /// </summary>
    [Fact]
    public async Task A_recall_is_carried_only_while_remembered_or_its_bodies_are_in_the_log()
    {
        await using var h = await EngineHarness.StartAsync(o => o with { QueuesPerTopic = 1 });
        long dueAt = h.Clock.GetUtcNow().AddMinutes(10).ToUnixTimeMilliseconds();
        var draft = h.Draft("timers", "recalled", deliverAt: dueAt);
        var first = await SendDelayedAsync(h, draft);
        await RecallAsync(h, first, dueAt);

        for (int cut = 1; cut <= 2; cut++)
        {
            await h.SendNormalAsync("filler", "f" + cut);
            Assert.True(await h.Engine.TruncateBeforeAsync(h.Engine.LogTailAddress) >= 0);
            Assert.Equal(cut, h.Engine.RecallsCarriedForTests);
        }
        await RestartAsync(h, Restart.FromLogOnly);
        Assert.Equal(1, RecallCount(h)); // from the record the second cut carried

        h.Clock.Advance(TimeSpan.FromMinutes(11));
        h.Engine.RunSweep();
        Assert.Equal(0, RecallCount(h));
        await h.SendNormalAsync("filler", "g");
        Assert.True(await h.Engine.TruncateBeforeAsync(h.Engine.LogTailAddress) >= 0);
        Assert.Equal(0, h.Engine.RecallsCarriedForTests); // counted since this start: none carried
        lock (h.Engine.GateForTests)
        {
            Assert.Equal(0, h.Engine.DelayedForTests.RecallRecordsCount);
            Assert.Equal(0, h.Engine.DelayedForTests.RecalledBodiesCount);
        }
        await RestartAsync(h, Restart.FromLogOnly);
        Assert.Equal(0, RecallCount(h));
        await SendDelayedAsync(h, h.Draft("timers", "later", deliverAt: h.Clock.GetUtcNow().AddMinutes(1).ToUnixTimeMilliseconds()));
        lock (h.Engine.GateForTests) Assert.Equal(0, h.Engine.DelayedForTests.RecallRecordsCount);
    }
}
