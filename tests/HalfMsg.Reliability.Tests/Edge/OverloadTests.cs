using System.Collections.Concurrent;
using System.Diagnostics;
using System.Text;
using HalfMsg.Broker.Tests.Infrastructure;
using HalfMsg.ClientCore;
using HalfMsg.ProducerClient;
using HalfMsg.Protocol.Remoting;
using HalfMsg.TestKit;
using Xunit.Abstractions;

namespace HalfMsg.Reliability.Tests.Edge;

/// <summary>
/// Issue 13 item 6, against the real broker process: the broker serves 8 sends at once and lets 8 more wait
/// (<c>--max-concurrent-sends 8 --send-queue-capacity 8 --send-queue-timeout 100ms</c>); first 8 transactional producers
/// (what it can serve), then 80 (ten times more). The queue capacity makes the excess certain on a fast machine too: with
/// only the queue time, a quiet machine serves 80 producers' sends within 100 ms and nothing is over its limit.
/// It must shed the excess with RocketMQ's busy answers (gRPC TOO_MANY_REQUESTS, Remoting SYSTEM_BUSY), producers back
/// off and retry, nobody times out, admitted sends stay fast and goodput does not collapse.
/// </summary>
[Collection("edge")]
public sealed class OverloadTests(ITestOutputHelper output)
{
    private const string Topic = "overload";
    private static readonly byte[] Body = new byte[1024];

    private sealed class Phase
    {
        public readonly ConcurrentBag<double> AdmittedMs = new();
        public long Committed, Refused, Normal;
        public readonly ConcurrentQueue<string> Unexpected = new();
    }

    [Fact]
    public async Task Ten_times_more_producers_than_the_broker_serves_are_shed_with_busy_answers_and_admitted_latency_stays_bounded()
    {
        // HALFMSG_OVERLOAD_NO_SHEDDING=1: the same load on a broker that admits every send, for comparison (figures only).
        bool noShedding = Environment.GetEnvironmentVariable("HALFMSG_OVERLOAD_NO_SHEDDING") == "1";
        // HALFMSG_OVERLOAD_SLOTS / HALFMSG_OVERLOAD_WORKERS: other limits and loads, for measurements.
        string slots = noShedding ? "1000000" : Environment.GetEnvironmentVariable("HALFMSG_OVERLOAD_SLOTS") ?? "8";
        int workers = int.TryParse(Environment.GetEnvironmentVariable("HALFMSG_OVERLOAD_WORKERS"), out var w) ? w : 80;
        await using var broker = await BrokerProcess.StartAsync("--max-concurrent-sends", slots, "--send-queue-capacity", slots,
            "--send-queue-timeout", "100ms");
        try
        {
            var producers = new List<Producer>();
            for (int i = 0; i < 8; i++)
                producers.Add(await Producer.StartAsync(new ProducerOptions { Endpoints = broker.Endpoint, Topics = [Topic], RequestTimeout = TimeSpan.FromSeconds(10) }));
            try
            {
                var baseline = await RunPhaseAsync(producers, workers: 8, TimeSpan.FromSeconds(8));
                long rssBaseline = Admin.RssBytes(broker.Pid);
                var (_, statsBefore) = await Admin.GetJsonAsync(broker.AdminUrl + "/api/stats");
                long refusedBefore = statsBefore.GetProperty("refusedBusy").GetInt64();

                var remotingBusy = Task.Run(() => RemotingFloodAsync(broker));
                var overload = await RunPhaseAsync(producers, workers, TimeSpan.FromSeconds(12));
                long rssOverload = Admin.RssBytes(broker.Pid);
                var (remotingOk, remotingRefused, remotingOther) = await remotingBusy;
                var (_, statsAfter) = await Admin.GetJsonAsync(broker.AdminUrl + "/api/stats");

                string Report(string name, Phase p, TimeSpan d, long rss) =>
                    $"{name}: committed {p.Committed} ({p.Committed / d.TotalSeconds:0}/s), normal sends {p.Normal}, refused busy {p.Refused}, " +
                    $"admitted send p50 {Stats.Percentile(p.AdmittedMs.ToList(), 0.5):0.0} ms p99 {Stats.Percentile(p.AdmittedMs.ToList(), 0.99):0.0} ms, RSS {rss >> 20} MiB";
                output.WriteLine(Report($"slots {slots}, 8 producers", baseline, TimeSpan.FromSeconds(8), rssBaseline));
                output.WriteLine(Report($"{workers} producers", overload, TimeSpan.FromSeconds(12), rssOverload));
                output.WriteLine($"remoting flood: ok {remotingOk}, SYSTEM_BUSY {remotingRefused}, other {remotingOther}; broker refusedBusy {statsAfter.GetProperty("refusedBusy").GetInt64()}");

                if (noShedding)
                {
                    output.WriteLine("without shedding: failures " + string.Join("; ", baseline.Unexpected.Concat(overload.Unexpected).Take(5)));
                    return;
                }
                Assert.True(baseline.Unexpected.IsEmpty && overload.Unexpected.IsEmpty,
                    "failures other than busy (timeouts?):\n" + string.Join("\n", baseline.Unexpected.Concat(overload.Unexpected).Take(10)));
                Assert.True(overload.Refused > 0, "ten times the load and nothing was shed");
                Assert.True(statsAfter.GetProperty("refusedBusy").GetInt64() > refusedBefore, "refusals not counted in /api/stats");
                // Bounded relative to what the machine gives without overload (a busy 2-core machine makes both slow):
                // admitted sends wait at most the queue time for a slot, then are served like the baseline's.
                double p99 = Stats.Percentile(overload.AdmittedMs.ToList(), 0.99), p99Baseline = Stats.Percentile(baseline.AdmittedMs.ToList(), 0.99);
                Assert.True(p99 < 3 * p99Baseline + 1000, $"admitted sends p99 {p99:0} ms under overload vs {p99Baseline:0} ms without");
                Assert.True(overload.Committed / 12.0 >= 0.5 * (baseline.Committed / 8.0),
                    $"goodput collapsed: {overload.Committed / 12.0:0}/s under overload vs {baseline.Committed / 8.0:0}/s");
                Assert.True(rssOverload < rssBaseline + (256L << 20), $"RSS grew from {rssBaseline >> 20} to {rssOverload >> 20} MiB under overload");
                Assert.True(remotingRefused > 0 && remotingOther == 0, $"Remoting flood: ok {remotingOk}, busy {remotingRefused}, other {remotingOther}");
            }
            finally
            {
                foreach (var p in producers) await p.DisposeAsync();
            }
        }
        catch
        {
            output.WriteLine(broker.Output);
            throw;
        }
    }

    private static async Task<Phase> RunPhaseAsync(IReadOnlyList<Producer> producers, int workers, TimeSpan duration)
    {
        var phase = new Phase();
        using var stop = new CancellationTokenSource(duration);
        int next = 0;
        await Task.WhenAll(Enumerable.Range(0, workers).Select(w => Task.Run(async () =>
        {
            var producer = producers[w % producers.Count];
            var backoff = TimeSpan.FromMilliseconds(20);
            while (!stop.IsCancellationRequested)
            {
                string key = $"o{Interlocked.Increment(ref next)}";
                var message = new Message(Topic, Body) { Keys = [key] };
                try
                {
                    if (w % 10 == 9)
                    {
                        // A normal send: the client itself backs off and retries TOO_MANY_REQUESTS (up to 3 attempts).
                        await producer.SendAsync(message);
                        Interlocked.Increment(ref phase.Normal);
                        continue;
                    }
                    var tx = producer.BeginTransaction();
                    long started = Stopwatch.GetTimestamp();
                    await tx.SendAsync(message);
                    phase.AdmittedMs.Add(Stopwatch.GetElapsedTime(started).TotalMilliseconds);
                    await tx.CommitAsync();
                    Interlocked.Increment(ref phase.Committed);
                    backoff = TimeSpan.FromMilliseconds(20);
                }
                catch (TooManyRequestsException)
                {
                    // Half sends are not retried by the client (as the official ones): the application backs off.
                    Interlocked.Increment(ref phase.Refused);
                    await Task.Delay(backoff + TimeSpan.FromMilliseconds(Random.Shared.Next(0, (int)backoff.TotalMilliseconds)));
                    backoff = TimeSpan.FromMilliseconds(Math.Min(backoff.TotalMilliseconds * 2, 1000));
                }
                catch (Exception ex)
                {
                    phase.Unexpected.Enqueue($"{key}: {ex.GetType().Name}: {ex.Message}");
                    return;
                }
            }
        })));
        return phase;
    }

    /// <summary>4 Remoting connections × 64 sends at once: answers are SUCCESS or SYSTEM_BUSY, nothing else.</summary>
    private static async Task<(int Ok, int Busy, int Other)> RemotingFloodAsync(BrokerProcess broker)
    {
        int ok = 0, busy = 0, other = 0;
        var clients = new List<RemotingTestClient>();
        for (int c = 0; c < 4; c++) clients.Add(await RemotingTestClient.ConnectAsync(broker.RemotingPort));
        try
        {
            for (int round = 0; round < 5; round++)
            {
                await Task.WhenAll(clients.SelectMany(c => Enumerable.Range(0, 64).Select(async _ =>
                {
                    var r = await c.InvokeAsync(RequestCode.SendMessageV2, RemotingBroker.SendHeader("PG", Topic, RemotingBroker.Props()), Encoding.UTF8.GetBytes("x"),
                        TimeSpan.FromSeconds(10));
                    if (r.Code == ResponseCode.Success) Interlocked.Increment(ref ok);
                    else if (r.Code == ResponseCode.SystemBusy) Interlocked.Increment(ref busy);
                    else Interlocked.Increment(ref other);
                })));
            }
        }
        finally
        {
            foreach (var c in clients) await c.DisposeAsync();
        }
        return (ok, busy, other);
    }
}
