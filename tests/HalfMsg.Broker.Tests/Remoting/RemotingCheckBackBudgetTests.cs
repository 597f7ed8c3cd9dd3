using HalfMsg.Broker.Core;
using HalfMsg.Broker.Core.Model;
using HalfMsg.Broker.Core.Transactions;
using HalfMsg.Broker.FrontEnds.Remoting;
using HalfMsg.Broker.Tests.Infrastructure;
using HalfMsg.TestKit;
using Microsoft.Extensions.Logging;

namespace HalfMsg.Broker.Tests.Remoting;

/// <summary>
/// A check-back carries the whole half. A Remoting connection that keeps its producer registered but never reads its
/// socket could make the broker queue 1,024 of them (the frame queue's count bound): gigabytes with large messages. The
/// queued check-backs now have a byte bound, as a gRPC Telemetry stream's; one over it is refused (the check goes to
/// another instance or waits for the next pass) and the connection stays.
/// </summary>
public sealed class RemotingCheckBackBudgetTests : IAsyncLifetime
{
    private RemotingSessionOverPipes _s = null!;

    public async Task InitializeAsync() => _s = await RemotingSessionOverPipes.OpenAsync("halfmsg-checkbudget-");

    public async Task DisposeAsync() => await _s.DisposeAsync();

    /// <summary>A check-back of a 1 MiB half: sixteen fill the connection's 16 MiB check budget.</summary>
    private static CheckBackRequest LargeCheck() => new()
    {
        TransactionId = "tx",
        ProducerGroup = "pg",
        HalfMessage = new StoredMessage { Topic = "T", MessageId = "01" + Guid.NewGuid().ToString("N").ToUpperInvariant(), Body = new byte[1024 * 1024] },
    };

    [Fact]
    public void Check_backs_queued_for_a_connection_that_does_not_read_stop_at_the_byte_bound()
    {
        var check = LargeCheck();
        int accepted = 0;
        for (int i = 0; i < 200 && _s.Session.TrySendCheck(check); i++) accepted++;
        // 16 MiB of checks queued or written and not flushed (the client reads nothing), then refused.
        Assert.InRange(accepted, 14, 16);
        Assert.True(_s.Session.IsAlive);
    }

    /// <summary>A check that cannot fit is refused before its frame is built: the check pass offers it under the engine's
    /// lock, where encoding a large half for nothing holds every writer. Until the late-night session of 2026-12-07 each
    /// refused check was encoded first.</summary>
    [Fact]
    public void A_check_that_cannot_fit_is_refused_without_its_frame_being_built()
    {
        var check = LargeCheck();
        int accepted = 0;
        while (accepted < 200 && _s.Session.TrySendCheck(check)) accepted++;
        Assert.InRange(accepted, 14, 16);
        long built = _s.Session.CheckFramesBuilt;
        for (int i = 0; i < 20; i++) Assert.False(_s.Session.TrySendCheck(check));
        Assert.Equal(built, _s.Session.CheckFramesBuilt);
        Assert.True(_s.Session.IsAlive);
    }

    /// <summary>A refusal for want of room is not the end of the connection: once its client reads the checks queued on
    /// it, it takes checks again (and asks the core for a pass: RemotingCheckBackRoomTests). Since the night session of
    /// 2026-12-07.</summary>
    [Fact]
    public async Task A_connection_that_refused_checks_for_want_of_room_stays_and_takes_checks_again_once_its_client_reads()
    {
        var check = LargeCheck();
        int accepted = 0;
        while (accepted < 200 && _s.Session.TrySendCheck(check)) accepted++;
        Assert.InRange(accepted, 14, 16);
        Assert.False(_s.Session.TrySendCheck(check)); // still no room: the client read nothing
        Assert.True(_s.Session.IsAlive);

        // The client reads what was written to it: the checks are flushed and their bytes given back.
        using var stop = new CancellationTokenSource();
        long read = 0;
        Task reading = Task.Run(async () =>
        {
            try
            {
                while (true)
                {
                    var r = await _s.ToClient.Reader.ReadAsync(stop.Token);
                    Interlocked.Add(ref read, r.Buffer.Length);
                    _s.ToClient.Reader.AdvanceTo(r.Buffer.End);
                    if (r.IsCompleted) return;
                }
            }
            catch (OperationCanceledException) when (stop.IsCancellationRequested)
            {
            }
        });
        var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(30);
        int again = 0;
        while (again < accepted)
        {
            if (_s.Session.TrySendCheck(check)) again++;
            else await Task.Delay(10);
            Assert.True(DateTime.UtcNow < deadline, $"timed out: {again} checks taken again ({Interlocked.Read(ref read)} bytes read)");
        }
        Assert.True(_s.Session.IsAlive);
        await stop.CancelAsync();
        await reading.WaitAsync(TimeSpan.FromSeconds(30));
        Assert.True(Interlocked.Read(ref read) > accepted * 1024L * 1024);
    }

    /// <summary>Each producer group a connection names is a registration (and asked for a check pass): a connection
    /// keeps at most <see cref="RemotingSession.MaxProducerGroups"/>, and a name no group can have is not one.</summary>
    [Fact]
    public void A_connection_registers_a_bounded_number_of_producer_groups()
    {
        for (int i = 0; i < RemotingSession.MaxProducerGroups + 500; i++) _s.Session.RegisterProducer($"pg-{i}");
        _s.Session.RegisterProducer(new string('g', 256));
        Assert.Equal(RemotingSession.MaxProducerGroups, _s.Session.ProducerGroups.Count);
        Assert.Equal(RemotingSession.MaxProducerGroups, _s.Engine.Producers.Snapshot().Count);
    }

    private sealed class ListLoggerFactory : ILoggerFactory
    {
        public ListLogger<RemotingServer> Logger { get; } = new();
        public ILogger CreateLogger(string categoryName) => Logger;
        public void AddProvider(ILoggerProvider provider) { }
        public void Dispose() { }
    }

    /// <summary>A flood of connections over the limit must not flood the log: once a minute, as the gRPC and admin
    /// ports do, with the count of refusals not logged.</summary>
    [Fact]
    public void Refused_connections_are_logged_at_most_once_a_minute()
    {
        var logs = new ListLoggerFactory();
        var full = new RemotingServer(_s.Engine, new RemotingOptions { MaxConnections = 0 }, logs);
        for (int i = 0; i < 1000; i++) Assert.False(full.TryAcceptConnection());
        Assert.Single(logs.Logger.Entries, e => e.Level == LogLevel.Warning);
    }

    /// <summary>Queues left unlocked because their connection holds its cap of locks are logged (once a minute at most):
    /// an orderly consumer that consumes nothing from them must be explainable.</summary>
    [Fact]
    public void Locks_refused_over_the_cap_are_logged_at_most_once_a_minute()
    {
        var logs = new ListLoggerFactory();
        var server = new RemotingServer(_s.Engine, new RemotingOptions { MaxQueueLocksPerConnection = 2 }, logs);
        var owner = new object();
        for (int i = 0; i < 10; i++)
            Assert.Equal(2, server.Clients.Lock("g", "c1", Enumerable.Range(0, 5).Select(q => ("T", "broker-a", q)), owner).Count);
        var warning = Assert.Single(logs.Logger.Entries, e => e.Level == LogLevel.Warning);
        Assert.Contains("3 queues left unlocked", warning.Message);
    }
}
