namespace HalfMsg.Bench.Reporting;

/// <summary>What a bench piece is, for the ratio columns.</summary>
public enum BenchKind { Ceiling, Peer, Flow }

/// <summary>
/// One measured (or not measured) flow. Metrics use the well-known keys in <see cref="Metric"/> where they apply,
/// so the summary table and the ratios line up across flows; any other key is kept and shown in the details.
/// A flow that could not run sets <see cref="NotMeasured"/> and no metrics: it is never reported as zero.
/// </summary>
public sealed class BenchResult
{
    public required string Name { get; init; }
    public BenchKind Kind { get; init; } = BenchKind.Flow;
    public string? Description { get; init; }
    public Dictionary<string, double> Metrics { get; } = new();
    /// <summary>Non-numeric facts of the row (e.g. <c>decision_durability</c>).</summary>
    public Dictionary<string, string> Labels { get; } = new();
    public List<string> Notes { get; } = new();
    /// <summary>Why this flow was not measured (null if it was).</summary>
    public string? NotMeasured { get; set; }
    /// <summary>One-line key figures shown in the summary table (ratios, CPU, recovery times…); optional.</summary>
    public string? Summary { get; set; }

    public bool Measured => NotMeasured is null;

    public double? Get(string key) => Metrics.TryGetValue(key, out double v) ? v : null;

    public static BenchResult Skipped(string name, BenchKind kind, string reason) =>
        new() { Name = name, Kind = kind, NotMeasured = reason };

    /// <summary>Adds p50/p90/p99/p999/max (ms) of <paramref name="stats"/> under <c>prefix_p50_ms</c> etc.</summary>
    public void AddLatency(string prefix, LatencyStats stats)
    {
        if (stats.Count == 0) return;
        Metrics[$"{prefix}_p50_ms"] = stats.P50Ms;
        Metrics[$"{prefix}_p90_ms"] = stats.P90Ms;
        Metrics[$"{prefix}_p99_ms"] = stats.P99Ms;
        Metrics[$"{prefix}_p999_ms"] = stats.P999Ms;
        Metrics[$"{prefix}_max_ms"] = stats.MaxMs;
        Metrics[$"{prefix}_mean_ms"] = stats.MeanMs;
    }
}

/// <summary>Well-known metric keys.</summary>
public static class Metric
{
    /// <summary>Transactional messages per second (for the ceiling: appends/s / 2). The headline throughput.</summary>
    public const string Throughput = "throughput_msgs_per_s";
    /// <summary>Messages delivered to consumers per second (first publish to last delivery).</summary>
    public const string Delivered = "delivered_msgs_per_s";
    /// <summary>Send (publish until the producer holds its durable result) latency prefix.</summary>
    public const string Send = "send";
    /// <summary>Publish-to-delivery latency prefix.</summary>
    public const string EndToEnd = "e2e";
    public const string Messages = "messages";
    public const string ElapsedS = "elapsed_s";
}
