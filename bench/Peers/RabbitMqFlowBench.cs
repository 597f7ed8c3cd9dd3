using System.Buffers.Binary;
using System.Diagnostics;
using HalfMsg.Bench.Flows;
using HalfMsg.Bench.Reporting;
using RabbitMQ.Client;
using RabbitMQ.Client.Events;

namespace HalfMsg.Bench.Peers;

/// <summary>
/// The peer flow on RabbitMQ (RabbitMQ.Client 7, async API): one durable queue, persistent messages, P publishers
/// (one channel each, publisher confirms with tracking, so each <c>BasicPublishAsync</c> returns once the broker
/// confirmed — one outstanding message per publisher, like our transactional producers awaiting each commit),
/// C consumers (one channel each, manual ack, prefetch 32). Fixed message count. The body carries the publish
/// timestamp for publish-to-delivery latency.
/// </summary>
public sealed class RabbitMqFlowBench(RabbitMqServer? shared = null, string? name = null) : IFlowBench
{
    public const string FlowName = "peer: RabbitMQ";
    public const ushort Prefetch = 32;

    public string Name => name ?? FlowName;

    public async Task<BenchResult> RunAsync(BenchOptions o, CancellationToken ct)
    {
        if (o.SkipRabbitMq) return BenchResult.Skipped(Name, BenchKind.Peer, "skipped (--no-rabbitmq)");

        RabbitMqServer? server = null;
        int? beamPid = null;
        Uri uri;
        string? version = null;
        var notes = new List<string>();
        if (shared is not null)
        {
            uri = shared.Uri;
            beamPid = shared.BeamPid is > 0 and var bp ? bp : null;
            notes.Add($"throwaway node {shared.NodeName} on 127.0.0.1:{shared.AmqpPort} (shared by the sweep's levels)");
        }
        else if (o.RabbitMqUri is not null)
        {
            uri = new Uri(o.RabbitMqUri);
            notes.Add($"external RabbitMQ at {uri.Host}:{uri.Port}");
        }
        else
        {
            Console.WriteLine("  [rabbitmq] starting a throwaway node…");
            var (s, error) = await RabbitMqServer.TryStartAsync(ct);
            if (s is null) return BenchResult.Skipped(Name, BenchKind.Peer, error ?? "RabbitMQ could not be started");
            server = s;
            uri = s.Uri;
            beamPid = s.BeamPid is > 0 and var bp ? bp : null;
            notes.Add($"throwaway node {s.NodeName} on 127.0.0.1:{s.AmqpPort}, started in {s.StartupTime.TotalSeconds:0.0} s");
            Console.WriteLine($"  [rabbitmq] {notes[^1]}");
        }

        try
        {
            using var timeout = CancellationTokenSource.CreateLinkedTokenSource(ct);
            timeout.CancelAfter(o.FlowTimeout);
            var result = await RunFlowAsync(uri, o, notes, v => version = v, beamPid, timeout.Token, ct);
            if (version is not null) result.Notes.Insert(0, $"RabbitMQ {version}");
            return result;
        }
        catch (Exception ex) when (!ct.IsCancellationRequested)
        {
            return BenchResult.Skipped(Name, BenchKind.Peer, $"{ex.GetType().Name}: {ex.Message}");
        }
        finally
        {
            if (server is not null) await server.DisposeAsync();
        }
    }

    private async Task<BenchResult> RunFlowAsync(Uri uri, BenchOptions o, List<string> notes, Action<string> setVersion,
        int? beamPid, CancellationToken ct, CancellationToken outer)
    {
        int n = o.Messages, bodySize = Math.Max(o.BodySize, 16);
        string queue = "halfmsg-bench-" + Guid.NewGuid().ToString("N")[..8];
        var factory = new ConnectionFactory { Uri = uri, ClientProvidedName = "halfmsg-bench" };

        await using var pubConn = await factory.CreateConnectionAsync("halfmsg-bench-publishers", ct);
        await using var subConn = await factory.CreateConnectionAsync("halfmsg-bench-consumers", ct);
        if (pubConn.ServerProperties?.TryGetValue("version", out object? v) == true && v is byte[] vb)
            setVersion(System.Text.Encoding.UTF8.GetString(vb));

        await using (var admin = await pubConn.CreateChannelAsync(cancellationToken: ct))
            await admin.QueueDeclareAsync(queue, durable: true, exclusive: false, autoDelete: false, arguments: null, cancellationToken: ct);

        // Consumers. Byte 8 of a body marks a warm-up message: acked and counted, not measured.
        long delivered = 0, warmDelivered = 0;
        long lastDelivery = 0;
        var allDelivered = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var e2e = Enumerable.Range(0, o.Consumers).Select(_ => new LatencyRecorder(n / o.Consumers + 1)).ToArray();
        var consumerChannels = new List<IChannel>();
        for (int c = 0; c < o.Consumers; c++)
        {
            var ch = await subConn.CreateChannelAsync(cancellationToken: ct);
            consumerChannels.Add(ch);
            await ch.BasicQosAsync(0, Prefetch, false, ct);
            var rec = e2e[c];
            var consumer = new AsyncEventingBasicConsumer(ch);
            consumer.ReceivedAsync += async (_, ea) =>
            {
                // Handlers of one channel run one at a time (dispatch concurrency 1): the recorder is not shared.
                if (ea.Body.Span[8] == 1)
                {
                    await ch.BasicAckAsync(ea.DeliveryTag, multiple: false);
                    Interlocked.Increment(ref warmDelivered);
                    return;
                }
                long sent = BinaryPrimitives.ReadInt64LittleEndian(ea.Body.Span);
                rec.RecordSince(sent);
                await ch.BasicAckAsync(ea.DeliveryTag, multiple: false);
                long now = Stopwatch.GetTimestamp();
                Volatile.Write(ref lastDelivery, now);
                if (Interlocked.Increment(ref delivered) == n) allDelivered.TrySetResult();
            };
            await ch.BasicConsumeAsync(queue, autoAck: false, consumer, ct);
        }

        // Publishers.
        var send = Enumerable.Range(0, o.Producers).Select(_ => new LatencyRecorder(n / o.Producers + 1)).ToArray();
        var pubChannels = new List<IChannel>();
        for (int p = 0; p < o.Producers; p++)
            pubChannels.Add(await pubConn.CreateChannelAsync(new CreateChannelOptions(publisherConfirmationsEnabled: true, publisherConfirmationTrackingEnabled: true), ct));

        // Warm-up: the whole flow (publishers with confirms, consumers) for at least --warmup seconds, as the broker rows
        // get, then its messages drain; not measured.
        var warmUp = Infrastructure.WarmUp.Start(o.WarmupSeconds);
        long warmConfirmed = 0;
        await Task.WhenAll(Enumerable.Range(0, o.Producers).Select(p => Task.Run(async () =>
        {
            var ch = pubChannels[p];
            var props = new BasicProperties { DeliveryMode = DeliveryModes.Persistent, ContentType = "application/octet-stream" };
            var body = new byte[bodySize];
            body[8] = 1;
            for (int i = 0; i < 25 || warmUp.Running; i++)
            {
                await ch.BasicPublishAsync("", queue, mandatory: false, props, body, ct);
                Interlocked.Increment(ref warmConfirmed);
            }
        }, ct)));
        string warmNote = await warmUp.DrainAsync(() => Interlocked.Read(ref warmConfirmed), () => Interlocked.Read(ref warmDelivered), ct, "messages");

        long confirmed = 0, lastConfirm = 0;
        var cpu = new Infrastructure.CpuWindow(beamPid);
        long start = Stopwatch.GetTimestamp();
        var publishers = new Task[o.Producers];
        for (int p = 0; p < o.Producers; p++)
        {
            int publisher = p;
            int count = n / o.Producers + (publisher < n % o.Producers ? 1 : 0);
            publishers[p] = Task.Run(async () =>
            {
                var ch = pubChannels[publisher];
                var props = new BasicProperties { DeliveryMode = DeliveryModes.Persistent, ContentType = "application/octet-stream" };
                var body = new byte[bodySize];
                Random.Shared.NextBytes(body);
                body[8] = 0;
                var rec = send[publisher];
                for (int i = 0; i < count; i++)
                {
                    long t0 = Stopwatch.GetTimestamp();
                    BinaryPrimitives.WriteInt64LittleEndian(body, t0);
                    // Tracking enabled: completes when the broker has confirmed (persisted) the message.
                    await ch.BasicPublishAsync("", queue, mandatory: false, props, body, ct);
                    rec.RecordSince(t0);
                    Interlocked.Increment(ref confirmed);
                }
                Volatile.Write(ref lastConfirm, Math.Max(Volatile.Read(ref lastConfirm), Stopwatch.GetTimestamp()));
            }, ct);
        }

        var result = new BenchResult
        {
            Name = Name,
            Kind = BenchKind.Peer,
            Description = $"{n:N0} persistent {bodySize} B messages to one durable queue; {o.Producers} publishers " +
                          $"(one channel each on one connection, confirms, 1 outstanding each), {o.Consumers} consumers (manual ack, prefetch {Prefetch}).",
        };
        result.Metrics["inflight"] = o.Producers;
        result.Notes.AddRange(notes);
        result.Notes.Add(warmNote);
        try
        {
            await Task.WhenAll(publishers);
            await allDelivered.Task.WaitAsync(ct);
        }
        catch (OperationCanceledException) when (!outer.IsCancellationRequested)
        {
            result.Notes.Add($"timed out after {o.FlowTimeout.TotalSeconds:0} s: {Interlocked.Read(ref confirmed):N0} confirmed, {Interlocked.Read(ref delivered):N0} delivered of {n:N0}");
        }
        double Seconds(long until) => (until - start) / (double)Stopwatch.Frequency;
        var cpuMetrics = new Dictionary<string, double>();
        cpu.Stop(cpuMetrics, "rabbitmq", Math.Max(1, Interlocked.Read(ref confirmed)));

        long conf = Interlocked.Read(ref confirmed), del = Interlocked.Read(ref delivered);
        if (conf == 0)
        {
            result.NotMeasured = "no message was confirmed";
        }
        else
        {
            long confirmEnd = Volatile.Read(ref lastConfirm) is long lc && lc > 0 ? lc : Stopwatch.GetTimestamp();
            result.Metrics[Metric.Throughput] = conf / Seconds(confirmEnd);
            if (del > 0) result.Metrics[Metric.Delivered] = del / Seconds(Volatile.Read(ref lastDelivery));
            result.Metrics[Metric.Messages] = n;
            result.Metrics["confirmed"] = conf;
            result.Metrics["delivered"] = del;
            result.Metrics[Metric.ElapsedS] = Seconds(Math.Max(confirmEnd, Volatile.Read(ref lastDelivery)));
            result.AddLatency(Metric.Send, LatencyRecorder.Merge(send));
            result.AddLatency(Metric.EndToEnd, LatencyRecorder.Merge(e2e));
            foreach (var (key, value) in cpuMetrics) result.Metrics[key] = value;
            if (result.Get(Metric.Delivered) is double dps && result.Get(Metric.Throughput) is double tps && tps > 0)
                result.Metrics["delivered_per_committed"] = dps / tps;
            result.Summary = $"confirm p50/p99 {result.Get("send_p50_ms"):0.00}/{result.Get("send_p99_ms"):0.00} ms" +
                             (result.Get("rabbitmq_cpu_ms_per_tx") is double rc ? $"; RabbitMQ CPU {rc:0.000} ms/msg" : "") +
                             $", bench client {result.Get("client_cpu_ms_per_tx"):0.000} ms/msg";
        }

        foreach (var ch in pubChannels) await SafeCloseAsync(ch);
        foreach (var ch in consumerChannels) await SafeCloseAsync(ch);
        try
        {
            await using var admin = await pubConn.CreateChannelAsync(cancellationToken: CancellationToken.None);
            await admin.QueueDeleteAsync(queue, ifUnused: false, ifEmpty: false);
        }
        catch (Exception) { /* throwaway */ }
        return result;
    }

    private static async Task SafeCloseAsync(IChannel ch)
    {
        try { await ch.CloseAsync(); } catch (Exception) { /* closing */ }
        ch.Dispose();
    }
}
