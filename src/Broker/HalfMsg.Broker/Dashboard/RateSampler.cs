using HalfMsg.Broker.Core;

namespace HalfMsg.Broker.Dashboard;

/// <summary>
/// Samples the engine's counters every <see cref="Interval"/> into a ring of the last ten minutes, so the dashboard can
/// draw rates without a time-series database. Monitoring only: the counters are read racily.
/// </summary>
public sealed class RateSampler(BrokerEngine engine, TimeProvider? time = null) : BackgroundService
{
    public static readonly TimeSpan Interval = TimeSpan.FromSeconds(5);
    private const int Capacity = 120;   // 120 × 5 s = 10 minutes

    private readonly TimeProvider _time = time ?? TimeProvider.System;
    private readonly Queue<Sample> _samples = new();

    public DateTimeOffset StartedAt { get; } = (time ?? TimeProvider.System).GetUtcNow();

    /// <summary>Counter values at one instant. Sent = normal messages plus halves accepted.</summary>
    public readonly record struct Sample(DateTimeOffset At, long Sent, long Committed, long RolledBack, long Delivered, long Acked);

    public IReadOnlyList<Sample> Snapshot()
    {
        lock (_samples) return [.. _samples, Take()];
    }

    private Sample Take()
    {
        var m = engine.Metrics;
        return new Sample(_time.GetUtcNow(), Volatile.Read(ref m.MessagesStored) + Volatile.Read(ref m.HalvesStored),
            Volatile.Read(ref m.Commits), Volatile.Read(ref m.Rollbacks), Volatile.Read(ref m.Delivered), Volatile.Read(ref m.Acked));
    }

    protected override async Task ExecuteAsync(CancellationToken stoppingToken)
    {
        using var timer = new PeriodicTimer(Interval, _time);
        do
        {
            lock (_samples)
            {
                _samples.Enqueue(Take());
                while (_samples.Count > Capacity) _samples.Dequeue();
            }
        }
        while (await timer.WaitForNextTickAsync(stoppingToken).ConfigureAwait(false));
    }
}
