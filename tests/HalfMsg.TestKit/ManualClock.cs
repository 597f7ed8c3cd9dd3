namespace HalfMsg.TestKit;

/// <summary>
/// A clock that only moves when told to, so timeouts are tested in milliseconds. Wall time and the timestamp move
/// together (<see cref="TimeProvider.GetElapsedTime(long)"/> measures clock moves, not real time), and reads and moves
/// are safe from any thread.
/// </summary>
public sealed class ManualClock(DateTimeOffset start) : TimeProvider
{
    /// <summary>The default start, a fixed instant so test output is the same on every run.</summary>
    public static readonly DateTimeOffset DefaultStart = new(2026, 11, 21, 12, 0, 0, TimeSpan.Zero);

    private long _ticks = start.UtcTicks;

    public ManualClock() : this(DefaultStart) { }

    public override DateTimeOffset GetUtcNow() => new(Interlocked.Read(ref _ticks), TimeSpan.Zero);

    public override long GetTimestamp() => Interlocked.Read(ref _ticks);

    public override long TimestampFrequency => TimeSpan.TicksPerSecond;

    public void Advance(TimeSpan by) => Interlocked.Add(ref _ticks, by.Ticks);
}
