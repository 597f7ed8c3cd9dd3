using HalfMsg.Broker.Core;
using HalfMsg.Broker.Core.Storage;

namespace HalfMsg.Core.Tests;

/// <summary>
/// The commit timeout also bounds the part of a commit that never returns to us: in fast-commit mode FasterLog's
/// <c>CommitAsync</c> first enqueues its commit record, spinning on the commit loop's thread until the tail buffer has
/// room. With the device not writing and the buffer full, that spin never ended, the bound inside the commit loop was
/// never reached, and every writer waited for ever with no failure said (README, "Not done yet", until 2026-12-05).
/// </summary>
public sealed class CommitWatchdogTests
{
    [Fact]
    public async Task A_commit_stuck_inside_FasterLog_on_a_full_buffer_fails_the_log_within_the_commit_timeout()
    {
        // The device comes back when the fixture is disposed: FasterLog's spin ends, so no thread is left spinning.
        await using var f = new LogOnFaultyDevice("watchdog", memorySizeBits: 20, maxRecordSize: 32 * 1024, commitTimeout: TimeSpan.FromSeconds(2));
        var log = f.Log;
        var commitMayStart = new ManualResetEventSlim(false);
        try
        {
            var record = new byte[16 * 1024];
            await log.WaitDurableAsync(log.Append(record)); // healthy

            // The next commit waits until the buffer is full of pages the device holds, then starts: FasterLog can place
            // no commit record and spins inside CommitAsync.
            int commitsHeld = 0;
            log.BeforeCommitForTests = () => { if (Interlocked.Exchange(ref commitsHeld, 1) == 0) commitMayStart.Wait(TimeSpan.FromSeconds(60)); };
            f.Device.Fault = DeviceFault.HoldWrites;
            var appender = Task.Run(() => { while (true) log.Append(record); });
            log.RequestCommit();
            await Conditions.WaitUntil(() => Volatile.Read(ref commitsHeld) == 1 && log.AppendsThatWaited > 0 || appender.IsCompleted);
            Assert.False(appender.IsCompleted, $"the appender ended before the buffer filled: {appender.Exception}");
            commitMayStart.Set();

            // Bounded by the test only as a safety net: the log itself gives up after 2 s and one watchdog period.
            var failure = await log.Failed.WaitAsync(TimeSpan.FromSeconds(60));
            Assert.Contains("never returned", failure.Message);
            Assert.Equal(1, log.CommitsStuckInFaster);
            Assert.Same(failure, await Assert.ThrowsAsync<StorageFailureException>(() => appender.WaitAsync(TimeSpan.FromSeconds(60))));
            await Assert.ThrowsAsync<StorageFailureException>(async () => await log.WaitDurableAsync(log.TailAddress - 1));
        }
        finally
        {
            commitMayStart.Set();
        }
    }
}
