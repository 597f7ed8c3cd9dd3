using System.Buffers.Binary;
using System.Collections.Concurrent;
using Apache.Rocketmq.V2;
using Google.Protobuf;
using Google.Protobuf.WellKnownTypes;
using HalfMsg.Broker.Hosting;
using HalfMsg.Broker.Tests.Infrastructure;
using HalfMsg.Protocol.Grpc;
using HalfMsg.TestKit;
using Microsoft.Extensions.DependencyInjection;
using Xunit.Abstractions;
using MessagingService = HalfMsg.Broker.FrontEnds.GrpcV5.MessagingService;
using V2Encoding = Apache.Rocketmq.V2.Encoding;

namespace HalfMsg.Broker.Tests.GrpcV5;

/// <summary>
/// Review (gRPC flow control): a client that opens ReceiveMessage streams and never opens its HTTP/2 window
/// (SETTINGS_INITIAL_WINDOW_SIZE = 0), or opens it by 1,000 bytes a second, while it answers PINGs. Each answer was
/// leased and written into Kestrel's per-stream buffer before the final flush, which then waited for the window: one
/// connection could hold every message of a topic (measured by the review: +250 MiB for 24 streams, held for ever with
/// the trickle). Now a connection's unsent answers are bounded by a byte budget reserved before leasing, and an answer
/// not written within the write deadline resets its stream and releases its messages.
/// </summary>
public sealed class StalledReceiveTests(ITestOutputHelper output) : IDisposable
{
    private const string Topic = "flow-t";
    private const string Group = "g-flow";

    private static Message NewMessage(byte[] body) => new()
    {
        Topic = new Resource { Name = Topic },
        Body = ByteString.CopyFrom(body),
        SystemProperties = new SystemProperties
        {
            MessageId = "01" + Guid.NewGuid().ToString("N").ToUpperInvariant(),
            MessageType = MessageType.Normal,
            BodyEncoding = V2Encoding.Identity,
            BornTimestamp = Timestamp.FromDateTimeOffset(DateTimeOffset.UtcNow),
            BornHost = "test-host",
        },
    };

    private static ReceiveMessageRequest Receive(TimeSpan invisible, TimeSpan longPoll, int batch = 32) => new()
    {
        Group = new Resource { Name = Group },
        MessageQueue = new MessageQueue { Topic = new Resource { Name = Topic } },
        FilterExpression = new FilterExpression { Type = FilterType.Tag, Expression = "*" },
        BatchSize = batch,
        InvisibleDuration = Duration.FromTimeSpan(invisible),
        LongPollingTimeout = Duration.FromTimeSpan(longPoll),
    };

    /// <summary>The data directories this test's brokers used, deleted once the test (and its brokers) ended.</summary>
    private readonly List<string> _dataDirs = [];

    public void Dispose()
    {
        foreach (string dir in _dataDirs)
        {
            try { Directory.Delete(dir, true); } catch (IOException) { } catch (UnauthorizedAccessException) { }
        }
    }

    private async Task<BrokerHost> StartAsync(params string[] extra)
    {
        string dataDir = Path.Combine(Path.GetTempPath(), "halfmsg-stalled-" + Guid.NewGuid().ToString("N")[..12]);
        _dataDirs.Add(dataDir);
        return await BrokerHost.StartAsync(["--data-dir", dataDir, "--grpc-port", FreePorts.Next().ToString(), "--remoting-port", "0",
            "--namesrv-port", "0", "--http-port", FreePorts.Next().ToString(), "--transaction-check-interval", "1h", .. extra]);
    }

    private static async Task SendAsync(GrpcTestClient client, int count, int size)
    {
        for (int sent = 0; sent < count;)
        {
            var request = new SendMessageRequest();
            for (int i = 0; i < 4 && sent < count; i++, sent++) request.Messages.Add(NewMessage(new byte[size]));
            var result = await client.UnaryAsync(GrpcMethods.SendMessage, request, SendMessageResponse.Parser);
            Assert.Equal(Code.Ok, result.Response!.Status.Code);
        }
    }

    /// <summary>Receives with another connection (a consumer that reads) until <paramref name="want"/> messages came or
    /// <paramref name="within"/> passed; returns how many came.</summary>
    private static async Task<int> HealthyReceiveAsync(GrpcTestClient client, int want, TimeSpan within)
    {
        int got = 0;
        var clock = System.Diagnostics.Stopwatch.StartNew();
        while (got < want && clock.Elapsed < within)
        {
            var result = await client.ServerStreamAsync(GrpcMethods.ReceiveMessage, Receive(TimeSpan.FromMinutes(5), TimeSpan.FromSeconds(1)),
                ReceiveMessageResponse.Parser);
            Assert.Equal(0, result.GrpcStatus);
            got += result.Responses.Count(r => r.ContentCase == ReceiveMessageResponse.ContentOneofCase.Message);
        }

        return got;
    }

    /// <summary>A raw HTTP/2 client with a zero receive window that acks PINGs and SETTINGS and records resets.</summary>
    private sealed class StalledClient : IAsyncDisposable
    {
        private readonly CancellationTokenSource _stop = new();
        private Task _reader = Task.CompletedTask;
        private Task _trickler = Task.CompletedTask;
        public RawHttp2 H2 { get; private set; } = null!;
        public ConcurrentQueue<int> ResetStreams { get; } = new();
        public volatile bool Closed;
        private int _next = 1;

        public static async Task<StalledClient> ConnectAsync(int port)
        {
            var client = new StalledClient { H2 = await RawHttp2.ConnectAsync(port) };
            var settings = new byte[6];
            BinaryPrimitives.WriteUInt16BigEndian(settings, RawHttp2.SettingsInitialWindowSize);
            BinaryPrimitives.WriteUInt32BigEndian(settings.AsSpan(2), 0);
            await client.H2.SendFrameAsync(RawHttp2.Settings, 0, 0, settings);
            client._reader = Task.Run(client.ReadLoopAsync);
            return client;
        }

        private async Task ReadLoopAsync()
        {
            while (!_stop.IsCancellationRequested)
            {
                RawHttp2.Frame? f;
                try { f = await H2.ReadFrameAsync(_stop.Token); }
                catch (OperationCanceledException) { return; }
                if (f is null) { Closed = true; return; }
                var frame = f.Value;
                try
                {
                    if (frame.Type == RawHttp2.Ping && (frame.Flags & 1) == 0) await H2.SendFrameAsync(RawHttp2.Ping, 1, 0, frame.Payload);
                    else if (frame.Type == RawHttp2.Settings && (frame.Flags & 1) == 0) await H2.SendSettingsAckAsync();
                    else if (frame.Type == RawHttp2.RstStream) ResetStreams.Enqueue(frame.StreamId);
                    else if (frame.Type == RawHttp2.GoAway) Closed = true;
                }
                catch (IOException) { Closed = true; return; }
            }
        }

        /// <summary>Opens a ReceiveMessage stream; returns its id.</summary>
        public async Task<int> ReceiveAsync(ReceiveMessageRequest request)
        {
            int id = _next;
            _next += 2;
            await H2.SendGrpcHeadersAsync(id, GrpcMethods.ReceiveMessage, extra: new Dictionary<string, string> { [RocketMqHeaders.ClientId] = "stalled-consumer" });
            byte[] body = request.ToByteArray();
            var framed = new byte[5 + body.Length];
            BinaryPrimitives.WriteUInt32BigEndian(framed.AsSpan(1), (uint)body.Length);
            body.CopyTo(framed, 5);
            await H2.SendDataAsync(id, framed, endStream: true);
            return id;
        }

        /// <summary>Opens 1,000 bytes of window a second on the connection and on <paramref name="streamId"/>: above
        /// Kestrel's default minimum response rate (240 B/s), so Kestrel alone never closes the connection.</summary>
        public void Trickle(int streamId)
        {
            _trickler = Task.Run(async () =>
            {
                var inc = new byte[4];
                BinaryPrimitives.WriteUInt32BigEndian(inc, 1000);
                while (!_stop.IsCancellationRequested)
                {
                    try
                    {
                        await H2.SendFrameAsync(RawHttp2.WindowUpdate, 0, 0, inc);
                        await H2.SendFrameAsync(RawHttp2.WindowUpdate, 0, streamId, inc);
                        await Task.Delay(1000, _stop.Token);
                    }
                    catch (Exception) { return; }
                }
            });
        }

        private int _disposed;

        public async ValueTask DisposeAsync()
        {
            if (Interlocked.Exchange(ref _disposed, 1) != 0) return;
            await _stop.CancelAsync();
            try { await Task.WhenAll(_reader, _trickler); } catch (Exception) { }
            await H2.DisposeAsync();
        }
    }

    private static async Task WaitUntilAsync(Func<bool> condition, TimeSpan within, string what)
    {
        var clock = System.Diagnostics.Stopwatch.StartNew();
        while (!condition())
        {
            Assert.True(clock.Elapsed < within, $"not within {within.TotalSeconds:0} s: {what}");
            await Task.Delay(50);
        }
    }

    [Fact]
    public async Task A_connection_that_does_not_read_holds_at_most_its_budget_of_answers_and_a_reading_consumer_gets_the_rest()
    {
        await using var host = await StartAsync();
        var service = host.Services.GetRequiredService<MessagingService>();
        int port = host.Options.GrpcPort;
        using var healthy = new GrpcTestClient($"127.0.0.1:{port}", "healthy-consumer");
        const int messages = 80;
        await SendAsync(healthy, messages, 1_000_000);

        var stalled = await StalledClient.ConnectAsync(port);
        try
        {
            for (int s = 0; s < 10; s++) await stalled.ReceiveAsync(Receive(TimeSpan.FromMinutes(5), TimeSpan.FromSeconds(5)));

            // The stalled connection takes what it may (64 MiB, ~67 messages, by default; before the fix: everything).
            await WaitUntilAsync(() => Interlocked.Read(ref host.Engine.Metrics.Delivered) >= 60, TimeSpan.FromSeconds(30), "the stalled streams leased their messages");
            // Not a pause: leasing for the stalled connection is over once its budget (64 MiB) has no room for one more
            // message (each takes its record's size, more than its 1,000,000-byte body): none of its streams can lease again.
            await WaitUntilAsync(() => service.UnsentAnswerBytes > 64L * 1024 * 1024 - 1_000_000, TimeSpan.FromSeconds(30),
                "the stalled connection's budget filled");
            long leasedByStalled = Interlocked.Read(ref host.Engine.Metrics.Delivered);
            output.WriteLine($"leased by the stalled connection: {leasedByStalled}");

            int got = await HealthyReceiveAsync(healthy, messages - 67, TimeSpan.FromSeconds(10));
            output.WriteLine($"a reading consumer on another connection got {got}");
            Assert.True(got >= messages - 67,
                $"a reading consumer got {got} of {messages} messages: a connection that reads nothing holds {leasedByStalled} of them");
            Assert.False(stalled.Closed);

            // What the broker holds for the stalled connection is counted, and within its budget.
            long held = service.UnsentAnswerBytes;
            output.WriteLine($"unsent answer bytes held: {held}");
            Assert.InRange(held, 60_000_000, 64L * 1024 * 1024);
            using (var admin = new HttpClient())
            {
                using var stats = System.Text.Json.JsonDocument.Parse(await admin.GetStringAsync($"http://127.0.0.1:{host.Options.HttpPort}/api/stats"));
                Assert.Equal(service.UnsentAnswerBytes, stats.RootElement.GetProperty("grpcUnsentAnswerBytes").GetInt64());
            }

            // The connection goes away: its answers are dropped and their messages released at once (5-minute leases).
            await stalled.DisposeAsync();
            await WaitUntilAsync(() => service.UnsentAnswerBytes == 0, TimeSpan.FromSeconds(15), "the closed connection's answers were let go");
            int rest = await HealthyReceiveAsync(healthy, messages - got, TimeSpan.FromSeconds(15));
            Assert.Equal(messages - got, rest);
        }
        finally
        {
            await stalled.DisposeAsync();
        }
    }

    /// <summary>Kestrel's default (240 B/s) lets a connection stall for 4,369 s after 1 MiB was written quickly: the
    /// allowance accumulates per byte written. 16 KiB/s bounds that to 64 s per MiB.</summary>
    [Fact]
    public async Task The_gRPC_port_asks_a_pending_response_to_be_read_at_16_KiB_per_second_after_10_s()
    {
        await using var host = await StartAsync();
        var kestrel = host.Services.GetRequiredService<Microsoft.Extensions.Options.IOptions<Microsoft.AspNetCore.Server.Kestrel.Core.KestrelServerOptions>>().Value;
        Assert.NotNull(kestrel.Limits.MinResponseDataRate);
        Assert.Equal(16 * 1024, kestrel.Limits.MinResponseDataRate!.BytesPerSecond);
        Assert.Equal(TimeSpan.FromSeconds(10), kestrel.Limits.MinResponseDataRate.GracePeriod);
    }

    [Fact]
    public async Task An_answer_read_too_slowly_is_reset_at_the_write_deadline_and_its_messages_are_released()
    {
        await using var host = await StartAsync();
        int port = host.Options.GrpcPort;
        using var healthy = new GrpcTestClient($"127.0.0.1:{port}", "healthy-consumer");
        await SendAsync(healthy, 4, 1_000_000);

        var stalled = await StalledClient.ConnectAsync(port);
        try
        {
            var clock = System.Diagnostics.Stopwatch.StartNew();
            int stream = await stalled.ReceiveAsync(Receive(TimeSpan.FromMinutes(5), TimeSpan.FromSeconds(5)));
            stalled.Trickle(stream);
            await WaitUntilAsync(() => Interlocked.Read(ref host.Engine.Metrics.Delivered) >= 4, TimeSpan.FromSeconds(30), "the stalled stream leased the messages");

            // The write deadline (30 s by default, plus a second per 256 KiB of the answer: about 45 s for these 4 MB)
            // resets the stream; the trickle keeps Kestrel's own rate check happy.
            await WaitUntilAsync(() => stalled.ResetStreams.Contains(stream) || stalled.Closed, TimeSpan.FromSeconds(90),
                "the stream whose answer is read at 1,000 B/s was reset");
            output.WriteLine($"reset after {clock.Elapsed.TotalSeconds:0.0} s; connection closed: {stalled.Closed}");
            Assert.True(stalled.ResetStreams.Contains(stream), "the stream, not the whole connection, is reset");

            // Its messages were released at once, not after their 5-minute lease, and nothing is held for it any more.
            int got = await HealthyReceiveAsync(healthy, 4, TimeSpan.FromSeconds(10));
            Assert.Equal(4, got);
            Assert.Equal(0, host.Services.GetRequiredService<MessagingService>().UnsentAnswerBytes);
            Assert.False(stalled.Closed);
        }
        finally
        {
            await stalled.DisposeAsync();
        }
    }
}
