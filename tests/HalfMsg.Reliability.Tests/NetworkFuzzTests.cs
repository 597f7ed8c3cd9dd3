using System.Buffers;
using System.Buffers.Binary;
using System.Diagnostics;
using System.Globalization;
using System.Net;
using System.Net.Http.Headers;
using System.Net.Sockets;
using HalfMsg.ConsumerClient;
using HalfMsg.Fuzz.Capture;
using HalfMsg.ProducerClient;
using HalfMsg.Protocol.Grpc;
using HalfMsg.Protocol.Remoting;
using HalfMsg.TestKit;
using Xunit.Abstractions;
using ProducerMessage = HalfMsg.ProducerClient.Message;

namespace HalfMsg.Reliability.Tests;

/// <summary>
/// Issue 13, item 2, the network fuzzer: a real broker process; real Remoting frames and real gRPC (h2c) traffic are
/// recorded through a proxy, then mutated and sent on fresh connections (Remoting frames; gRPC requests with mutated
/// protobuf bodies over a valid HTTP/2 client; the recorded HTTP/2 byte stream itself mutated on a raw socket), while a
/// well-behaved client keeps running transactions over both protocols. Invariants: the broker never exits, its
/// resident memory stays bounded, it keeps answering /health, and every request of the well-behaved client succeeds.
/// 30 s in the default run; 5 minutes with HALFMSG_SLOW_TESTS=1.
/// </summary>
public sealed class NetworkFuzzTests(ITestOutputHelper output)
{
    private static readonly string[] GrpcPaths =
    [
        GrpcMethods.QueryRoute, GrpcMethods.Heartbeat, GrpcMethods.SendMessage, GrpcMethods.QueryAssignment, GrpcMethods.ReceiveMessage,
        GrpcMethods.AckMessage, GrpcMethods.ForwardMessageToDeadLetterQueue, GrpcMethods.EndTransaction, GrpcMethods.ChangeInvisibleDuration,
        GrpcMethods.NotifyClientTermination, GrpcMethods.Telemetry,
    ];

    private long _remotingFrames, _grpcRequests, _h2Streams, _h2Bytes, _goodRounds;
    private readonly List<string> _goodFailures = [];
    private readonly List<double> _roundTimes = [];

    [Fact]
    public async Task Mutated_Remoting_and_gRPC_traffic_never_crashes_the_broker_nor_disturbs_a_well_behaved_client()
    {
        var duration = ReliabilityConventions.SlowTestsEnabled ? TimeSpan.FromMinutes(5) : TimeSpan.FromSeconds(30);
        await using var broker = await BrokerProcess.StartAsync();
        int pid = broker.Pid;
        Assert.True(pid > 0, "broker has no pid");

        // ---- record real traffic to mutate
        var (remotingFrames, grpcBodies, h2Streams) = await RecordAsync(broker);
        Assert.True(remotingFrames.Count >= 10, $"only {remotingFrames.Count} Remoting request frames recorded");
        Assert.NotEmpty(grpcBodies);
        Assert.NotEmpty(h2Streams);

        long baselineRss = ReadRssKiB(pid);
        long peakRss = baselineRss;
        using var stop = new CancellationTokenSource(duration);
        var sampler = Task.Run(async () =>
        {
            while (!stop.IsCancellationRequested)
            {
                if (broker.HasExited) return;
                peakRss = Math.Max(peakRss, ReadRssKiB(pid));
                try { await Task.Delay(250, stop.Token); } catch (OperationCanceledException) { }
            }
        });

        var good = Task.Run(() => WellBehavedAsync(broker, stop.Token));
        var fuzzers = Enumerable.Range(0, 3).Select(i => Task.Run(() => FuzzLoopAsync(broker, i, remotingFrames, grpcBodies, h2Streams, stop.Token))).ToArray();
        await Task.WhenAll(fuzzers);
        await good.WaitAsync(TimeSpan.FromSeconds(90));
        await sampler;

        bool healthy = await HealthyAsync(broker.HttpPort, TimeSpan.FromSeconds(30));
        long endRss = broker.HasExited ? 0 : ReadRssKiB(pid);
        output.WriteLine($"duration {duration.TotalSeconds:F0} s: Remoting frames {_remotingFrames}, gRPC requests {_grpcRequests}, raw HTTP/2 streams {_h2Streams} ({_h2Bytes} bytes); " +
            $"well-behaved rounds {_goodRounds} (slowest {(_roundTimes.Count > 0 ? _roundTimes.Max() : 0):F1} s), failures {_goodFailures.Count}; VmRSS baseline {baselineRss / 1024} MiB, peak {peakRss / 1024} MiB, end {endRss / 1024} MiB");

        // What the broker logged as failures (an exception escaping a handler is a finding even when the process lives).
        // Kestrel itself logs at Critical when it aborts an HTTP/2 connection whose client provokes frames (acks, resets)
        // faster than it reads them ("exceeded the output operations maximum queue size", Http2[60]): its protection
        // against such a client, which a fuzzing client not reading is; the broker stays healthy and the well-behaved
        // client unaffected (checked below). Seen once in the stressed round of 2026-12-06 evening; counted, not a failure.
        var failures = broker.Output.Split('\n').Where(l => l.Contains("fail:", StringComparison.Ordinal) || l.Contains("Unhandled", StringComparison.Ordinal)
            || l.Contains("crit:", StringComparison.Ordinal) && !l.Contains("Microsoft.AspNetCore.Server.Kestrel.Http2[60]", StringComparison.Ordinal)).ToList();
        output.WriteLine($"connections Kestrel aborted for their output queue: {broker.Output.Split('\n').Count(l => l.Contains("Microsoft.AspNetCore.Server.Kestrel.Http2[60]", StringComparison.Ordinal))}");
        int shown = 0;
        foreach (var line in broker.Output.Split('\n'))
        {
            if (shown > 0 && shown < 6) { output.WriteLine("  " + line); shown++; }
            else if (line.Contains("fail:", StringComparison.Ordinal) || line.Contains("crit:", StringComparison.Ordinal)) { output.WriteLine(line); shown = 1; }
            if (shown >= 6) shown = 0;
        }
        output.WriteLine($"broker failure log lines: {failures.Count}");
        Assert.False(broker.HasExited, "the broker exited:\n" + Tail(broker.Output));
        Assert.True(healthy, "the broker stopped answering /health");
        // A handler failure (an exception that escaped to the broker's Error log) is a finding even when the process lives.
        Assert.True(failures.Count == 0, $"the broker logged {failures.Count} failures:\n" + string.Join('\n', failures.Take(10)));
        Assert.True(_goodFailures.Count == 0, "the well-behaved client failed:\n" + string.Join('\n', _goodFailures.Take(10)));
        Assert.True(_goodRounds >= 3, $"only {_goodRounds} well-behaved rounds completed in {duration}");
        // Bounded memory: the broker buffers at most one frame per connection; 512 MiB over the baseline is far above
        // what it needs and far below what following a forged length field would take.
        Assert.True(peakRss - baselineRss < 512 * 1024, $"VmRSS grew from {baselineRss / 1024} MiB to {peakRss / 1024} MiB");
        Assert.True(_remotingFrames > 100 && _grpcRequests > 20 && _h2Streams > 10, "too little fuzz traffic was sent");
    }

    // ------------------------------------------------------------------ recording

    private static async Task<(List<byte[]> Remoting, List<byte[]> GrpcBodies, List<byte[]> H2Streams)> RecordAsync(BrokerProcess broker)
    {
        // Each proxy is stopped before what it recorded is read (not a pause): stopping ends its pumps, and a pump records
        // what it forwarded before it reads again, so every request the client had answered through it is recorded then.
        var remoting = new List<byte[]>();
        var proxy = new RecordingProxy(broker.RemotingPort);
        try
        {
            await using var c = await MiniRemotingClient.ConnectAsync(proxy.Port);
            string topic = "NetFuzzRec", group = "NetFuzzPG";
            await JavaLikeRemoting.HeartbeatAsync(c, group);
            await JavaLikeRemoting.HeartbeatAsync(c, null, "NetFuzzCG", topic);
            for (int i = 0; i < 4; i++)
                await JavaLikeRemoting.SendAsync(c, group, topic, "recorded " + i, "T", i % 4, i % 2 == 0 ? SerializeType.Json : SerializeType.RocketMq, "k" + i);
            await JavaLikeRemoting.SendBatchAsync(c, group, topic, "b1", "b2");
            var (uniq, half) = await JavaLikeRemoting.SendHalfAsync(c, group, topic, "half");
            await c.OnewayAsync(JavaLikeRemoting.EndTransaction(group, uniq, half.Get("queueOffset") ?? "0", half.Get("msgId") ?? "", MessageSysFlag.TransactionCommitType, false));
            for (int q = 0; q < 2; q++)
            {
                await JavaLikeRemoting.PullAsync(c, "NetFuzzCG", topic, q, 0, q == 0 ? SerializeType.Json : SerializeType.RocketMq);
                await JavaLikeRemoting.UpdateOffsetAsync(c, "NetFuzzCG", topic, q, 1);
                await JavaLikeRemoting.QueryOffsetAsync(c, "NetFuzzCG", topic, q);
                await JavaLikeRemoting.MaxOffsetAsync(c, topic, q);
            }
            await c.InvokeAsync(RequestCode.GetBrokerClusterInfo);
        }
        finally
        {
            await proxy.DisposeAsync();
        }
        remoting.AddRange(proxy.Frames.Where(f => f.ToServer).Select(f => f.Frame));

        proxy = new RecordingProxy(broker.GrpcPort);
        try
        {
            string endpoint = $"127.0.0.1:{proxy.Port}", topic = "NetFuzzGrpcRec";
            await using (var producer = await Producer.StartAsync(ProducerOptions.Default with { Endpoints = endpoint, Topics = [topic] }))
            await using (var consumer = await SimpleConsumer.StartAsync(SimpleConsumerOptions.Default with
            {
                Endpoints = endpoint, ConsumerGroup = "NetFuzzGrpcRecG", Subscriptions = new Dictionary<string, string> { [topic] = "*" }, AwaitDuration = TimeSpan.FromSeconds(1),
            }))
            {
                var tx = producer.BeginTransaction();
                await tx.SendAsync(new ProducerMessage(topic, "recorded grpc") { Tag = "T", Keys = ["k"] });
                await tx.CommitAsync();
                await producer.SendAsync(new ProducerMessage(topic, "plain"));
                var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(20);
                int got = 0;
                while (got < 2 && DateTime.UtcNow < deadline)
                    foreach (var m in await consumer.ReceiveAsync(4, TimeSpan.FromSeconds(30))) { await m.AckAsync(); got++; }
            }
        }
        finally
        {
            await proxy.DisposeAsync();
        }
        var streams = proxy.ClientStreams().Where(s => s.Length > 24).ToList();
        var bodies = streams.SelectMany(GrpcMessages).ToList();
        return (remoting, bodies, streams);
    }

    /// <summary>The gRPC messages (5-byte prefix + protobuf) in the DATA frames of a recorded client h2c stream.</summary>
    private static IEnumerable<byte[]> GrpcMessages(byte[] stream)
    {
        var list = new List<byte[]>();
        int p = 24; // client connection preface
        while (p + 9 <= stream.Length)
        {
            int len = (stream[p] << 16) | (stream[p + 1] << 8) | stream[p + 2];
            byte type = stream[p + 3], flags = stream[p + 4];
            if (p + 9 + len > stream.Length) break;
            if (type == 0 && len > 5)
            {
                int pad = (flags & 0x8) != 0 ? stream[p + 9] + 1 : 0;
                var payload = stream.AsSpan(p + 9 + ((flags & 0x8) != 0 ? 1 : 0), len - pad);
                if (payload.Length >= 5 && payload[0] == 0 && BinaryPrimitives.ReadInt32BigEndian(payload[1..]) == payload.Length - 5) list.Add(payload.ToArray());
            }
            p += 9 + len;
        }
        return list;
    }

    // ------------------------------------------------------------------ the well-behaved client

    private async Task WellBehavedAsync(BrokerProcess broker, CancellationToken stop)
    {
        string topic = "NetFuzzGood", group = "NetFuzzGoodPG";
        await using var producer = await Producer.StartAsync(ProducerOptions.Default with { Endpoints = broker.Endpoint, Topics = [topic], RequestTimeout = TimeSpan.FromSeconds(10) });
        await using var consumer = await SimpleConsumer.StartAsync(SimpleConsumerOptions.Default with
        {
            Endpoints = broker.Endpoint, ConsumerGroup = "NetFuzzGoodG", Subscriptions = new Dictionary<string, string> { [topic] = "*" },
            AwaitDuration = TimeSpan.FromSeconds(1), RequestTimeout = TimeSpan.FromSeconds(10),
        });
        await using var remoting = await MiniRemotingClient.ConnectAsync(broker.RemotingPort);
        await JavaLikeRemoting.HeartbeatAsync(remoting, group);
        string rtopic = "NetFuzzGoodRemoting";
        var pulledOffsets = new long[16]; // the broker picks the queue (up to --queues-per-topic, 8 by default); absent queues just answer an error
        int round = 0;
        while (!stop.IsCancellationRequested)
        {
            round++;
            string stage = "start";
            var sw = Stopwatch.StartNew();
            try
            {
                using var roundTimeout = new CancellationTokenSource(TimeSpan.FromSeconds(45));
                // gRPC: a committed transaction is received and acked; a rolled-back one never is.
                stage = "gRPC send+commit";
                var tx = producer.BeginTransaction();
                var receipt = await tx.SendAsync(new ProducerMessage(topic, "good " + round), roundTimeout.Token);
                await tx.CommitAsync(roundTimeout.Token);
                var rollback = producer.BeginTransaction();
                await rollback.SendAsync(new ProducerMessage(topic, "rolled back " + round), roundTimeout.Token);
                await rollback.RollbackAsync(roundTimeout.Token);
                stage = "gRPC receive";
                bool received = false;
                while (!received)
                {
                    foreach (var m in await consumer.ReceiveAsync(8, TimeSpan.FromSeconds(30), roundTimeout.Token))
                    {
                        if (m.BodyAsString().StartsWith("rolled back", StringComparison.Ordinal)) throw new InvalidOperationException("a rolled-back message was delivered");
                        await m.AckAsync(roundTimeout.Token);
                        if (m.MessageId == receipt.MessageId) received = true;
                    }
                }

                stage = "Remoting half+commit";
                // Remoting: a half committed with a one-way END_TRANSACTION shows up in a pull.
                var (uniq, half) = await JavaLikeRemoting.SendHalfAsync(remoting, group, rtopic, "good remoting " + round);
                if (half.Code != ResponseCode.Success) throw new InvalidOperationException($"Remoting half send failed: {half.Code} {half.Remark}");
                await remoting.OnewayAsync(JavaLikeRemoting.EndTransaction(group, uniq, half.Get("queueOffset") ?? "0", half.Get("msgId") ?? "", MessageSysFlag.TransactionCommitType, false));
                stage = "Remoting pull";
                bool pulled = false;
                while (!pulled)
                {
                    roundTimeout.Token.ThrowIfCancellationRequested();
                    for (int q = 0; q < pulledOffsets.Length && !pulled; q++)
                    {
                        var r = await JavaLikeRemoting.PullAsync(remoting, "NetFuzzGoodCG", rtopic, q, pulledOffsets[q]);
                        if (r.Code != ResponseCode.Success) continue;
                        pulledOffsets[q] = long.Parse(r.Get("nextBeginOffset")!, CultureInfo.InvariantCulture);
                        pulled = StoredMessageCodec.DecodeAll(r.Body.Span).Any(m => m.Properties.GetValueOrDefault(MessageConst.UniqueKey) == uniq);
                    }
                    if (!pulled) await Task.Delay(50, CancellationToken.None);
                }
                Interlocked.Increment(ref _goodRounds);
                lock (_roundTimes) _roundTimes.Add(sw.Elapsed.TotalSeconds);
            }
            catch (Exception ex)
            {
                lock (_goodFailures) _goodFailures.Add($"round {round}, {stage}, after {sw.Elapsed.TotalSeconds:F1} s: {ex.GetType().Name}: {ex.Message}");
                if (broker.HasExited) return;
            }
        }
    }

    // ------------------------------------------------------------------ the fuzzers

    private async Task FuzzLoopAsync(BrokerProcess broker, int seed, List<byte[]> frames, List<byte[]> grpcBodies, List<byte[]> h2Streams, CancellationToken stop)
    {
        var rng = new Random(seed * 7919 + Environment.TickCount);
        using var http = new HttpClient(new SocketsHttpHandler { EnableMultipleHttp2Connections = true })
        {
            DefaultRequestVersion = HttpVersion.Version20, DefaultVersionPolicy = HttpVersionPolicy.RequestVersionExact, Timeout = TimeSpan.FromSeconds(10),
        };
        while (!stop.IsCancellationRequested && !broker.HasExited)
        {
            try
            {
                switch (rng.Next(3))
                {
                    case 0: await RemotingBurstAsync(broker.RemotingPort, frames, rng); break;
                    case 1: await GrpcBodyAsync(http, broker.GrpcPort, grpcBodies, rng); break;
                    default: await RawH2Async(broker.GrpcPort, h2Streams, rng); break;
                }
            }
            catch (Exception ex) when (ex is IOException or SocketException or HttpRequestException or OperationCanceledException or ObjectDisposedException)
            {
                // The broker closing or resetting a fuzzed connection is the expected answer.
            }
        }
    }

    private async Task RemotingBurstAsync(int port, List<byte[]> frames, Random rng)
    {
        using var tcp = new TcpClient { NoDelay = true, LingerState = new LingerOption(true, 0) };
        await tcp.ConnectAsync(IPAddress.Loopback, port);
        var stream = tcp.GetStream();
        var drain = DrainAsync(stream);
        int n = 1 + rng.Next(8);
        for (int i = 0; i < n; i++)
        {
            byte[] frame = frames[rng.Next(frames.Count)];
            byte[] bytes = rng.Next(4) == 0 ? frame : Mutator.MutateRemoting(frame, rng);
            await stream.WriteAsync(bytes);
            Interlocked.Increment(ref _remotingFrames);
        }
        await Task.WhenAny(drain, Task.Delay(100 + rng.Next(200)));
    }

    private async Task GrpcBodyAsync(HttpClient http, int port, List<byte[]> bodies, Random rng)
    {
        byte[] body = Mutator.MutateGrpcMessage(bodies[rng.Next(bodies.Count)], rng);
        using var request = new HttpRequestMessage(HttpMethod.Post, $"http://127.0.0.1:{port}{GrpcPaths[rng.Next(GrpcPaths.Length)]}") { Content = new ByteArrayContent(body) };
        request.Content.Headers.ContentType = new MediaTypeHeaderValue("application/grpc");
        request.Headers.TE.ParseAdd("trailers");
        request.Headers.TryAddWithoutValidation("x-mq-client-id", "fuzz-" + rng.Next(4));
        request.Headers.TryAddWithoutValidation("x-mq-protocol", "v2");
        Interlocked.Increment(ref _grpcRequests);
        using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(3)); // streaming calls (Telemetry, Receive) may stay open: stop waiting
        using var response = await http.SendAsync(request, HttpCompletionOption.ResponseHeadersRead, cts.Token);
        await response.Content.CopyToAsync(Stream.Null, cts.Token);
    }

    private async Task RawH2Async(int port, List<byte[]> streams, Random rng)
    {
        byte[] recorded = streams[rng.Next(streams.Count)];
        byte[] bytes = Mutator.MutateAfter(recorded, 24, rng); // keep the connection preface, mutate the frames after it
        using var tcp = new TcpClient { NoDelay = true, LingerState = new LingerOption(true, 0) };
        await tcp.ConnectAsync(IPAddress.Loopback, port);
        var stream = tcp.GetStream();
        var drain = DrainAsync(stream);
        await stream.WriteAsync(bytes);
        Interlocked.Increment(ref _h2Streams);
        Interlocked.Add(ref _h2Bytes, bytes.Length);
        await Task.WhenAny(drain, Task.Delay(100 + rng.Next(200)));
    }

    private static async Task DrainAsync(NetworkStream stream)
    {
        var buf = ArrayPool<byte>.Shared.Rent(16 * 1024);
        try
        {
            while (await stream.ReadAsync(buf) > 0)
            {
            }
        }
        catch (Exception)
        {
        }
        finally
        {
            ArrayPool<byte>.Shared.Return(buf);
        }
    }

    // ------------------------------------------------------------------ probes

    private static long ReadRssKiB(int pid)
    {
        try
        {
            foreach (var line in File.ReadLines($"/proc/{pid}/status"))
                if (line.StartsWith("VmRSS:", StringComparison.Ordinal))
                    return long.Parse(line.AsSpan(6).Trim().TrimEnd("kB").Trim(), CultureInfo.InvariantCulture);
        }
        catch (IOException)
        {
        }
        return 0;
    }

    private static async Task<bool> HealthyAsync(int httpPort, TimeSpan within)
    {
        using var http = new HttpClient { Timeout = TimeSpan.FromSeconds(5) };
        var deadline = DateTime.UtcNow + within;
        while (DateTime.UtcNow < deadline)
        {
            try
            {
                using var r = await http.GetAsync($"http://127.0.0.1:{httpPort}/health");
                if (r.IsSuccessStatusCode) return true;
            }
            catch (Exception ex) when (HalfMsg.TestKit.BrokerProcess.NotListeningYet(ex))
            {
            }
            await Task.Delay(200);
        }
        return false;
    }

    private static string Tail(string text) => text.Length > 4000 ? text[^4000..] : text;
}

/// <summary>Byte-level mutations (afl's havoc, simplified) plus a few aware of the Remoting and gRPC length fields.</summary>
internal static class Mutator
{
    private static readonly int[] Interesting = [0, -1, 1, 4, 8, 0x7F, 0x80, 0xFF, 0x7FFF, 0x8000, 0xFFFF, 0x7FFFFFFF, int.MinValue, 16 * 1024 * 1024, 16 * 1024 * 1024 + 1];

    public static byte[] MutateRemoting(byte[] frame, Random rng)
    {
        var b = (byte[])frame.Clone();
        switch (rng.Next(6))
        {
            case 0: // total length
                BinaryPrimitives.WriteInt32BigEndian(b, Interesting[rng.Next(Interesting.Length)]);
                return b;
            case 1: // serialize type and header length
                BinaryPrimitives.WriteInt32BigEndian(b.AsSpan(4), (rng.Next(3) << 24) | (Interesting[rng.Next(Interesting.Length)] & 0xFFFFFF));
                return b;
            case 2: // keep the frame lengths consistent, mutate the header and body (reaches the processors)
                var inner = MutateAfter(b, 8, rng);
                if (inner.Length < 8) return inner;
                int headerLength = Math.Min(BinaryPrimitives.ReadInt32BigEndian(b.AsSpan(4)) & 0xFFFFFF, inner.Length - 8);
                BinaryPrimitives.WriteInt32BigEndian(inner, inner.Length - 4);
                BinaryPrimitives.WriteInt32BigEndian(inner.AsSpan(4), (b[4] << 24) | headerLength);
                return inner;
            case 3: // truncated
                return b[..rng.Next(b.Length)];
            default:
                return MutateAfter(b, 0, rng);
        }
    }

    public static byte[] MutateGrpcMessage(byte[] message, Random rng)
    {
        var b = MutateAfter(message, 5, rng);
        if (b.Length >= 5 && rng.Next(4) != 0) BinaryPrimitives.WriteInt32BigEndian(b.AsSpan(1), b.Length - 5); // mostly a consistent prefix
        else if (b.Length >= 5) BinaryPrimitives.WriteInt32BigEndian(b.AsSpan(1), Interesting[rng.Next(Interesting.Length)]);
        if (b.Length >= 1 && rng.Next(10) == 0) b[0] = 1; // "compressed" flag
        return b;
    }

    /// <summary>1 to 8 havoc steps on the bytes after <paramref name="keep"/>.</summary>
    public static byte[] MutateAfter(byte[] input, int keep, Random rng)
    {
        var b = new List<byte>(input);
        int steps = 1 + rng.Next(8);
        for (int s = 0; s < steps; s++)
        {
            if (b.Count <= keep) { b.Add((byte)rng.Next(256)); continue; }
            int at = keep + rng.Next(b.Count - keep);
            switch (rng.Next(7))
            {
                case 0: b[at] ^= (byte)(1 << rng.Next(8)); break;
                case 1: b[at] = (byte)rng.Next(256); break;
                case 2: b[at] = (byte)Interesting[rng.Next(Interesting.Length)]; break;
                case 3: b.RemoveRange(at, Math.Min(b.Count - at, 1 + rng.Next(16))); break;
                case 4: b.InsertRange(at, Enumerable.Range(0, 1 + rng.Next(16)).Select(_ => (byte)rng.Next(256))); break;
                case 5: // duplicate a chunk
                {
                    int len = Math.Min(b.Count - at, 1 + rng.Next(64));
                    b.InsertRange(at, b.GetRange(at, len));
                    break;
                }
                default: // a 32-bit interesting value, big-endian (Remoting) or as a varint-ish byte run (protobuf)
                {
                    if (at + 4 > b.Count) break;
                    int v = Interesting[rng.Next(Interesting.Length)];
                    b[at] = (byte)(v >> 24); b[at + 1] = (byte)(v >> 16); b[at + 2] = (byte)(v >> 8); b[at + 3] = (byte)v;
                    break;
                }
            }
        }
        return b.ToArray();
    }
}
