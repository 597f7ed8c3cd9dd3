using System.Net;
using HalfMsg.Broker.Core;
using HalfMsg.Protocol.Remoting;

namespace HalfMsg.Broker.FrontEnds.Remoting;

/// <summary>Shared state of the Remoting front-end: the engine, options, client tables, the dispatcher, limits and logging.</summary>
internal sealed class RemotingServer
{
    private int _connections;

    public RemotingServer(BrokerEngine engine, RemotingOptions options, ILoggerFactory loggers)
    {
        Engine = engine;
        Options = options;
        Logger = loggers.CreateLogger("HalfMsg.Broker.Remoting");
        Clients = new RemotingClients(this);
        Dispatcher = new RemotingDispatcher(this);
        PartialFrames = new PartialFrameBudget(options.MaxPartialFrameBytes);
    }

    public BrokerEngine Engine { get; }
    public RemotingOptions Options { get; }
    /// <summary>Load shedding for sends, shared with the gRPC front end (null: none).</summary>
    public SendAdmission? Admission { get; init; }
    public ILogger Logger { get; }
    public RemotingClients Clients { get; }
    public RemotingDispatcher Dispatcher { get; }
    public int Connections => Volatile.Read(ref _connections);
    /// <summary>Bytes held by large frames still arriving, all connections together (<see cref="RemotingFrameAssembler"/>).</summary>
    public PartialFrameBudget PartialFrames { get; }
    /// <summary>Clock of the large-frame rate rule (tests: a fake one).</summary>
    public TimeProvider Time { get; init; } = TimeProvider.System;

    private long _pullBytes;

    /// <summary>Bytes of pulled messages held by all connections: answers being built and not yet flushed
    /// (<see cref="RemotingOptions.MaxPullBytes"/>).</summary>
    public long PullBytes => Interlocked.Read(ref _pullBytes);

    /// <summary>Takes room for a message a pull of <paramref name="session"/> is about to read on the broker's budget of
    /// pulled bytes: when it fits; or when it is the pull's first and no connection holds any (one message larger than
    /// the budget still goes); or when it is the pull's first, its connection holds none of the budget and the broker
    /// holds less than twice the budget with it. Without that last rule a few connections that read slowly (each within
    /// its own budget and the write timeout) held the whole budget for as long as they liked, and every other consumer
    /// was answered SYSTEM_BUSY (found by review, 2026-12-06); with it they hold at most the budget, and the connections
    /// holding nothing share as much again, one message each.</summary>
    internal bool TryReservePull(RemotingSession session, long bytes, bool first)
    {
        long after = Interlocked.Add(ref _pullBytes, bytes);
        if (after <= Options.MaxPullBytes || (first && (after == bytes || (session.PulledBytes == 0 && after <= 2 * Options.MaxPullBytes))))
        {
            session.NotePulled(bytes);
            return true;
        }
        Interlocked.Add(ref _pullBytes, -bytes);
        PullReleased.Pulse();
        return false;
    }

    /// <summary>Whether <see cref="TryReservePull"/> of a pull's first message of <paramref name="bytes"/> would succeed
    /// now (it may not by the time it is tried).</summary>
    internal bool HasRoomForPull(RemotingSession session, long bytes)
    {
        long held = PullBytes;
        return held <= Options.MaxPullBytes - bytes || held == 0 || (session.PulledBytes == 0 && held <= 2 * Options.MaxPullBytes - bytes);
    }

    /// <summary>Pulsed at every release of pulled bytes: a long poll refused for room on the broker's budget waits on it
    /// (<see cref="PullReservation.WaitForRoomAsync"/>).</summary>
    internal RoomSignal PullReleased { get; } = new();

    /// <summary>Counts <paramref name="bytes"/> of pulled messages of <paramref name="session"/> (negative: releases
    /// them) whatever the budget.</summary>
    internal void ChargePull(RemotingSession session, long bytes)
    {
        if (bytes == 0) return;
        Interlocked.Add(ref _pullBytes, bytes);
        session.NotePulled(bytes);
        if (bytes < 0) PullReleased.Pulse();
    }

    private long _pullLooks;

    /// <summary>Looks PULL_MESSAGEs made at the engine, each reading up to a batch of bodies (tests, diagnostics).</summary>
    internal long PullLooks => Interlocked.Read(ref _pullLooks);

    internal void NotePullLook() => Interlocked.Increment(ref _pullLooks);

    /// <summary>Tests: called by a pull (or a VIEW_MESSAGE_BY_ID, a QUERY_MESSAGE) that found messages with the bytes of
    /// the bodies it read, before its answer is built; a test holds them there to see what they hold at once.</summary>
    internal Func<long, Task>? PulledForTests { get; set; }

    /// <summary>END_TRANSACTION requests for a transaction the core does not know (logged and counted).</summary>
    public long UnknownTransactionDecisions;

    private readonly GrpcV5.LogRateLimiter _refusedLog = new(1, TimeProvider.System);

    /// <summary>One-way requests refused by flow control (they cannot be answered, so the client never learns of it).</summary>
    public long DroppedOnewayRequests;

    /// <summary>SYSTEM_BUSY and SYSTEM_ERROR answers that found their connection's outbound queue full and waited for
    /// room (the connection's reading waited with them).</summary>
    public long AnswersThatWaitedForRoom;

    private readonly GrpcV5.LogRateLimiter _droppedOnewayLog = new(1, TimeProvider.System);

    /// <summary>Counts a one-way request refused by flow control, and logs it once a minute at most.</summary>
    public void DroppedOneway(RemotingSession session, RemotingCommand request, string reason)
    {
        Interlocked.Increment(ref DroppedOnewayRequests);
        if (_droppedOnewayLog.TryEnter(out long suppressed))
            Logger.LogWarning("One-way Remoting request code {Code} from {Remote} dropped unanswered: {Reason} ({Suppressed} more drops not logged since the last line)",
                request.Code, session.RemoteEndPoint, reason, suppressed);
    }

    public bool TryAcceptConnection()
    {
        if (Interlocked.Increment(ref _connections) <= Options.MaxConnections) return true;
        Interlocked.Decrement(ref _connections);
        // Once a minute at most, as the gRPC and admin ports: a flood of connections must not flood the log.
        if (_refusedLog.TryEnter(out long suppressed))
            Logger.LogWarning("Remoting connection refused: {Max} connections already open ({Suppressed} more refusals not logged since the last line)",
                Options.MaxConnections, suppressed);
        return false;
    }

    public void ReleaseConnection() => Interlocked.Decrement(ref _connections);

    /// <summary>The broker address clients should use, as seen from <paramref name="session"/>'s connection.</summary>
    public string BrokerAddress(RemotingSession session) => $"{AdvertisedHost(session)}:{AdvertisedPort}";

    /// <summary>The port clients should use: <see cref="RemotingOptions.AdvertisedPort"/>, else the listen port.</summary>
    public int AdvertisedPort => Options.AdvertisedPort > 0 ? Options.AdvertisedPort : Options.RemotingPort;

    public string AdvertisedHost(RemotingSession session)
    {
        if (!string.IsNullOrEmpty(Options.AdvertisedHost)) return Options.AdvertisedHost;
        var ip = session.LocalEndPoint.Address;
        if (ip.IsIPv4MappedToIPv6) ip = ip.MapToIPv4();
        return ip.Equals(IPAddress.Any) || ip.Equals(IPAddress.IPv6Any) ? "127.0.0.1" : ip.ToString();
    }

    /// <summary>The store host of stored-message records and offset message ids (IPv4 only, as the V1 layout requires): the
    /// advertised address, as the routes name it, since a client's viewMessage connects to the address an id holds.</summary>
    public IPEndPoint StoreHost(RemotingSession session)
    {
        if (!IPAddress.TryParse(AdvertisedHost(session), out var ip) || ip.AddressFamily != System.Net.Sockets.AddressFamily.InterNetwork)
            ip = IPAddress.Loopback;
        return new IPEndPoint(ip, AdvertisedPort);
    }

    public void LogMalformed(RemotingSession session, string reason)
        => Logger.LogDebug("Closing Remoting connection from {Remote}: {Reason}", session.RemoteEndPoint, reason);

    public void LogFailure(RemotingSession session, RemotingCommand request, Exception ex)
        => Logger.LogError(ex, "Remoting request code {Code} from {Remote} failed", request.Code, session.RemoteEndPoint);
}
