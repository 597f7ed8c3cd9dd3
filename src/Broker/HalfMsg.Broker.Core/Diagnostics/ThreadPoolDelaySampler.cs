using System.Diagnostics;

namespace HalfMsg.Broker.Core.Diagnostics;

/// <summary>
/// How long work waits in this process's thread-pool queue before a thread runs it: every <see cref="Interval"/> a
/// timer queues one work item (to the global queue, where socket and timer continuations go) and the item records how
/// long it waited. Counts go into power-of-two buckets of microseconds, cumulative since start, so a reader takes two
/// snapshots and compares them (<see cref="Percentile"/>). One work item per 20 ms: 50 a second, against the tens of
/// thousands a loaded broker runs. While the pool runs little else (fewer than <see cref="BusyItemsPerSecond"/> other
/// work items a second) it samples every <see cref="IdleInterval"/> instead, and goes back to every 20 ms at the first
/// tick that finds the pool busy: so an idle broker is not kept awake by its own sampling, and the samples describe
/// the pool mostly while it works. (Every 2 ms until 2026-12-04, then every 20 ms whatever the load: a timer callback
/// and a sample item each time, most of an idle broker's thread-pool work; <c>bench</c> row "broker idle".)
/// </summary>
public sealed class ThreadPoolDelaySampler : IDisposable
{
    /// <summary>See <see cref="MicrosHistogram.Buckets"/>.</summary>
    public const int Buckets = MicrosHistogram.Buckets;
    public static readonly TimeSpan Interval = TimeSpan.FromMilliseconds(20);
    public static readonly TimeSpan IdleInterval = TimeSpan.FromMilliseconds(200);

    /// <summary>Other work items a second (besides the sampler's own two per tick) from which the pool counts as busy.</summary>
    public const double BusyItemsPerSecond = 200;

    private static readonly Lazy<ThreadPoolDelaySampler> _shared = new(() => new ThreadPoolDelaySampler(Interval, IdleInterval));

    /// <summary>The process's sampler, started on first use.</summary>
    public static ThreadPoolDelaySampler Shared => _shared.Value;

    private readonly MicrosHistogram _delays = new();
    private readonly Timer _timer;
    private readonly TimeSpan _interval;
    private readonly TimeSpan _idleInterval;
    private readonly Func<long> _completedItems;
    private readonly object _tick = new();
    private long _lastCompleted;
    private long _lastTickAt;
    private TimeSpan _current;
    private bool _disposed;

    /// <param name="interval">Time between samples while the pool is busy (<see cref="Timeout.InfiniteTimeSpan"/>: none).</param>
    /// <param name="idleInterval">Time between samples while it is not; the same as <paramref name="interval"/> when not given.</param>
    /// <param name="completedItems">The pool's completed work items so far (tests give their own).</param>
    public ThreadPoolDelaySampler(TimeSpan interval, TimeSpan? idleInterval = null, Func<long>? completedItems = null)
    {
        _interval = _current = interval;
        _idleInterval = idleInterval ?? interval;
        _completedItems = completedItems ?? (static () => ThreadPool.CompletedWorkItemCount);
        _lastCompleted = _completedItems();
        _lastTickAt = Stopwatch.GetTimestamp();
        // Started once the field is set: a tick may come before the constructor returns (its thread descheduled for an
        // interval on a busy machine), and until 2026-12-05 such a tick found no timer to change and its exception,
        // thrown on a timer thread, ended the process (a stressed CI round's test host, so a broker too).
        _timer = new Timer(static s => ((ThreadPoolDelaySampler)s!).Sample(), this, Timeout.InfiniteTimeSpan, Timeout.InfiniteTimeSpan);
        _timer.Change(interval, interval);
    }

    /// <summary>Ticks that failed (and were dropped): a diagnostic never ends the process.</summary>
    public long FailedTicks => Interlocked.Read(ref _failedTicks);
    private long _failedTicks;

    /// <summary>The time between samples now: <c>interval</c> while the pool is busy, <c>idleInterval</c> while not.</summary>
    public TimeSpan CurrentInterval { get { lock (_tick) return _current; } }

    private void Sample()
    {
        try
        {
            Tick();
        }
        catch (Exception)
        {
            // An exception on a timer thread is unhandled: it would end the process, for a measurement.
            Interlocked.Increment(ref _failedTicks);
        }
    }

    private void Tick()
    {
        long queued = Stopwatch.GetTimestamp();
        ThreadPool.UnsafeQueueUserWorkItem(static s => s.Sampler.Record(Stopwatch.GetElapsedTime(s.Queued)), (Sampler: this, Queued: queued), preferLocal: false);
        if (_idleInterval == _interval) return;

        lock (_tick)
        {
            long completed = _completedItems();
            double seconds = Stopwatch.GetElapsedTime(_lastTickAt, queued).TotalSeconds;
            // This tick's callback and the previous tick's sample item are the sampler's own.
            bool busy = seconds > 0 && (completed - _lastCompleted - 2) / seconds >= BusyItemsPerSecond;
            _lastCompleted = completed;
            _lastTickAt = queued;
            TimeSpan next = busy ? _interval : _idleInterval;
            if (next == _current || _disposed) return;
            _current = next;
            _timer.Change(next, next);
        }
    }

    internal void Record(TimeSpan delay) => _delays.Record(delay);

    /// <summary>The cumulative counts per bucket.</summary>
    public long[] Snapshot() => _delays.Snapshot();

    /// <summary>The cumulative counts as <c>b0</c> … (for <c>/api/stats</c>).</summary>
    public Dictionary<string, long> Named() => _delays.Named();

    /// <summary>See <see cref="MicrosHistogram.Percentile"/>.</summary>
    public static double? Percentile(IReadOnlyList<long> before, IReadOnlyList<long> after, double p) => MicrosHistogram.Percentile(before, after, p);

    public void Dispose()
    {
        lock (_tick) _disposed = true;
        _timer.Dispose();
    }
}
