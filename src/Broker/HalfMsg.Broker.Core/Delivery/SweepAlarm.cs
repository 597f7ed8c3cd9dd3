namespace HalfMsg.Broker.Core.Delivery;

/// <summary>
/// When the sweeper (lease expiries, delayed messages, the decided ids' expiry; <see cref="BrokerEngine.RunSweep"/>)
/// runs next. After each sweep it plans its next one for the earliest time anything is due, at least
/// <see cref="MinGap"/> and at most <see cref="MaxSleep"/> later; whatever becomes due before that plan
/// (<see cref="Note"/>: a lease or a delayed message added) kicks it. <see cref="Note"/>, <see cref="Sweeping"/> and
/// <see cref="Plan"/> run under the engine lock.
/// </summary>
/// <remarks>
/// Until 2026-12-04 the sweeper ran every 50 ms whatever was due: 20 wake-ups a second of an idle broker, and a
/// delayed message or an expired lease up to 50 ms late. Now an idle broker's sweeper wakes once a second, and
/// something due more than <see cref="MinGap"/> after the previous sweep is swept at its time. Under load (leases
/// ending all the time) it runs every <see cref="MinGap"/>, as before.
/// </remarks>
internal sealed class SweepAlarm
{
    /// <summary>The least time between two sweeps: a burst of short delays or leases is swept in batches.</summary>
    public static readonly TimeSpan MinGap = TimeSpan.FromMilliseconds(50);

    /// <summary>The most time between two sweeps (the decided ids' expiry has no due time of its own here).</summary>
    public static readonly TimeSpan MaxSleep = TimeSpan.FromSeconds(1);

    private static readonly long MinGapMs = (long)MinGap.TotalMilliseconds;
    private static readonly long MaxSleepMs = (long)MaxSleep.TotalMilliseconds;

    // When the sweeper will run next (Unix ms); long.MinValue while a sweep runs or is kicked: nothing then needs a kick.
    private long _plannedAtMs = long.MinValue;
    private readonly SemaphoreSlim _kick = new(0, int.MaxValue);

    /// <summary>When the sweeper will run next (Unix ms), or <see cref="long.MinValue"/> while one runs or is kicked.</summary>
    public long PlannedAtMs => _plannedAtMs;

    /// <summary>Something is due at <paramref name="dueMs"/>: wakes the sweeper if it planned to run later.</summary>
    public void Note(long dueMs)
    {
        if (dueMs >= _plannedAtMs) return;
        _plannedAtMs = long.MinValue;
        if (_kick.CurrentCount == 0) _kick.Release();
    }

    /// <summary>A sweep starts: what it adds (a renewed lease) is planned for when it ends, with no kick.</summary>
    public void Sweeping() => _plannedAtMs = long.MinValue;

    /// <summary>A sweep ended at <paramref name="nowMs"/> with the earliest due time <paramref name="nextDueMs"/>
    /// (<see cref="long.MaxValue"/> for none): plans the next one and returns how long to wait for it.</summary>
    public TimeSpan Plan(long nowMs, long nextDueMs)
    {
        long wait = nextDueMs >= nowMs + MaxSleepMs ? MaxSleepMs : Math.Max(MinGapMs, nextDueMs - nowMs);
        _plannedAtMs = nowMs + wait;
        return TimeSpan.FromMilliseconds(wait);
    }

    /// <summary>Waits until <paramref name="wait"/> passed or something became due sooner (outside the engine lock).</summary>
    public Task WaitAsync(TimeSpan wait, CancellationToken ct) => _kick.WaitAsync(wait, ct);
}
