using System.Diagnostics;
using HalfMsg.Bench.Ceiling;
using HalfMsg.Bench.Flows;
using HalfMsg.Bench.Reporting;

namespace HalfMsg.Bench;

/// <summary><c>e2e</c>: the raw-log ceiling, then every registered flow (RabbitMQ peer, broker flows); one report.</summary>
public static class E2eRunner
{
    public static async Task<int> RunAsync(BenchOptions o, CancellationToken ct)
    {
        var started = DateTimeOffset.Now;
        var sw = Stopwatch.StartNew();
        var machine = MachineInfo.Collect();
        Console.WriteLine($"# HalfMsg bench e2e: {o}");
        Console.WriteLine($"# machine: {machine}");

        var results = new List<BenchResult>();
        Console.WriteLine($"- {RawFasterLogBench.Name} …");
        results.Add(await RawFasterLogBench.RunAsync(o, ct));
        Report(results[^1]);

        foreach (var flow in FlowRegistry.Create(o))
        {
            ct.ThrowIfCancellationRequested();
            Console.WriteLine($"- {flow.Name} …");
            BenchResult r;
            try
            {
                r = await flow.RunAsync(o, ct);
            }
            catch (Exception ex) when (!ct.IsCancellationRequested)
            {
                r = BenchResult.Skipped(flow.Name, BenchKind.Flow, $"{ex.GetType().Name}: {ex.Message}");
            }
            results.Add(r);
            Report(r);
        }

        var run = new BenchRun("e2e", started, sw.Elapsed.TotalSeconds, machine, o.ToString(), results);
        var (json, md) = ResultWriter.Write(run, o.OutDir);
        Console.WriteLine();
        Console.WriteLine(ResultWriter.ToMarkdown(run));
        Console.WriteLine($"results: {json}");
        Console.WriteLine($"         {md}");
        // Exit code: 0 as long as the ceiling was measured; "not measured" flows are reported, not failures.
        return results[0].Measured ? 0 : 1;
    }

    private static void Report(BenchResult r) =>
        Console.WriteLine(r.Measured
            ? $"  => {r.Get(Metric.Throughput):N0} msgs/s" + (r.Get($"{Metric.Send}_p99_ms") is double p99 ? $", send p99 {p99:0.000} ms" : "")
            : $"  => not measured: {r.NotMeasured}");
}
