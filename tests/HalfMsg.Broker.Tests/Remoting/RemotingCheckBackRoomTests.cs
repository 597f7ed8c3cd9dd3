using System.Collections.Concurrent;
using System.Globalization;
using HalfMsg.Broker.Hosting;
using HalfMsg.Broker.Tests.Infrastructure;
using HalfMsg.Protocol.Remoting;
using HalfMsg.TestKit;
using static HalfMsg.Broker.Tests.Infrastructure.RemotingBroker;

namespace HalfMsg.Broker.Tests.Remoting;

/// <summary>A broker whose check passes come a minute apart (unless asked for), with halves due after a second.</summary>
public sealed class RemotingSlowCheckBrokerFixture : IAsyncLifetime
{
    private readonly string _dataDir = Path.Combine(Path.GetTempPath(), "halfmsg-rmroom-" + Guid.NewGuid().ToString("N")[..12]);
    private BrokerHost? _host;

    public static readonly TimeSpan CheckInterval = TimeSpan.FromSeconds(60);

    public int RemotingPort { get; } = FreePorts.Next();
    public BrokerHost Host => _host ?? throw new InvalidOperationException("not started");

    public async Task InitializeAsync()
        => _host = await BrokerHost.StartAsync(["--data-dir", _dataDir, "--grpc-port", P(FreePorts.Next()), "--http-port", P(FreePorts.Next()),
            "--remoting-port", P(RemotingPort), "--namesrv-port", "0",
            "--transaction-timeout", "1s", "--transaction-check-interval", $"{(int)CheckInterval.TotalSeconds}s"]);

    public async Task DisposeAsync()
    {
        if (_host is not null) await _host.DisposeAsync();
        try { Directory.Delete(_dataDir, true); } catch (IOException) { }
    }

    private static string P(int port) => port.ToString(CultureInfo.InvariantCulture);
}

/// <summary>
/// A Remoting connection refuses a check-back when the checks queued on it and not yet flushed would pass
/// <c>RemotingOptions.CheckBackQueueBudget</c> (16 MiB): the check goes to another instance of the group or, when none
/// takes it, its half waits for the next check pass. Until the night session of 2026-12-07 that was the whole
/// --transaction-check-interval (30 s by default) although the connection was only briefly behind: a producer that read
/// a burst of large checks a little later than they came had the rest checked a pass later. Now the connection asks the
/// core for a pass once the checks queued on it are down to half the budget, as a Telemetry stream does
/// (<see cref="GrpcV5.TelemetryRoomTests"/>).
/// </summary>
public sealed class RemotingCheckBackRoomTests(RemotingSlowCheckBrokerFixture broker) : IClassFixture<RemotingSlowCheckBrokerFixture>
{
    [Fact]
    public async Task A_producer_that_reads_a_burst_of_large_checks_later_than_it_came_keeps_its_connection_and_gets_every_check_once()
    {
        string group = Unique("PG");
        string topic = Unique("TxRoom");
        await using var client = await RemotingTestClient.ConnectAsync(broker.RemotingPort);
        var producer = new RemotingTransactionProducer(client, group);
        await producer.HeartbeatAsync();
        var engine = broker.Host.Engine;
        await Eventually.TrueAsync(() => engine.Producers.Snapshot().TryGetValue(group, out string[]? ids) && ids.Contains(client.ClientId),
            () => "the producer is registered", TimeSpan.FromSeconds(30));

        // 8 halves of 3.5 MB: their checks pass the connection's 16 MiB budget at the fifth or so (the socket takes a few
        // MB of a client that does not read).
        const int halves = 8;
        string body = new('r', 3_500_000);
        var ids = new List<string>();
        for (int i = 0; i < halves; i++)
        {
            var (uniq, sent) = await producer.SendHalfAsync(topic, body);
            Assert.True(sent.Code == ResponseCode.Success, $"half {i}: {sent.Code} {sent.Remark}");
            ids.Add(uniq);
        }

        await Eventually.TrueAsync(() => ids.All(id => engine.FindTransaction(id) is { NextCheckAt: { } at } && at <= DateTimeOffset.UtcNow),
            () => "every half is due", TimeSpan.FromSeconds(30));

        // The producer is busy: it reads nothing while the pass queues the checks.
        client.PauseReading();
        int first = await engine.RunCheckPassAsync();
        Assert.True(first is > 0 and < halves, $"the pass queued {first} of {halves} checks: the budget refused none, or all");

        // Then it reads, and answers each check with a commit as Java's ClientRemotingProcessor does.
        var checks = new ConcurrentQueue<(string Id, string? Number)>();
        var errors = new ConcurrentQueue<string>();
        using var stop = new CancellationTokenSource();
        Task answering = Task.Run(async () =>
        {
            try
            {
                await foreach (var request in client.ServerRequests.ReadAllAsync(stop.Token))
                {
                    if (request.Code != RequestCode.CheckTransactionState) continue;
                    var message = StoredMessageCodec.DecodeAll(request.Body.Span).Single();
                    string uniq = message.Properties[MessageConst.UniqueKey];
                    checks.Enqueue((uniq, message.Properties.GetValueOrDefault(MessageConst.TransactionCheckTimes)));
                    await producer.EndAsync(uniq, request.Get("tranStateTableOffset")!, request.Get("offsetMsgId")!, MessageSysFlag.TransactionCommitType, fromCheck: true);
                }
            }
            catch (OperationCanceledException) when (stop.IsCancellationRequested)
            {
            }
            catch (Exception ex)
            {
                errors.Enqueue(ex.ToString());
            }
        });
        client.ResumeReading();

        // Well within the minute between passes: the checks that did not fit are sent once the connection has room.
        await Eventually.TrueAsync(() => ids.All(id => engine.FindTransaction(id) is null),
            () => $"every half was decided ({ids.Count(id => engine.FindTransaction(id) is null)} of {halves}; checks {checks.Count}; errors: {string.Join(" | ", errors)})",
            TimeSpan.FromSeconds(30));
        await stop.CancelAsync();
        await answering.WaitAsync(TimeSpan.FromSeconds(30));
        Assert.Empty(errors);
        Assert.False(client.Closed.IsCompleted, "the broker closed the connection");
        // Each half was checked once, as its first check: a refused check was not counted.
        var numbers = checks.Where(c => ids.Contains(c.Id)).ToList();
        Assert.Equal(halves, numbers.Count);
        Assert.Equal(halves, numbers.Select(c => c.Id).Distinct().Count());
        Assert.All(numbers, c => Assert.Equal("1", c.Number));
    }
}
