using System.Diagnostics;

namespace HalfMsg.Broker.Core.Diagnostics;

/// <summary>
/// Runs steps under a lock and keeps, apart, the longest wait to take it and the longest hold: only a hold stalls the
/// lock's other users; a wait stalls only the one who waits. One user at a time (a checkpoint's steps).
/// </summary>
internal sealed class LockTimer(object gate)
{
    private long _longestWait, _longestHold;

    /// <summary>The longest wait to take the lock so far, in microseconds.</summary>
    public long LongestWaitMicros => _longestWait * 1_000_000 / Stopwatch.Frequency;

    /// <summary>The longest hold so far, from taking the lock to letting it go, in microseconds.</summary>
    public long LongestHoldMicros => _longestHold * 1_000_000 / Stopwatch.Frequency;

    public T Run<T>(Func<T> step)
    {
        long asked = Stopwatch.GetTimestamp(), taken, released;
        T result;
        lock (gate)
        {
            taken = Stopwatch.GetTimestamp();
            result = step();
            released = Stopwatch.GetTimestamp();
        }
        _longestWait = Math.Max(_longestWait, taken - asked);
        _longestHold = Math.Max(_longestHold, released - taken);
        return result;
    }
}
