using System.Buffers.Binary;
using System.Collections.Concurrent;
using System.Diagnostics;
using HalfMsg.Bench.Infrastructure;
using HalfMsg.Bench.Reporting;
using HalfMsg.Broker.Core;
using HalfMsg.Broker.Core.Model;
using HalfMsg.ConsumerClient;
using HalfMsg.ProducerClient;
using CoreFlush = HalfMsg.Broker.Core.FlushMode;
using MicrosHistogram = HalfMsg.Broker.Core.Diagnostics.MicrosHistogram;
using ThreadPoolDelaySampler = HalfMsg.Broker.Core.Diagnostics.ThreadPoolDelaySampler;

namespace HalfMsg.Bench.Flows;

/// <summary>What one broker transactional flow row runs.</summary>
public sealed record BrokerFlowSpec
{
    public required string Name { get; init; }
    public FlushMode Flush { get; init; } = FlushMode.Sync;
    /// <summary>Null = <see cref="BenchOptions.Messages"/>.</summary>
    public int? Messages { get; init; }
    /// <summary>Fraction of the sync peak tx/s to pace producers at (null = as fast as they go).</summary>
    public double? RateFractionOfSyncPeak { get; init; }
    /// <summary>Pace at this fraction of the highest broker tx/s of the concurrency sweep, with that level's in-flight
    /// count (the "half of peak load" row).</summary>
    public double? RateFractionOfSweepPeak { get; init; }
    /// <summary>Producers (= transactions in flight) for this row; null = <see cref="BenchOptions.Producers"/>.</summary>
    public int? Producers { get; init; }
    /// <summary>Undecided halves seeded into the data dir before the broker starts (never checked during the run).</summary>
    public int SeedPending { get; init; }
    /// <summary>Halves seeded on another topic that are due for check-back at once when the run starts.</summary>
    public int StormHalves { get; init; }
    /// <summary>Compare throughput with the sync-peak row (the 0-pending / no-storm baseline).</summary>
    public bool CompareWithSyncPeak { get; init; }
}

/// <summary>
/// End-to-end transactional flow through the real broker process (its gRPC endpoint), driven by our clients:
/// P <see cref="Producer"/> instances, each doing half-send then commit (one transaction outstanding per producer),
/// C <see cref="SimpleConsumer"/>s doing receive (batch 32) + ack. Fixed message count. Reports committed tx/s,
/// delivered msgs/s, half-send / commit / commit-to-first-delivery latencies, broker CPU seconds and peak RSS.
/// Optional: paced producers (half-load), pre-seeded pending halves (scale), a check-back storm.
/// </summary>
public sealed class BrokerTxFlowBench(BrokerBenchContext context, BrokerFlowSpec spec) : IFlowBench
{
    public const string Topic = "bench-tx";
    public const string StormTopic = "bench-storm";
    public const string PendingTopic = "bench-pending";
    public const string ConsumerGroup = "bench-cg";
    public const int Batch = 32;
    private const int HeaderBytes = 13; // send timestamp (8) + warm-up flag (1) + transaction number (4, -1 in warm-up)

    public string Name => spec.Name;

    public async Task<BenchResult> RunAsync(BenchOptions o, CancellationToken outer)
    {
        if (spec.Producers is int producers) o = o with { Producers = producers };
        if (BrokerProcess.FindBrokerDll() is null)
            return BenchResult.Skipped(Name, BenchKind.Flow, "HalfMsg.Broker.dll not found (dotnet build -c Release src/Broker/HalfMsg.Broker)");
        double? targetRate = null;
        string? rateNote = null; // why the paced rate is what it is, when not the spec's fraction of a peak
        if (spec.RateFractionOfSyncPeak is double frac)
        {
            if (context.SyncPeak?.Get(Metric.Throughput) is not double peak || peak <= 0)
                return BenchResult.Skipped(Name, BenchKind.Flow, "sync peak not measured, so no half-load rate");
            targetRate = peak * frac;
        }
        if (spec.RateFractionOfSweepPeak is double sweepFrac)
        {
            if (context.SweepPeak?.Get(Metric.Throughput) is not double peak || peak <= 0 || context.SweepPeak.Get("inflight") is not double level)
                return BenchResult.Skipped(Name, BenchKind.Flow, "no broker level of the sweep was measured, so no half-load rate");
            targetRate = peak * sweepFrac;
            o = o with { Producers = (int)level };
            // HALFMSG_BENCH_HALF_LOAD_TXS=R paces the half-load row at R tx/s instead (A/Bs need the same rate).
            if (double.TryParse(Environment.GetEnvironmentVariable("HALFMSG_BENCH_HALF_LOAD_TXS"), System.Globalization.NumberStyles.Float,
                    System.Globalization.CultureInfo.InvariantCulture, out double fixedRate) && fixedRate > 0)
            {
                targetRate = fixedRate;
                rateNote = "fixed by HALFMSG_BENCH_HALF_LOAD_TXS";
            }
        }

        int n = spec.Messages ?? o.Messages;
        int bodySize = Math.Max(o.BodySize, HeaderBytes);
        var result = new BenchResult
        {
            Name = Name,
            Kind = BenchKind.Flow,
            Description = $"HalfMsg.Broker process (flush {spec.Flush.ToString().ToLowerInvariant()}), gRPC on 127.0.0.1; {n:N0} transactions of {bodySize} B; " +
                          $"{o.Producers} producers (half-send then commit, 1 tx outstanding each) sharing {o.InstancesFor(o.Producers)} ProducerClient instance(s), one connection each, " +
                          (o.HalfSendCalls > 0 ? $"up to {o.HalfSendCalls} half-send calls in flight per instance (more halves wait and go several to a call)" : "one call per half") +
                          (o.DecisionCalls > 0 ? $", up to {o.DecisionCalls} decision calls in flight per instance (more decisions wait and go several to an EndTransactions call)" : ", one EndTransaction per decision") +
                          (targetRate is double r ? $", paced to {r:N0} tx/s in total" : "") +
                          $"; {o.Consumers} SimpleConsumers ({o.ReceivesInFlight} receive loop(s) each: receive batch {Batch} + one ack call per batch, up to {o.AcksInFlight} in flight per loop)" +
                          (spec.SeedPending > 0 ? $"; {spec.SeedPending:N0} undecided halves seeded beforehand (--transaction-timeout 1h)" : "") +
                          (spec.StormHalves > 0 ? $"; {spec.StormHalves:N0} halves due for check-back at once (--transaction-timeout 1s --transaction-check-interval 1s, checker answers Unknown)" : "") +
                          $"; decision durability {o.DecisionDurability}. send = half-send; e2e = commit completion → first delivery.",
        };
        result.Metrics["inflight"] = o.Producers;
        result.Labels["decision_durability"] = o.DecisionDurability;

        using var timeout = CancellationTokenSource.CreateLinkedTokenSource(outer);
        timeout.CancelAfter(o.FlowTimeout + TimeSpan.FromMinutes(spec.SeedPending > 100_000 ? 5 : 0));
        var ct = timeout.Token;

        string dataDir = BrokerProcess.NewDataDir();
        var args = BrokerProcess.ModeArgs(spec.Flush, o.DecisionDurability);
        try
        {
            // ── seed (before the broker starts) ──
            if (spec.SeedPending > 0 || spec.StormHalves > 0)
            {
                var seedSw = Stopwatch.StartNew();
                bool storm = spec.StormHalves > 0;
                int count = storm ? spec.StormHalves : spec.SeedPending;
                await SeedHalvesAsync(dataDir, storm ? StormTopic : PendingTopic, count, 64,
                    storm ? TimeSpan.FromSeconds(1) : TimeSpan.FromHours(1), ct);
                result.Metrics["seed_s"] = seedSw.Elapsed.TotalSeconds;
                result.Notes.Add($"seeded {count:N0} halves of 64 B on '{(storm ? StormTopic : PendingTopic)}' in-process in {seedSw.Elapsed.TotalSeconds:0.0} s");
                args.AddRange(storm
                    ? ["--transaction-timeout", "1s", "--transaction-check-interval", "1s"]
                    : ["--transaction-timeout", "1h"]);
            }

            var (broker, error) = await BrokerProcess.TryStartAsync(new BrokerStartOptions { DataDir = dataDir, DeleteDataDir = false, ExtraArgs = args }, ct);
            if (broker is null) return BenchResult.Skipped(Name, BenchKind.Flow, error!);
            await using (broker)
            {
                result.Metrics["broker_start_to_ready_s"] = broker.StartToReady.TotalSeconds;
                await RunFlowAsync(broker, o, n, bodySize, targetRate, rateNote, result, ct, outer);
            }
        }
        catch (OperationCanceledException) when (!outer.IsCancellationRequested)
        {
            result.NotMeasured ??= $"timed out after {o.FlowTimeout.TotalSeconds:0} s";
            result.Metrics.Clear();
        }
        finally
        {
            try { Directory.Delete(dataDir, recursive: true); } catch (Exception) { /* temp */ }
        }

        if (result.Measured)
        {
            bool plain = spec.RateFractionOfSyncPeak is null && spec.RateFractionOfSweepPeak is null && spec.SeedPending == 0 && spec.StormHalves == 0;
            if (spec.Flush == FlushMode.Sync && plain && spec.Producers is null) context.SyncPeak = result;
            if (spec.Flush == FlushMode.Async && plain) context.AsyncPeak = result;
            if (spec.CompareWithSyncPeak && context.SyncPeak?.Get(Metric.Throughput) is double baseTp && result.Get(Metric.Throughput) is double tp)
            {
                result.Metrics["ratio_vs_baseline"] = tp / baseTp;
                result.Summary = (result.Summary is null ? "" : result.Summary + "; ") + $"{tp / baseTp:0.00}× the 0-pending/no-storm sync row";
            }
        }
        return result;
    }

    /// <summary>Opens the engine in this process on <paramref name="dataDir"/> (flush async) and stores <paramref name="count"/>
    /// undecided halves (flush async: each send returns at once, so one writer suffices); dispose writes a checkpoint.</summary>
    public static async Task SeedHalvesAsync(string dataDir, string topic, int count, int bodyBytes, TimeSpan transactionTimeout, CancellationToken ct)
    {
        var engine = await BrokerEngine.OpenAsync(new CoreOptions
        {
            DataDir = dataDir,
            Flush = CoreFlush.Async,
            TransactionTimeout = transactionTimeout,
            TransactionCheckInterval = TimeSpan.FromHours(1),
        }, startBackgroundLoops: false, ct: ct);
        await using (engine)
        {
            var body = new byte[bodyBytes];
            Random.Shared.NextBytes(body);
            string prefix = "seed-" + Guid.NewGuid().ToString("N")[..8] + "-";
            int InFlight = BrokerRecoveryBench.SeedWriters; // see BrokerRecoveryBench.SeedChildMainAsync: 1 by default
            int next = -1;
            var workers = Enumerable.Range(0, InFlight).Select(_ => Task.Run(async () =>
            {
                int i;
                while ((i = Interlocked.Increment(ref next)) < count)
                {
                    var r = await engine.SendHalfAsync(new MessageDraft
                    {
                        Topic = topic, MessageId = prefix + i.ToString(System.Globalization.CultureInfo.InvariantCulture),
                        Body = body, BornTimestampMs = DateTimeOffset.UtcNow.ToUnixTimeMilliseconds(), BornHost = "bench",
                    }, producerGroup: topic, clientId: null, checkImmunity: null, ct);
                    if (!r.IsOk) throw new InvalidOperationException($"seeding half {i} failed: {r.Error}");
                }
            }, ct)).ToArray();
            await Task.WhenAll(workers);
        }
    }

    private sealed class UnknownChecker : ITransactionChecker
    {
        public long Checks;
        public ValueTask<ProducerClient.TransactionResolution> CheckAsync(MessageView message, CancellationToken cancellationToken)
        {
            Interlocked.Increment(ref Checks);
            return ValueTask.FromResult(ProducerClient.TransactionResolution.Unknown);
        }
    }

    private async Task RunFlowAsync(BrokerProcess broker, BenchOptions o, int n, int bodySize, double? targetRate, string? rateNote,
        BenchResult result, CancellationToken ct, CancellationToken outer)
    {
        var producers = new List<Producer>();
        var consumers = new List<SimpleConsumer>();
        Producer? stormProducer = null;
        using var stopConsumers = CancellationTokenSource.CreateLinkedTokenSource(ct);
        var consumerTasks = new List<Task>();
        try
        {
            for (int c = 0; c < o.Consumers; c++)
                consumers.Add(await SimpleConsumer.StartAsync(new SimpleConsumerOptions
                {
                    Endpoints = broker.Endpoint,
                    ConsumerGroup = ConsumerGroup,
                    Subscriptions = new Dictionary<string, string> { [Topic] = "*" },
                    AwaitDuration = TimeSpan.FromSeconds(2),
                    RequestTimeout = TimeSpan.FromSeconds(10),
                }, ct));
            // Producer p uses instance p mod instances (one HTTP/2 connection each).
            int instances = o.InstancesFor(o.Producers);
            for (int p = 0; p < instances; p++)
                producers.Add(await Producer.StartAsync(new ProducerOptions
                {
                    Endpoints = broker.Endpoint,
                    Topics = [Topic],
                    RequestTimeout = TimeSpan.FromSeconds(10),
                    HalfSendCallsInFlight = o.HalfSendCalls,
                    DecisionCallsInFlight = o.DecisionCalls,
                }, ct));
            result.Metrics["half_send_calls"] = o.HalfSendCalls;
            result.Metrics["half_sends_coalesced"] = producers.Count > 0 && producers[0].CoalescesHalfSends ? 1 : 0;
            result.Metrics["decision_calls"] = o.DecisionCalls;
            result.Metrics["decisions_coalesced"] = producers.Count > 0 && producers[0].CoalescesDecisions ? 1 : 0;

            // ── consumers: receive + ack; first delivery per message id ──
            // Warm-up: --warmup seconds of the whole flow (WarmUp.cs: a fresh broker compiles for its first 15-25 s),
            // and at least HALFMSG_BENCH_WARMUP=N transactions in all (default n/50, 10-200 per producer).
            int warmPerProducer = int.TryParse(Environment.GetEnvironmentVariable("HALFMSG_BENCH_WARMUP"), out int warmEnv) && warmEnv > 0
                ? Math.Max(1, warmEnv / o.Producers)
                : Math.Clamp(n / 50 / o.Producers, 10, 200);
            int warmTotal = warmPerProducer * o.Producers;
            long warmDelivered = 0, warmCommitted = 0, delivered = 0, redelivered = 0, lastDelivery = 0, consumeErrors = 0;
            var allDelivered = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
            // The measured transactions are numbered (body bytes 9-12), so first deliveries and commit times live in
            // arrays indexed by that number: a ConcurrentDictionary keyed by message id per commit and per delivery was
            // the bench's own largest cost per transaction after the clients (no such table in the RabbitMQ row).
            // Numbers run past n only after failed sends; those and the warm-up's messages go by message id.
            int numbered = 2 * n + 1024;
            var seenNumber = new int[numbered];
            var seen = new ConcurrentDictionary<string, byte>(Environment.ProcessorCount, warmTotal + 16);
            // --receives-in-flight loops per consumer, each with one ReceiveMessage outstanding: while one loop's batch
            // travels back and its next receive travels out, the other's receive waits at the broker for the next
            // commit (like the RabbitMQ row's prefetch, which keeps deliveries flowing while a batch is handled).
            int loops = o.Consumers * o.ReceivesInFlight;
            var deliveries = Enumerable.Range(0, loops).Select(_ => new List<(int Number, long At, long Sent)>(n / loops + 16)).ToArray();
            for (int c = 0; c < loops; c++)
            {
                var consumer = consumers[c % o.Consumers];
                var mine = deliveries[c];
                consumerTasks.Add(Task.Run(async () =>
                {
                    var token = stopConsumers.Token;
                    // Ack calls still in flight while the next batches are received: an ack waits for a group commit,
                    // and a consumer that waited for it before receiving again delivered at most 32 messages per fsync
                    // (4 consumers fell seconds behind 3,500 tx/s at 256 in flight with none in flight; with one, a
                    // message could wait a whole commit for its consumer). At most --acks-in-flight per receive loop.
                    var acksInFlight = new Queue<Task>();
                    while (!token.IsCancellationRequested)
                    {
                        IReadOnlyList<ReceivedMessage> batch;
                        try { batch = await consumer.ReceiveAsync(Batch, TimeSpan.FromSeconds(60), token); }
                        catch (OperationCanceledException) when (token.IsCancellationRequested) { break; }
                        catch (Exception) { Interlocked.Increment(ref consumeErrors); await Task.Delay(50, CancellationToken.None); continue; }
                        long now = Stopwatch.GetTimestamp();
                        while (acksInFlight.Count >= Math.Max(1, o.AcksInFlight) || acksInFlight.TryPeek(out var oldest) && oldest.IsCompleted)
                        {
                            try { await acksInFlight.Dequeue(); }
                            catch (OperationCanceledException) when (token.IsCancellationRequested) { }
                            catch (Exception) { Interlocked.Increment(ref consumeErrors); }
                        }
                        if (token.IsCancellationRequested) break;
                        // One AckMessage call for the whole batch: the broker waits for one group commit for all of it.
                        acksInFlight.Enqueue(consumer.AckAsync(batch, token));
                        for (int i = 0; i < batch.Count; i++)
                        {
                            var m = batch[i];
                            if (m.Body.Length < HeaderBytes) continue;
                            int number = BinaryPrimitives.ReadInt32LittleEndian(m.Body.Span[9..]);
                            bool first = (uint)number < (uint)numbered
                                ? Interlocked.Exchange(ref seenNumber[number], 1) == 0
                                : seen.TryAdd(m.MessageId, 0);
                            if (!first) { Interlocked.Increment(ref redelivered); continue; }
                            if (m.Body.Span[8] == 1)
                            {
                                Interlocked.Increment(ref warmDelivered);
                                continue;
                            }
                            mine.Add((number, now, BinaryPrimitives.ReadInt64LittleEndian(m.Body.Span)));
                            Volatile.Write(ref lastDelivery, now);
                            if (Interlocked.Increment(ref delivered) == n) allDelivered.TrySetResult();
                        }
                        // --acks-in-flight 0: this batch's ack returns before the next receive (the raw-stub consumers' way).
                        if (o.AcksInFlight == 0 && acksInFlight.TryDequeue(out var own))
                        {
                            try { await own; }
                            catch (OperationCanceledException) when (token.IsCancellationRequested) { }
                            catch (Exception) { Interlocked.Increment(ref consumeErrors); }
                        }
                    }
                    while (acksInFlight.TryDequeue(out var ack))
                    {
                        try { await ack; }
                        catch (Exception) when (token.IsCancellationRequested) { }
                        catch (Exception) { Interlocked.Increment(ref consumeErrors); }
                    }
                }, CancellationToken.None));
            }

            // ── producers ──
            var halfLat = Enumerable.Range(0, o.Producers).Select(_ => new LatencyRecorder(n / o.Producers + 1)).ToArray();
            var commitLat = Enumerable.Range(0, o.Producers).Select(_ => new LatencyRecorder(n / o.Producers + 1)).ToArray();
            var txLat = Enumerable.Range(0, o.Producers).Select(_ => new LatencyRecorder(n / o.Producers + 1)).ToArray();
            var commitDone = new long[numbered]; // by transaction number: when the producer held the commit response
            int nextNumber = -1;
            long committed = 0, lastCommit = 0, sendErrors = 0;

            async Task ProduceAsync(int producer, int count, WarmUp? warm, long startTs, double? perProducerRate)
            {
                var client = producers[producer % producers.Count];
                var body = new byte[bodySize];
                Random.Shared.NextBytes(body);
                body[8] = warm is null ? (byte)0 : (byte)1;
                // A warm-up producer sends at least its count and goes on until the warm-up's time is up.
                for (int i = 0; i < count || warm is { Running: true }; i++)
                {
                    ct.ThrowIfCancellationRequested();
                    if (perProducerRate is double rate)
                    {
                        // Producer p starts p/P of a period late, so the P producers' sends are spread evenly over
                        // each period. Without the offset all P sent at the same instants: a paced "half load" was a
                        // burst of P transactions at full speed every P/rate seconds, and commit→delivery p99 measured
                        // how long a burst took to drain (58-182 ms at 256 in flight), not the latency at half load.
                        long due = startTs + (long)((i + producer / (double)o.Producers) / rate * Stopwatch.Frequency);
                        long wait = due - Stopwatch.GetTimestamp();
                        if (wait > 0) await Task.Delay(TimeSpan.FromSeconds(wait / (double)Stopwatch.Frequency), ct);
                    }
                    long t0 = Stopwatch.GetTimestamp();
                    BinaryPrimitives.WriteInt64LittleEndian(body, t0);
                    int number = warm is null ? Interlocked.Increment(ref nextNumber) : -1;
                    BinaryPrimitives.WriteInt32LittleEndian(body.AsSpan(9), number < numbered ? number : -1);
                    var tx = client.BeginTransaction();
                    SendReceipt receipt;
                    try
                    {
                        // The producer sends the body without copying it; it is rewritten only after this send returned.
                        receipt = await tx.SendAsync(new ProducerClient.Message(Topic, body), ct);
                    }
                    catch (Exception) when (!ct.IsCancellationRequested)
                    {
                        Interlocked.Increment(ref sendErrors);
                        continue;
                    }
                    long t1 = Stopwatch.GetTimestamp();
                    try { await tx.CommitAsync(ct); }
                    catch (Exception) when (!ct.IsCancellationRequested)
                    {
                        Interlocked.Increment(ref sendErrors);
                        continue;
                    }
                    long t2 = Stopwatch.GetTimestamp();
                    if (warm is not null)
                    {
                        Interlocked.Increment(ref warmCommitted);
                        continue;
                    }
                    if ((uint)number < (uint)numbered) commitDone[number] = t2;
                    halfLat[producer].Record(t1 - t0);
                    commitLat[producer].Record(t2 - t1);
                    txLat[producer].Record(t2 - t0);
                    Interlocked.Increment(ref committed);
                    long last;
                    while ((last = Volatile.Read(ref lastCommit)) < t2 && Interlocked.CompareExchange(ref lastCommit, t2, last) != last) { }
                }
            }

            // Warm-up (JIT, connections, routes): the whole flow for at least --warmup seconds, then its messages drain.
            var warmUp = WarmUp.Start(o.WarmupSeconds);
            await Task.WhenAll(Enumerable.Range(0, o.Producers).Select(p => Task.Run(() => ProduceAsync(p, warmPerProducer, warmUp, 0, null), ct)));
            result.Notes.Add(await warmUp.DrainAsync(() => Interlocked.Read(ref warmCommitted), () => Interlocked.Read(ref warmDelivered), ct));

            UnknownChecker? checker = null;
            if (spec.StormHalves > 0)
            {
                // The storm halves are already overdue; the broker sends their check-backs as soon as a producer of the
                // group (= topic) connects.
                checker = new UnknownChecker();
                stormProducer = await Producer.StartAsync(new ProducerOptions
                {
                    Endpoints = broker.Endpoint,
                    Topics = [StormTopic],
                    TransactionChecker = checker,
                }, ct);
            }
            var poolBefore = ThreadPoolDelaySampler.Shared.Snapshot();
            var statsBefore = await broker.GetStatsAsync(ct);
            long? logCommits0 = await broker.LogCommitsAsync(ct);
            var cpu = new CpuWindow(broker.Pid);
            long clientAlloc0 = GC.GetTotalAllocatedBytes();
            long start = Stopwatch.GetTimestamp();
            double? perRate = targetRate / o.Producers;
            var producing = Enumerable.Range(0, o.Producers)
                .Select(p => Task.Run(() => ProduceAsync(p, n / o.Producers + (p < n % o.Producers ? 1 : 0), null, start, perRate), ct))
                .ToArray();
            try
            {
                await Task.WhenAll(producing);
                long expected = Interlocked.Read(ref committed);
                if (expected == n) await allDelivered.Task.WaitAsync(ct);
                else
                {
                    // Some transactions failed: wait until deliveries stop growing.
                    long before = -1;
                    while (Interlocked.Read(ref delivered) != before && Interlocked.Read(ref delivered) < expected)
                    {
                        before = Interlocked.Read(ref delivered);
                        await Task.Delay(2000, ct);
                    }
                }
            }
            catch (OperationCanceledException) when (!outer.IsCancellationRequested)
            {
                result.Notes.Add($"timed out after {o.FlowTimeout.TotalSeconds:0} s: {Interlocked.Read(ref committed):N0} committed, {Interlocked.Read(ref delivered):N0} delivered of {n:N0}");
            }
            var cpuMetrics = new Dictionary<string, double>();
            cpu.Stop(cpuMetrics, "broker", Math.Max(1, Interlocked.Read(ref committed)));
            long clientAllocated = GC.GetTotalAllocatedBytes() - clientAlloc0;
            var poolAfter = ThreadPoolDelaySampler.Shared.Snapshot();
            var statsAfter = await broker.GetStatsAsync(CancellationToken.None);
            long? logCommits1 = await broker.LogCommitsAsync(CancellationToken.None);
            stopConsumers.Cancel();
            await Task.WhenAll(consumerTasks).WaitAsync(TimeSpan.FromSeconds(10), CancellationToken.None).ContinueWith(_ => { }, TaskScheduler.Default);

            double Seconds(long until) => (until - start) / (double)Stopwatch.Frequency;
            long com = Interlocked.Read(ref committed), del = Interlocked.Read(ref delivered);
            if (com == 0)
            {
                result.NotMeasured = $"no transaction committed ({Interlocked.Read(ref sendErrors):N0} send/commit errors): {broker.RecentOutput}";
                return;
            }
            long commitEnd = Volatile.Read(ref lastCommit);
            double tps = com / Seconds(commitEnd);
            result.Metrics[Metric.Throughput] = tps;
            if (del > 0) result.Metrics[Metric.Delivered] = del / Seconds(Volatile.Read(ref lastDelivery));
            if (targetRate is double tr) result.Metrics["target_tx_per_s"] = tr;
            result.Metrics[Metric.Messages] = n;
            result.Metrics["committed"] = com;
            result.Metrics["delivered"] = del;
            result.Metrics["redelivered"] = Interlocked.Read(ref redelivered);
            result.Metrics["send_or_commit_errors"] = Interlocked.Read(ref sendErrors);
            result.Metrics["consumer_errors"] = Interlocked.Read(ref consumeErrors);
            double window = Seconds(Math.Max(commitEnd, Volatile.Read(ref lastDelivery)));
            result.Metrics[Metric.ElapsedS] = window;
            result.AddLatency(Metric.Send, LatencyRecorder.Merge(halfLat));
            result.AddLatency("commit", LatencyRecorder.Merge(commitLat));
            result.AddLatency("tx", LatencyRecorder.Merge(txLat));

            // commit completion → first delivery (clamped at 0: a consumer may see the message before the producer holds the commit response)
            var e2e = new LatencyRecorder(n);
            var sendToDelivery = new LatencyRecorder(n);
            long early = 0;
            foreach (var list in deliveries)
                foreach (var (number, at, sent) in list)
                {
                    sendToDelivery.Record(at - sent);
                    if ((uint)number < (uint)numbered && commitDone[number] is long done and not 0)
                    {
                        if (at < done) early++;
                        e2e.Record(Math.Max(0, at - done));
                    }
                }
            result.AddLatency(Metric.EndToEnd, e2e.ToStats());
            result.AddLatency("send_to_delivery", sendToDelivery.ToStats());
            result.Metrics["delivered_before_commit_response"] = early;

            foreach (var (k, v) in cpuMetrics) result.Metrics[k] = v;
            if (result.Get(Metric.Delivered) is double dps && tps > 0) result.Metrics["delivered_per_committed"] = dps / tps;
            if (broker.PeakRssMiB() is double rss) result.Metrics["broker_peak_rss_mib"] = rss;
            foreach (var key in new[] { "checksSent", "checksWithoutProducer", "pendingTransactions", "recoveryMilliseconds", "replayedRecords" })
            {
                if (statsAfter.TryGetValue(key, out double after))
                    result.Metrics["broker_" + key] = after;
            }
            // Group commits of the log during the window (FASTER numbers its commit files), and what each one carried.
            if (logCommits0 is long lc0 && logCommits1 is long lc1 && lc1 > lc0)
            {
                double commits = lc1 - lc0;
                result.Metrics["log_commits"] = commits;
                result.Metrics["log_commits_per_s"] = commits / window;
                result.Metrics["tx_per_log_commit"] = com / commits;
                if (statsAfter.TryGetValue("recordsAppended", out double ra1) && statsBefore.TryGetValue("recordsAppended", out double ra0))
                {
                    result.Metrics["records_per_log_commit"] = (ra1 - ra0) / commits;
                    result.Metrics["records_per_tx"] = (ra1 - ra0) / com;
                }
                // Time the commit loop spent inside commits (write-out + fsync): the rest of the window it waited for
                // work, or for a thread to run on. A fraction near 1 means the disk sets the pace.
                if (statsAfter.TryGetValue("logCommitMicros", out double cm1) && statsBefore.TryGetValue("logCommitMicros", out double cm0))
                {
                    result.Metrics["log_commit_mean_ms"] = (cm1 - cm0) / 1000 / commits;
                    result.Metrics["log_commit_busy_fraction"] = (cm1 - cm0) / 1e6 / window;
                }
                if (statsAfter.TryGetValue("logCommitIdleMicros", out double ci1) && statsBefore.TryGetValue("logCommitIdleMicros", out double ci0))
                    result.Metrics["log_commit_idle_fraction"] = (ci1 - ci0) / 1e6 / window;
                if (statsAfter.TryGetValue("logCommitsKickedOnReturn", out double ck1) && statsBefore.TryGetValue("logCommitsKickedOnReturn", out double ck0))
                    result.Metrics["log_commits_kicked_on_return_fraction"] = (ck1 - ck0) / commits;
            }
            // Receives' looks for messages per transaction (each a hold of the engine lock; one per receive call, one more
            // per wake-up while it long-polls).
            if (com > 0 && statsAfter.TryGetValue("receiveLooks", out double rl1) && statsBefore.TryGetValue("receiveLooks", out double rl0))
                result.Metrics["receive_looks_per_tx"] = (rl1 - rl0) / com;
            // Bytes allocated per committed transaction in each process during the row (the collector's work follows them).
            if (com > 0)
            {
                result.Metrics["client_alloc_kb_per_tx"] = clientAllocated / 1024.0 / com;
                if (statsAfter.TryGetValue("gcTotalAllocatedBytes", out double ab1) && statsBefore.TryGetValue("gcTotalAllocatedBytes", out double ab0))
                    result.Metrics["broker_alloc_kb_per_tx"] = (ab1 - ab0) / 1024.0 / com;
            }
            // The broker's collector during the row: the share of time it stopped the process, collections per second.
            if (statsAfter.TryGetValue("gcPauseMicros", out double gp1) && statsBefore.TryGetValue("gcPauseMicros", out double gp0))
                result.Metrics["broker_gc_pause_fraction"] = (gp1 - gp0) / 1e6 / window;
            foreach (int gen in new[] { 0, 1, 2 })
                if (statsAfter.TryGetValue($"gcCollectionsGen{gen}", out double g1) && statsBefore.TryGetValue($"gcCollectionsGen{gen}", out double g0))
                    result.Metrics[$"broker_gc_gen{gen}_per_s"] = (g1 - g0) / window;
            // How long a work item waited in each process's thread-pool queue during the row (sampled every 2 ms).
            AddPoolDelay(result.Metrics, "client", poolBefore, poolAfter);
            if (StatsBuckets(statsBefore, "threadPoolDelay") is { } poolB && StatsBuckets(statsAfter, "threadPoolDelay") is { } poolA)
                AddPoolDelay(result.Metrics, "broker", poolB, poolA);
            // Checkpoints written during the row, and the longest hold of the engine lock any of them took (the upper
            // bound of its power-of-two bucket); likewise retention cuts.
            AddLockHolds(result.Metrics, "checkpoint", statsBefore, statsAfter, "checkpointLockHold");
            AddLockHolds(result.Metrics, "retention_cut", statsBefore, statsAfter, "retentionCutLockHold");
            // The last checkpoint's longest hold per part of the state and the collector's pause within it (the only
            // one when a single checkpoint fell in the row).
            if (result.Get("checkpoints_during_row") is > 0)
            {
                foreach (var (key, value) in statsAfter)
                    if (key.StartsWith("lastCheckpointHoldMicrosByPart.", StringComparison.OrdinalIgnoreCase))
                        result.Metrics["last_checkpoint_hold_us_" + key[(key.IndexOf('.') + 1)..]] = value;
                if (statsAfter.TryGetValue("lastCheckpointPauseMicros", out double lh)) result.Metrics["last_checkpoint_hold_us"] = lh;
                if (statsAfter.TryGetValue("lastCheckpointHoldGcPauseMicros", out double lg)) result.Metrics["last_checkpoint_hold_gc_pause_us"] = lg;
            }
            if (statsAfter.TryGetValue("checksSent", out double cs1))
            {
                double cs0 = statsBefore.TryGetValue("checksSent", out double v) ? v : 0;
                result.Metrics["checks_sent_during_run"] = cs1 - cs0;
            }
            if (checker is not null) result.Metrics["checks_answered_by_client"] = Interlocked.Read(ref checker.Checks);

            string cpuPart = (result.Get("broker_cpu_s") is double cpuS ? $"broker CPU {cpuS:0.0} s ({result.Get("broker_cpu_ms_per_tx"):0.000} ms/tx)" : "broker CPU n/a") +
                             $", bench client {result.Get("client_cpu_ms_per_tx"):0.000} ms/tx" +
                             (result.Get("broker_alloc_kb_per_tx") is double ba ? $"; allocated per tx: broker {ba:0.0} KB, bench client {result.Get("client_alloc_kb_per_tx"):0.0} KB" : "");
            string rssPart = result.Get("broker_peak_rss_mib") is double r ? $", peak RSS {r:N0} MiB" : "";
            result.Summary = $"commit p50/p99 {result.Get("commit_p50_ms"):0.00}/{result.Get("commit_p99_ms"):0.00} ms; {cpuPart}{rssPart}";
            if (spec.StormHalves > 0)
                result.Summary += $"; checks sent during run {result.Get("checks_sent_during_run") ?? double.NaN:N0} (client answered {result.Get("checks_answered_by_client"):N0})";
            if (targetRate is double t)
                result.Summary += $"; paced at {t:N0} tx/s ({rateNote ?? (spec.RateFractionOfSweepPeak is not null ? "50% of the sweep's peak" : "50% of sync peak")}, {o.Producers} in flight): commit→delivery p99 {result.Get("e2e_p99_ms"):0.00} ms";
            if (spec.SeedPending > 0)
                result.Summary += $"; {result.Get("broker_pendingTransactions") ?? double.NaN:N0} pending in broker";
            if (result.Get("checkpoints_during_row") is double cps and > 0)
                result.Summary += $"; {cps:N0} checkpoint(s) during the row, longest engine-lock hold < {result.Get("checkpoint_lock_hold_max_ms"):0.###} ms";
            if (result.Get("retention_cuts_during_row") is double cuts and > 0)
                result.Summary += $"; {cuts:N0} retention cut(s), longest hold < {result.Get("retention_cut_lock_hold_max_ms"):0.###} ms";
        }
        finally
        {
            stopConsumers.Cancel();
            foreach (var p in producers) await SafeDisposeAsync(p);
            if (stormProducer is not null) await SafeDisposeAsync(stormProducer);
            foreach (var c in consumers) await SafeDisposeAsync(c);
        }
    }

    private static async Task SafeDisposeAsync(IAsyncDisposable d)
    {
        try { await d.DisposeAsync().AsTask().WaitAsync(TimeSpan.FromSeconds(5)); } catch (Exception) { /* closing */ }
    }

    /// <summary>An <c>/api/stats</c> object of power-of-two buckets (<c>NAME.b0</c> …) as counts; null when the broker
    /// has none by that name (an older build).</summary>
    private static long[]? StatsBuckets(Dictionary<string, double> stats, string name)
    {
        var counts = new long[MicrosHistogram.Buckets];
        for (int i = 0; i < counts.Length; i++)
        {
            if (!stats.TryGetValue($"{name}.b{i}", out double v)) return null;
            counts[i] = (long)v;
        }
        return counts;
    }

    private static void AddLockHolds(Dictionary<string, double> metrics, string what, Dictionary<string, double> before, Dictionary<string, double> after, string statsName)
    {
        if (StatsBuckets(after, statsName) is not { } a) return;
        var b = StatsBuckets(before, statsName) ?? new long[MicrosHistogram.Buckets];
        metrics[$"{what}s_during_row"] = MicrosHistogram.Count(b, a);
        if (MicrosHistogram.Percentile(b, a, 1.0) is double maxMs) metrics[$"{what}_lock_hold_max_ms"] = maxMs;
    }

    private static void AddPoolDelay(Dictionary<string, double> metrics, string who, long[] before, long[] after)
    {
        foreach (var (name, p) in new[] { ("p50", 0.5), ("p90", 0.9), ("p99", 0.99), ("p999", 0.999) })
            if (ThreadPoolDelaySampler.Percentile(before, after, p) is double ms)
                metrics[$"{who}_pool_delay_{name}_ms"] = ms;
    }
}
