using System.Diagnostics;

namespace HalfMsg.Bench.Reporting;

/// <summary>
/// Latency samples in Stopwatch ticks. One recorder per writer (not thread-safe); merge with <see cref="Merge"/>.
/// </summary>
public sealed class LatencyRecorder(int capacity = 1024)
{
    private long[] _ticks = new long[Math.Max(16, capacity)];
    public int Count { get; private set; }

    public void Record(long ticks)
    {
        if (Count == _ticks.Length) Array.Resize(ref _ticks, _ticks.Length * 2);
        _ticks[Count++] = ticks;
    }

    /// <summary>Records the time since <paramref name="startTimestamp"/> (a <see cref="Stopwatch.GetTimestamp"/>).</summary>
    public void RecordSince(long startTimestamp) => Record(Stopwatch.GetTimestamp() - startTimestamp);

    public static LatencyStats Merge(IEnumerable<LatencyRecorder> recorders)
    {
        var list = recorders.ToList();
        var all = new long[list.Sum(r => r.Count)];
        int at = 0;
        foreach (var r in list)
        {
            Array.Copy(r._ticks, 0, all, at, r.Count);
            at += r.Count;
        }
        return LatencyStats.FromTicks(all);
    }

    public LatencyStats ToStats() => Merge([this]);
}

public sealed record LatencyStats(int Count, double P50Ms, double P90Ms, double P99Ms, double P999Ms, double MaxMs, double MeanMs)
{
    public static LatencyStats FromTicks(long[] ticks)
    {
        if (ticks.Length == 0) return new LatencyStats(0, 0, 0, 0, 0, 0, 0);
        Array.Sort(ticks);
        double toMs = 1000.0 / Stopwatch.Frequency;
        double P(double q) => ticks[Math.Clamp((int)Math.Ceiling(q * ticks.Length) - 1, 0, ticks.Length - 1)] * toMs;
        double mean = 0;
        foreach (long t in ticks) mean += t;
        mean = mean / ticks.Length * toMs;
        return new LatencyStats(ticks.Length, P(0.50), P(0.90), P(0.99), P(0.999), ticks[^1] * toMs, mean);
    }
}
