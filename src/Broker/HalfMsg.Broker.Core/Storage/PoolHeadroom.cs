namespace HalfMsg.Broker.Core.Storage;

/// <summary>
/// Lets the thread pool add workers at once while an append spins under the engine lock for a page write.
/// </summary>
/// <remarks>
/// FasterLog (2.6.5) spins (<c>Thread.Yield</c>) in <c>Enqueue</c> until the page it needs is written out, and so does
/// its <c>CommitAsync</c> while it enqueues its commit record. The page write runs on the thread pool (the managed
/// device's <c>Task.Run</c> and its file write). The broker appends under its engine lock, so while one append spins,
/// every other writer blocks a pool thread on that lock; the two spinners keep two cores busy, and with the CPU busy the
/// pool adds a worker only every (worker goal × 50 ms), each new worker taking the next queued writer and blocking too.
/// Seen as a hang of minutes with 64 writers on two cores (<c>BackpressureTests</c>; CI, 2026-12-04). While a holder
/// is inside, the pool's minimum is raised to its thread count plus its queue, which the pool honours at once, so the
/// queued page write gets a worker within the spin; the old minimum comes back when the last holder leaves. A minimum
/// set by other code during that window is kept: it is the one restored, or left in place if it is the current one.
/// </remarks>
internal static class PoolHeadroom
{
    private static readonly object Gate = new();
    private static int _holders;
    private static int _savedMinWorkers;
    // The minimum this class set last in the current window, or -1: restored at the end only while it is still in place.
    private static int _setMinWorkers = -1;
    private static long _raises;

    /// <summary>Windows open now (process-wide; for tests).</summary>
    internal static int Holders
    {
        get { lock (Gate) return _holders; }
    }

    /// <summary>Times the minimum was raised so far (process-wide).</summary>
    public static long Raises => Interlocked.Read(ref _raises);

    /// <summary>Starts a window of headroom; dispose to end it.</summary>
    public static Scope Enter()
    {
        lock (Gate)
        {
            if (_holders++ == 0) ThreadPool.GetMinThreads(out _savedMinWorkers, out _); // _setMinWorkers is -1 between windows
        }
        Raise();
        return new Scope();
    }

    /// <summary>Raises the minimum to the pool's threads plus its queued items (and two spare), if that is more.</summary>
    public static void Raise()
    {
        long queued = Math.Min(ThreadPool.PendingWorkItemCount, 1024);
        lock (Gate)
        {
            if (_holders == 0) return;
            ThreadPool.GetMinThreads(out int minWorkers, out int minIo);
            // Other code changed the minimum since this class set it: that is the minimum to come back to.
            if (_setMinWorkers >= 0 && minWorkers != _setMinWorkers)
            {
                _savedMinWorkers = minWorkers;
                _setMinWorkers = -1;
            }
            ThreadPool.GetMaxThreads(out int maxWorkers, out _);
            int want = (int)Math.Min(maxWorkers, ThreadPool.ThreadCount + queued + 2);
            if (want > minWorkers && ThreadPool.SetMinThreads(want, minIo))
            {
                _setMinWorkers = want;
                Interlocked.Increment(ref _raises);
            }
        }
    }

    private static void Exit()
    {
        lock (Gate)
        {
            if (--_holders != 0) return;
            ThreadPool.GetMinThreads(out int minWorkers, out int minIo);
            // Only the minimum this class set goes back; one that other code set since stays (the I/O minimum is never
            // changed here, so the current one is kept).
            if (_setMinWorkers >= 0 && minWorkers == _setMinWorkers) ThreadPool.SetMinThreads(_savedMinWorkers, minIo);
            _setMinWorkers = -1;
        }
    }

    public readonly struct Scope : IDisposable
    {
        public void Dispose() => Exit();
    }
}
