using System.Collections.Concurrent;
using System.Diagnostics;
using System.Globalization;
using System.Text;
using HalfMsg.Broker.Core.Diagnostics;
using HalfMsg.ClientCore;
using HalfMsg.ConsumerClient;
using HalfMsg.ProducerClient;
using HalfMsg.TestKit;
using Xunit.Abstractions;

namespace HalfMsg.Reliability.Tests.Edge;

/// <summary>
/// Issue 13 item 5, against the real broker process: mixed traffic (70% committed halves, 10% rolled back, 10% left for
/// check-back, 10% normal sends; a consumer group acks all but every 50th delivery, which comes back after its lease)
/// at half of the peak measured first, for <c>HALFMSG_SOAK_MINUTES</c> (default 60 with <c>HALFMSG_SLOW_TESTS=1</c>,
/// else 1.25 minutes). Every 3 s it samples broker RSS, GC heap, log size, mean commit (write + fsync) latency,
/// send p99 and the size of every in-memory index (<c>/api/stats</c>), and reports the least-squares slope of each.
/// No index may grow with time at constant work; memory, log size and latency must stay within loose bounds.
/// </summary>
[Collection("edge")]
public sealed class SoakTests(ITestOutputHelper output)
{
    private const string Topic = "soak";

    /// <summary>Indexes bounded by design by a cap that a short soak does not reach: checked against the cap instead.</summary>
    private static readonly Dictionary<string, long> CappedIndexes = new()
    {
        ["message_index"] = 200_000,          // MessageIndex capacity (the newest 200k ids)
        ["decisions_remembered"] = 1_000_000, // CoreOptions.MaxRememberedDecisions, and DecisionRetention (1 h)
        ["tags_interned"] = 100_000,          // TagInterner stops sharing past 100k distinct values
        ["client_ids_interned"] = 10_000,     // TagInterner.InternClientId starts afresh at 10k client ids
    };

    [Fact]
    public async Task Mixed_traffic_at_half_of_peak_keeps_memory_log_latency_flat_and_no_index_grows()
    {
        double minutes = ReliabilityConventions.SlowTestsEnabled ? 60 : 1.25;
        if (double.TryParse(Environment.GetEnvironmentVariable("HALFMSG_SOAK_MINUTES"), NumberStyles.Float, CultureInfo.InvariantCulture, out var m) && m > 0)
            minutes = m;
        // Retention keeps the log (and the queue index over it) at a steady size within the soak; it cuts only below the
        // last checkpoint, so checkpoints come often too.
        await using var broker = await BrokerProcess.StartAsync("--retention-size", "1MiB", "--checkpoint-every", "2000", "--queues-per-topic", "4");
        try
        {
            await RunAsync(broker, TimeSpan.FromMinutes(minutes));
        }
        catch
        {
            output.WriteLine(broker.Output[^Math.Min(broker.Output.Length, 20_000)..]);
            throw;
        }
    }

    private async Task RunAsync(BrokerProcess broker, TimeSpan soak)
    {
        var checker = new IntentChecker();
        await using var producer = await Producer.StartAsync(new ProducerOptions
        {
            Endpoints = broker.Endpoint, Topics = [Topic], TransactionChecker = checker, RequestTimeout = TimeSpan.FromSeconds(10),
        });
        await using var consumer = await SimpleConsumer.StartAsync(new SimpleConsumerOptions
        {
            Endpoints = broker.Endpoint, ConsumerGroup = "g-soak", Subscriptions = new Dictionary<string, string> { [Topic] = "*" },
            AwaitDuration = TimeSpan.FromSeconds(1), RequestTimeout = TimeSpan.FromSeconds(10),
        });
        var failures = new ConcurrentQueue<string>();
        var latencies = new ConcurrentQueue<double>();
        int next = 0;

        // Peak: closed loop, 16 workers, 10 s.
        long peakOps = 0;
        using (var peak = new CancellationTokenSource(TimeSpan.FromSeconds(10)))
        {
            await Task.WhenAll(Enumerable.Range(0, 16).Select(_ => Task.Run(async () =>
            {
                while (!peak.IsCancellationRequested)
                {
                    await OneAsync(producer, checker, Interlocked.Increment(ref next), latencies, failures);
                    Interlocked.Increment(ref peakOps);
                }
            })));
        }
        double rate = Math.Max(1, peakOps / 10.0 * 0.5);
        output.WriteLine($"peak {peakOps / 10.0:0.0} ops/s; soak at {rate:0.0} ops/s for {soak.TotalMinutes:0.#} min");
        while (latencies.TryDequeue(out _)) { }

        using var stop = new CancellationTokenSource();
        var consume = Task.Run(() => ConsumeAsync(consumer, failures, stop.Token));
        // Open loop at the target rate: each op starts on schedule, whatever the previous ones do.
        var paced = Task.Run(async () =>
        {
            var inFlight = new List<Task>();
            var clock = Stopwatch.StartNew();
            long issued = 0;
            while (!stop.IsCancellationRequested)
            {
                long due = (long)(clock.Elapsed.TotalSeconds * rate);
                for (; issued < due; issued++) inFlight.Add(OneAsync(producer, checker, Interlocked.Increment(ref next), latencies, failures));
                inFlight.RemoveAll(t => t.IsCompleted);
                await Task.Delay(10);
            }
            await Task.WhenAll(inFlight);
        });

        var samples = new List<(double Min, Dictionary<string, double> Values)>();
        var soakClock = Stopwatch.StartNew();
        long lastCommits = -1, lastCommitMicros = 0;
        var lastHolds = new Dictionary<string, long[]>();
        long lastGcPause = -1;
        while (soakClock.Elapsed < soak && failures.IsEmpty)
        {
            await Task.Delay(TimeSpan.FromSeconds(3));
            var (_, stats) = await Admin.GetJsonAsync(broker.AdminUrl + "/api/stats");
            var values = new Dictionary<string, double>
            {
                ["rss_mib"] = Admin.RssBytes(broker.Pid) / 1048576.0,
                ["gc_heap_mib"] = stats.GetProperty("gcHeapBytes").GetInt64() / 1048576.0,
                ["log_mib"] = (stats.GetProperty("logTailAddress").GetInt64() - stats.GetProperty("logBeginAddress").GetInt64()) / 1048576.0,
            };
            long commits = stats.GetProperty("logCommits").GetInt64(), commitMicros = stats.GetProperty("logCommitMicros").GetInt64();
            if (lastCommits >= 0 && commits > lastCommits) values["commit_ms"] = (commitMicros - lastCommitMicros) / 1000.0 / (commits - lastCommits);
            (lastCommits, lastCommitMicros) = (commits, commitMicros);
            var window = new List<double>();
            while (latencies.TryDequeue(out var l)) window.Add(l);
            if (window.Count > 0) values["send_p99_ms"] = Stats.Percentile(window, 0.99);
            foreach (var index in stats.GetProperty("indexes").EnumerateObject()) values["index." + index.Name] = index.Value.GetInt64();
            // The longest hold of the engine lock by a checkpoint and by a retention cut in the window (the upper bound of
            // its power-of-two bucket), to set beside the window's send p99: does a stall line up with a hold?
            // Likewise the broker's thread-pool queue delay p99, its longest log commit and its collector's pauses in the window.
            foreach (var (name, what, p) in new[] { ("checkpointLockHold", "checkpoint_hold_max", 1.0), ("retentionCutLockHold", "cut_hold_max", 1.0), ("threadPoolDelay", "pool_delay_p99", 0.99), ("logCommitDuration", "commit_max", 1.0) })
            {
                var counts = Enumerable.Range(0, MicrosHistogram.Buckets).Select(i => stats.GetProperty(name).GetProperty($"b{i}").GetInt64()).ToArray();
                if (lastHolds.TryGetValue(name, out var before) && MicrosHistogram.Percentile(before, counts, p) is double ms)
                    values[$"{what}_ms"] = ms;
                lastHolds[name] = counts;
            }
            long gcPause = stats.GetProperty("gcPauseMicros").GetInt64();
            if (lastGcPause >= 0) values["gc_pause_ms"] = (gcPause - lastGcPause) / 1000.0;
            lastGcPause = gcPause;
            samples.Add((soakClock.Elapsed.TotalMinutes, values));
        }
        stop.Cancel();
        await paced;
        await consume;
        Assert.True(failures.IsEmpty, "failures during the soak:\n" + string.Join("\n", failures.Take(10)));

        // Slopes over the samples after a warm-up (the first fifth: caches, JIT, the first retention cuts).
        var measured = samples.Skip(samples.Count / 5).ToList();
        Assert.True(measured.Count >= 10, $"only {measured.Count} samples");
        double span = measured[^1].Min - measured[0].Min;
        var report = new StringBuilder($"{measured.Count} samples over {span:0.0} min (slope per minute; first, last, mean)\n");
        var growing = new List<string>();
        foreach (var name in measured.SelectMany(s => s.Values.Keys).Distinct().Order())
        {
            var points = measured.Where(s => s.Values.ContainsKey(name)).Select(s => (s.Min, V: s.Values[name])).ToList();
            if (points.Count < 2) continue;
            var xs = points.Select(p => p.Min).ToList();
            var ys = points.Select(p => p.V).ToList();
            double slope = Stats.Slope(xs, ys);
            // Growth is judged by the Theil-Sen slope: one slow sample at the end of a 1-minute run (with other test
            // assemblies running beside it) made the least-squares slope of halves_pending read +102/min, mean 79.
            double robust = Stats.RobustSlope(xs, ys);
            double mean = points.Average(p => p.V);
            report.AppendLine(CultureInfo.InvariantCulture, $"  {name,-32} slope {slope,12:0.###}/min  Theil-Sen {robust,12:0.###}/min  first {points[0].V,10:0.##}  last {points[^1].V,10:0.##}  max {points.Max(p => p.V),10:0.##}  mean {mean,10:0.##}");
            if (!name.StartsWith("index.", StringComparison.Ordinal)) continue;
            string index = name["index.".Length..];
            if (CappedIndexes.TryGetValue(index, out long cap))
            {
                if (points.Max(p => p.V) > cap) growing.Add($"{index} above its cap {cap}");
                continue;
            }
            // Loose: what the trend adds over the measured span must stay within half the mean level (at least 64
            // entries). An index that grows with the work done (one entry per message) adds its whole level over
            // the span and fails; a bounded one wobbles around its mean. A run of under 10 minutes allows the whole
            // mean: on a busy machine its minute is still partly ramp (measured: halves_due_heap +182 with mean 349
            // over 1.0 min under stress-ng, flat over the 60-minute run), while linear growth from empty adds about
            // twice its mean over the span and still fails.
            double added = robust * span;
            double allowed = Math.Max(64, (span >= 10 ? 0.5 : 1.0) * mean);
            if (added > allowed) growing.Add($"{index}: +{added:0} over {span:0.0} min (mean {mean:0})");
        }
        // The five windows with the highest send p99, beside what the broker did in each (does a stall line up with a
        // lock hold, a collection, the thread pool or the disk?).
        report.AppendLine("  slowest windows: minute, send p99 ms | GC pause ms, checkpoint hold max ms, cut hold max ms, pool delay p99 ms, commit mean ms, commit max ms");
        foreach (var (min, v) in measured.Where(s => s.Values.ContainsKey("send_p99_ms")).OrderByDescending(s => s.Values["send_p99_ms"]).Take(5))
        {
            string Get(string key) => v.TryGetValue(key, out double x) ? x.ToString("0.##", CultureInfo.InvariantCulture) : "-";
            report.AppendLine(CultureInfo.InvariantCulture, $"    {min,5:0.00}  {Get("send_p99_ms"),7} | {Get("gc_pause_ms"),6} {Get("checkpoint_hold_max_ms"),6} {Get("cut_hold_max_ms"),6} {Get("pool_delay_p99_ms"),6} {Get("commit_ms"),6} {Get("commit_max_ms"),6}");
        }
        output.WriteLine(report.ToString());
        Assert.True(growing.Count == 0, "indexes grow with time at constant work:\n" + string.Join("\n", growing) + "\n" + report);

        double Slope(string name)
        {
            var pts = measured.Where(s => s.Values.ContainsKey(name)).ToList();
            return Stats.Slope(pts.Select(p => p.Min).ToList(), pts.Select(p => p.Values[name]).ToList());
        }
        // Memory: loose bounds a busy 2-core machine meets, which a leak of a message's worth per operation would not.
        // Only over a run long enough for the capped structures (message index and its delivery history, remembered
        // decisions) to reach their caps and for full GCs to average out: in the 1-minute CI version they still fill
        // at the rate of the work (measured +42 MiB/min at about 250 ops/s, GC heap before its next full collection),
        // so there the slopes are reported and the index assertion above is the check.
        if (span >= 10)
        {
            Assert.True(Slope("rss_mib") < 20, $"RSS grows {Slope("rss_mib"):0.0} MiB/min\n{report}");
            Assert.True(Slope("gc_heap_mib") < 20, $"GC heap grows {Slope("gc_heap_mib"):0.0} MiB/min\n{report}");
        }
        Assert.True(measured.Max(s => s.Values["log_mib"]) < 64, $"log beyond retention\n{report}");
    }

    private static async Task OneAsync(Producer producer, IntentChecker checker, int n, ConcurrentQueue<double> latencies, ConcurrentQueue<string> failures)
    {
        string key = $"s{n}";
        var message = new Message(Topic, new byte[512]) { Keys = [key] };
        try
        {
            long started = Stopwatch.GetTimestamp();
            switch (n % 10)
            {
                case 0:
                    await producer.SendAsync(message);
                    latencies.Enqueue(Stopwatch.GetElapsedTime(started).TotalMilliseconds);
                    return;
                case 1:
                case 2:
                    // 1: rolled back by the producer; 2: left undecided, the check-back commits it.
                    checker.CommitIntent[key] = n % 10 == 2;
                    var open = producer.BeginTransaction();
                    await open.SendAsync(message);
                    latencies.Enqueue(Stopwatch.GetElapsedTime(started).TotalMilliseconds);
                    if (n % 10 == 1) await open.RollbackAsync();
                    return;
                default:
                    checker.CommitIntent[key] = true;
                    var tx = producer.BeginTransaction();
                    await tx.SendAsync(message);
                    latencies.Enqueue(Stopwatch.GetElapsedTime(started).TotalMilliseconds);
                    await tx.CommitAsync();
                    return;
            }
        }
        catch (TooManyRequestsException)
        {
            // Shed at a burst; at half of peak this is rare and not a failure.
        }
        catch (Exception ex)
        {
            failures.Enqueue($"{key}: {ex.GetType().Name}: {ex.Message}");
        }
    }

    private static async Task ConsumeAsync(SimpleConsumer consumer, ConcurrentQueue<string> failures, CancellationToken ct)
    {
        long seen = 0;
        while (!ct.IsCancellationRequested)
        {
            try
            {
                var batch = await consumer.ReceiveAsync(32, TimeSpan.FromSeconds(5), ct);
                // Every 50th delivery is not acked: it comes back after its 5 s lease (the redelivery path stays busy).
                var ack = batch.Where(_ => ++seen % 50 != 0).ToList();
                await consumer.AckAsync(ack, ct);
            }
            catch (OperationCanceledException) when (ct.IsCancellationRequested)
            {
                return;
            }
            catch (Exception ex)
            {
                failures.Enqueue($"consumer: {ex.GetType().Name}: {ex.Message}");
                return;
            }
        }
    }
}
