using Apache.Rocketmq.V2;
using Google.Protobuf;
using Grpc.Core;
using HalfMsg.Broker.Core.Model;
using HalfMsg.Broker.Core.Transactions;
using HalfMsg.Broker.FrontEnds.GrpcV5;
using HalfMsg.Broker.Hosting;
using HalfMsg.Broker.Tests.Infrastructure;
using HalfMsg.Protocol.Grpc;
using HalfMsg.TestKit;

namespace HalfMsg.Broker.Tests.GrpcV5;

/// <summary>
/// What the client of a Telemetry stream the broker ends sees. A stream ended for its outbound budget was always reset,
/// and its write cancelled first, so the client saw CANCELLED (RST_STREAM CANCEL), as if it had cancelled the call itself,
/// even when its HTTP/2 stack had taken everything and ABORTED with the reason could have followed, as a replaced stream
/// gets. Now the write under way is given <see cref="TelemetrySession.InFlightWriteGrace"/>: if it finishes, the stream
/// ends with ABORTED and the reason. A client that opens no window can be sent no status (HTTP/2 sends the trailers
/// after the stream's data, which waits for that window): its stream is reset with ENHANCE_YOUR_CALM, which the gRPC
/// clients report as RESOURCE_EXHAUSTED (found by review, 2026-12-07).
/// </summary>
public sealed class TelemetryEndStatusTests : IAsyncLifetime
{
    private readonly string _dataDir = Path.Combine(Path.GetTempPath(), "halfmsg-endstatus-" + Guid.NewGuid().ToString("N")[..12]);
    private readonly int _grpcPort = FreePorts.Next();
    private readonly string _topic = "endstatus-" + Guid.NewGuid().ToString("N")[..12];
    private BrokerHost _host = null!;

    // As TelemetryStalledConnectionTests: a stream is refused further checks once its connection holds 8 MiB, about nine
    // checks of 900 KB, and ended once nothing of it has been written for a second.
    public async Task InitializeAsync()
        => _host = await BrokerHost.StartAsync(["--data-dir", _dataDir, "--grpc-port", _grpcPort.ToString(), "--http-port", FreePorts.Next().ToString(),
            "--remoting-port", "0", "--namesrv-port", "0", "--transaction-timeout", "1s", "--transaction-check-interval", "1s",
            "--max-message-size", "1MiB", "--grpc-max-unsent-per-connection", "4MiB", "--grpc-telemetry-stall-timeout", "1s"]);

    public async Task DisposeAsync()
    {
        await _host.DisposeAsync();
        try { Directory.Delete(_dataDir, true); } catch (IOException) { }
    }

    private async Task<(GrpcTestClient Client, AsyncDuplexStreamingCall<TelemetryCommand, TelemetryCommand> Call)> OpenProducerAsync()
    {
        var client = new GrpcTestClient($"127.0.0.1:{_grpcPort}", clientId: "endstatus@" + Guid.NewGuid().ToString("N")[..8]);
        var call = client.Duplex<TelemetryCommand, TelemetryCommand>(GrpcMethods.Telemetry, TelemetryCommand.Parser);
        await call.RequestStream.WriteAsync(new TelemetryCommand
        {
            Settings = new Settings { ClientType = ClientType.Producer, Publishing = new Publishing { Topics = { new Resource { Name = _topic } } } },
        });
        Assert.True(await call.ResponseStream.MoveNext());
        Assert.Equal(Code.Ok, call.ResponseStream.Current.Status.Code);
        var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(20);
        while (!Registered(client))
        {
            Assert.True(DateTime.UtcNow < deadline, "the producer was never registered");
            await Task.Delay(20);
        }
        return (client, call);
    }

    private bool Registered(GrpcTestClient client)
        => _host.Engine.Producers.Snapshot().TryGetValue(_topic, out string[]? ids) && ids.Contains(client.ClientId);

    private static async Task SendHalvesAsync(GrpcTestClient client, string topic, int count)
    {
        for (int i = 0; i < count; i++)
        {
            var message = RecallTests.NewMessage(topic, "half");
            message.Body = Google.Protobuf.ByteString.CopyFrom(new byte[900_000]);
            message.SystemProperties.MessageType = MessageType.Transaction;
            var sent = await RecallTests.SendAsync(client, message);
            Assert.Equal(Code.Ok, sent.Status.Code);
        }
    }

    /// <summary>Reads the stream to its end; the status it ended with.</summary>
    private static async Task<(RpcException Ended, int Checks)> ReadToEndAsync(AsyncDuplexStreamingCall<TelemetryCommand, TelemetryCommand> call)
    {
        int checks = 0;
        var ended = await Assert.ThrowsAsync<RpcException>(async () =>
        {
            while (await call.ResponseStream.MoveNext())
            {
                if (call.ResponseStream.Current.RecoverOrphanedTransactionCommand is not null) checks++;
            }
        });
        return (ended, checks);
    }

    [Fact]
    public async Task A_stream_ended_because_its_client_stopped_reading_gets_ABORTED_with_the_reason_once_its_last_write_went_out()
    {
        var (client, call) = await OpenProducerAsync();
        using (client)
        using (call)
        {
            // The application reads nothing more; its HTTP/2 stack still takes what its window allows. Twelve halves
            // nobody decides are checked back in one burst of 10.8 MB, more than the 8 MiB the connection may hold.
            await SendHalvesAsync(client, _topic, 12);
            var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(20);
            while (Registered(client))
            {
                Assert.True(DateTime.UtcNow < deadline, "the stream that is not read was never ended");
                await Task.Delay(20);
            }

            // The client reads again: what it had taken in, then the status with the reason (not a reset).
            var (ended, _) = await ReadToEndAsync(call);
            Assert.Equal(StatusCode.Aborted, ended.StatusCode);
            Assert.Contains("did not read its Telemetry stream (its connection holds", ended.Status.Detail);
            Assert.Contains("unsent answers and commands; nothing written for", ended.Status.Detail);
        }
    }

    [Fact]
    public async Task A_stream_whose_client_opens_no_window_is_reset_with_ENHANCE_YOUR_CALM_since_no_status_can_pass_its_data()
    {
        // A Telemetry stream on raw HTTP/2 that never sends WINDOW_UPDATE: the broker may send 64 KiB of it, no more.
        string clientId = "nowindow@" + Guid.NewGuid().ToString("N")[..8];
        await using RawHttp2 h2 = await RawHttp2.ConnectAsync(_grpcPort);
        await h2.SendSettingsAckAsync();
        await h2.SendGrpcHeadersAsync(1, GrpcMethods.Telemetry, extra: new Dictionary<string, string> { [RocketMqHeaders.ClientId] = clientId });
        await h2.SendGrpcMessageAsync(1, new TelemetryCommand
        {
            Settings = new Settings { ClientType = ClientType.Producer, Publishing = new Publishing { Topics = { new Resource { Name = _topic } } } },
        }.ToByteArray());
        var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(20);
        while (!(_host.Engine.Producers.Snapshot().TryGetValue(_topic, out string[]? ids) && ids.Contains(clientId)))
        {
            Assert.True(DateTime.UtcNow < deadline, "the raw producer was never registered");
            await Task.Delay(20);
        }

        using var sender = new GrpcTestClient($"127.0.0.1:{_grpcPort}");
        using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(30));
        RawHttp2.Frame? reset = null;
        var trailers = 0;

        // First one check, until its write has taken the whole window the client opened (65,535 bytes): from then on the
        // writer is parked in that write. Only then the burst that ends the stream. Sent in one burst from the start, the
        // checks could all be queued, and the stream ended, before the writer began its first write (seen in a stressed
        // round on 2026-12-07): nothing waits for the window then, and the trailers with ABORTED pass, as they should.
        await SendHalvesAsync(sender, _topic, 1);
        long dataBytes = 0;
        while (dataBytes < 60_000 && await h2.ReadFrameAsync(cts.Token) is { } first)
        {
            if (first.StreamId != 1) continue;
            if (first.Type == RawHttp2.Headers) trailers++;
            if (first.Type == RawHttp2.Data) dataBytes += first.Payload.Length;
            Assert.NotEqual(RawHttp2.RstStream, first.Type);
        }
        Assert.True(dataBytes >= 60_000, $"the first check's write sent {dataBytes} bytes");
        await SendHalvesAsync(sender, _topic, 11);

        while (await h2.ReadFrameAsync(cts.Token) is { } frame)
        {
            if (frame.StreamId != 1) continue;
            if (frame.Type == RawHttp2.Headers) trailers++;
            if (frame.Type == RawHttp2.RstStream)
            {
                reset = frame;
                break;
            }
        }

        Assert.NotNull(reset);
        Assert.Equal(0xBu, reset!.Value.ErrorCode); // ENHANCE_YOUR_CALM: RESOURCE_EXHAUSTED to gRPC clients, not INTERNAL_ERROR
        Assert.Equal(1, trailers); // the response headers only: the trailers could not pass the unsent data
        Assert.False(_host.Engine.Producers.Snapshot().TryGetValue(_topic, out string[]? left) && left.Contains(clientId));
    }
}

/// <summary>The session side of <see cref="TelemetryEndStatusTests"/>: a session ended for not reading whose write under
/// way finishes within the grace stops there and may end with a status; what was queued is not written.</summary>
public sealed class TelemetryEndGraceTests
{
    /// <summary>A client that reads, slowly: each write takes <paramref name="delay"/>.</summary>
    private sealed class SlowWriter(TimeSpan delay) : IServerStreamWriter<TelemetryCommand>
    {
        public int Started;
        public int Finished;
        public WriteOptions? WriteOptions { get; set; }
        public Task WriteAsync(TelemetryCommand message) => WriteAsync(message, CancellationToken.None);
        public async Task WriteAsync(TelemetryCommand message, CancellationToken ct)
        {
            Interlocked.Increment(ref Started);
            await Task.Delay(delay, ct);
            Interlocked.Increment(ref Finished);
        }
    }

    private static CheckBackRequest Check(int i) => new()
    {
        TransactionId = "tx" + i,
        ProducerGroup = "T",
        CheckNumber = 1,
        HalfMessage = new StoredMessage { Topic = "T", MessageId = "01" + Guid.NewGuid().ToString("N").ToUpperInvariant(), Body = new byte[256 * 1024] },
    };

    [Fact]
    public async Task A_session_ended_for_a_burst_whose_write_under_way_finishes_stops_there_and_may_end_with_a_status()
    {
        var connection = new AnswerBudget(4 * 1024 * 1024);
        var session = new TelemetrySession("c1", 2 * 1024 * 1024, connection);
        var stream = new SlowWriter(TimeSpan.FromMilliseconds(300));
        Task writer = session.RunWriterAsync(stream, CancellationToken.None);
        Assert.True(session.TrySendCheck(Check(0)));
        var bound = System.Diagnostics.Stopwatch.StartNew();
        while (Volatile.Read(ref stream.Started) == 0 && bound.Elapsed < TimeSpan.FromSeconds(30)) await Task.Delay(5);
        int sent = 1;
        while (session.IsAlive)
            if (session.TrySendCheck(Check(sent))) sent++;
        Assert.Contains("did not read", session.EndReason);

        session.Close(); // as the handler's finally does
        Assert.True(await session.WhenWriterDoneAsync(TimeSpan.FromMinutes(5), TimeProvider.System));
        Assert.True(writer.IsCompleted);
        Assert.Equal(1, stream.Started); // the write under way finished; nothing queued after it was written
        Assert.Equal(1, stream.Finished);
        Assert.Equal(0, connection.Held);
    }
}
