using HalfMsg.Broker.Core;
using HalfMsg.Broker.Core.Storage;

namespace HalfMsg.Core.Tests;

/// <summary>
/// Closing the log ends every wait for a commit. A waiter whose commit the closing log gave up on (the final commit
/// timed out and the commit loop was cancelled in it) waited for ever: nothing completed that commit's task any more.
/// Since reads of a record not yet committed wait for its commit (<see cref="ReadBeforeCommitTests"/>), a pull racing
/// the broker's shutdown was one such waiter.
/// </summary>
public sealed class CloseWaitersTests
{
    [Fact]
    public async Task Waiters_for_a_commit_that_never_comes_end_when_the_log_closes()
    {
        await using var f = new LogOnFaultyDevice("closewait", commitTimeout: TimeSpan.FromSeconds(1));
        var log = f.Log;
        await log.WaitDurableAsync(log.Append("first"u8));
        f.Device.Fault = DeviceFault.HoldWrites; // nothing is written from here on: the next commit never completes
        long address = log.Append("never committed"u8);
        var wait = log.WaitCommittedAsync(address).AsTask();
        var read = log.ReadAsync(address).AsTask();
        await Conditions.WaitUntil(() => log.ReadsThatWaitedForCommit == 1 || read.IsCompleted);

        // Bounded by the test only as a safety net: the log gives up on its final commit after 1 s.
        await f.CloseAsync().WaitAsync(TimeSpan.FromSeconds(60));
        foreach (var waiter in new Task[] { wait, read })
        {
            var ended = await Record.ExceptionAsync(() => waiter.WaitAsync(TimeSpan.FromSeconds(60)));
            Assert.True(ended is ObjectDisposedException or StorageFailureException, $"the waiter ended with {ended?.GetType().Name ?? "no exception"}: {ended}");
        }
        // A wait begun after the close ends at once too.
        await Assert.ThrowsAnyAsync<Exception>(() => log.WaitCommittedAsync(address).AsTask().WaitAsync(TimeSpan.FromSeconds(10)));
    }
}
