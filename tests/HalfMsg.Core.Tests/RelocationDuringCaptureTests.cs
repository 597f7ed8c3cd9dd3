using HalfMsg.Broker.Core;
using HalfMsg.Broker.Core.Delivery;
using HalfMsg.Broker.Core.Storage;

namespace HalfMsg.Core.Tests;

/// <summary>
/// A checkpoint's capture copies the delayed messages one table (by body address) at a time, each in its own hold of
/// the engine lock. A retention cut that moved delayed bodies meanwhile (found by review, 2026-12-06) could move one
/// from a table not yet copied into one already copied: in neither copy, and replay of the move found nothing to move,
/// so the message was lost after a kill -9; the other way round it was copied twice, and replay left an entry nothing
/// points at, which postponed every later cut. The cut's moves now wait for a running capture.
/// </summary>
public sealed class RelocationDuringCaptureTests
{
    private const int N = 20_000;

    [Fact]
    public async Task A_cut_started_during_a_capture_moves_no_body_until_it_ends_and_a_restart_from_it_keeps_every_delayed_message()
    {
        await using var h = await EngineHarness.StartAsync();
        long due = h.Clock.GetUtcNow().AddHours(1).ToUnixTimeMilliseconds();
        for (int i = 0; i < N; i++)
        {
            var sent = await h.Engine.SendAsync(h.Draft("late", "m" + i, deliverAt: due));
            Assert.True(sent.Error.IsOk, sent.Error.ToString());
        }
        await h.Engine.CheckpointAsync();
        long boundary = h.Engine.LogTailAddress;

        var checkpointer = h.Engine.CheckpointerForTests;
        Task<int>? cut = null;
        long tailWhileHeld = -1, tailAfterDelayed = -1;
        checkpointer.BeforePartForTests = async part =>
        {
            if (part == 0)
            {
                // The capture has taken its start address: a cut now would move every delayed body beside the copy.
                cut = Task.Run(() => h.Engine.TruncateBeforeAsync(boundary));
                var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(60);
                while (h.Engine.RelocationsHeldByCaptureForTests == 0 && DateTime.UtcNow < deadline) await Task.Delay(5);
                Assert.True(h.Engine.RelocationsHeldByCaptureForTests > 0, "the cut's first move did not wait for the capture");
                tailWhileHeld = h.Engine.LogTailAddress;
            }
            if (part == 2) tailAfterDelayed = h.Engine.LogTailAddress; // the delayed messages are copied by now
            if (part == 3)
            {
                // Still inside this capture, so before the cut can move anything: no later checkpoint gets through (the
                // cut's own after its moves, the one at shutdown), which leaves the data dir as a kill -9 right after
                // the moves would.
                checkpointer.BeforePartForTests = _ => throw new InvalidOperationException("no checkpoint after this one (a modelled kill -9)");
            }
        };
        await h.Engine.CheckpointAsync();
        long ours = h.Engine.LastCheckpointAddress;
        Assert.Equal(tailWhileHeld, tailAfterDelayed); // nothing moved while the delayed messages were copied
        await Assert.ThrowsAnyAsync<InvalidOperationException>(() => cut!); // the cut moved them, then its checkpoint failed
        Assert.True(h.Engine.LogTailAddress > tailAfterDelayed, "the cut moved nothing after the capture");

        await h.Engine.DisposeAsync();
        checkpointer.BeforePartForTests = null;
        await h.RestartAfterDeletedCheckpointAsync();
        Assert.Equal(ours, h.Engine.LastCheckpointAddress);
        Assert.Equal(N, h.Engine.DescribeState().Split('\n').Count(l => l.StartsWith("delayed @", StringComparison.Ordinal)));

        // And nothing is left that a later cut could not move.
        Assert.True(await h.Engine.TruncateBeforeAsync(h.Engine.LogTailAddress) >= 0, "a later retention cut was postponed");
    }
}
