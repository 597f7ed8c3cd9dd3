using System.Buffers.Binary;
using Apache.Rocketmq.V2;
using Google.Protobuf;
using HalfMsg.Broker.Hosting;
using HalfMsg.Broker.Tests.Infrastructure;
using HalfMsg.Protocol.Grpc;
using HalfMsg.TestKit;

namespace HalfMsg.Broker.Tests.GrpcV5;

/// <summary>
/// A Telemetry stream ended for not reading whose write under way finished (it went into Kestrel's buffer) ends with
/// ABORTED and the reason (<see cref="TelemetryEndStatusTests"/>); but that status is sent after the stream's data, and
/// some of it (1,000 bytes here; a write with 10,000 left does not finish) may still wait in Kestrel's buffer for a window
/// the client does not open. As of the afternoon session of 2026-12-07 such a stream stays open, the client seeing
/// nothing, until it reads again or its connection closes. Wanted: the stream reset (ENHANCE_YOUR_CALM) when its status has not gone out within the write timeout
/// (<c>--grpc-write-timeout</c>). Skipped until then: it reproduces the defect.
/// </summary>
public sealed class TelemetryEndStatusBoundTests : IAsyncLifetime
{
    private readonly string _dataDir = Path.Combine(Path.GetTempPath(), "halfmsg-endbound-" + Guid.NewGuid().ToString("N")[..12]);
    private readonly int _grpcPort = FreePorts.Next();
    private readonly string _topic = "endbound-" + Guid.NewGuid().ToString("N")[..12];
    private BrokerHost _host = null!;

    private static readonly TimeSpan WriteTimeout = TimeSpan.FromSeconds(2);

    // As TelemetryEndStatusTests: a stream is refused further checks once its connection holds 8 MiB, about nine checks
    // of 900 KB, and ended once nothing of it has been written for a second.
    public async Task InitializeAsync()
        => _host = await BrokerHost.StartAsync(["--data-dir", _dataDir, "--grpc-port", _grpcPort.ToString(), "--http-port", FreePorts.Next().ToString(),
            "--remoting-port", "0", "--namesrv-port", "0", "--transaction-timeout", "1s", "--transaction-check-interval", "1s",
            "--max-message-size", "1MiB", "--grpc-max-unsent-per-connection", "4MiB", "--grpc-write-timeout", $"{(int)WriteTimeout.TotalSeconds}s",
            "--grpc-telemetry-stall-timeout", "1s"]);

    public async Task DisposeAsync()
    {
        await _host.DisposeAsync();
        try { Directory.Delete(_dataDir, true); } catch (IOException) { }
    }

    private bool Registered(string clientId)
        => _host.Engine.Producers.Snapshot().TryGetValue(_topic, out string[]? ids) && ids.Contains(clientId);

    /// <summary>What the raw client got on its stream: the DATA bytes, where each gRPC message starts and how long it is,
    /// HEADERS frames, and the reset.</summary>
    private sealed class StreamLog
    {
        private readonly byte[] _prefix = new byte[5];
        private int _prefixFill;
        private long _messageLeft;
        public readonly object Gate = new();
        public long DataBytes;
        public readonly List<(long Start, long Length)> Messages = [];
        public int Headers;
        public RawHttp2.Frame? Reset;

        public void OnData(byte[] payload)
        {
            foreach (byte b in payload)
            {
                if (_messageLeft > 0)
                {
                    _messageLeft--;
                }
                else
                {
                    _prefix[_prefixFill++] = b;
                    if (_prefixFill == 5)
                    {
                        _prefixFill = 0;
                        _messageLeft = BinaryPrimitives.ReadUInt32BigEndian(_prefix.AsSpan(1));
                        Messages.Add((DataBytes - 4, _messageLeft));
                    }
                }

                DataBytes++;
            }
        }
    }

    [Fact(Skip = "Not fixed yet (afternoon session of 2026-12-07): Kestrel completes the response, and runs its OnCompleted callbacks, at once " +
        "when the handler returns, while the status still waits behind the unsent bytes; a reset after that could reach a reused stream. " +
        "Reproduces the defect: the client sees no status and no reset.")]
    public async Task A_stream_ended_for_not_reading_whose_status_waits_behind_unsent_data_is_reset_within_the_write_timeout()
    {
        string clientId = "endbound@" + Guid.NewGuid().ToString("N")[..8];
        await using RawHttp2 h2 = await RawHttp2.ConnectAsync(_grpcPort);
        await h2.SendSettingsAckAsync();
        // The connection's window is no limit; the stream's is the client's lever (65,535 bytes until it says otherwise).
        await h2.SendFrameAsync(RawHttp2.WindowUpdate, 0, 0, WindowIncrement(64 * 1024 * 1024));
        await h2.SendGrpcHeadersAsync(1, GrpcMethods.Telemetry, extra: new Dictionary<string, string> { [RocketMqHeaders.ClientId] = clientId });
        await h2.SendGrpcMessageAsync(1, new TelemetryCommand
        {
            Settings = new Settings { ClientType = ClientType.Producer, Publishing = new Publishing { Topics = { new Resource { Name = _topic } } } },
        }.ToByteArray());

        var log = new StreamLog();
        using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(90));
        Task reader = Task.Run(async () =>
        {
            while (await h2.ReadFrameAsync(cts.Token) is { } frame)
            {
                if (frame.StreamId != 1) continue;
                lock (log.Gate)
                {
                    if (frame.Type == RawHttp2.Data) log.OnData(frame.Payload);
                    if (frame.Type == RawHttp2.Headers) log.Headers++;
                    if (frame.Type == RawHttp2.RstStream)
                    {
                        log.Reset = frame;
                        return;
                    }
                }
            }
        });

        await Eventually.TrueAsync(() => Registered(clientId), "the raw producer is registered", TimeSpan.FromSeconds(20));

        // Twelve halves nobody decides: their checks (900 KB each) pass the 8 MiB the connection may hold, and the stream is
        // ended for not reading, its writer parked in the first check's write for the window the client does not open.
        using var sender = new GrpcTestClient($"127.0.0.1:{_grpcPort}");
        for (int i = 0; i < 12; i++)
        {
            var message = RecallTests.NewMessage(_topic, "half");
            message.Body = ByteString.CopyFrom(new byte[900_000]);
            message.SystemProperties.MessageType = MessageType.Transaction;
            var sent = await RecallTests.SendAsync(sender, message);
            Assert.Equal(Code.Ok, sent.Status.Code);
        }

        await Eventually.TrueAsync(() => !Registered(clientId), "the stream that is not read is ended", TimeSpan.FromSeconds(30));

        // The client now opens just enough window for that write to finish but for its last 1,000 bytes, which stay in
        // Kestrel's buffer: the write under way finished within its grace, and the status (ABORTED) waits behind them.
        // (With 10,000 bytes left the write does not finish, and the stream is reset past the grace, as before.)
        (long Start, long Length) first = default;
        await Eventually.TrueAsync(() =>
        {
            lock (log.Gate)
            {
                first = log.Messages.FirstOrDefault(m => m.Length > 100_000);
            }

            return first.Length > 0;
        }, "the first check's message has begun", TimeSpan.FromSeconds(10));
        long firstEnd = first.Start + 5 + first.Length;
        long allowed = firstEnd - 1_000;
        await h2.SendFrameAsync(RawHttp2.WindowUpdate, 0, 1, WindowIncrement((int)(allowed - 65_535)));

        // The client takes in what the window lets through, and then reads nothing more: within the write timeout (30 s
        // for a busy machine) its stream is reset, with no status before the reset.
        await Eventually.TrueAsync(() => { lock (log.Gate) return log.Reset is not null; },
            () => { lock (log.Gate) return $"the stream is reset (got {log.DataBytes} bytes of {allowed} allowed, {log.Headers} HEADERS, no reset)"; },
            TimeSpan.FromSeconds(30));
        lock (log.Gate)
        {
            Assert.Equal(0xBu, log.Reset!.Value.ErrorCode); // ENHANCE_YOUR_CALM: RESOURCE_EXHAUSTED to gRPC clients
            Assert.Equal(1, log.Headers); // the response headers only: the trailers could not pass the unsent data
            Assert.Equal(allowed, log.DataBytes); // the write under way took the window the client opened: it had finished
        }

        await reader.WaitAsync(TimeSpan.FromSeconds(10));
    }

    private static byte[] WindowIncrement(int increment)
    {
        var payload = new byte[4];
        BinaryPrimitives.WriteInt32BigEndian(payload, increment);
        return payload;
    }

}
