using System.Diagnostics;

namespace HalfMsg.Broker.Core.Diagnostics;

/// <summary>
/// How long work waits in this process's thread-pool queue before a thread runs it: every <see cref="Interval"/> a
/// timer queues one work item (to the global queue, where socket and timer continuations go) and the item records how
/// long it waited. Counts go into power-of-two buckets of microseconds, cumulative since start, so a reader takes two
/// snapshots and compares them (<see cref="Percentile"/>). One work item per 20 ms: 50 a second, against the tens of
/// thousands a loaded broker runs, and few enough that an idle broker is not kept awake by its own sampling (every 2 ms
/// until 2026-12-04: 500 wake-ups a second, most of an idle broker's CPU; <c>bench</c> row "broker idle").
/// </summary>
public sealed class ThreadPoolDelaySampler : IDisposable
{
    /// <summary>See <see cref="MicrosHistogram.Buckets"/>.</summary>
    public const int Buckets = MicrosHistogram.Buckets;
    public static readonly TimeSpan Interval = TimeSpan.FromMilliseconds(20);

    private static readonly Lazy<ThreadPoolDelaySampler> _shared = new(() => new ThreadPoolDelaySampler(Interval));

    /// <summary>The process's sampler, started on first use.</summary>
    public static ThreadPoolDelaySampler Shared => _shared.Value;

    private readonly MicrosHistogram _delays = new();
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

    internal void Record(TimeSpan delay) => _delays.Record(delay);

    /// <summary>The cumulative counts per bucket.</summary>
    public long[] Snapshot() => _delays.Snapshot();

    /// <summary>The cumulative counts as <c>b0</c> … (for <c>/api/stats</c>).</summary>
    public Dictionary<string, long> Named() => _delays.Named();

    /// <summary>See <see cref="MicrosHistogram.Percentile"/>.</summary>
    public static double? Percentile(IReadOnlyList<long> before, IReadOnlyList<long> after, double p) => MicrosHistogram.Percentile(before, after, p);

    public void Dispose() => _timer.Dispose();
}
