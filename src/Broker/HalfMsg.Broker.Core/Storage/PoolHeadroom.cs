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
/// queued page write gets a worker within the spin; the old minimum comes back when the last holder leaves. (A change
/// of the minimum by other code during that window is overwritten then.)
/// </remarks>
internal static class PoolHeadroom
{
    private static readonly object Gate = new();
    private static int _holders;
    private static int _savedMinWorkers, _savedMinIo;
    private static long _raises;

    /// <summary>Times the minimum was raised so far (process-wide).</summary>
    public static long Raises => Interlocked.Read(ref _raises);

    /// <summary>Starts a window of headroom; dispose to end it.</summary>
    public static Scope Enter()
    {
        lock (Gate)
        {
            if (_holders++ == 0) ThreadPool.GetMinThreads(out _savedMinWorkers, out _savedMinIo);
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
            ThreadPool.GetMaxThreads(out int maxWorkers, out _);
            int want = (int)Math.Min(maxWorkers, ThreadPool.ThreadCount + queued + 2);
            if (want > minWorkers && ThreadPool.SetMinThreads(want, minIo)) Interlocked.Increment(ref _raises);
        }
    }

    private static void Exit()
    {
        lock (Gate)
        {
            if (--_holders == 0) ThreadPool.SetMinThreads(_savedMinWorkers, _savedMinIo);
        }
    }

    public readonly struct Scope : IDisposable
    {
        public void Dispose() => Exit();
    }
}
