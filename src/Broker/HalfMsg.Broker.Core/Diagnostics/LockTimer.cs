using System.Diagnostics;

namespace HalfMsg.Broker.Core.Diagnostics;

/// <summary>
/// Runs steps under a lock and keeps, apart, the longest wait to take it and the longest hold: only a hold stalls the
/// lock's other users; a wait stalls only the one who waits. Holds are also kept per part (a number the caller gives
/// each step, e.g. which state a checkpoint copies), with the collector's pauses that fell within the longest hold.
/// One user at a time (a checkpoint's steps).
/// </summary>
internal sealed class LockTimer(object gate, int parts = 1)
{
    private long _longestWait, _longestHold, _gcInLongestHold;
    private readonly long[] _longestHoldOf = new long[parts];

    /// <summary>The longest wait to take the lock so far, in microseconds.</summary>
    public long LongestWaitMicros => Micros(_longestWait);

    /// <summary>The longest hold so far, from taking the lock to letting it go, in microseconds.</summary>
    public long LongestHoldMicros => Micros(_longestHold);

    /// <summary>The longest hold of the steps of <paramref name="part"/>, in microseconds.</summary>
    public long LongestHoldMicrosOf(int part) => Micros(_longestHoldOf[part]);

    /// <summary>Of the longest hold, the time the collector stopped the process, in microseconds.</summary>
    public long GcPauseInLongestHoldMicros => Micros(_gcInLongestHold);

    private static long Micros(long ticks) => ticks * 1_000_000 / Stopwatch.Frequency;

    public T Run<T>(Func<T> step, int part = 0)
    {
        long asked = Stopwatch.GetTimestamp(), taken, released;
        TimeSpan gcBefore, gcAfter;
        T result;
        lock (gate)
        {
            taken = Stopwatch.GetTimestamp();
            gcBefore = GC.GetTotalPauseDuration();
            result = step();
            gcAfter = GC.GetTotalPauseDuration();
            released = Stopwatch.GetTimestamp();
        }
        _longestWait = Math.Max(_longestWait, taken - asked);
        long hold = released - taken;
        if (hold > _longestHold)
        {
            _longestHold = hold;
            _gcInLongestHold = (gcAfter - gcBefore).Ticks * Stopwatch.Frequency / TimeSpan.TicksPerSecond;
        }
        _longestHoldOf[part] = Math.Max(_longestHoldOf[part], hold);
        return result;
    }
}
