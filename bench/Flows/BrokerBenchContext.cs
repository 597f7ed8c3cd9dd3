using HalfMsg.Bench.Reporting;

namespace HalfMsg.Bench.Flows;

/// <summary>Shared between the broker flows of one e2e run: later rows (half-load, scale, storm) refer to earlier ones.</summary>
public sealed class BrokerBenchContext
{
    /// <summary>The sync-flush peak row (also the "0 pending" baseline).</summary>
    public BenchResult? SyncPeak { get; set; }
    public BenchResult? AsyncPeak { get; set; }
    /// <summary>The concurrency sweep's broker row with the highest tx/s (its <c>inflight</c> metric says at which level):
    /// the "peak load" the half-load row is paced against.</summary>
    public BenchResult? SweepPeak { get; set; }

    /// <summary>Transactions per broker flow row: --quick 5k (CI stays under 2 minutes on 2 cores; every broker row uses
    /// the same count so the ratios between rows are fair), otherwise <see cref="BenchOptions.Messages"/>.</summary>
    public static int PrimaryMessages(BenchOptions o) => o.Quick ? Math.Min(o.Messages, 5_000) : o.Messages;

    /// <summary>Secondary rows (half-load, pending, storm, append path): the primary count, at most 50k in a full run
    /// (the half-load row runs at half the sync peak, so its duration doubles).</summary>
    public static int SecondaryMessages(BenchOptions o) => Math.Min(PrimaryMessages(o), 50_000);
}
