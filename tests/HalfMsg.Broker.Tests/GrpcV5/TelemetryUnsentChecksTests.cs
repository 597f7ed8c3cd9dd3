using HalfMsg.Broker.Hosting;
using HalfMsg.Broker.Tests.Infrastructure;
using HalfMsg.TestKit;

namespace HalfMsg.Broker.Tests.GrpcV5;

/// <summary>An in-process broker whose halves are due 1 s after they are stored and whose check loop waits a minute
/// between passes unless asked for one (a producer joins, a check is given back): tests run the first pass themselves.</summary>
public sealed class SlowCheckBrokerFixture : IAsyncLifetime
{
    private readonly string _dataDir = Path.Combine(Path.GetTempPath(), "halfmsg-slowcheck-" + Guid.NewGuid().ToString("N")[..12]);
    private BrokerHost? _host;

    public static readonly TimeSpan CheckInterval = TimeSpan.FromSeconds(60);

    public int GrpcPort { get; } = FreePorts.Next();
    public string Endpoint => $"127.0.0.1:{GrpcPort}";
    public BrokerHost Host => _host ?? throw new InvalidOperationException("not started");

    public async Task InitializeAsync()
        => _host = await BrokerHost.StartAsync(["--data-dir", _dataDir, "--grpc-port", GrpcPort.ToString(), "--http-port", FreePorts.Next().ToString(),
            "--transaction-timeout", "1s", "--transaction-check-interval", $"{(int)CheckInterval.TotalSeconds}s", "--remoting-port", "0", "--namesrv-port", "0"]);

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
/// A producer instance that stops reading its Telemetry stream has the stream ended once the check-backs queued on it
/// pass its byte bound. Until 2026-12-07 the checks still queued then were dropped: counted as sent (the half's attempt
/// spent) and never written, so their halves waited a whole check interval, though another instance of the group was
/// alive and answering. Now they are given back to the core unwritten: not counted, and offered at once to the other
/// instance, which gets them as the halves' first check.
/// </summary>
public sealed class TelemetryUnsentChecksTests(SlowCheckBrokerFixture broker) : IClassFixture<SlowCheckBrokerFixture>
{
    private readonly string _topic = "unsent-" + Guid.NewGuid().ToString("N")[..12];

    private bool Registered(params TelemetryTestProducer[] producers)
        => broker.Host.Engine.Producers.Snapshot().TryGetValue(_topic, out string[]? ids)
           && producers.All(p => ids.Contains(p.Client.ClientId));

    [Fact]
    public async Task Checks_queued_on_a_stream_ended_for_not_reading_go_at_once_to_the_other_instance_and_are_not_counted()
    {
        var elapsed = System.Diagnostics.Stopwatch.StartNew();
        await using TelemetryTestProducer stalled = await TelemetryTestProducer.StartAsync(broker.Endpoint, _topic, TelemetryTestProducer.Behaviour.StopReading);
        await using TelemetryTestProducer live = await TelemetryTestProducer.StartAsync(broker.Endpoint, _topic, TelemetryTestProducer.Behaviour.Answer);
        await Eventually.TrueAsync(() => Registered(stalled, live), "both instances are registered", TimeSpan.FromSeconds(30));

        // Sent by the instance that stops reading, which is asked first. Each check carries its 3.5 MiB body: the stream's
        // 16 MiB bound is passed at the fifth, with the first parked in its write and three more queued behind it. Since
        // the night session of 2026-12-07 the fifth to seventh are refused there and go to the live instance at once; the
        // stalled stream is ended once nothing of it has been written for the stall limit (10 s, and 13.4 s more for the
        // 3.5 MB write under way, a second per 256 KiB), and the three queued checks go to the live instance then.
        const int halves = 7;
        var ids = new List<string>();
        for (int i = 0; i < halves; i++)
        {
            ids.Add(await stalled.SendHalfAsync(_topic, 3_500_000));
        }

        await Eventually.TrueAsync(() => ids.All(id => broker.Host.Engine.FindTransaction(id) is { NextCheckAt: { } at } && at <= DateTimeOffset.UtcNow),
            "every half is due", TimeSpan.FromSeconds(30));
        await broker.Host.Engine.RunCheckPassAsync();
        await Eventually.TrueAsync(() => !Registered(stalled), "the instance that does not read had its stream ended", TimeSpan.FromSeconds(45));

        // Well within the minute between checks (30 s for a busy machine): only the check in the write under way when the stream ended may
        // have reached the stalled instance; every other half is checked and decided by the live one.
        await Eventually.TrueAsync(() => ids.Count(live.Decided.Contains) >= halves - 1,
            () => $"the live instance decided all halves but one ({ids.Count(live.Decided.Contains)} of {halves} decided; checks the live one got {live.Checks.Count}, " +
                $"the stalled one {stalled.Checks.Count}; sent {broker.Host.Engine.Metrics.ChecksSent}, returned {broker.Host.Engine.Metrics.ChecksReturned}; " +
                $"pending {ids.Count(id => broker.Host.Engine.FindTransaction(id) is not null)}; live's errors: {string.Join(" | ", live.Errors)}; " +
                $"{elapsed.Elapsed.TotalSeconds:F1} s since the streams opened)", TimeSpan.FromSeconds(30));
        Assert.True(ids.Count(id => broker.Host.Engine.FindTransaction(id) is not null) <= 1);
        // The stalled instance's checks it never got were not counted: each half the live one decided was its first check.
        var numbers = live.Checks.Where(c => ids.Contains(c.TransactionId))
            .Select(c => c.Message.UserProperties.TryGetValue("TRANSACTION_CHECK_TIMES", out string? n) ? n : null).ToList();
        Assert.True(numbers.Count >= halves - 1);
        Assert.All(numbers, n => Assert.Equal("1", n));
        Assert.Equal(numbers.Count, live.Checks.Where(c => ids.Contains(c.TransactionId)).Select(c => c.TransactionId).Distinct().Count());
    }
}
