using Apache.Rocketmq.V2;
using Google.Protobuf.WellKnownTypes;
using HalfMsg.Broker.Hosting;
using HalfMsg.Broker.Tests.Infrastructure;
using HalfMsg.Protocol.Grpc;
using HalfMsg.TestKit;

namespace HalfMsg.Broker.Tests.GrpcV5;

/// <summary>
/// End to end, the case of <see cref="TelemetryEndedWriterTests"/>: a producer's Telemetry stream that stops reading
/// is ended by the broker once its connection holds twice its answer budget. Until late on 2026-12-06 the stream's
/// writer stayed parked in a write for HTTP/2 window (the client, alive, never opened it), so what it had queued stayed
/// charged to the connection for as long as the connection lived: every ReceiveMessage on it found no room and answered
/// MESSAGE_NOT_FOUND after its long poll, with a message waiting (found by review). Now the writer is stopped and the
/// stream reset at once, and the connection's receives are served again.
/// </summary>
public sealed class TelemetryStalledConnectionTests : IAsyncLifetime
{
    private readonly string _dataDir = Path.Combine(Path.GetTempPath(), "halfmsg-stalled-" + Guid.NewGuid().ToString("N")[..12]);
    private readonly int _grpcPort = FreePorts.Next();
    private readonly string _topic = "stalled-" + Guid.NewGuid().ToString("N")[..12];
    private BrokerHost _host = null!;

    // 1 MiB messages make receive answers at most 2 MiB, so a connection's budget may be 4 MiB: the stream is ended
    // once its connection holds 8 MiB, after about eight checks of 900 KB halves.
    public async Task InitializeAsync()
        => _host = await BrokerHost.StartAsync(["--data-dir", _dataDir, "--grpc-port", _grpcPort.ToString(), "--http-port", FreePorts.Next().ToString(),
            "--remoting-port", "0", "--namesrv-port", "0", "--transaction-timeout", "1s", "--transaction-check-interval", "1s",
            "--max-message-size", "1MiB", "--grpc-max-unsent-per-connection", "4MiB"]);

    public async Task DisposeAsync()
    {
        await _host.DisposeAsync();
        try { Directory.Delete(_dataDir, true); } catch (IOException) { }
    }

    private static async Task WaitUntilAsync(Func<bool> condition, string what)
    {
        var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(60);
        while (!condition())
        {
            Assert.True(DateTime.UtcNow < deadline, "timed out waiting until " + what);
            await Task.Delay(50);
        }
    }

    private bool Registered(TelemetryTestProducer p)
        => _host.Engine.Producers.Snapshot().TryGetValue(_topic, out string[]? ids) && ids.Contains(p.Client.ClientId);

    [Fact]
    public async Task A_connection_whose_telemetry_stream_was_ended_for_not_reading_is_served_receives_again()
    {
        await using TelemetryTestProducer stalled = await TelemetryTestProducer.StartAsync($"127.0.0.1:{_grpcPort}", _topic, TelemetryTestProducer.Behaviour.StopReading);
        await WaitUntilAsync(() => Registered(stalled), "the producer is registered");

        // Every half is checked back each second over the stream nobody reads, until the broker ends it.
        for (int i = 0; i < 12 && Registered(stalled); i++)
        {
            await stalled.SendHalfAsync(_topic, 900_000);
        }

        await WaitUntilAsync(() => !Registered(stalled), "the stream that does not drain is ended and unregistered");

        // A message waits on another topic; a consumer on the same connection asks for it.
        string plain = _topic + "-plain";
        Assert.Equal(Code.Ok, (await RecallTests.SendAsync(stalled.Client, RecallTests.NewMessage(plain, "waiting"))).Status.Code);

        var receive = await stalled.Client.ServerStreamAsync(GrpcMethods.ReceiveMessage, new ReceiveMessageRequest
        {
            Group = new Resource { Name = "g" },
            MessageQueue = new MessageQueue { Topic = new Resource { Name = plain } },
            FilterExpression = new FilterExpression { Type = FilterType.Tag, Expression = "*" },
            BatchSize = 4,
            InvisibleDuration = Duration.FromTimeSpan(TimeSpan.FromSeconds(30)),
            LongPollingTimeout = Duration.FromTimeSpan(TimeSpan.FromSeconds(3)),
        }, ReceiveMessageResponse.Parser);

        Assert.Equal(0, receive.GrpcStatus);
        Message got = Assert.Single(receive.Responses, r => r.Message is not null).Message;
        Assert.Equal("waiting", got.Body.ToStringUtf8());
    }
}
