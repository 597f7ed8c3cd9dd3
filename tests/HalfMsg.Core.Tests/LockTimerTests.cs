using HalfMsg.Broker.Core.Diagnostics;

namespace HalfMsg.Core.Tests;

public sealed class LockTimerTests
{
    private static void Spin(TimeSpan duration)
    {
        var sw = System.Diagnostics.Stopwatch.StartNew();
        while (sw.Elapsed < duration) Thread.SpinWait(50);
    }

    [Fact]
    public void The_wait_to_take_the_lock_is_counted_apart_from_the_hold()
    {
        var gate = new object();
        var timer = new LockTimer(gate);
        using var asking = new ManualResetEventSlim();
        int ran = 0;
        var runner = new Thread(() =>
        {
            asking.Set();
            ran = timer.Run(() => { Spin(TimeSpan.FromMilliseconds(20)); return 1; });
        });
        lock (gate)
        {
            runner.Start();
            asking.Wait();
            // The runner is about to ask for the lock: keep it 300 ms more.
            Spin(TimeSpan.FromMilliseconds(300));
        }
        runner.Join();

        Assert.Equal(1, ran);
        Assert.True(timer.LongestWaitMicros >= 150_000, $"waited {timer.LongestWaitMicros} µs behind the other holder");
        // The hold is the step's 20 ms (more if the runner was preempted on a busy machine), not the wait before it.
        Assert.InRange(timer.LongestHoldMicros, 20_000, 149_999);

        // Longest, not last: a quick uncontended step changes neither.
        long wait = timer.LongestWaitMicros, hold = timer.LongestHoldMicros;
        Assert.Equal(2, timer.Run(() => 2));
        Assert.Equal(wait, timer.LongestWaitMicros);
        Assert.Equal(hold, timer.LongestHoldMicros);
    }

    [Fact]
    public void Holds_are_kept_per_part_with_the_collectors_pause_within_the_longest()
    {
        var timer = new LockTimer(new object(), parts: 3);
        timer.Run(() => { Spin(TimeSpan.FromMilliseconds(5)); return 0; }, part: 0);
        timer.Run(() => { GC.Collect(2, GCCollectionMode.Forced, blocking: true); Spin(TimeSpan.FromMilliseconds(40)); return 0; }, part: 2);
        timer.Run(() => 0, part: 1);

        Assert.InRange(timer.LongestHoldMicrosOf(0), 5_000, timer.LongestHoldMicrosOf(2) - 1);
        Assert.InRange(timer.LongestHoldMicrosOf(2), 40_000, long.MaxValue);
        Assert.Equal(timer.LongestHoldMicrosOf(2), timer.LongestHoldMicros);
        Assert.True(timer.LongestHoldMicrosOf(1) < timer.LongestHoldMicrosOf(0));
        // The forced collection stopped the process inside the longest hold.
        Assert.InRange(timer.GcPauseInLongestHoldMicros, 1, timer.LongestHoldMicros);
    }
}
