using System.Text;
using HalfMsg.Broker.Core;
using HalfMsg.Broker.Core.Delivery;
using HalfMsg.Broker.Core.Model;
using HalfMsg.Broker.Core.Transactions;

namespace HalfMsg.Core.Tests;

/// <summary>
/// A replay of the log alone (every checkpoint lost) after a retention cut rebuilds the live state the cut moved: the
/// moved record (BodyRelocated) carries the original record whole, and the original is gone with the cut. Until the
/// evening session of 2026-12-07 such a replay moved only state it already had, so a pending half (acknowledged to its
/// producer), a delayed message not yet due, and the queue entry of a message committed after the cut's boundary
/// whose body lay below it were silently lost: no check-back, the producer's commit found no half, the delayed message
/// was never delivered, the committed message was never delivered (found by a helper, left by the recall session).
/// Live, and from a checkpoint, for comparison; one cut, and two (the second moves what the first moved).
/// </summary>
public sealed class LogOnlyMovedBodyTests
{
    public enum Restart { None, FromCheckpoint, FromLogOnly }

    private static async Task RestartAsync(EngineHarness h, Restart restart)
    {
        if (restart == Restart.None) return;
        await h.Engine.DisposeAsync();
        if (restart == Restart.FromLogOnly) Directory.Delete(Path.Combine(h.DataDir, "checkpoints"), recursive: true);
        await h.RestartAfterDeletedCheckpointAsync();
    }

    /// <summary>Cuts the log at its tail <paramref name="cuts"/> times (a filler message before each, so each cut passes
    /// the previous one's moves); asserts each cut ran and moved something.</summary>
    private static async Task CutAsync(EngineHarness h, int cuts)
    {
        for (int i = 0; i < cuts; i++)
        {
            await h.SendNormalAsync("filler", "f" + i);
            long boundary = h.Engine.LogTailAddress;
            Assert.True(await h.Engine.TruncateBeforeAsync(boundary) > 0, $"cut {i + 1} moved nothing (or was postponed)");
            Assert.True(h.Engine.LogBeginAddress >= boundary);
        }
    }

    private static string Lines(EngineHarness h, string prefix)
        => string.Join('\n', h.Engine.DescribeState().Split('\n').Where(l => l.StartsWith(prefix, StringComparison.Ordinal)));

    /// <summary>Pulls queue 0 of <paramref name="topic"/> from offset 0 (sweeping first) until <paramref name="count"/>
    /// messages are there; their bodies.</summary>
    private static async Task<List<string>> PulledAsync(EngineHarness h, string topic, int count = 1)
    {
        var bodies = new List<string>();
        await Conditions.WaitUntil(() =>
        {
            h.Engine.RunSweep();
            bodies = h.Engine.PullAsync(topic, 0, 0, 32, TagFilter.All, TimeSpan.Zero).AsTask().Result.Messages
                .Select(m => Encoding.UTF8.GetString(m.Message.Body.Span)).ToList();
            return bodies.Count >= count;
        }, () => $"pulled [{string.Join(", ", bodies)}] from {topic}");
        return bodies;
    }

    /// <summary>
    /// A pending half (checked back once) moved by the cut: after the restart it is still pending, is checked back, its
    /// producer's commit finds it, and it is delivered.
    /// </summary>
    [Theory]
    [InlineData(Restart.None, 1)]
    [InlineData(Restart.FromCheckpoint, 1)]
    [InlineData(Restart.FromLogOnly, 1)]
    [InlineData(Restart.FromLogOnly, 2)]
    public async Task A_pending_half_moved_by_a_cut_stays_pending_answers_its_commit_and_is_delivered(Restart restart, int cuts)
    {
        await using var h = await EngineHarness.StartAsync(o => o with { QueuesPerTopic = 1 });
        var producer = new RecordingChannel("p1");
        using var reg = h.Engine.Producers.Register("orders", producer);
        string txId = await h.SendHalfAsync("orders", "pending");
        h.Clock.Advance(TimeSpan.FromSeconds(7));
        Assert.Equal(1, await h.Engine.RunCheckPassAsync());
        await CutAsync(h, cuts);
        string live = Lines(h, "half ");

        await RestartAsync(h, restart);
        Assert.True(h.Engine.PendingCount == 1, $"{restart}: {h.Engine.PendingCount} pending halves after the restart");
        string recovered = Lines(h, "half ");
        // From the log alone the check records before the cut are gone with it: the half is pending at the same place,
        // its check history partial (checked again sooner).
        if (restart == Restart.FromLogOnly)
        {
            static string Place(string line) => string.Join(' ', line.Split(' ').Take(6).Append(line.Split(' ').First(p => p.StartsWith('@'))));
            Assert.Equal(Place(live), Place(recovered));
        }
        else States.AssertSame(live, recovered, $"{restart}");

        h.Clock.Advance(TimeSpan.FromSeconds(31));
        using var reg2 = restart == Restart.None ? null : h.Engine.Producers.Register("orders", producer);
        Assert.Equal(1, await h.Engine.RunCheckPassAsync()); // checked back again
        var decided = await h.Engine.EndTransactionAsync(txId, null, TransactionResolution.Commit, DecisionSource.Client);
        Assert.True(decided.IsOk, $"{restart}: the commit found no half: {decided.Error}");
        Assert.Equal(["pending"], await PulledAsync(h, "orders"));
        Assert.Equal(0, h.Engine.PendingCount);
    }

    /// <summary>A delayed message not yet due moved by the cut: after the restart it waits, at the address it was sent
    /// at (its recall handle), and is delivered at its time, once.</summary>
    [Theory]
    [InlineData(Restart.None, 1)]
    [InlineData(Restart.FromCheckpoint, 1)]
    [InlineData(Restart.FromLogOnly, 1)]
    [InlineData(Restart.FromLogOnly, 2)]
    public async Task A_delayed_message_moved_by_a_cut_is_delivered_at_its_time(Restart restart, int cuts)
    {
        await using var h = await EngineHarness.StartAsync(o => o with { QueuesPerTopic = 1 });
        long dueAt = h.Clock.GetUtcNow().AddMinutes(10).ToUnixTimeMilliseconds();
        var sent = await h.Engine.SendAsync(h.Draft("timers", "delayed", deliverAt: dueAt));
        Assert.True(sent.IsOk, sent.Error.ToString());
        await CutAsync(h, cuts);
        string live = Lines(h, "delayed ");

        await RestartAsync(h, restart);
        string recovered = Lines(h, "delayed ");
        if (restart == Restart.FromLogOnly && cuts > 1)
        {
            // Moved twice: the address it was sent at is in the first move's record, which the second cut took.
            static string Place(string line) => line[..line.IndexOf(" sent@", StringComparison.Ordinal)];
            Assert.Equal(Place(live), Place(recovered));
        }
        else
        {
            States.AssertSame(live, recovered, $"{restart}");
            lock (h.Engine.GateForTests) Assert.True(h.Engine.DelayedForTests.TryGetSentAt(sent.LogAddress, out _), $"{restart}: not found by the address it was sent at");
        }

        h.Clock.Advance(TimeSpan.FromMinutes(9));
        h.Engine.RunSweep();
        Assert.Empty((await h.Engine.PullAsync("timers", 0, 0, 32, TagFilter.All, TimeSpan.Zero)).Messages); // not before its time
        h.Clock.Advance(TimeSpan.FromMinutes(2));
        Assert.Equal(["delayed"], await PulledAsync(h, "timers"));
    }

    /// <summary>
    /// A transactional message stored below the cut's boundary and committed after it: its queue entry entered its
    /// queue after the boundary and is kept, its body is moved. From the log alone the commit's record finds no half
    /// (its body record was cut): the move's record puts the entry back. With a delay, the committed message waits in
    /// the delay index (its body moved the same way) and is delivered at its time.
    /// </summary>
    [Theory]
    [InlineData(Restart.None, false)]
    [InlineData(Restart.FromCheckpoint, false)]
    [InlineData(Restart.FromLogOnly, false)]
    [InlineData(Restart.None, true)]
    [InlineData(Restart.FromCheckpoint, true)]
    [InlineData(Restart.FromLogOnly, true)]
    public async Task A_message_committed_after_the_boundary_whose_body_was_moved_is_delivered(Restart restart, bool delayed)
    {
        await using var h = await EngineHarness.StartAsync(o => o with { QueuesPerTopic = 1 });
        long? dueAt = delayed ? h.Clock.GetUtcNow().AddMinutes(10).ToUnixTimeMilliseconds() : null;
        string txId = await h.SendHalfAsync("orders", "committed", deliverAt: dueAt);
        await h.SendNormalAsync("filler", "f");
        long boundary = h.Engine.LogTailAddress; // the half's body below it, its commit after it
        Assert.True((await h.Engine.EndTransactionAsync(txId, null, TransactionResolution.Commit, DecisionSource.Client)).IsOk);
        Assert.True(await h.Engine.TruncateBeforeAsync(boundary) > 0, "the cut moved nothing");
        string live = Lines(h, delayed ? "delayed " : "queue orders/");

        await RestartAsync(h, restart);
        string recovered = Lines(h, delayed ? "delayed " : "queue orders/");
        Assert.True(recovered.Length > 0, $"{restart}: the committed message is not in the state");
        if (restart != Restart.FromLogOnly) States.AssertSame(live, recovered, $"{restart}");

        if (delayed) h.Clock.Advance(TimeSpan.FromMinutes(11));
        Assert.Equal(["committed"], await PulledAsync(h, "orders"));
    }
}
