using System.Diagnostics;
using Apache.Rocketmq.V2;
using Google.Protobuf;
using Google.Protobuf.WellKnownTypes;
using Grpc.Core;
using Grpc.Net.Client;
using HalfMsg.Bench.Floor;
using HalfMsg.Bench.Infrastructure;
using HalfMsg.Bench.Reporting;
using HalfMsg.Protocol.Grpc;
using HalfMsg.TestKit;
using Metric = HalfMsg.Bench.Reporting.Metric;

namespace HalfMsg.Bench.Flows;

/// <summary>
/// The same transactional flow as the broker row (L producers with one transaction outstanding each: half send then
/// commit; C consumers: receive batch 32 then one ack call per batch), sent with the generated stubs on
/// Grpc.Net.Client (one channel and connection per producer, the RocketMQ headers on every call) to
/// <see cref="GrpcFloorServer"/>, which answers everything and stores nothing. Its CPU per transaction is the least
/// the broker can spend on this stack; the summary sets it beside the broker row measured at the same level.
/// <para>With <c>withLog</c>, the server also stores every step in the broker's log class and waits where the broker
/// waits (<see cref="GrpcFloorServer"/>, <c>--log</c>): the least a broker that keeps its state in that log can spend on
/// this stack, and the most it can carry on this machine.</para>
/// <para>With <c>againstBroker</c>, the same raw-stub client runs against a broker process (an opt-in row): beside the
/// broker row, which uses the bench's ProducerClient and SimpleConsumers, it shows what the bench's own clients take
/// from the rate on these two shared cores.</para>
/// </summary>
public sealed class GrpcFloorBench(string name, int messages, int inFlight, BenchResult? brokerRow, BenchResult? ceilingRow = null, bool withLog = false,
    bool againstBroker = false) : IFlowBench
{
    private const int Batch = 32;

    public string Name => name;

    public async Task<BenchResult> RunAsync(BenchOptions o, CancellationToken outer)
    {
        using var timeout = CancellationTokenSource.CreateLinkedTokenSource(outer);
        timeout.CancelAfter(o.FlowTimeout);
        var ct = timeout.Token;
        if (againstBroker)
        {
            var (broker, error) = await BrokerProcess.TryStartAsync(new BrokerStartOptions { ExtraArgs = BrokerProcess.ModeArgs(o.Flush, o.DecisionDurability) }, ct);
            if (broker is null) return BenchResult.Skipped(Name, BenchKind.Flow, error!);
            await using (broker)
            {
                return await MeasureAsync(o, broker.GrpcPort, broker.Pid, ct, outer);
            }
        }

        int port = FreePorts.Next();
        var psi = new ProcessStartInfo("dotnet") { UseShellExecute = false, RedirectStandardInput = true, RedirectStandardOutput = true, RedirectStandardError = true };
        foreach (string a in new[] { typeof(GrpcFloorServer).Assembly.Location, GrpcFloorServer.Verb, port.ToString(System.Globalization.CultureInfo.InvariantCulture) })
        {
            psi.ArgumentList.Add(a);
        }

        if (withLog)
        {
            // The server deletes it when it stops; a killed server leaves it in the temp dir like the broker rows' dirs.
            psi.ArgumentList.Add("--log");
            psi.ArgumentList.Add(Path.Combine(Path.GetTempPath(), "halfmsg-floor-log-" + Guid.NewGuid().ToString("N")[..12]));
        }

        using var server = new Process { StartInfo = psi };
        var ready = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var output = new System.Collections.Concurrent.ConcurrentQueue<string>();
        server.OutputDataReceived += (_, e) => { if (e.Data is { } d) { output.Enqueue(d); if (d == "READY") ready.TrySetResult(); } };
        server.ErrorDataReceived += (_, e) => { if (e.Data is { } d) output.Enqueue(d); };
        server.Start();
        server.BeginOutputReadLine();
        server.BeginErrorReadLine();
        try
        {
            if (await Task.WhenAny(ready.Task, server.WaitForExitAsync(ct), Task.Delay(TimeSpan.FromSeconds(30), ct)) != ready.Task)
            {
                return BenchResult.Skipped(Name, BenchKind.Flow, "floor server did not start: " + string.Join(" | ", output.TakeLast(5)));
            }

            return await MeasureAsync(o, port, server.Id, ct, outer);
        }
        finally
        {
            if (!server.HasExited)
            {
                try { server.StandardInput.Close(); } catch (IOException) { }
                if (!server.WaitForExit(10_000)) server.Kill(entireProcessTree: true);
            }
        }
    }

    private async Task<BenchResult> MeasureAsync(BenchOptions o, int port, int serverPid, CancellationToken ct, CancellationToken outer)
    {
        var producers = new List<GrpcChannel>();
        var consumers = new List<GrpcChannel>();
        try
        {
            for (int i = 0; i < o.InstancesFor(inFlight); i++) producers.Add(Channel(port));
            for (int i = 0; i < o.Consumers; i++) consumers.Add(Channel(port));
            await using var floorConsumers = new FloorConsumers(consumers, ct);
            var body = ByteString.CopyFrom(new byte[o.BodySize]);

            // Warm-up: rounds of the flow for at least --warmup seconds (a fresh server process compiles for its first
            // seconds under load, like the broker).
            var warmUp = WarmUp.Start(o.WarmupSeconds);
            int warmRound = Math.Min(2_000, messages);
            long warmTx = 0;
            do
            {
                await RunPhaseAsync(warmRound, producers, floorConsumers, body, null, null, o.HalfSendCalls, o.DecisionCalls, ct);
                warmTx += warmRound;
            } while (warmUp.Running);
            var result = new BenchResult
            {
                Name = Name,
                Kind = BenchKind.Flow,
                Description = againstBroker
                    ? $"The gRPC floor rows' raw-stub client (generated stubs with the RocketMQ headers, half sends and decisions coalesced as the broker row's producers do, " +
                      $"{o.Consumers} consumers with receive batch {Batch} + one ack call) against a broker process (flush {o.Flush.ToString().ToLowerInvariant()}): " +
                      $"{messages:N0} tx of {o.BodySize} B, {inFlight} producers on {o.InstancesFor(inFlight)} connection(s). The broker row runs the same flow with the bench's " +
                      "ProducerClient and SimpleConsumers; the difference in rate is what those clients take on these two shared cores. Not paced."
                    : ((withLog
                                  ? "The broker row's flow against a MessagingService on the broker's stack (Kestrel HTTP/2 + grpc-dotnet, " +
                                    "bench/Floor/GrpcFloorServer.cs --log) that stores each step in the broker's log class (RecordLog, sync flush) " +
                                    "and waits where the broker waits: half appended and durable before its reply, decision likewise, a record per " +
                                    "delivery (not waited for) and each body read back from the log, a record per ack (durable before the reply); " +
                                    "no engine, no index, no lock, no validation: "
                                  : "The broker row's flow against an empty MessagingService on the broker's stack (Kestrel HTTP/2 + grpc-dotnet, " +
                                    "bench/Floor/GrpcFloorServer.cs: no storage, no logic): ") +
                              $"{messages:N0} tx of {o.BodySize} B, {inFlight} producers " +
                              $"(half send then commit) on {o.InstancesFor(inFlight)} connection(s) as the broker row's producers share theirs, " +
                              (o.HalfSendCalls > 0 ? $"half sends coalesced as the broker row's producers do (up to {o.HalfSendCalls} calls in flight per connection), " : "one call per half, ") +
                              (o.DecisionCalls > 0 ? $"decisions coalesced likewise (up to {o.DecisionCalls} EndTransactions calls in flight per connection), " : "one EndTransaction per decision, ") +
                              $"{o.Consumers} consumers (receive batch {Batch} + one ack call), " +
                              "generated stubs with the RocketMQ headers. Run twice: as fast as it goes (tx/s column), then paced at the broker " +
                              "row's tx/s, since CPU per transaction falls as the rate rises (more frames per wake-up); the paced server CPU " +
                              "per tx is the least the broker can spend on this stack at the broker's rate."),
            };

            result.Notes.Add(warmUp.Note(warmTx));

            // As fast as it goes: the stack's own ceiling on this machine.
            var send = Enumerable.Range(0, inFlight).Select(_ => new LatencyRecorder(messages / inFlight + 16)).ToArray();
            var cpu = new CpuWindow(serverPid);
            var (committedAt, deliveredAt) = await RunPhaseAsync(messages, producers, floorConsumers, body, send, null, o.HalfSendCalls, o.DecisionCalls, ct);
            cpu.Stop(result.Metrics, "floor", messages);
            result.Metrics[Metric.Throughput] = messages / committedAt.TotalSeconds;
            result.Metrics[Metric.Delivered] = messages / deliveredAt.TotalSeconds;
            result.Metrics[Metric.Messages] = messages;
            result.Metrics["inflight"] = inFlight;
            result.AddLatency(Metric.Send, LatencyRecorder.Merge(send));

            // Paced at the broker's rate: the CPU per transaction to compare with the broker row's.
            if (!againstBroker && brokerRow?.Get(Metric.Throughput) is double rate && rate > 0)
            {
                var paced = new Dictionary<string, double>();
                var pacedCpu = new CpuWindow(serverPid);
                var (pacedCommitted, _) = await RunPhaseAsync(messages, producers, floorConsumers, body, null, rate, o.HalfSendCalls, o.DecisionCalls, ct);
                pacedCpu.Stop(paced, "floor", messages);
                result.Metrics["paced_tx_per_s"] = messages / pacedCommitted.TotalSeconds;
                foreach (var key in new[] { "floor_cpu_ms_per_tx", "client_cpu_ms_per_tx", "floor_cpu_cores", "client_cpu_cores", "others_cpu_cores" })
                {
                    if (paced.TryGetValue(key, out double v)) result.Metrics["paced_" + key] = v;
                }
            }

            result.Summary = Summary(result);
            return result;
        }
        catch (OperationCanceledException) when (!outer.IsCancellationRequested)
        {
            return BenchResult.Skipped(Name, BenchKind.Flow, $"timed out after {o.FlowTimeout.TotalSeconds:0} s");
        }
        finally
        {
            foreach (var c in producers.Concat(consumers)) c.Dispose();
        }
    }

    private string Summary(BenchResult r)
    {
        if (againstBroker)
        {
            string raw = $"raw-stub client against the broker: client {r.Get("client_cpu_ms_per_tx"):0.000} ms/tx, broker {r.Get("floor_cpu_ms_per_tx"):0.000} ms/tx";
            if (brokerRow?.Get(Metric.Throughput) is double brokerTps && brokerTps > 0 && r.Get(Metric.Throughput) is double rawTps)
            {
                raw += $"; {rawTps / brokerTps:0.00}× the broker row's {brokerTps:N0} tx/s, whose ProducerClient and SimpleConsumers took {brokerRow.Get("client_cpu_ms_per_tx"):0.000} ms/tx";
            }
            return raw;
        }

        string server = withLog ? "floor + log server" : "floor server";
        string s = $"unpaced: {server} {r.Get("floor_cpu_ms_per_tx"):0.000} ms/tx, raw-stub client {r.Get("client_cpu_ms_per_tx"):0.000} ms/tx";
        if (ceilingRow?.Get(Metric.Throughput) is double ceiling && ceiling > 0 && r.Get(Metric.Throughput) is double tps)
        {
            s += $", {tps / ceiling:0.00}× the raw log's ceiling at this level";
        }

        if (r.Get("paced_floor_cpu_ms_per_tx") is not double floor)
        {
            return s + "; not paced (no broker row at this level to compare with)";
        }

        s += $"; paced at the broker row's rate ({r.Get("paced_tx_per_s"):N0} tx/s): {server} {floor:0.000} ms/tx";
        if (brokerRow?.Get("broker_cpu_ms_per_tx") is double b && b > 0)
        {
            s += $"; broker row {b:0.000} ms/tx: the stack{(withLog ? " and log" : "")} alone {(withLog ? "are" : "is")} {floor / b:P0} of it, the broker's own work {b - floor:0.000} ms/tx; " +
                 $"the 0.10 ms/tx target is {(floor > 0.10 ? "below" : "above")} this stack's floor";
        }

        // The paced client's CPU includes the pacing's timer wake-ups, so it is recorded but not compared with the bench client's.
        return s;
    }

    private static GrpcChannel Channel(int port) => GrpcChannel.ForAddress($"http://127.0.0.1:{port}", new GrpcChannelOptions
    {
        // As the client library's transport (src/ClientCore/Transport/RpcChannel.cs), minus signing.
        HttpHandler = new SocketsHttpHandler
        {
            EnableMultipleHttp2Connections = true,
            KeepAlivePingDelay = TimeSpan.FromSeconds(5),
            KeepAlivePingTimeout = TimeSpan.FromSeconds(5),
            KeepAlivePingPolicy = HttpKeepAlivePingPolicy.WithActiveRequests,
            UseProxy = false,
        },
        MaxReceiveMessageSize = 16 * 1024 * 1024,
        MaxSendMessageSize = null,
    });

    /// <summary>Every RocketMQ 5 call's headers (src/ClientCore/Transport/RpcChannel.cs SigningInterceptor, without credentials).</summary>
    private static CallOptions Call(string clientId, CancellationToken ct) => new(
        headers: new Metadata
        {
            { RocketMqHeaders.ClientId, clientId },
            { RocketMqHeaders.Language, "DOTNET" },
            { RocketMqHeaders.Protocol, RocketMqHeaders.ProtocolValue },
            { RocketMqHeaders.ClientVersion, "bench-floor" },
            { RocketMqHeaders.DateTime, MqSignature.FormatDateTime(DateTimeOffset.UtcNow) },
            { RocketMqHeaders.RequestId, Guid.NewGuid().ToString() },
        },
        deadline: DateTime.UtcNow.AddSeconds(30),
        cancellationToken: ct);

    /// <summary>
    /// The row's consumers, started once for all its phases: each receives a batch, acks it with one call and counts it.
    /// A phase waits until the count reaches its target. (Consumers that were cancelled at the end of each phase left
    /// receive calls the server had not yet seen cancelled, which took the next phase's first messages and lost them:
    /// the row hung once phases followed each other quickly.)
    /// </summary>
    private sealed class FloorConsumers : IAsyncDisposable
    {
        private readonly CancellationTokenSource _stop;
        private readonly Task[] _tasks;
        private long _delivered;
        private long _target = long.MaxValue;
        private long _reachedAt;

        public FloorConsumers(List<GrpcChannel> channels, CancellationToken ct)
        {
            _stop = CancellationTokenSource.CreateLinkedTokenSource(ct);
            var topic = new Resource { Name = "bench-floor" };
            var group = new Resource { Name = "bench-floor-group" };
            _tasks = channels.Select((channel, ci) => Task.Run(async () =>
            {
                var client = new MessagingService.MessagingServiceClient(channel);
                string clientId = "floor-consumer-" + ci;
                var token = _stop.Token;
                while (!token.IsCancellationRequested)
                {
                    var receipts = new List<AckMessageEntry>(Batch);
                    try
                    {
                        using var call = client.ReceiveMessage(new ReceiveMessageRequest
                        {
                            Group = group, MessageQueue = new MessageQueue { Topic = topic, Id = -1 }, BatchSize = Batch,
                            InvisibleDuration = Duration.FromTimeSpan(TimeSpan.FromSeconds(30)), LongPollingTimeout = Duration.FromTimeSpan(TimeSpan.FromSeconds(5)),
                            AutoRenew = false, FilterExpression = new FilterExpression { Type = FilterType.Tag, Expression = "*" },
                        }, Call(clientId, token));
                        await foreach (ReceiveMessageResponse r in call.ResponseStream.ReadAllAsync(token))
                        {
                            if (r.Message is { } m) receipts.Add(new AckMessageEntry { MessageId = m.SystemProperties.MessageId, ReceiptHandle = m.SystemProperties.ReceiptHandle });
                        }

                        if (receipts.Count == 0) continue;
                        var ack = new AckMessageRequest { Group = group, Topic = topic };
                        ack.Entries.AddRange(receipts);
                        await client.AckMessageAsync(ack, Call(clientId, token));
                    }
                    catch (RpcException) when (token.IsCancellationRequested) { break; }
                    catch (OperationCanceledException) when (token.IsCancellationRequested) { break; }

                    long now = Interlocked.Add(ref _delivered, receipts.Count);
                    long target = Volatile.Read(ref _target);
                    if (now >= target && now - receipts.Count < target) Volatile.Write(ref _reachedAt, Stopwatch.GetTimestamp());
                }
            }, ct)).ToArray();
        }

        public long Delivered => Interlocked.Read(ref _delivered);

        /// <summary>Sets the next target (messages delivered in all); waits for it; returns when it was reached.</summary>
        public async Task<long> WaitForAsync(long target, CancellationToken ct)
        {
            Volatile.Write(ref _reachedAt, 0);
            Volatile.Write(ref _target, target);
            if (Delivered >= target) return Stopwatch.GetTimestamp();
            while (Volatile.Read(ref _reachedAt) == 0)
            {
                if (Delivered >= target) return Stopwatch.GetTimestamp(); // crossed before the target was set
                await Task.Delay(5, ct);
            }
            return Volatile.Read(ref _reachedAt);
        }

        public async ValueTask DisposeAsync()
        {
            _stop.Cancel();
            await Task.WhenAll(_tasks).WaitAsync(TimeSpan.FromSeconds(10)).ContinueWith(_ => { }, TaskScheduler.Default);
            _stop.Dispose();
        }
    }

    private async Task<(TimeSpan Committed, TimeSpan Delivered)> RunPhaseAsync(int total, List<GrpcChannel> producers, FloorConsumers consumers,
        ByteString body, LatencyRecorder[]? send, double? pace, int halfSendCalls, int decisionCalls, CancellationToken ct)
    {
        var topic = new Resource { Name = "bench-floor" };
        int next = -1;
        long deliveredBefore = consumers.Delivered;
        long start = Stopwatch.GetTimestamp();
        var sw = Stopwatch.StartNew();
        TimeSpan committedAt = default;
        // Half sends coalesced per channel as the broker row's ProducerClient instances do (--half-send-calls), so the
        // floor makes the same calls the broker row makes.
        var endpoint = new HalfMsg.ClientCore.Transport.Endpoint("127.0.0.1", 1);
        var coalescers = producers.Select((channel, ci) =>
        {
            var client = new MessagingService.MessagingServiceClient(channel);
            return halfSendCalls > 0
                ? new HalfMsg.ProducerClient.HalfSendCoalescer(halfSendCalls, maxMessages: 32, maxBytes: 1024 * 1024,
                    (_, request, token) => client.SendMessageAsync(request, Call("floor-producer-" + ci, token)).ResponseAsync)
                : null;
        }).ToArray();
        var deciders = producers.Select((channel, ci) =>
        {
            var client = new HalfMsg.Protocol.V1.TransactionService.TransactionServiceClient(channel);
            return decisionCalls > 0
                ? new HalfMsg.ProducerClient.DecisionCoalescer(decisionCalls, maxDecisions: 128,
                    (_, request, token) => client.EndTransactionsAsync(request, Call("floor-producer-" + ci, token)).ResponseAsync)
                : null;
        }).ToArray();
        await Task.WhenAll(Enumerable.Range(0, inFlight).Select(pi => Task.Run(async () =>
        {
            // Producer pi on channel pi mod channels, as the broker row shares its ProducerClient instances.
            var client = new MessagingService.MessagingServiceClient(producers[pi % producers.Count]);
            var coalescer = coalescers[pi % producers.Count];
            var decider = deciders[pi % producers.Count];
            string clientId = "floor-producer-" + pi;
            int i;
            while ((i = Interlocked.Increment(ref next)) < total)
            {
                if (pace is double txPerSecond && TimeSpan.FromSeconds(i / txPerSecond) - sw.Elapsed is { TotalMilliseconds: > 1 } ahead)
                {
                    await Task.Delay(ahead, ct);
                }

                string id = Guid.NewGuid().ToString("N").ToUpperInvariant();
                long t0 = Stopwatch.GetTimestamp();
                var half = new Message
                {
                    Topic = topic,
                    Body = body,
                    SystemProperties = new SystemProperties
                    {
                        MessageId = id, BodyEncoding = Encoding.Identity, MessageType = MessageType.Transaction,
                        BornTimestamp = Timestamp.FromDateTimeOffset(DateTimeOffset.UtcNow), BornHost = Environment.MachineName, QueueId = 0,
                    },
                };
                SendResultEntry sent = coalescer is not null
                    ? await coalescer.SendAsync(endpoint, half, ct)
                    : (await client.SendMessageAsync(new SendMessageRequest { Messages = { half } }, Call(clientId, ct))).Entries[0];
                send?[pi].RecordSince(t0);
                var decision = new EndTransactionRequest
                {
                    Topic = topic, MessageId = id, TransactionId = sent.TransactionId,
                    Resolution = TransactionResolution.Commit, Source = TransactionSource.SourceClient,
                };
                if (decider is not null)
                {
                    await decider.EndAsync(endpoint, decision, ct);
                }
                else
                {
                    await client.EndTransactionAsync(decision, Call(clientId, ct));
                }
            }
        }, ct)));
        committedAt = sw.Elapsed;
        long reached = await consumers.WaitForAsync(deliveredBefore + total, ct);
        return (committedAt, Stopwatch.GetElapsedTime(start, Math.Max(reached, start)));
    }
}
