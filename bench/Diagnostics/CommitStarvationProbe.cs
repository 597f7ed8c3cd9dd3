using System.Diagnostics;
using HalfMsg.Bench.Infrastructure;
using HalfMsg.Bench.Reporting;
using HalfMsg.Broker.Core.Storage;

namespace HalfMsg.Bench.Diagnostics;

/// <summary>
/// <c>diag-commit-starvation</c>: does the group-commit loop of <see cref="RecordLog"/> slow down when the thread pool
/// it runs on is busy with other work, as it is inside the broker (Kestrel, gRPC handlers, the engine)? Runs the raw-log
/// ceiling's writers (W in flight, one outstanding append each) twice on the same machine, one right after the other:
/// (a) plain, as the ceiling does; (b) each append preceded by H thread-pool hops that each burn U µs of CPU, which is
/// roughly what a request costs the broker before it reaches the log (default 3 hops × 50 µs per append = 0.3 ms
/// CPU per transaction, the broker's measured CPU per transaction). Reports appends/s, commits/s, appends per commit,
/// durable-wait p50/p99 and the thread-pool hop delay (how long a continuation waits in the queue) sampled every 5 ms.
/// If (b) commits far less often than (a) while the CPU is not saturated, the commit loop is starved by queueing.
/// </summary>
public static class CommitStarvationProbe
{
    public static async Task<int> RunAsync(string[] args)
    {
        int writers = Arg(args, "--writers", 256), hops = Arg(args, "--hops", 3), workUs = Arg(args, "--work-us", 50), seconds = Arg(args, "--seconds", 10);
        Console.WriteLine($"# commit starvation probe: {writers} writers, {seconds} s per variant; load average {CpuMeter.LoadAverages()}");
        foreach (var (name, h) in new[] { ("plain (the ceiling)", 0), ($"{hops} pool hops × {workUs} µs CPU before each append", hops) })
        {
            var r = await RunVariantAsync(writers, h, workUs, TimeSpan.FromSeconds(seconds));
            Console.WriteLine($"- {name}: {r.AppendsPerS:N0} appends/s ({r.AppendsPerS / 2:N0} tx/s), {r.CommitsPerS:N0} commits/s, " +
                              $"{r.AppendsPerS / Math.Max(1, r.CommitsPerS):0.0} appends/commit, durable wait p50 {r.Wait.P50Ms:0.0} ms p99 {r.Wait.P99Ms:0.0} ms, " +
                              $"pool hop delay p50 {r.Hop.P50Ms:0.00} ms p99 {r.Hop.P99Ms:0.00} ms, process CPU {r.CpuCores:0.00} cores, " +
                              $"thread pool threads {r.Threads}, queue length mean {r.QueueMean:0} max {r.QueueMax:N0}; load average {CpuMeter.LoadAverages()}");
        }
        return 0;
    }

    private sealed record Result(double AppendsPerS, double CommitsPerS, LatencyStats Wait, LatencyStats Hop, double CpuCores, int Threads, double QueueMean, long QueueMax);

    private static async Task<Result> RunVariantAsync(int writers, int hops, int workUs, TimeSpan duration)
    {
        string dir = Path.Combine(Path.GetTempPath(), "halfmsg-probe-" + Guid.NewGuid().ToString("N")[..10]);
        var log = new RecordLog(dir, HalfMsg.Broker.Core.FlushMode.Sync, TimeSpan.FromMilliseconds(5), segmentSizeBits: 28, memorySizeBits: 26);
        try
        {
            using var stop = new CancellationTokenSource();
            long appends = 0;
            var recorders = Enumerable.Range(0, writers).Select(_ => new LatencyRecorder(4096)).ToArray();
            var hopRec = new LatencyRecorder(4096);
            long queueSum = 0, queueN = 0, queueMax = 0;
            // Warm-up: 2 s, not counted.
            bool measuring = false;
            var tasks = Enumerable.Range(0, writers).Select(w => Task.Run(async () =>
            {
                var record = new byte[1088];
                Random.Shared.NextBytes(record);
                while (!stop.IsCancellationRequested)
                {
                    for (int h = 0; h < hops; h++)
                    {
                        await Task.Yield();
                        Spin(workUs);
                    }
                    long t0 = Stopwatch.GetTimestamp();
                    await log.WaitForRoomAsync();
                    long a = log.Append(record);
                    await log.WaitDurableAsync(a);
                    if (Volatile.Read(ref measuring))
                    {
                        recorders[w].RecordSince(t0);
                        Interlocked.Increment(ref appends);
                    }
                }
            })).ToArray();
            var probe = Task.Run(async () =>
            {
                while (!stop.IsCancellationRequested)
                {
                    await Task.Delay(5);
                    long t0 = Stopwatch.GetTimestamp();
                    await Task.Yield();
                    if (Volatile.Read(ref measuring))
                    {
                        hopRec.RecordSince(t0);
                        long q = ThreadPool.PendingWorkItemCount;
                        queueSum += q; queueN++; queueMax = Math.Max(queueMax, q);
                    }
                }
            });
            await Task.Delay(2000);
            long commits0 = log.Commits;
            double cpu0 = CpuMeter.SelfSeconds();
            var sw = Stopwatch.StartNew();
            Volatile.Write(ref measuring, true);
            await Task.Delay(duration);
            Volatile.Write(ref measuring, false);
            double secs = sw.Elapsed.TotalSeconds;
            long commits = log.Commits - commits0;
            double cpu = CpuMeter.SelfSeconds() - cpu0;
            stop.Cancel();
            await Task.WhenAll(tasks.Append(probe));
            return new Result(Interlocked.Read(ref appends) / secs, commits / secs, LatencyRecorder.Merge(recorders), hopRec.ToStats(), cpu / secs,
                ThreadPool.ThreadCount, queueN > 0 ? (double)queueSum / queueN : 0, queueMax);
        }
        finally
        {
            await log.DisposeAsync();
            try { Directory.Delete(dir, recursive: true); } catch (Exception) { /* temp */ }
        }
    }

    private static void Spin(int microseconds)
    {
        if (microseconds <= 0) return;
        long until = Stopwatch.GetTimestamp() + microseconds * Stopwatch.Frequency / 1_000_000;
        while (Stopwatch.GetTimestamp() < until) { }
    }

    private static int Arg(string[] args, string name, int dflt)
    {
        int i = Array.IndexOf(args, name);
        return i >= 0 && i + 1 < args.Length && int.TryParse(args[i + 1], out int v) && v >= 0 ? v : dflt;
    }
}
