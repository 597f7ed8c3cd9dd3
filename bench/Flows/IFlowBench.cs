using HalfMsg.Bench.Reporting;

namespace HalfMsg.Bench.Flows;

/// <summary>
/// One end-to-end flow measured by <c>e2e</c>: a fixed number of messages (<see cref="BenchOptions.Messages"/>) sent by
/// <see cref="BenchOptions.Producers"/> producers and received by <see cref="BenchOptions.Consumers"/> consumers.
/// <para>
/// Report with the well-known keys in <see cref="Metric"/> so the table and the ratios line up:
/// <see cref="Metric.Throughput"/> (transactions or messages per second, until the last send result),
/// <see cref="Metric.Delivered"/>, and latencies via <c>result.AddLatency(Metric.Send, …)</c> /
/// <c>result.AddLatency(Metric.EndToEnd, …)</c> (use <see cref="LatencyRecorder"/>, one per producer/consumer).
/// If the flow cannot run, return <see cref="BenchResult.Skipped"/> with the reason: it is reported as
/// "not measured: reason", never as zero.
/// </para>
/// </summary>
public interface IFlowBench
{
    string Name { get; }

    Task<BenchResult> RunAsync(BenchOptions options, CancellationToken cancellationToken);
}
