using System.Diagnostics;

namespace HalfMsg.Broker.Core.Diagnostics;

/// <summary>
/// How long work waits in this process's thread-pool queue before a thread runs it: every <see cref="Interval"/> a
/// timer queues one work item (to the global queue, where socket and timer continuations go) and the item records how
/// long it waited. Counts go into power-of-two buckets of microseconds, cumulative since start, so a reader takes two
/// snapshots and compares them (<see cref="Percentile"/>). One work item per 2 ms: about 500 a second, against the
/// tens of thousands a loaded broker runs.
/// </summary>
public sealed class ThreadPoolDelaySampler : IDisposable
{
    /// <summary>Bucket 0 counts delays under 1 µs; bucket i (1..) counts [2^(i-1), 2^i) µs; the last one everything longer.</summary>
    public const int Buckets = 25;
    public static readonly TimeSpan Interval = TimeSpan.FromMilliseconds(2);

    private static readonly Lazy<ThreadPoolDelaySampler> _shared = new(() => new ThreadPoolDelaySampler(Interval));

    /// <summary>The process's sampler, started on first use.</summary>
    public static ThreadPoolDelaySampler Shared => _shared.Value;

    private readonly long[] _counts = new long[Buckets];
    private readonly Timer _timer;

    public ThreadPoolDelaySampler(TimeSpan interval)
    {
        _timer = new Timer(static s => ((ThreadPoolDelaySampler)s!).Sample(), this, interval, interval);
    }

    private void Sample()
    {
        long queued = Stopwatch.GetTimestamp();
        ThreadPool.UnsafeQueueUserWorkItem(static s => s.Sampler.Record(Stopwatch.GetElapsedTime(s.Queued)), (Sampler: this, Queued: queued), preferLocal: false);
    }

    internal void Record(TimeSpan delay)
    {
        long us = (long)delay.TotalMicroseconds;
        int bucket = us <= 0 ? 0 : Math.Min(Buckets - 1, 64 - System.Numerics.BitOperations.LeadingZeroCount((ulong)us));
        Interlocked.Increment(ref _counts[bucket]);
    }

    /// <summary>The cumulative counts per bucket.</summary>
    public long[] Snapshot()
    {
        var copy = new long[Buckets];
        for (int i = 0; i < Buckets; i++) copy[i] = Interlocked.Read(ref _counts[i]);
        return copy;
    }

    /// <summary>Upper bound of the bucket holding the <paramref name="p"/> quantile (0..1) of the samples taken between two
    /// snapshots, in milliseconds; null when none was taken.</summary>
    public static double? Percentile(IReadOnlyList<long> before, IReadOnlyList<long> after, double p)
    {
        long total = 0;
        for (int i = 0; i < Buckets; i++) total += after[i] - before[i];
        if (total <= 0) return null;
        long rank = (long)Math.Ceiling(p * total), seen = 0;
        for (int i = 0; i < Buckets; i++)
        {
            seen += after[i] - before[i];
            if (seen >= rank) return (1L << i) / 1000.0; // bucket i holds delays below 2^i µs
        }
        return (1L << (Buckets - 1)) / 1000.0;
    }

    public void Dispose() => _timer.Dispose();
}
