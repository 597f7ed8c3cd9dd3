using HalfMsg.Bench;
using HalfMsg.Bench.Micro;

// Hidden verb used by the recovery bench: a child process that seeds a data dir and is then killed with SIGKILL.
if (args.Length > 0 && args[0] == "internal-seed")
    return await HalfMsg.Bench.Flows.BrokerRecoveryBench.SeedChildMainAsync(args);

// Hidden verb used by the gRPC floor row: an empty MessagingService on the broker's stack (bench/Floor).
if (args.Length > 1 && args[0] == HalfMsg.Bench.Floor.GrpcFloorServer.Verb)
    return await HalfMsg.Bench.Floor.GrpcFloorServer.MainAsync(args);

// Diagnostic probe (bench/results/*-profile.md): is the group-commit loop starved by a busy thread pool?
if (args.Length > 0 && args[0] == "diag-commit-starvation")
    return await HalfMsg.Bench.Diagnostics.CommitStarvationProbe.RunAsync(args);

// Diagnostic probe: how long a sweep or a check pass holds up sends when a lot becomes due at once (Diagnostics/LockStallProbe.cs).
if (args.Length > 0 && args[0] == "diag-lock-stall")
    return await HalfMsg.Bench.Diagnostics.LockStallProbe.RunAsync(args);

// The message index's memory per message, full at its default capacity (Micro/MessageIndexBenchmarks.cs).
if (args.Length > 0 && args[0] == "index-memory")
{
    Console.WriteLine($"message index, full (200,000 messages; each half stored, committed, delivered, acked): {MessageIndexBenchmarks.RetainedBytesPerMessage():N0} bytes per message");
    return 0;
}

BenchOptions options;
try
{
    options = BenchOptions.Parse(args);
}
catch (ArgumentException ex)
{
    Console.Error.WriteLine(ex.Message);
    Console.Error.WriteLine(BenchOptions.Usage);
    return 2;
}

using var cts = new CancellationTokenSource();
Console.CancelKeyPress += (_, e) => { e.Cancel = true; cts.Cancel(); };

switch (options.Verb)
{
    case "chart":
        // Redraw the sweep chart and the Markdown of existing results: HalfMsg.Bench chart bench/results/X-e2e.json
        foreach (var json in options.Rest)
        {
            var w = HalfMsg.Bench.Reporting.ResultWriter.Rewrite(json);
            Console.WriteLine(string.Join(Environment.NewLine, new[] { w.MarkdownPath }.Concat(w.Charts)));
        }
        return 0;
    case "runs":
        // Issue 10's ratios across full runs: HalfMsg.Bench runs bench/results/full-runs.tsv
        try
        {
            foreach (var path in HalfMsg.Bench.Reporting.RunsReport.Write(options.Rest)) Console.WriteLine(path);
        }
        catch (Exception ex) when (ex is ArgumentException or IOException or System.Text.Json.JsonException or KeyNotFoundException or InvalidOperationException)
        {
            Console.Error.WriteLine(ex.Message);
            return 2;
        }
        return 0;
    case "e2e" when options.Rest.Count > 0:
        // A mistyped flag must not start a half-hour sweep with defaults (only chart and micro take free arguments).
        Console.Error.WriteLine($"e2e does not know {string.Join(' ', options.Rest)}");
        Console.Error.WriteLine(BenchOptions.Usage);
        return 2;
    case "e2e":
        return await E2eRunner.RunAsync(options, cts.Token);
    case "micro":
        return MicroRunner.Run(options);
    case "all":
        int rc = await E2eRunner.RunAsync(options, cts.Token);
        return MicroRunner.Run(options) is var micro && rc != 0 ? rc : micro;
    case "help" or "-h" or "--help":
        Console.WriteLine(BenchOptions.Usage);
        return 0;
    default:
        Console.Error.WriteLine($"unknown verb '{options.Verb}'");
        Console.Error.WriteLine(BenchOptions.Usage);
        return 2;
}
