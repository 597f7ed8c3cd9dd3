using System.Diagnostics;
using HalfMsg.Bench.Infrastructure;
using HalfMsg.Bench.Reporting;
using HalfMsg.Broker.Core;
using HalfMsg.Broker.Core.Model;
using HalfMsg.Broker.Core.Transactions;
using HalfMsg.TestKit;

namespace HalfMsg.Bench.Diagnostics;

/// <summary>
/// <c>diag-lock-stall</c>: how long the engine's background passes hold up everything else when a lot becomes due at the
/// same instant. Two scenes on an engine of its own (fake clock, flush sync, no background loops):
/// (a) N delay messages due together, released by one sweep as the sweeper loop runs it;
/// (b) N halves out of check-backs, parked by one check pass;
/// (c) N pending halves, listed ten times as a page of the admin API and a <c>/metrics</c> scrape ask for them;
/// and, before (c), the writer alone for 500 ms after the same setup: the longest send without any pass;
/// (d) a scrape's two per-group gauges over 9,000 consumer groups.
/// Meanwhile one writer sends 1-byte messages to another topic, one at a time, and the probe reports its latencies
/// (the stall a producer sees), the pass's time and the collector's pauses within it.
/// </summary>
public static class LockStallProbe
{
    public static async Task<int> RunAsync(string[] args)
    {
        int n = Arg(args, "--messages", 400_000);
        Console.WriteLine($"# lock-stall probe: {n:N0} entries due at once; load average {CpuMeter.LoadAverages()}");
        await SceneAsync("delay messages released by one sweep", n, async (engine, clock, count) =>
        {
            long at = clock.GetUtcNow().AddMinutes(1).ToUnixTimeMilliseconds();
            for (int i = 0; i < count; i += 1000)
            {
                var batch = Enumerable.Range(0, Math.Min(1000, count - i)).Select(_ => Draft(clock, "delayed", at)).ToArray();
                foreach (var r in await engine.SendBatchAsync(batch)) if (!r.IsOk) throw new InvalidOperationException(r.Error.ToString());
            }
            clock.Advance(TimeSpan.FromMinutes(2));
            return async () => { await engine.RunSweepAsLoopDoesAsync(); return $"{engine.ListTopics().Single(t => t.Name == "delayed").Queues.Sum(q => q.MaxOffset):N0} released"; };
        });
        await SceneAsync("halves parked by one check pass", n, async (engine, clock, count) =>
        {
            var channel = new CountingChannel();
            engine.Producers.Register("orders", channel);
            for (int i = 0; i < count; i += 1000)
            {
                var batch = Enumerable.Range(0, Math.Min(1000, count - i)).Select(_ => new HalfDraft(Draft(clock, "orders", null), "orders", channel.ClientId, null)).ToArray();
                foreach (var r in await engine.SendHalvesAsync(batch)) if (!r.Error.IsOk) throw new InvalidOperationException(r.Error.ToString());
            }
            clock.Advance(TimeSpan.FromMinutes(2));
            await engine.RunCheckPassAsync(); // the one check-back each is allowed (TransactionCheckMax = 1)
            clock.Advance(TimeSpan.FromMinutes(2));
            return async () => { await engine.RunCheckPassAsync(); return $"{engine.Metrics.Parked:N0} parked"; };
        });
        await SceneAsync("nothing for 500 ms (the writer alone, after storing the pending halves: the baseline)", n, async (engine, clock, count) =>
        {
            await StoreHalvesAsync(engine, clock, count);
            return async () => { await Task.Delay(500); return "nothing"; };
        });
        await SceneAsync("ten admin pages and /metrics reads of the pending halves", n, async (engine, clock, count) =>
        {
            await StoreHalvesAsync(engine, clock, count);
            return async () =>
            {
                // What GET /api/transactions/pending?limit=100 and a scrape's pending count, parked count and oldest
                // half ask the engine for (the calls AdminApi and BrokerMeter made before 2026-12-05), ten times, 20 ms
                // apart (requests come one by one); the longest call is reported too.
                int total = 0;
                double longest = 0;
                for (int i = 0; i < 10; i++)
                {
                    long t0 = Stopwatch.GetTimestamp();
                    engine.ListTransactions(parked: false, -1, 100, out total);
                    engine.ListTransactions(parked: false, long.MaxValue, 1, out _);
                    engine.ListTransactions(parked: true, long.MaxValue, 1, out _);
                    engine.ListTransactions(parked: false, -1, 1, out _);
                    longest = Math.Max(longest, Stopwatch.GetElapsedTime(t0).TotalMilliseconds);
                    await Task.Delay(20);
                }
                return $"{total:N0} pending listed (the longest of the ten: {longest:0.0} ms)";
            };
        });
        await SceneAsync("a /metrics scrape's two per-group gauges with 9,000 consumer groups", n, async (engine, clock, count) =>
        {
            // 9,000 groups (--max-consumer-groups is 10,000), each on one of 90 topics.
            for (int t = 0; t < 90; t++) await engine.SendAsync(Draft(clock, $"topic-{t}", null));
            await Parallel.ForEachAsync(Enumerable.Range(0, 9_000), new ParallelOptions { MaxDegreeOfParallelism = 8 }, async (g, ct) =>
            {
                var r = await engine.ReceiveAsync(new ReceiveRequest
                {
                    ConsumerGroup = $"group-{g}", Topic = $"topic-{g % 90}", BatchSize = 1, InvisibleDuration = TimeSpan.FromMinutes(1),
                }, ct);
                if (!r.IsOk && r.Error.Status != BrokerStatus.MessageNotFound) throw new InvalidOperationException(r.Error.ToString());
            });
            return () => Task.Run(() =>
            {
                // What BrokerMeter's rocketmq_consumer_lag_messages and rocketmq_consumer_inflight_messages do at a scrape.
                int groups = 0;
                for (int gauge = 0; gauge < 2; gauge++)
                {
                    groups = 0;
                    foreach (string group in engine.ListTopics().SelectMany(t => t.ConsumerGroups).Distinct(StringComparer.Ordinal))
                        if (engine.FindGroup(group) is not null) groups++;
                }
                return $"{groups:N0} groups read twice";
            });
        });
        return 0;
    }

    private static async Task SceneAsync(string name, int n, Func<BrokerEngine, ManualClock, int, Task<Func<Task<string>>>> prepare)
    {
        var clock = new ManualClock();
        var options = new CoreOptions
        {
            DataDir = Path.Combine(Path.GetTempPath(), "halfmsg-stall-" + Guid.NewGuid().ToString("N")[..10]),
            Flush = HalfMsg.Broker.Core.FlushMode.Sync, TransactionCheckMax = 1, TransactionTimeout = TimeSpan.FromSeconds(6),
        };
        try
        {
            await using var engine = await BrokerEngine.OpenAsync(options, clock, startBackgroundLoops: false);
            var pass = await prepare(engine, clock, n);
            using var stop = new CancellationTokenSource();
            var sends = new LatencyRecorder(65_536);
            bool measuring = false;
            var writer = Task.Run(async () =>
            {
                while (!stop.IsCancellationRequested)
                {
                    long t0 = Stopwatch.GetTimestamp();
                    var r = await engine.SendAsync(Draft(clock, "other", null));
                    if (!r.IsOk) throw new InvalidOperationException(r.Error.ToString());
                    if (Volatile.Read(ref measuring)) sends.RecordSince(t0);
                }
            });
            await Task.Delay(300); // the writer warmed up
            var gc = GC.GetTotalPauseDuration();
            Volatile.Write(ref measuring, true);
            long start = Stopwatch.GetTimestamp();
            string what = await pass();
            double passMs = Stopwatch.GetElapsedTime(start).TotalMilliseconds;
            var gcMs = (GC.GetTotalPauseDuration() - gc).TotalMilliseconds;
            await Task.Delay(300); // a send held up by the pass's end is counted
            stop.Cancel();
            await writer;
            var s = sends.ToStats();
            Console.WriteLine($"- {name}: {what} in {passMs:N0} ms; meanwhile (and 300 ms after) {s.Count:N0} sends, p50 {s.P50Ms:0.0} ms, p99 {s.P99Ms:0.0} ms, " +
                              $"max {s.MaxMs:0.0} ms; GC pauses in the pass {gcMs:0} ms; load average {CpuMeter.LoadAverages()}");
        }
        finally
        {
            try { Directory.Delete(options.DataDir, true); } catch (IOException) { }
        }
    }

    private static async Task StoreHalvesAsync(BrokerEngine engine, ManualClock clock, int count)
    {
        for (int i = 0; i < count; i += 1000)
        {
            var batch = Enumerable.Range(0, Math.Min(1000, count - i)).Select(_ => new HalfDraft(Draft(clock, "orders", null), "orders", "probe@1", null)).ToArray();
            foreach (var r in await engine.SendHalvesAsync(batch)) if (!r.Error.IsOk) throw new InvalidOperationException(r.Error.ToString());
        }
    }

    private static MessageDraft Draft(ManualClock clock, string topic, long? deliverAt) => new()
    {
        Topic = topic, MessageId = Guid.NewGuid().ToString("N"), Body = new byte[] { 1 }, DeliveryTimestampMs = deliverAt,
        BornTimestampMs = clock.GetUtcNow().ToUnixTimeMilliseconds(), BornHost = "probe",
    };

    private sealed class CountingChannel : ICheckBackChannel
    {
        public string ClientId => "probe@1";
        public bool IsAlive => true;
        public bool TrySendCheck(CheckBackRequest request) => true;
    }

    private static int Arg(string[] args, string name, int fallback)
    {
        int i = Array.IndexOf(args, name);
        return i >= 0 && i + 1 < args.Length && int.TryParse(args[i + 1], out int v) ? v : fallback;
    }
}
