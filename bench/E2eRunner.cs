using System.Diagnostics;
using HalfMsg.Bench.Ceiling;
using HalfMsg.Bench.Flows;
using HalfMsg.Bench.Infrastructure;
using HalfMsg.Bench.Peers;
using HalfMsg.Bench.Reporting;

namespace HalfMsg.Bench;

/// <summary>
/// <c>e2e</c>: the concurrency sweep first (at each in-flight level: the raw-log ceiling, RabbitMQ, the broker over gRPC,
/// the broker over RocketMQ 4 Remoting with the bench's own driver, <see cref="RemotingTxFlowBench"/>), then
/// every registered flow (flush async, half-load, pending, storm, append path, recovery); one report with the sweep
/// table and chart.
/// </summary>
public static class E2eRunner
{
    public static async Task<int> RunAsync(BenchOptions o, CancellationToken ct)
    {
        var started = DateTimeOffset.Now;
        var sw = Stopwatch.StartNew();
        var machine = MachineInfo.Collect();
        string loadAtStart = CpuMeter.LoadAverages();
        Console.WriteLine($"# HalfMsg bench e2e: {o}");
        Console.WriteLine($"# machine: {machine}");
        Console.WriteLine($"# load average (1/5/15 min): {loadAtStart}");

        var results = new List<BenchResult>();
        var ctx = new BrokerBenchContext();
        var sweep = new List<SweepRow>();

        // One throwaway RabbitMQ node for every level (started once: ~6 s each time otherwise).
        RabbitMqServer? rabbit = null;
        string? rabbitError = null;
        bool rabbitWanted = !o.SkipRabbitMq && o.InFlight.Any(l => FlowRegistry.Selected(RabbitName(l)));
        if (rabbitWanted && o.RabbitMqUri is null)
        {
            Console.WriteLine("- starting a throwaway RabbitMQ node…");
            (rabbit, rabbitError) = await RabbitMqServer.TryStartAsync(ct);
            if (rabbit is not null) Console.WriteLine($"  [rabbitmq] {rabbit.NodeName} on 127.0.0.1:{rabbit.AmqpPort}, started in {rabbit.StartupTime.TotalSeconds:0.0} s");
            else Console.WriteLine($"  [rabbitmq] not started: {rabbitError}");
        }

        try
        {
            foreach (int level in o.InFlight)
            {
                ct.ThrowIfCancellationRequested();
                var lo = o with { Producers = level };
                int messages = SweepMessages(o, level);
                double? load0 = CpuMeter.LoadAverage1();
                Console.WriteLine($"## {level} in flight ({messages:N0} per system; load average {CpuMeter.LoadAverages()})");

                Console.WriteLine($"- {CeilingName(level)} …");
                var ceiling = await RawFasterLogBench.RunAsync(lo with { Messages = messages }, ct, CeilingName(level));
                results.Add(ceiling);
                Report(ceiling);

                BenchResult rmq;
                if (o.SkipRabbitMq) rmq = BenchResult.Skipped(RabbitName(level), BenchKind.Peer, "skipped (--no-rabbitmq)");
                else if (!FlowRegistry.Selected(RabbitName(level))) rmq = BenchResult.Skipped(RabbitName(level), BenchKind.Peer, "not selected (HALFMSG_BENCH_FLOWS)");
                else if (rabbit is null && o.RabbitMqUri is null) rmq = BenchResult.Skipped(RabbitName(level), BenchKind.Peer, rabbitError ?? "RabbitMQ not started");
                else
                {
                    Console.WriteLine($"- {RabbitName(level)} …");
                    rmq = await RunFlowAsync(new RabbitMqFlowBench(rabbit, RabbitName(level)), lo with { Messages = messages }, ct);
                }
                results.Add(rmq);
                Report(rmq);

                BenchResult broker;
                string brokerName = BrokerName(level);
                if (!FlowRegistry.Selected(brokerName)) broker = BenchResult.Skipped(brokerName, BenchKind.Flow, "not selected (HALFMSG_BENCH_FLOWS)");
                else
                {
                    Console.WriteLine($"- {brokerName} …");
                    int brokerMessages = o.Quick && !o.MessagesGiven ? BrokerBenchContext.PrimaryMessages(o) : messages;
                    broker = await RunFlowAsync(new BrokerTxFlowBench(ctx, new BrokerFlowSpec
                    {
                        Name = brokerName, Flush = o.Flush, Messages = brokerMessages, Producers = level,
                    }), o, ct);
                }
                results.Add(broker);
                Report(broker);

                // The same flow against an empty server on the same stack (the least the broker can spend per transaction),
                // then against that server storing every step in the broker's log and waiting where the broker waits (what
                // a broker on this stack and this log could carry at most here).
                foreach (var (floorName, withLog) in new[] { (FloorName(level), false), (FloorLogName(level), true) })
                {
                    if (!FlowRegistry.Selected(floorName)) continue;
                    Console.WriteLine($"- {floorName} …");
                    int floorMessages = o.Quick && !o.MessagesGiven ? BrokerBenchContext.PrimaryMessages(o) : messages;
                    var floor = await RunFlowAsync(new GrpcFloorBench(floorName, floorMessages, level, broker.Measured ? broker : null, ceiling, withLog), o, ct);
                    results.Add(floor);
                    Report(floor);
                }

                // Opt-in: the floor rows' raw-stub client against the broker itself, so the bench's own clients' share of
                // the broker row's rate shows (run it by naming it in HALFMSG_BENCH_FLOWS, "raw stubs").
                string rawName = RawStubsName(level);
                if (FlowRegistry.SelectedByName(rawName))
                {
                    Console.WriteLine($"- {rawName} …");
                    var raw = await RunFlowAsync(new GrpcFloorBench(rawName, messages, level, broker.Measured ? broker : null, ceiling, withLog: false, againstBroker: true), o, ct);
                    results.Add(raw);
                    Report(raw);
                }

                // The same transactional flow over the RocketMQ 4 Remoting front-end (the bench's own Remoting driver).
                BenchResult remoting;
                string remotingName = RemotingName(level);
                if (!FlowRegistry.Selected(remotingName)) remoting = BenchResult.Skipped(remotingName, BenchKind.Flow, "not selected (HALFMSG_BENCH_FLOWS)");
                else
                {
                    Console.WriteLine($"- {remotingName} …");
                    int remotingMessages = o.Quick && !o.MessagesGiven ? BrokerBenchContext.PrimaryMessages(o) : messages;
                    remoting = await RunFlowAsync(new RemotingTxFlowBench(remotingName, remotingMessages, level), o, ct);
                }
                results.Add(remoting);
                Report(remoting);

                sweep.Add(SweepRow.From(level, o.DecisionDurability, load0, ceiling, rmq, broker, remoting));
                if (broker.Measured && broker.Get(Metric.Throughput) is double tp)
                {
                    if (ctx.SweepPeak?.Get(Metric.Throughput) is not double best || tp > best) ctx.SweepPeak = broker;
                    if (level == o.Producers && o.Flush == FlushMode.Sync) ctx.SyncPeak = broker;
                }
            }
        }
        finally
        {
            if (rabbit is not null) await rabbit.DisposeAsync();
        }

        foreach (var flow in FlowRegistry.Create(o, ctx, needSyncBaseline: ctx.SyncPeak is null && !o.InFlight.Contains(o.Producers)))
        {
            ct.ThrowIfCancellationRequested();
            Console.WriteLine($"- {flow.Name} …");
            var r = await RunFlowAsync(flow, o, ct);
            results.Add(r);
            Report(r);
        }

        var run = new BenchRun("e2e", started, sw.Elapsed.TotalSeconds, machine, o.ToString(), results)
        {
            LoadAverageAtStart = loadAtStart,
            LoadAverageAtEnd = CpuMeter.LoadAverages(),
            Sweep = sweep,
            Commit = SourceCommit(),
        };
        var written = ResultWriter.Write(run, o.OutDir);
        Console.WriteLine();
        Console.WriteLine(ResultWriter.ToMarkdown(run, written.ChartFileName));
        Console.WriteLine($"results: {written.JsonPath}");
        Console.WriteLine($"         {written.MarkdownPath}");
        foreach (var c in written.Charts) Console.WriteLine($"         {c}");
        ListFullRun(o, run.Commit, written.JsonPath, results);
        // Exit code: 0 as long as the ceiling was measured at every level; "not measured" flows are reported, not failures.
        return results.Where(r => r.Kind == BenchKind.Ceiling).All(r => r.Measured) ? 0 : 1;
    }

    public static string CeilingName(int level) => $"{RawFasterLogBench.Name} @ {level} in flight";
    public static string RabbitName(int level) => $"{RabbitMqFlowBench.FlowName} @ {level} in flight";
    public static string BrokerName(int level) => $"broker tx (flush sync) @ {level} in flight";
    public static string FloorName(int level) => $"{FloorPrefix} @ {level} in flight";
    /// <summary>Name of the gRPC floor rows (select them alone with HALFMSG_BENCH_FLOWS=floor).</summary>
    public const string FloorPrefix = "gRPC floor (empty server on the broker's stack)";
    public static string FloorLogName(int level) => $"{FloorLogPrefix} @ {level} in flight";
    /// <summary>Name of the rows whose floor server also stores every step in the broker's log (HALFMSG_BENCH_FLOWS=floor
    /// selects them with the plain floor rows, "floor + log" alone).</summary>
    public const string FloorLogPrefix = "gRPC floor + log (the broker's stack and log, no engine)";
    /// <summary>Opt-in rows (only when HALFMSG_BENCH_FLOWS names them): the floor's raw-stub client against the broker.</summary>
    public static string RawStubsName(int level) => $"{RawStubsPrefix} @ {level} in flight";
    public const string RawStubsPrefix = "raw stubs against the broker";
    public static string RemotingName(int level) => $"{RemotingPrefix} @ {level} in flight";
    /// <summary>Name of the Remoting rows (select them alone with HALFMSG_BENCH_FLOWS=remoting).</summary>
    public const string RemotingPrefix = "broker remoting tx (flush sync, one-way commit)";

    /// <summary>Messages per system at one level: --messages when given; otherwise 500 per in-flight transaction, at
    /// least 20,000 and at most 200,000 (8: 20k, 64: 32k, 256: 128k), so each level runs for tens of seconds on 2
    /// cores instead of minutes at low concurrency. --quick: 20,000 (the broker row 5,000, as before).</summary>
    public static int SweepMessages(BenchOptions o, int level) =>
        o.MessagesGiven || o.Quick ? o.Messages : Math.Clamp(level * 500, 20_000, 200_000);

    private static async Task<BenchResult> RunFlowAsync(IFlowBench flow, BenchOptions o, CancellationToken ct)
    {
        try
        {
            return await flow.RunAsync(o, ct);
        }
        catch (Exception ex) when (!ct.IsCancellationRequested)
        {
            return BenchResult.Skipped(flow.Name, BenchKind.Flow, $"{ex.GetType().Name}: {ex.Message}");
        }
    }

    private static void Report(BenchResult r) =>
        Console.WriteLine(r.Measured
            ? (r.Get(Metric.Throughput) is double tp
                  ? $"  => {tp:N0} msgs/s" + (r.Get($"{Metric.Send}_p99_ms") is double p99 ? $", send p99 {p99:0.000} ms" : "") + (r.Summary is null ? "" : $"; {r.Summary}")
                  : $"  => {r.Summary}")
            : $"  => not measured: {r.NotMeasured}");

    /// <summary>The list of full runs that issue 10's targets are judged on (<c>runs</c> verb), beside the results.</summary>
    public const string FullRunsList = "full-runs.tsv";

    /// <summary>
    /// A full run (every default, every flow measured, a clean commit) is added to <see cref="FullRunsList"/> when the results
    /// directory has one, and the runs table and chart are written again: until 2026-12-05 both were done by hand after
    /// each run. Any other run is left out, with the reason said.
    /// </summary>
    private static void ListFullRun(BenchOptions o, string? commit, string jsonPath, IReadOnlyList<BenchResult> results)
    {
        string list = Path.Combine(o.OutDir, FullRunsList);
        if (!File.Exists(list)) return;
        // A run whose broker was not built measured every row but the broker's (2026-12-05 09:25, listed by mistake).
        var unmeasured = results.Where(r => !r.Measured).Select(r => r.Name).ToList();
        string? notFull = o.ToString() != BenchOptions.Parse([]).ToString() ? "options differ from the defaults"
            : !string.IsNullOrWhiteSpace(Environment.GetEnvironmentVariable("HALFMSG_BENCH_FLOWS")) ? "HALFMSG_BENCH_FLOWS selects flows"
            : unmeasured.Count > 0 ? $"{unmeasured.Count} rows not measured ({string.Join("; ", unmeasured.Take(3))}{(unmeasured.Count > 3 ? "; …" : "")})"
            : commit is null ? "no git commit known"
            : commit.EndsWith("-dirty", StringComparison.Ordinal) ? "the work tree has uncommitted changes"
            : null;
        if (notFull is not null)
        {
            Console.WriteLine($"not added to {list}: {notFull}");
            return;
        }
        string text = File.ReadAllText(list);
        File.AppendAllText(list, (text.Length == 0 || text.EndsWith('\n') ? "" : "\n") + $"{Path.GetFileName(jsonPath)}\t{commit}\n");
        Console.WriteLine($"added to {list}");
        try
        {
            foreach (var path in RunsReport.Write([list])) Console.WriteLine($"         {path}");
        }
        catch (ArgumentException ex)
        {
            Console.Error.WriteLine($"runs report not written: {ex.Message}");
        }
    }

    /// <summary>The commit of the tree the bench was built from, "+dirty" when it had changes (best effort: null without
    /// git); with the broker build named when <c>HALFMSG_BROKER_DLL</c> points elsewhere.</summary>
    private static string? SourceCommit()
    {
        string? commit = null;
        try
        {
            var psi = new System.Diagnostics.ProcessStartInfo("git", "describe --always --dirty --abbrev=7")
            {
                WorkingDirectory = AppContext.BaseDirectory,
                RedirectStandardOutput = true,
                RedirectStandardError = true,
            };
            using var git = System.Diagnostics.Process.Start(psi);
            if (git is not null)
            {
                string output = git.StandardOutput.ReadToEnd().Trim();
                git.StandardError.ReadToEnd();
                if (git.WaitForExit(10_000) && git.ExitCode == 0 && output.Length > 0) commit = output;
            }
        }
        catch (Exception ex) when (ex is System.ComponentModel.Win32Exception or InvalidOperationException or IOException)
        {
            // no git here: the run is still a run
        }
        return Environment.GetEnvironmentVariable("HALFMSG_BROKER_DLL") is { Length: > 0 } dll
            ? $"{commit ?? "?"} (broker: {dll})"
            : commit;
    }
}
