using System.Diagnostics;
using HalfMsg.Bench.Infrastructure;
using HalfMsg.Bench.Reporting;
using HalfMsg.Broker.Core;
using HalfMsg.Broker.Core.Model;
using CoreFlush = HalfMsg.Broker.Core.FlushMode;

namespace HalfMsg.Bench.Flows;

/// <summary>
/// Restart time of the broker process on a data dir holding N messages. The dir is seeded by a child process
/// (<c>HalfMsg.Bench internal-seed</c>: BrokerEngine, flush async, default periodic checkpoints) that is killed with
/// SIGKILL once its records are committed — so there is no shutdown checkpoint. Then:
/// (1) broker start after kill -9: replay from the last periodic checkpoint;
/// (2) SIGTERM (graceful, writes a checkpoint) and start again: clean restart.
/// Each: process start → <c>/health</c> 200, plus the broker's own RecoveryMilliseconds / ReplayedRecords.
/// </summary>
public sealed class BrokerRecoveryBench : IFlowBench
{
    public string Name => "broker recovery";

    private sealed record Case(int Messages, int BodyBytes, bool Kill9);

    public async Task<BenchResult> RunAsync(BenchOptions o, CancellationToken outer)
    {
        // Cases: quick 100k × 1 KiB; full 1M × 1 KiB (clean + kill -9) and 10M × 100 B (clean + kill -9).
        Case[] cases = o.Quick
            ? [new(100_000, 1024, true)]
            : [new(1_000_000, 1024, true), new(10_000_000, 100, true)];
        var result = new BenchResult
        {
            Name = Name,
            Kind = BenchKind.Flow,
            Description = "Broker process restart on a seeded data dir: " + string.Join(", ", cases.Select(c => $"{c.Messages:N0} messages × {c.BodyBytes} B")) +
                          ". Seeded by a child BrokerEngine (flush async, checkpoint every 200k records) killed with SIGKILL; " +
                          "'after kill -9' = first start on that dir (no shutdown checkpoint); 'clean' = start after a graceful SIGTERM stop.",
        };
        if (BrokerProcess.FindBrokerDll() is null)
            return BenchResult.Skipped(Name, BenchKind.Flow, "HalfMsg.Broker.dll not found");
        var summary = new List<string>();
        foreach (var c in cases)
        {
            string label = c.Messages >= 1_000_000 ? $"{c.Messages / 1_000_000}M" : $"{c.Messages / 1000}k";
            string key = $"{label}_{c.BodyBytes}B";
            using var timeout = CancellationTokenSource.CreateLinkedTokenSource(outer);
            timeout.CancelAfter(o.FlowTimeout + TimeSpan.FromMinutes(o.Quick ? 0 : 10));
            var ct = timeout.Token;
            string dir = BrokerProcess.NewDataDir();
            try
            {
                var sw = Stopwatch.StartNew();
                string? err = await SeedInChildAsync(dir, c.Messages, c.BodyBytes, ct);
                if (err is not null) { summary.Add($"{key}: not measured: {err}"); result.Notes.Add($"{key}: seeding failed: {err}"); continue; }
                result.Metrics[$"{key}_seed_s"] = sw.Elapsed.TotalSeconds;
                result.Metrics[$"{key}_log_mib"] = DirSizeMiB(dir);

                string part = $"{key} ({DirSizeMiB(dir):N0} MiB on disk):";
                // (1) after kill -9
                var (b1, e1) = await BrokerProcess.TryStartAsync(new BrokerStartOptions { DataDir = dir, DeleteDataDir = false, ReadyTimeout = TimeSpan.FromMinutes(10) }, ct);
                if (b1 is null) { summary.Add($"{key}: not measured: {e1}"); continue; }
                var s1 = await b1.GetStatsAsync(ct);
                Record(result, $"{key}_after_kill9", b1, s1);
                part += $" after kill -9 {b1.StartToReady.TotalSeconds:0.00} s to /health (recovery {Get(s1, "recoveryMilliseconds")} ms, {Get(s1, "replayedRecords")} records replayed);";
                await b1.StopAsync(TimeSpan.FromMinutes(2));
                await b1.DisposeAsync();
                // (2) clean restart
                var (b2, e2) = await BrokerProcess.TryStartAsync(new BrokerStartOptions { DataDir = dir, DeleteDataDir = false, ReadyTimeout = TimeSpan.FromMinutes(10) }, ct);
                if (b2 is null) { summary.Add(part + $" clean: not measured: {e2}"); continue; }
                var s2 = await b2.GetStatsAsync(ct);
                Record(result, $"{key}_clean", b2, s2);
                part += $" clean {b2.StartToReady.TotalSeconds:0.00} s (recovery {Get(s2, "recoveryMilliseconds")} ms, {Get(s2, "replayedRecords")} replayed)";
                if (b2.PeakRssMiB() is double rss) part += $", RSS {rss:N0} MiB";
                await b2.DisposeAsync();
                summary.Add(part);
            }
            catch (OperationCanceledException) when (!outer.IsCancellationRequested)
            {
                summary.Add($"{key}: not measured: timed out");
            }
            finally
            {
                try { Directory.Delete(dir, recursive: true); } catch (Exception) { /* temp */ }
            }
        }
        result.Summary = string.Join(" | ", summary);
        if (!result.Metrics.Keys.Any(k => k.EndsWith("_start_to_health_s", StringComparison.Ordinal)))
            result.NotMeasured = result.Summary.Length > 0 ? result.Summary : "nothing measured";
        return result;
    }

    private static string Get(Dictionary<string, double> s, string k) => s.TryGetValue(k, out double v) ? v.ToString("N0") : "?";

    private static void Record(BenchResult r, string prefix, BrokerProcess b, Dictionary<string, double> stats)
    {
        r.Metrics[$"{prefix}_start_to_health_s"] = b.StartToReady.TotalSeconds;
        if (stats.TryGetValue("recoveryMilliseconds", out double ms)) r.Metrics[$"{prefix}_recovery_ms"] = ms;
        if (stats.TryGetValue("replayedRecords", out double rr)) r.Metrics[$"{prefix}_replayed_records"] = rr;
        if (b.PeakRssMiB() is double rss) r.Metrics[$"{prefix}_peak_rss_mib"] = rss;
    }

    private static double DirSizeMiB(string dir)
    {
        try { return new DirectoryInfo(dir).EnumerateFiles("*", SearchOption.AllDirectories).Sum(f => f.Length) / 1048576.0; }
        catch (Exception) { return 0; }
    }

    /// <summary>Runs <c>HalfMsg.Bench internal-seed DIR N BODY</c> and SIGKILLs it once it printed SEEDED.</summary>
    private static async Task<string?> SeedInChildAsync(string dir, int messages, int bodyBytes, CancellationToken ct)
    {
        string self = typeof(BrokerRecoveryBench).Assembly.Location;
        var psi = new ProcessStartInfo("dotnet") { UseShellExecute = false, RedirectStandardInput = true, RedirectStandardOutput = true, RedirectStandardError = true };
        foreach (var a in new[] { self, "internal-seed", dir, messages.ToString(), bodyBytes.ToString() }) psi.ArgumentList.Add(a);
        var seeded = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var p = new Process { StartInfo = psi };
        var tail = new OutputTail();
        p.OutputDataReceived += (_, e) => { tail.Add(e.Data); if (e.Data?.StartsWith("SEEDED", StringComparison.Ordinal) == true) seeded.TrySetResult(); };
        p.ErrorDataReceived += (_, e) => tail.Add(e.Data);
        p.Start();
        p.BeginOutputReadLine();
        p.BeginErrorReadLine();
        int pid = p.Id;
        try
        {
            var exited = p.WaitForExitAsync(ct);
            var done = await Task.WhenAny(seeded.Task, exited);
            if (done != seeded.Task) return $"seeder exited early: {tail}";
            ProcessUtil.Signal(pid, ProcessUtil.SIGKILL);
            await ProcessUtil.WaitExitAsync(pid, TimeSpan.FromSeconds(10));
            return null;
        }
        finally
        {
            if (ProcessUtil.IsAlive(pid)) ProcessUtil.Signal(pid, ProcessUtil.SIGKILL);
            p.Dispose();
        }
    }

    public static int SeedWriters = int.TryParse(Environment.GetEnvironmentVariable("HALFMSG_BENCH_SEED_WRITERS"), out int w) && w > 0 ? w : 1;

    /// <summary>The child side: fill <paramref name="dir"/> with N normal messages, let the async commit cover them, print SEEDED, wait to be killed.</summary>
    public static async Task<int> SeedChildMainAsync(string[] args)
    {
        string dir = args[1];
        int n = int.Parse(args[2]);
        int bodyBytes = int.Parse(args[3]);
        var engine = await BrokerEngine.OpenAsync(new CoreOptions { DataDir = dir, Flush = CoreFlush.Async }, startBackgroundLoops: true);
        var body = new byte[bodyBytes];
        Random.Shared.NextBytes(body);
        string prefix = Guid.NewGuid().ToString("N")[..8] + "-";
        int next = -1;
        // One writer: with flush async SendAsync completes synchronously, so more in flight buys nothing; and with many
        // concurrent writers, once the log outgrows FasterLog's in-memory buffer, Enqueue spins under the engine lock on
        // several pool threads and seeding crawls (observed: 100k × 1 KiB took 66 s with 64 writers on 2 cores).
        await Task.WhenAll(Enumerable.Range(0, SeedWriters).Select(_ => Task.Run(async () =>
        {
            int i;
            while ((i = Interlocked.Increment(ref next)) < n)
            {
                var r = await engine.SendAsync(new MessageDraft
                {
                    Topic = "bench-recovery", MessageId = prefix + i, Body = body,
                    BornTimestampMs = DateTimeOffset.UtcNow.ToUnixTimeMilliseconds(), BornHost = "bench",
                });
                if (!r.IsOk) throw new InvalidOperationException($"SendAsync: {r.Error}");
            }
        })));
        // Async flush commits every 5 ms: give it time to cover the tail, then wait to be SIGKILLed (no DisposeAsync,
        // so no shutdown checkpoint).
        await Task.Delay(1500);
        Console.WriteLine($"SEEDED {n} tail={engine.LogTailAddress}");
        await Task.Delay(Timeout.Infinite);
        GC.KeepAlive(engine);
        return 0;
    }
}
