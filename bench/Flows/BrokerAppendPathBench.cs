using System.Diagnostics;
using HalfMsg.Bench.Ceiling;
using HalfMsg.Bench.Reporting;
using HalfMsg.Broker.Core;
using HalfMsg.Broker.Core.Model;
using CoreFlush = HalfMsg.Broker.Core.FlushMode;
using CoreResolution = HalfMsg.Broker.Core.Model.TransactionResolution;

namespace HalfMsg.Bench.Flows;

/// <summary>
/// The broker append path without the network: <see cref="BrokerEngine"/> in this process on a temp dir, flush sync,
/// P concurrent writers each doing SendHalfAsync + EndTransactionAsync(Commit) (two durable records per tx), against the
/// raw FasterLog ceiling with the same writers and 2 appends per tx. Target: ≥ 50% of the ceiling.
/// </summary>
public sealed class BrokerAppendPathBench : IFlowBench
{
    public string Name => "broker append path (in-process engine, sync)";

    public async Task<BenchResult> RunAsync(BenchOptions o, CancellationToken outer)
    {
        int n = BrokerBenchContext.SecondaryMessages(o);
        int body = o.BodySize;
        var result = new BenchResult
        {
            Name = Name,
            Kind = BenchKind.Flow,
            Description = $"BrokerEngine in-process (flush sync, no network): {n:N0} tx of {body} B by {o.Producers} writers, " +
                          "each SendHalfAsync + EndTransactionAsync(Commit); compared with the raw FasterLog ceiling re-measured " +
                          $"right after with the same {o.Producers} writers and {2 * n:N0} appends (2 per tx). send = SendHalfAsync, e2e column unused.",
        };
        using var timeout = CancellationTokenSource.CreateLinkedTokenSource(outer);
        timeout.CancelAfter(o.FlowTimeout);
        var ct = timeout.Token;
        string dir = BrokerProcess.NewDataDir();
        try
        {
            var engine = await BrokerEngine.OpenAsync(new CoreOptions { DataDir = dir, Flush = CoreFlush.Sync }, startBackgroundLoops: true, ct: ct);
            double tps;
            LatencyStats halfStats, commitStats;
            await using (engine)
            {
                var payload = new byte[body];
                Random.Shared.NextBytes(payload);
                string prefix = Guid.NewGuid().ToString("N")[..8] + "-";
                async Task Writers(int total, LatencyRecorder[]? half, LatencyRecorder[]? commit, string tag)
                {
                    int next = -1;
                    await Task.WhenAll(Enumerable.Range(0, o.Producers).Select(w => Task.Run(async () =>
                    {
                        int i;
                        while ((i = Interlocked.Increment(ref next)) < total)
                        {
                            string id = prefix + tag + i;
                            long t0 = Stopwatch.GetTimestamp();
                            var r = await engine.SendHalfAsync(new MessageDraft
                            {
                                Topic = "bench-append", MessageId = id, Body = payload,
                                BornTimestampMs = DateTimeOffset.UtcNow.ToUnixTimeMilliseconds(), BornHost = "bench",
                            }, "bench-append", "bench", null, ct);
                            if (!r.IsOk) throw new InvalidOperationException($"SendHalfAsync: {r.Error}");
                            long t1 = Stopwatch.GetTimestamp();
                            var d = await engine.EndTransactionAsync(r.TransactionId, id, CoreResolution.Commit, DecisionSource.Client, ct);
                            if (!d.IsOk) throw new InvalidOperationException($"EndTransactionAsync: {d.Error}");
                            half?[w].Record(t1 - t0);
                            commit?[w].RecordSince(t1);
                        }
                    }, ct)));
                }
                await Writers(Math.Min(1_000, Math.Max(100, n / 20)), null, null, "w"); // warm-up
                var half = Enumerable.Range(0, o.Producers).Select(_ => new LatencyRecorder(n / o.Producers + 16)).ToArray();
                var commit = Enumerable.Range(0, o.Producers).Select(_ => new LatencyRecorder(n / o.Producers + 16)).ToArray();
                var sw = Stopwatch.StartNew();
                await Writers(n, half, commit, "m");
                sw.Stop();
                tps = n / sw.Elapsed.TotalSeconds;
                halfStats = LatencyRecorder.Merge(half);
                commitStats = LatencyRecorder.Merge(commit);
            }

            var ceiling = await RawFasterLogBench.RunAsync(o with { Messages = 2 * n, Flush = FlushMode.Sync }, ct);
            result.Metrics[Metric.Throughput] = tps;
            result.Metrics["appends_per_s"] = 2 * tps;
            result.Metrics[Metric.Messages] = n;
            result.AddLatency(Metric.Send, halfStats);
            result.AddLatency("commit", commitStats);
            if (ceiling.Measured && ceiling.Get(Metric.Throughput) is double ctps)
            {
                result.Metrics["ceiling_tx_per_s_same_writers"] = ctps;
                result.Metrics["ratio_vs_ceiling"] = tps / ctps;
                result.Summary = $"{tps / ctps:P0} of the raw ceiling re-measured with the same writers ({ctps:N0} tx/s = {2 * ctps:N0} appends/s); target ≥ 50%: {(tps / ctps >= 0.5 ? "met" : "NOT met")}";
                foreach (var note in ceiling.Notes) result.Notes.Add("ceiling " + note);
            }
            else
            {
                result.Summary = $"ceiling not measured: {ceiling.NotMeasured}";
            }
        }
        catch (OperationCanceledException) when (!outer.IsCancellationRequested)
        {
            return BenchResult.Skipped(Name, BenchKind.Flow, $"timed out after {o.FlowTimeout.TotalSeconds:0} s");
        }
        finally
        {
            try { Directory.Delete(dir, recursive: true); } catch (Exception) { /* temp */ }
        }
        return result;
    }
}
