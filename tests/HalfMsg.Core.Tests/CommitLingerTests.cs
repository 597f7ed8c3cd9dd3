using HalfMsg.Broker.Core;
using HalfMsg.Broker.Core.Storage;

namespace HalfMsg.Core.Tests;

/// <summary>
/// The commit loop's linger (<see cref="RecordLog.CommitLingerBytes"/>): a sync commit of less than 8 KiB first yields to
/// the thread pool, a large one does not, 0 turns it off, and every waiter is still released only by a commit that
/// covers its record. Whether it pays is the bench's question (bench/results/2026-12-04-ab/commit-linger.md).
/// </summary>
public sealed class CommitLingerTests
{
    private static async Task WithLogAsync(int yields, Func<RecordLog, Task> body, FlushMode flush = FlushMode.Sync)
    {
        string dir = Path.Combine(Path.GetTempPath(), "halfmsg-linger-" + Guid.NewGuid().ToString("N")[..12]);
        var log = new RecordLog(dir, flush, TimeSpan.FromMilliseconds(5), segmentSizeBits: 22, memorySizeBits: 24, commitLingerYields: yields);
        try { await body(log); }
        finally
        {
            await log.DisposeAsync();
            Directory.Delete(dir, recursive: true);
        }
    }

    [Fact]
    public Task A_small_commit_yields_to_the_pool_first_and_still_covers_every_waiter() => WithLogAsync(2, async log =>
    {
        long yields0 = log.CommitLingerYieldsTaken, commits0 = log.Commits;
        for (int i = 0; i < 20; i++)
        {
            long address = log.Append(new byte[100]);
            await log.WaitDurableAsync(address);
            Assert.True(log.DurableUntil > address, $"released before a commit covered {address}");
        }

        long commits = log.Commits - commits0;
        Assert.InRange(commits, 20, 20); // one commit per durable append, each first yielded twice
        Assert.Equal(2 * commits, log.CommitLingerYieldsTaken - yields0);
    });

    [Fact]
    public Task A_commit_of_8_KiB_or_more_starts_at_once() => WithLogAsync(2, async log =>
    {
        await log.WaitDurableAsync(log.Append(new byte[100])); // the first commit, with its yields
        long yields0 = log.CommitLingerYieldsTaken;
        for (int i = 0; i < 5; i++)
        {
            long last = 0;
            for (int j = 0; j < 3; j++) last = log.Append(new byte[4 * 1024]);
            await log.WaitDurableAsync(last);
        }

        Assert.Equal(yields0, log.CommitLingerYieldsTaken);
    });

    [Fact]
    public Task An_idle_log_does_not_yield() => WithLogAsync(2, async log =>
    {
        await log.WaitDurableAsync(log.Append(new byte[100]));
        long yields0 = log.CommitLingerYieldsTaken;
        var (idle0, _) = log.CommitLoopIdle;
        var sw = System.Diagnostics.Stopwatch.StartNew();
        // With nothing to commit the loop sleeps (up to 200 ms a turn, until a waiter kicks it); wait for its idle time to grow.
        while (log.CommitLoopIdle.Idle - idle0 < TimeSpan.FromMilliseconds(100) && sw.Elapsed < TimeSpan.FromSeconds(30)) await Task.Delay(10);
        Assert.True(log.CommitLoopIdle.Idle - idle0 >= TimeSpan.FromMilliseconds(100), "the commit loop did not idle");
        Assert.Equal(yields0, log.CommitLingerYieldsTaken);
    });

    [Fact]
    public Task A_record_nobody_waits_for_is_committed_after_the_loop_fell_asleep() => WithLogAsync(2, async log =>
    {
        await log.WaitDurableAsync(log.Append(new byte[100]));
        // Let the loop find nothing to commit and go to sleep: its idle time grows only once a sleep has ended, so
        // after that it is in (at least) its second one.
        var (idle0, _) = log.CommitLoopIdle;
        var sw = System.Diagnostics.Stopwatch.StartNew();
        while (log.CommitLoopIdle.Idle == idle0 && sw.Elapsed < TimeSpan.FromSeconds(30)) await Task.Delay(10);
        Assert.NotEqual(idle0, log.CommitLoopIdle.Idle);

        long commits0 = log.Commits;
        long address = log.Append(new byte[100]); // a receipt-like record: nobody waits, nobody asks for a commit
        sw.Restart();
        while (log.DurableUntil <= address && sw.Elapsed < TimeSpan.FromSeconds(30)) await Task.Delay(5);
        Assert.True(log.DurableUntil > address, "a record appended while the commit loop slept was never committed");
        Assert.True(log.Commits > commits0);
    });

    [Theory]
    [InlineData(0, FlushMode.Sync)]
    [InlineData(2, FlushMode.Async)]
    public Task Zero_yields_or_async_flush_commit_at_once(int yields, FlushMode flush) => WithLogAsync(yields, async log =>
    {
        for (int i = 0; i < 10; i++) await log.WaitCommittedAsync(log.Append(new byte[100]));
        Assert.Equal(0, log.CommitLingerYieldsTaken);
    }, flush);

    [Fact]
    public void A_negative_number_of_yields_is_refused()
        => Assert.Throws<ArgumentOutOfRangeException>(() => new RecordLog(Path.Combine(Path.GetTempPath(), "unused-" + Guid.NewGuid().ToString("N")),
            FlushMode.Sync, TimeSpan.FromMilliseconds(5), commitLingerYields: -1));
}
