using System.Buffers.Binary;
using System.Diagnostics;
using HalfMsg.Broker.Core;
using HalfMsg.Broker.Core.Storage;
using HalfMsg.Bench.Reporting;

namespace HalfMsg.Bench.Ceiling;

/// <summary>
/// The raw log ceiling: what the broker's storage layer alone can make durable on this machine with the same write
/// pattern. P concurrent writers each append its share of N records of (body + 64 B header) to a
/// <see cref="RecordLog"/> (FasterLog with the broker's exact settings and its group-commit loop, no engine, no
/// network) and, in sync mode, await durability before the next append (one outstanding append per writer, like a
/// producer awaiting its send result). Async mode: writers do not wait; the throughput counts until the last record
/// is durable. Every transaction costs the broker two appends (half + decision), hence tx/s ceiling = appends/s ÷ 2.
/// </summary>
public static class RawFasterLogBench
{
    public const int HeaderBytes = 64;
    public const string Name = "ceiling: raw FasterLog";

    private enum Variant { CommitLoop, AsyncFlush }

    public static async Task<BenchResult> RunAsync(BenchOptions o, CancellationToken ct, string? name = null)
    {
        int appends = o.Messages; // N records, as many as messages in the other flows
        int recordBytes = o.BodySize + HeaderBytes;
        var result = new BenchResult
        {
            Name = name ?? Name,
            Kind = BenchKind.Ceiling,
            Description = $"{appends:N0} appends of {recordBytes} B by {o.Producers} writers into one FasterLog " +
                          $"(page 4 MiB, memory 64 MiB, segment 256 MiB, like RecordLog), {o.Flush.ToString().ToLowerInvariant()} flush; " +
                          "tx/s ceiling = appends/s ÷ 2.",
        };
        result.Metrics["inflight"] = o.Producers;
        try
        {
            var variants = o.Flush == FlushMode.Sync
                ? new[] { Variant.CommitLoop }
                : new[] { Variant.AsyncFlush };
            VariantResult? best = null;
            foreach (var v in variants)
            {
                using var timeout = CancellationTokenSource.CreateLinkedTokenSource(ct);
                timeout.CancelAfter(o.FlowTimeout);
                var r = await RunVariantAsync(v, appends, recordBytes, o.Producers, timeout.Token);
                string key = v switch { Variant.CommitLoop => "commit_loop", _ => "async_flush" };
                result.Metrics[$"{key}_appends_per_s"] = r.AppendsPerSecond;
                result.Notes.Add($"{key}: {r.AppendsPerSecond:N0} appends/s, p50 {r.Latency.P50Ms:0.000} ms, p99 {r.Latency.P99Ms:0.000} ms, " +
                                 $"{r.Commits:N0} commits ({(r.Commits > 0 ? (double)appends / r.Commits : 0):0.0} appends/commit), {r.Elapsed.TotalSeconds:0.00} s");
                Console.WriteLine($"  [ceiling] {result.Notes[^1]}");
                if (best is null || r.AppendsPerSecond > best.AppendsPerSecond) best = r with { Name = key };
            }
            result.Metrics["appends_per_s"] = best!.AppendsPerSecond;
            result.Metrics[Metric.Throughput] = best.AppendsPerSecond / 2;
            result.Metrics[Metric.Messages] = appends;
            result.Metrics["record_bytes"] = recordBytes;
            result.Metrics["appends_per_commit"] = best.Commits > 0 ? (double)appends / best.Commits : 0;
            result.Metrics["mib_per_s"] = best.AppendsPerSecond * recordBytes / (1024.0 * 1024.0);
            result.Metrics[Metric.ElapsedS] = best.Elapsed.TotalSeconds;
            result.Metrics["client_cpu_s"] = best.CpuSeconds;
            result.Metrics["client_cpu_ms_per_tx"] = best.CpuSeconds * 1000 / (appends / 2.0);
            result.AddLatency(Metric.Send, best.Latency);
            result.Notes.Add($"reported variant: {best.Name}");
        }
        catch (OperationCanceledException) when (!ct.IsCancellationRequested)
        {
            result.NotMeasured = $"timed out after {o.FlowTimeout.TotalSeconds:0} s";
        }
        catch (Exception ex) when (ex is not OperationCanceledException)
        {
            result.NotMeasured = $"{ex.GetType().Name}: {ex.Message}";
        }
        return result;
    }

    private sealed record VariantResult(string Name, double AppendsPerSecond, LatencyStats Latency, long Commits, TimeSpan Elapsed, double CpuSeconds);

    private static async Task<VariantResult> RunVariantAsync(Variant variant, int appends, int recordBytes, int writers, CancellationToken ct)
    {
        string dir = Path.Combine(Path.GetTempPath(), "halfmsg-ceiling-" + Guid.NewGuid().ToString("N")[..12]);
        // The broker's own storage class without the broker: FasterLog with exactly the broker's settings and the same
        // group-commit loop (RecordLog), so the ceiling and the broker differ only by the engine and the network.
        var log = new RecordLog(dir, variant == Variant.AsyncFlush ? HalfMsg.Broker.Core.FlushMode.Async : HalfMsg.Broker.Core.FlushMode.Sync, TimeSpan.FromMilliseconds(5),
            segmentSizeBits: 28, memorySizeBits: 26);
        try
        {
            // Warm-up (JIT, first segment, first commits): not measured.
            int warm = Math.Min(2_000, Math.Max(100, appends / 20));
            await RunWritersAsync(log, warm, recordBytes, writers, recorders: null, ct);
            await log.CommitNowAsync(ct);
            long commitsBefore = log.Commits;

            var recorders = Enumerable.Range(0, writers).Select(_ => new LatencyRecorder(appends / writers + 1)).ToArray();
            double cpu0 = Infrastructure.CpuMeter.SelfSeconds();
            var sw = Stopwatch.StartNew();
            await RunWritersAsync(log, appends, recordBytes, writers, recorders, ct);
            await log.CommitNowAsync(ct); // async mode: until the last one is durable
            sw.Stop();

            return new VariantResult(variant.ToString(), appends / sw.Elapsed.TotalSeconds, LatencyRecorder.Merge(recorders),
                log.Commits - commitsBefore, sw.Elapsed, Infrastructure.CpuMeter.SelfSeconds() - cpu0);
        }
        finally
        {
            await log.DisposeAsync();
            try { Directory.Delete(dir, recursive: true); } catch (Exception) { /* temp */ }
        }
    }

    private static Task RunWritersAsync(RecordLog log, int total, int recordBytes, int writers, LatencyRecorder[]? recorders, CancellationToken ct)
    {
        var tasks = new Task[writers];
        for (int w = 0; w < writers; w++)
        {
            int writer = w;
            int count = total / writers + (writer < total % writers ? 1 : 0);
            tasks[w] = Task.Run(async () =>
            {
                var record = new byte[recordBytes];
                Random.Shared.NextBytes(record);
                var rec = recorders?[writer];
                for (int i = 0; i < count; i++)
                {
                    ct.ThrowIfCancellationRequested();
                    BinaryPrimitives.WriteInt32LittleEndian(record, writer);
                    BinaryPrimitives.WriteInt64LittleEndian(record.AsSpan(4), i);
                    long start = Stopwatch.GetTimestamp();
                    await log.WaitForRoomAsync(ct);
                    long address = log.Append(record);
                    await log.WaitDurableAsync(address, ct); // completes at once in async mode
                    rec?.RecordSince(start);
                }
            }, ct);
        }
        return Task.WhenAll(tasks);
    }
}
