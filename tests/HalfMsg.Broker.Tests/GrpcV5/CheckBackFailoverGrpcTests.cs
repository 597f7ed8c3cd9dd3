using System.Collections.Concurrent;
using Apache.Rocketmq.V2;
using Google.Protobuf;
using Google.Protobuf.WellKnownTypes;
using Grpc.Core;
using HalfMsg.Broker.Hosting;
using HalfMsg.Broker.Tests.Infrastructure;
using HalfMsg.Protocol.Grpc;
using HalfMsg.TestKit;
using V2Encoding = Apache.Rocketmq.V2.Encoding;

namespace HalfMsg.Broker.Tests.GrpcV5;

/// <summary>An in-process broker that checks every second (a half is due 1 s after it was stored).</summary>
public sealed class FastCheckBrokerFixture : IAsyncLifetime
{
    private readonly string _dataDir = Path.Combine(Path.GetTempPath(), "halfmsg-check-" + Guid.NewGuid().ToString("N")[..12]);
    private BrokerHost? _host;

    public int GrpcPort { get; } = FreePorts.Next();
    public string Endpoint => $"127.0.0.1:{GrpcPort}";
    public BrokerHost Host => _host ?? throw new InvalidOperationException("not started");

    public async Task InitializeAsync()
        => _host = await BrokerHost.StartAsync(["--data-dir", _dataDir, "--grpc-port", GrpcPort.ToString(), "--http-port", FreePorts.Next().ToString(),
            "--transaction-timeout", "1s", "--transaction-check-interval", "1s", "--remoting-port", "0", "--namesrv-port", "0"]);

    public async Task DisposeAsync()
    {
        if (_host is not null)
        {
            await _host.DisposeAsync();
        }

        try { Directory.Delete(_dataDir, true); } catch (IOException) { }
    }
}

/// <summary>
/// Check-backs over real Telemetry streams: a producer instance that is connected but never answers (reading its
/// stream or not) does not burn the check attempts while another instance of the group is alive; and a session whose
/// client stops reading is closed once its outbound queue passes the byte bound.
/// </summary>
public sealed class CheckBackFailoverGrpcTests(FastCheckBrokerFixture broker) : IClassFixture<FastCheckBrokerFixture>
{
    private readonly string _topic = "fo-" + Guid.NewGuid().ToString("N")[..12];

    private async Task WaitUntilAsync(Func<bool> condition, string what, TimeSpan? within = null)
    {
        var deadline = DateTime.UtcNow + (within ?? TimeSpan.FromSeconds(60));
        while (!condition())
        {
            Assert.True(DateTime.UtcNow < deadline, "timed out waiting until " + what);
            await Task.Delay(50);
        }
    }

    private bool Registered(params TelemetryTestProducer[] producers)
        => broker.Host.Engine.Producers.Snapshot().TryGetValue(_topic, out string[]? ids)
           && producers.All(p => ids.Contains(p.Client.ClientId));

    [Theory]
    [InlineData(1)] // reads its stream, never answers
    [InlineData(2)] // stops reading its stream (the check-backs pile up unread)
    public async Task A_half_whose_sender_is_connected_but_never_answers_is_decided_by_the_live_instance_within_two_attempts(int silentBehaviour)
    {
        await using TelemetryTestProducer silent = await TelemetryTestProducer.StartAsync(broker.Endpoint, _topic, (TelemetryTestProducer.Behaviour)silentBehaviour);
        await using TelemetryTestProducer live = await TelemetryTestProducer.StartAsync(broker.Endpoint, _topic, TelemetryTestProducer.Behaviour.Answer);
        await WaitUntilAsync(() => Registered(silent, live), "both instances are registered");

        string tx = await silent.SendHalfAsync(_topic);

        await WaitUntilAsync(() => live.Decided.Contains(tx), "the live instance decided the half");
        Assert.Null(broker.Host.Engine.FindTransaction(tx));
        Assert.Single(live.Checks, c => c.TransactionId == tx);
        // Attempt 1 went to the sender (it is preferred), attempt 2 to the live one. At most one went unanswered.
        Assert.True(silent.Checks.Count(c => c.TransactionId == tx) <= 1);
        Assert.True(Registered(silent, live), "the silent instance is still connected and registered");
        Assert.Equal(1, broker.Host.Engine.Producers.UnansweredChecks(_topic, silent.Client.ClientId));
    }

    /// <summary>
    /// Apache's broker writes the check's number into the half it checks back (user property TRANSACTION_CHECK_TIMES, 1
    /// at the first check) and its proxy passes it on as a user property; checkers read it, and Apache's transaction
    /// benchmark rolls back when it is missing. Until 2026-12-06 no check-back carried it (found by review).
    /// </summary>
    [Fact]
    public async Task A_check_back_carries_its_number_in_the_TRANSACTION_CHECK_TIMES_user_property()
    {
        await using TelemetryTestProducer producer = await TelemetryTestProducer.StartAsync(broker.Endpoint, _topic, TelemetryTestProducer.Behaviour.Ignore);
        await WaitUntilAsync(() => Registered(producer), "the instance is registered");

        string tx = await producer.SendHalfAsync(_topic);

        // Unanswered, so checked again a second later, by the only instance of the group.
        await WaitUntilAsync(() => producer.Checks.Count(c => c.TransactionId == tx) >= 2, "two check-backs of the half");
        var numbers = producer.Checks.Where(c => c.TransactionId == tx).Take(2)
            .Select(c => c.Message.UserProperties.TryGetValue("TRANSACTION_CHECK_TIMES", out string? n) ? n : null);
        Assert.Equal(["1", "2"], numbers);
    }

    [Fact]
    public async Task A_telemetry_session_that_stops_reading_is_closed_when_its_queue_passes_the_byte_bound()
    {
        await using TelemetryTestProducer stalled = await TelemetryTestProducer.StartAsync(broker.Endpoint, _topic, TelemetryTestProducer.Behaviour.StopReading);
        await WaitUntilAsync(() => Registered(stalled), "the instance is registered");

        // Each check carries its 3.5 MiB body: the 16 MiB bound is passed after about five (HTTP/2 windows hold a
        // few hundred KiB more).
        for (int i = 0; i < 7; i++)
        {
            await stalled.SendHalfAsync(_topic, 3_500_000);
        }

        await WaitUntilAsync(() => !Registered(stalled), "the session that does not drain is closed and unregistered");
        Assert.True(broker.Host.Engine.PendingCount >= 7);
    }

    [Fact]
    public async Task A_producer_whose_connection_goes_silent_is_pinged_and_unregistered_within_about_20_seconds()
    {
        // A Telemetry stream on raw HTTP/2, then silence: no reset, no answer to PING, as a peer that died without a FIN.
        string clientId = "silent@" + Guid.NewGuid().ToString("N")[..8];
        await using RawHttp2 h2 = await RawHttp2.ConnectAsync(broker.GrpcPort);
        await h2.SendSettingsAckAsync();
        await h2.SendGrpcHeadersAsync(1, GrpcMethods.Telemetry, extra: new Dictionary<string, string> { [RocketMqHeaders.ClientId] = clientId });
        await h2.SendGrpcMessageAsync(1, new TelemetryCommand
        {
            Settings = new Settings { ClientType = ClientType.Producer, Publishing = new Publishing { Topics = { new Resource { Name = _topic } } } },
        }.ToByteArray());
        await WaitUntilAsync(() => broker.Host.Engine.Producers.Snapshot().TryGetValue(_topic, out string[]? ids) && ids.Contains(clientId),
            "the producer is registered");
        var silentSince = System.Diagnostics.Stopwatch.StartNew();

        // Read (a dead peer's kernel would not even do that) but never answer.
        var seen = new List<byte>();
        using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(90));
        while (await h2.ReadFrameAsync(cts.Token) is { } frame)
        {
            seen.Add(frame.Type);
        }

        TimeSpan closedAfter = silentSince.Elapsed;
        Assert.Contains(RawHttp2.Ping, seen);
        Assert.InRange(closedAfter, TimeSpan.FromSeconds(15), TimeSpan.FromSeconds(60)); // 10 s idle + 10 s ping timeout
        await WaitUntilAsync(() => !(broker.Host.Engine.Producers.Snapshot().TryGetValue(_topic, out string[]? ids) && ids.Contains(clientId)),
            "the producer is unregistered", TimeSpan.FromSeconds(10));
    }
}
