using System.Buffers.Binary;
using System.Collections.Concurrent;
using System.Diagnostics;
using System.Globalization;
using System.Text.Json;
using HalfMsg.Bench.Infrastructure;
using HalfMsg.Bench.Reporting;
using HalfMsg.Protocol.Remoting;

namespace HalfMsg.Bench.Flows;

/// <summary>
/// The transactional flow over the RocketMQ 4 Remoting front-end of the real broker process, driven by the bench's own
/// load driver (<see cref="RemotingBenchConnection"/> over the <c>src/Protocol/Remoting</c> codecs), on the wire as Java's
/// <c>DefaultMQProducerImpl</c> / <c>DefaultMQPushConsumer</c> do it:
/// <list type="bullet">
/// <item>P producers, one connection each: HEART_BEAT with <c>producerDataSet</c> (the connection becomes a check-back
/// channel of the group), then per transaction SEND_MESSAGE_V2 with sysFlag TransactionPreparedType and the
/// TRAN_MSG/PGROUP/UNIQ_KEY properties (queues round-robin), then a one-way END_TRANSACTION commit. One transaction
/// outstanding per producer.</item>
/// <item>C consumer connections (HEART_BEAT with <c>consumerDataSet</c>), one long-polling PULL_MESSAGE loop per queue
/// (queues spread over the connections, commitOffset in the pull as Java sends it) and a one-way UPDATE_CONSUMER_OFFSET
/// per queue every 5 s and at the end.</item>
/// </list>
/// A transaction is complete for the producer when the one-way commit is written (that is when Java's
/// <c>sendMessageInTransaction</c> returns): tx/s here does not wait for the commit to be durable, unlike the gRPC rows
/// whose commit reply waits for its fsync. delivered/s and commit→first delivery show when commits took effect.
/// </summary>
public sealed class RemotingTxFlowBench(string name, int messages, int producers) : IFlowBench
{
    public const string Topic = "bench-rtx";
    public const string ProducerGroup = "bench-rpg";
    public const string ConsumerGroup = "bench-rcg";
    public const int Queues = 8;
    /// <summary>Messages asked for per pull (maxMsgNums): 32 as the Java push consumer's pullBatchSize, or
    /// HALFMSG_BENCH_REMOTING_PULL_BATCH.</summary>
    public static readonly int Batch = int.TryParse(Environment.GetEnvironmentVariable("HALFMSG_BENCH_REMOTING_PULL_BATCH"), out int b) && b > 0 ? b : 32;
    private const int HeaderBytes = 9; // send timestamp (8) + warm-up flag (1)
    private static readonly TimeSpan RequestTimeout = TimeSpan.FromSeconds(10);

    public string Name => name;

    public async Task<BenchResult> RunAsync(BenchOptions o, CancellationToken outer)
    {
        o = o with { Producers = producers };
        if (BrokerProcess.FindBrokerDll() is null)
            return BenchResult.Skipped(Name, BenchKind.Flow, "HalfMsg.Broker.dll not found (dotnet build -c Release src/Broker/HalfMsg.Broker)");
        int n = messages;
        int bodySize = Math.Max(o.BodySize, HeaderBytes);
        var result = new BenchResult
        {
            Name = Name,
            Kind = BenchKind.Flow,
            Description = $"HalfMsg.Broker process (flush {o.Flush.ToString().ToLowerInvariant()}), RocketMQ 4 Remoting on 127.0.0.1 (name server off); " +
                          $"{n:N0} transactions of {bodySize} B; {o.Producers} producer connections (bench's own Remoting driver as Java's " +
                          "DefaultMQProducerImpl: HEART_BEAT producerDataSet, SEND_MESSAGE_V2 sysFlag PREPARED + TRAN_MSG/PGROUP, one-way " +
                          $"END_TRANSACTION commit; 1 tx outstanding each); {o.Consumers} consumer connections, one long-polling PULL_MESSAGE " +
                          $"loop per queue ({Queues} queues, max {Batch}) with commitOffset, one-way UPDATE_CONSUMER_OFFSET every 5 s. " +
                          "send = half-send; tx = half-send + one-way commit written (not durable yet, as Java); e2e = commit written → first delivery.",
        };
        result.Metrics["inflight"] = o.Producers;
        result.Labels["protocol"] = "remoting";
        result.Labels["decision_durability"] = "one-way END_TRANSACTION (Remoting); broker --decision-durability " + o.DecisionDurability;

        using var timeout = CancellationTokenSource.CreateLinkedTokenSource(outer);
        timeout.CancelAfter(o.FlowTimeout);
        var ct = timeout.Token;
        var args = BrokerProcess.ModeArgs(o.Flush, o.DecisionDurability);
        args.AddRange(["--bind", "127.0.0.1", "--queues-per-topic", Queues.ToString(CultureInfo.InvariantCulture)]);
        try
        {
            var (broker, error) = await BrokerProcess.TryStartAsync(new BrokerStartOptions { ExtraArgs = args }, ct);
            if (broker is null) return BenchResult.Skipped(Name, BenchKind.Flow, error!);
            await using (broker)
            {
                var sw = Stopwatch.StartNew();
                while (!await ProcessUtil.TcpAcceptsAsync(broker.RemotingPort, ct))
                {
                    if (sw.Elapsed > TimeSpan.FromSeconds(30))
                        return BenchResult.Skipped(Name, BenchKind.Flow, $"remoting port {broker.RemotingPort} not accepting: {broker.RecentOutput}");
                    await Task.Delay(50, ct);
                }
                result.Metrics["broker_start_to_ready_s"] = broker.StartToReady.TotalSeconds;
                await RunFlowAsync(broker, o, n, bodySize, result, ct, outer);
            }
        }
        catch (OperationCanceledException) when (!outer.IsCancellationRequested)
        {
            result.NotMeasured ??= $"timed out after {o.FlowTimeout.TotalSeconds:0} s";
            result.Metrics.Clear();
        }
        return result;
    }

    private static byte[] HeartbeatBody(string clientId, bool producer) => JsonSerializer.SerializeToUtf8Bytes(new
    {
        clientID = clientId,
        producerDataSet = producer
            ? new object[] { new { groupName = ProducerGroup }, new { groupName = "CLIENT_INNER_PRODUCER" } }
            : [new { groupName = "CLIENT_INNER_PRODUCER" }],
        consumerDataSet = producer
            ? Array.Empty<object>()
            :
            [
                new
                {
                    groupName = ConsumerGroup, consumeType = "CONSUME_PASSIVELY", messageModel = "CLUSTERING",
                    consumeFromWhere = "CONSUME_FROM_LAST_OFFSET", unitMode = false,
                    subscriptionDataSet = new[] { new { classFilterMode = false, topic = Topic, subString = "*", tagsSet = Array.Empty<string>(), codeSet = Array.Empty<int>(), subVersion = 0L, expressionType = "TAG" } },
                },
            ],
    });

    private static string S(long v) => v.ToString(CultureInfo.InvariantCulture);

    private static async Task HeartbeatAsync(RemotingBenchConnection c, bool producer, CancellationToken ct)
    {
        var r = await c.InvokeAsync(RemotingCommand.Request(RequestCode.HeartBeat, body: HeartbeatBody(c.ClientId, producer)), RequestTimeout, ct);
        if (r.Code != ResponseCode.Success) throw new InvalidOperationException($"HEART_BEAT refused: {r.Code} {r.Remark}");
    }

    private async Task RunFlowAsync(BrokerProcess broker, BenchOptions o, int n, int bodySize, BenchResult result, CancellationToken ct, CancellationToken outer)
    {
        var producerConns = new List<RemotingBenchConnection>();
        var consumerConns = new List<RemotingBenchConnection>();
        using var stopConsumers = CancellationTokenSource.CreateLinkedTokenSource(ct);
        var consumerTasks = new List<Task>();
        try
        {
            for (int c = 0; c < o.Consumers; c++)
            {
                var conn = await RemotingBenchConnection.ConnectAsync(broker.RemotingPort, ct);
                consumerConns.Add(conn);
                await HeartbeatAsync(conn, producer: false, ct);
            }
            for (int p = 0; p < o.Producers; p++)
            {
                var conn = await RemotingBenchConnection.ConnectAsync(broker.RemotingPort, ct);
                producerConns.Add(conn);
                await HeartbeatAsync(conn, producer: true, ct);
            }

            // ── consumers: one long-polling pull loop per queue; first delivery per UNIQ_KEY ──
            int warmPerProducer = Math.Clamp(n / 50 / o.Producers, 10, 200);
            int warmTotal = warmPerProducer * o.Producers;
            long warmDelivered = 0, warmCommitted = 0, delivered = 0, redelivered = 0, lastDelivery = 0, consumeErrors = 0, pulls = 0;
            var allDelivered = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
            var seen = new ConcurrentDictionary<string, byte>(Environment.ProcessorCount, n + warmTotal);
            var deliveries = Enumerable.Range(0, Queues).Select(_ => new List<(string Id, long At, long Sent)>(n / Queues + 16)).ToArray();
            var consumed = new long[Queues];
            // Each measured pull that brought messages: its round trip, and how many it brought (where the delivery
            // tail goes: a slow pull, or messages picked late).
            var pullRtt = Enumerable.Range(0, Queues).Select(_ => new LatencyRecorder(4096)).ToArray();
            var pullBatch = new long[Queues];
            long measuredFrom = long.MaxValue;
            for (int q = 0; q < Queues; q++)
            {
                int queueId = q;
                var conn = consumerConns[q % consumerConns.Count];
                var mine = deliveries[q];
                consumerTasks.Add(Task.Run(async () =>
                {
                    var token = stopConsumers.Token;
                    long offset = 0;
                    long lastPersist = Stopwatch.GetTimestamp();
                    while (!token.IsCancellationRequested)
                    {
                        int sysFlag = PullSysFlag.Subscription | PullSysFlag.Suspend | (offset > 0 ? PullSysFlag.CommitOffset : 0);
                        var pull = RemotingCommand.Request(RequestCode.PullMessage, new()
                        {
                            ["consumerGroup"] = ConsumerGroup, ["topic"] = Topic, ["queueId"] = S(queueId), ["queueOffset"] = S(offset),
                            ["maxMsgNums"] = S(Batch), ["sysFlag"] = S(sysFlag), ["commitOffset"] = S(offset), ["suspendTimeoutMillis"] = "2000",
                            ["subscription"] = "*", ["subVersion"] = "0", ["expressionType"] = "TAG",
                        });
                        RemotingCommand r;
                        long pulledAt = Stopwatch.GetTimestamp();
                        try { r = await conn.InvokeAsync(pull, TimeSpan.FromSeconds(32), token); }
                        catch (OperationCanceledException) when (token.IsCancellationRequested) { break; }
                        catch (Exception) { Interlocked.Increment(ref consumeErrors); await Task.Delay(50, CancellationToken.None); continue; }
                        Interlocked.Increment(ref pulls);
                        long now = Stopwatch.GetTimestamp();
                        if (r.Code == ResponseCode.Success)
                        {
                            List<RemotingMessage> batch;
                            try { batch = StoredMessageCodec.DecodeAll(r.Body.Span); }
                            catch (Exception) { Interlocked.Increment(ref consumeErrors); batch = []; }
                            if (pulledAt >= Volatile.Read(ref measuredFrom) && batch.Count > 0)
                            {
                                pullRtt[queueId].Record(now - pulledAt);
                                pullBatch[queueId] += batch.Count;
                            }
                            foreach (var m in batch)
                            {
                                if (m.Body.Length < HeaderBytes) continue;
                                string id = m.MsgId;
                                if (!seen.TryAdd(id, 0)) { Interlocked.Increment(ref redelivered); continue; }
                                if (m.Body[8] == 1)
                                {
                                    Interlocked.Increment(ref warmDelivered);
                                    continue;
                                }
                                mine.Add((id, now, BinaryPrimitives.ReadInt64LittleEndian(m.Body)));
                                long last;
                                while ((last = Volatile.Read(ref lastDelivery)) < now && Interlocked.CompareExchange(ref lastDelivery, now, last) != last) { }
                                if (Interlocked.Increment(ref delivered) == n) allDelivered.TrySetResult();
                            }
                        }
                        else if (r.Code is not (ResponseCode.PullNotFound or ResponseCode.PullRetryImmediately or ResponseCode.PullOffsetMoved))
                        {
                            Interlocked.Increment(ref consumeErrors);
                            await Task.Delay(50, CancellationToken.None);
                        }
                        if (r.TryGetLong("nextBeginOffset", out long next) && (r.Code != ResponseCode.PullOffsetMoved || next >= 0)) offset = next;
                        Volatile.Write(ref consumed[queueId], offset);
                        if (Stopwatch.GetElapsedTime(lastPersist) > TimeSpan.FromSeconds(5) && offset > 0)
                        {
                            lastPersist = Stopwatch.GetTimestamp();
                            await PersistOffsetAsync(conn, queueId, offset, token).ConfigureAwait(false);
                        }
                    }
                }, CancellationToken.None));
            }

            // ── producers ──
            var halfLat = Enumerable.Range(0, o.Producers).Select(_ => new LatencyRecorder(n / o.Producers + 1)).ToArray();
            var txLat = Enumerable.Range(0, o.Producers).Select(_ => new LatencyRecorder(n / o.Producers + 1)).ToArray();
            var commitDone = new ConcurrentDictionary<string, long>(Environment.ProcessorCount, n);
            long committed = 0, lastCommit = 0, sendErrors = 0;
            string run = Guid.NewGuid().ToString("N")[..12].ToUpperInvariant();
            long bornBase = DateTimeOffset.UtcNow.ToUnixTimeMilliseconds();

            async Task ProduceAsync(int producer, int count, WarmUp? warm)
            {
                var conn = producerConns[producer];
                var body = new byte[bodySize];
                Random.Shared.NextBytes(body);
                body[8] = warm is null ? (byte)0 : (byte)1;
                int queue = producer % Queues;
                // A warm-up producer sends at least its count and goes on until the warm-up's time is up.
                for (int i = 0; i < count || warm is { Running: true }; i++)
                {
                    ct.ThrowIfCancellationRequested();
                    string uniq = string.Create(CultureInfo.InvariantCulture, $"{run}{(warm is null ? 'M' : 'W')}{producer:X4}{i:X8}");
                    string props = MessageProperties.Encode(
                    [
                        new(MessageConst.UniqueKey, uniq), new(MessageConst.TransactionPrepared, "true"),
                        new(MessageConst.ProducerGroup, ProducerGroup), new(MessageConst.WaitStoreMsgOk, "true"),
                    ]);
                    queue = (queue + 1) % Queues;
                    long t0 = Stopwatch.GetTimestamp();
                    BinaryPrimitives.WriteInt64LittleEndian(body, t0);
                    var send = RemotingCommand.Request(RequestCode.SendMessageV2, new()
                    {
                        ["a"] = ProducerGroup, ["b"] = Topic, ["c"] = "TBW102", ["d"] = "4", ["e"] = S(queue),
                        ["f"] = S(MessageSysFlag.TransactionPreparedType), ["g"] = S(bornBase + (long)Stopwatch.GetElapsedTime(0, t0).TotalMilliseconds),
                        ["h"] = "0", ["i"] = props, ["j"] = "0", ["k"] = "false",
                    }, body.ToArray());
                    RemotingCommand sent;
                    try { sent = await conn.InvokeAsync(send, RequestTimeout, ct); }
                    catch (Exception) when (!ct.IsCancellationRequested) { Interlocked.Increment(ref sendErrors); continue; }
                    if (sent.Code != ResponseCode.Success || !OffsetMessageId.TryDecode(sent.Get("msgId"), out _, out long commitLogOffset))
                    {
                        Interlocked.Increment(ref sendErrors);
                        continue;
                    }
                    long t1 = Stopwatch.GetTimestamp();
                    var end = RemotingCommand.Request(RequestCode.EndTransaction)
                        .Set("producerGroup", ProducerGroup)
                        .Set("tranStateTableOffset", sent.Get("queueOffset") ?? "0")
                        .Set("commitLogOffset", commitLogOffset)
                        .Set("commitOrRollback", MessageSysFlag.TransactionCommitType)
                        .Set("fromTransactionCheck", false)
                        .Set("msgId", uniq)
                        .Set("transactionId", sent.Get("transactionId") ?? uniq);
                    try { await conn.SendOnewayAsync(end, ct); }
                    catch (Exception) when (!ct.IsCancellationRequested) { Interlocked.Increment(ref sendErrors); continue; }
                    long t2 = Stopwatch.GetTimestamp();
                    if (warm is not null)
                    {
                        Interlocked.Increment(ref warmCommitted);
                        continue;
                    }
                    commitDone[uniq] = t2;
                    halfLat[producer].Record(t1 - t0);
                    txLat[producer].Record(t2 - t0);
                    Interlocked.Increment(ref committed);
                    long last;
                    while ((last = Volatile.Read(ref lastCommit)) < t2 && Interlocked.CompareExchange(ref lastCommit, t2, last) != last) { }
                }
            }

            // Warm-up (JIT, connections, topic creation): the whole flow for at least --warmup seconds, then its
            // messages drain; not measured.
            var warmUp = WarmUp.Start(o.WarmupSeconds);
            await Task.WhenAll(Enumerable.Range(0, o.Producers).Select(p => Task.Run(() => ProduceAsync(p, warmPerProducer, warmUp), ct)));
            result.Notes.Add(await warmUp.DrainAsync(() => Interlocked.Read(ref warmCommitted), () => Interlocked.Read(ref warmDelivered), ct));

            long? logCommits0 = await broker.LogCommitsAsync(ct);
            var cpu = new CpuWindow(broker.Pid);
            long start = Stopwatch.GetTimestamp();
            Volatile.Write(ref measuredFrom, start);
            var producing = Enumerable.Range(0, o.Producers)
                .Select(p => Task.Run(() => ProduceAsync(p, n / o.Producers + (p < n % o.Producers ? 1 : 0), null), ct))
                .ToArray();
            try
            {
                await Task.WhenAll(producing);
                long expected = Interlocked.Read(ref committed);
                if (expected == n) await allDelivered.Task.WaitAsync(ct);
                else
                {
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
            long? logCommits1 = await broker.LogCommitsAsync(CancellationToken.None);
            var statsAfter = await broker.GetStatsAsync(CancellationToken.None);
            stopConsumers.Cancel();
            await Task.WhenAll(consumerTasks).WaitAsync(TimeSpan.FromSeconds(10), CancellationToken.None).ContinueWith(_ => { }, TaskScheduler.Default);
            // Java persists consumer offsets one-way on shutdown too.
            for (int q = 0; q < Queues; q++)
                if (Volatile.Read(ref consumed[q]) is long off and > 0)
                    await PersistOffsetAsync(consumerConns[q % consumerConns.Count], q, off, CancellationToken.None);

            double Seconds(long until) => (until - start) / (double)Stopwatch.Frequency;
            long com = Interlocked.Read(ref committed), del = Interlocked.Read(ref delivered);
            if (com == 0)
            {
                result.NotMeasured = $"no transaction committed ({Interlocked.Read(ref sendErrors):N0} send errors): {broker.RecentOutput}";
                return;
            }
            long commitEnd = Volatile.Read(ref lastCommit);
            double tps = com / Seconds(commitEnd);
            result.Metrics[Metric.Throughput] = tps;
            if (del > 0) result.Metrics[Metric.Delivered] = del / Seconds(Volatile.Read(ref lastDelivery));
            result.Metrics[Metric.Messages] = n;
            result.Metrics["committed"] = com;
            result.Metrics["delivered"] = del;
            result.Metrics["redelivered"] = Interlocked.Read(ref redelivered);
            result.Metrics["send_or_commit_errors"] = Interlocked.Read(ref sendErrors);
            result.Metrics["consumer_errors"] = Interlocked.Read(ref consumeErrors);
            result.Metrics["pulls"] = Interlocked.Read(ref pulls);
            result.Metrics["server_requests_to_producers"] = producerConns.Sum(c => c.ServerRequests);
            result.Metrics[Metric.ElapsedS] = Seconds(Math.Max(commitEnd, Volatile.Read(ref lastDelivery)));
            result.AddLatency(Metric.Send, LatencyRecorder.Merge(halfLat));
            result.AddLatency("tx", LatencyRecorder.Merge(txLat));
            var rtt = LatencyRecorder.Merge(pullRtt);
            result.AddLatency("pull_rtt", rtt);
            if (rtt.Count > 0) result.Metrics["messages_per_pull"] = pullBatch.Sum() / (double)rtt.Count;

            // one-way commit written → first delivery (clamped at 0)
            var e2e = new LatencyRecorder(n);
            var sendToDelivery = new LatencyRecorder(n);
            foreach (var list in deliveries)
                foreach (var (id, at, sentAt) in list)
                {
                    sendToDelivery.Record(at - sentAt);
                    if (commitDone.TryGetValue(id, out long done)) e2e.Record(Math.Max(0, at - done));
                }
            result.AddLatency(Metric.EndToEnd, e2e.ToStats());
            result.AddLatency("send_to_delivery", sendToDelivery.ToStats());

            foreach (var (k, v) in cpuMetrics) result.Metrics[k] = v;
            if (result.Get(Metric.Delivered) is double dps && tps > 0) result.Metrics["delivered_per_committed"] = dps / tps;
            if (broker.PeakRssMiB() is double rss) result.Metrics["broker_peak_rss_mib"] = rss;
            foreach (var key in new[] { "checksSent", "pendingTransactions" })
                if (statsAfter.TryGetValue(key, out double after)) result.Metrics["broker_" + key] = after;
            if (logCommits0 is long lc0 && logCommits1 is long lc1 && lc1 > lc0)
            {
                double commits = lc1 - lc0;
                result.Metrics["log_commits"] = commits;
                result.Metrics["log_commits_per_s"] = commits / Seconds(Math.Max(commitEnd, Volatile.Read(ref lastDelivery)));
                result.Metrics["tx_per_log_commit"] = com / commits;
            }
            string cpuPart = (result.Get("broker_cpu_s") is double cpuS ? $"broker CPU {cpuS:0.0} s ({result.Get("broker_cpu_ms_per_tx"):0.000} ms/tx)" : "broker CPU n/a") +
                             $", bench client {result.Get("client_cpu_ms_per_tx"):0.000} ms/tx";
            result.Summary = $"Remoting, one-way commit; half-send p50/p99 {result.Get("send_p50_ms"):0.00}/{result.Get("send_p99_ms"):0.00} ms; " +
                             $"commit→delivery p50/p99 {result.Get("e2e_p50_ms"):0.00}/{result.Get("e2e_p99_ms"):0.00} ms; delivered {del:N0} of {com:N0}; {cpuPart}";
        }
        finally
        {
            stopConsumers.Cancel();
            foreach (var c in producerConns.Concat(consumerConns))
                try { await c.DisposeAsync().AsTask().WaitAsync(TimeSpan.FromSeconds(5)); } catch (Exception) { /* closing */ }
        }
    }

    private static async Task PersistOffsetAsync(RemotingBenchConnection conn, int queueId, long offset, CancellationToken ct)
    {
        try
        {
            await conn.SendOnewayAsync(RemotingCommand.Request(RequestCode.UpdateConsumerOffset, new()
            {
                ["consumerGroup"] = ConsumerGroup, ["topic"] = Topic, ["queueId"] = S(queueId), ["commitOffset"] = S(offset),
            }), ct);
        }
        catch (Exception) { /* closing; the pull's commitOffset carries it too */ }
    }
}
