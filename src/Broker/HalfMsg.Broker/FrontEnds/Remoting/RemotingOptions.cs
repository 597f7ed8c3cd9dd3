namespace HalfMsg.Broker.FrontEnds.Remoting;

/// <summary>Settings of the RocketMQ 4 Remoting front-end and its embedded name server.</summary>
public sealed record RemotingOptions
{
    /// <summary>Host put in routes and offset message ids; null = the local address the client connected to.</summary>
    public string? AdvertisedHost { get; init; }
    public int RemotingPort { get; init; } = 10911;
    /// <summary>Port put in routes, cluster info and offset message ids; 0 = <see cref="RemotingPort"/>. A Remoting request
    /// carries no address the client reached (gRPC's do), so behind a port forward only the operator knows the port the
    /// client can reach; until 2026-12-06 the routes always named the listen port, which such a client cannot reach.</summary>
    public int AdvertisedPort { get; init; }
    /// <summary>Embedded name server port; 0 = off (the name-server requests still answer on the remoting port).</summary>
    public int NameServerPort { get; init; } = 9876;
    /// <summary>The broker's name in routes, cluster info, consume stats, queue locks and recall handles; the same on
    /// the gRPC front-end (<see cref="BrokerNames"/>).</summary>
    public string BrokerName { get; init; } = BrokerNames.Default;
    public string ClusterName { get; init; } = "DefaultCluster";
    /// <summary>Largest frame accepted (RocketMQ's frameMaxLength, 16 MiB).</summary>
    public int MaxFrameLength { get; init; } = 16 * 1024 * 1024;
    public int MaxConnections { get; init; } = 10_000;
    /// <summary>Requests of one connection being processed at once; beyond it the broker answers SYSTEM_BUSY. Long-polling
    /// pulls do not count: they have <see cref="MaxParkedPullsPerConnection"/>.</summary>
    public int MaxOutstandingRequestsPerConnection { get; init; } = 256;
    /// <summary>PULL_MESSAGEs with the SUSPEND flag (long polls, which may stay parked up to <see cref="MaxSuspend"/>) of
    /// one connection being processed at once. A Java client instance uses one connection per broker for all its
    /// consumers, and parks a pull on every queue it owns, retry queues included. Beyond it a pull is served without
    /// suspending: answered at once, PULL_NOT_FOUND when there is nothing new.</summary>
    public int MaxParkedPullsPerConnection { get; init; } = 4096;
    /// <summary>Bytes one connection has in flight: bodies of its requests being processed and answers not yet flushed
    /// to its socket. Beyond it the broker answers SYSTEM_BUSY to new requests; a pull (and a VIEW_MESSAGE_BY_ID or
    /// QUERY_MESSAGE) reads only the messages that fit (each body is reserved before it is read, see
    /// <see cref="PullReservation"/>) and is answered SYSTEM_BUSY when not even one does, a long poll once its suspend
    /// time ends without room; another large answer (stats, routes) that does not fit is replaced by SYSTEM_BUSY. So a
    /// client that does not read holds about this much at most.</summary>
    public long MaxInFlightBytesPerConnection { get; init; } = 64L * 1024 * 1024;
    /// <summary>Bytes of pulled messages all connections together hold: PULL_MESSAGE, VIEW_MESSAGE_BY_ID and
    /// QUERY_MESSAGE answers being built (each body is reserved before it is read, see <see cref="PullReservation"/>)
    /// and not yet flushed to their sockets. Past it a pull keeps the messages that fit, and with no room for one is
    /// answered SYSTEM_BUSY (a long poll once its suspend time ends without room). The per-connection budget alone let
    /// 10,000 connections hold 64 MiB each.</summary>
    public long MaxPullBytes { get; init; } = 512L * 1024 * 1024;
    /// <summary>Responses and broker-initiated requests queued for one connection before it is considered stuck.</summary>
    public int OutboundQueueCapacity { get; init; } = 1024;
    /// <summary>Bytes of check-backs (each carries its whole half) queued for one connection and not yet flushed; one
    /// more is refused. At least <see cref="MaxFrameLength"/>, so a check for the largest message always fits; a larger
    /// one (--max-message-size above 16 MiB) goes out alone, with nothing else queued.</summary>
    public long MaxQueuedCheckBackBytes { get; init; } = 16L * 1024 * 1024;
    /// <summary>The effective <see cref="MaxQueuedCheckBackBytes"/>.</summary>
    public long CheckBackQueueBudget => Math.Max(MaxQueuedCheckBackBytes, MaxFrameLength);
    /// <summary>A connection that sends nothing for this long is closed (RocketMQ's channel expiry, 120 s; clients heartbeat every 30 s).</summary>
    public TimeSpan IdleTimeout { get; init; } = TimeSpan.FromSeconds(120);
    /// <summary>Bytes that frames larger than 256 KiB hold while they arrive, on all connections together; a frame that
    /// would pass it closes its connection (see <see cref="RemotingFrameAssembler"/>).</summary>
    public long MaxPartialFrameBytes { get; init; } = 256L * 1024 * 1024;
    /// <summary>A frame larger than 256 KiB that gets no byte for this long closes its connection.</summary>
    public TimeSpan FrameStallTimeout { get; init; } = TimeSpan.FromSeconds(10);
    /// <summary>After <see cref="FrameGracePeriod"/>, a frame larger than 256 KiB must have arrived at this many bytes a
    /// second on average (the gRPC port's rule for a stranger, 64 KiB/s).</summary>
    public int MinFrameDataRate { get; init; } = 64 * 1024;
    public TimeSpan FrameGracePeriod { get; init; } = TimeSpan.FromSeconds(10);
    /// <summary>A connection whose socket takes none of the next 1 MiB of answers written to it for this long is closed
    /// (the write side's <see cref="FrameStallTimeout"/>): a client that stopped reading.</summary>
    public TimeSpan WriteStallTimeout { get; init; } = TimeSpan.FromSeconds(30);
    /// <summary>A consumer group drops a connection this long after the last heartbeat on it that named the group
    /// (Java's channelExpiredTimeout, 120 s; clients heartbeat every 30 s): GET_CONSUMER_LIST_BY_GROUP stops listing the
    /// client and the group's other members are told to rebalance.</summary>
    public TimeSpan ConsumerExpiry { get; init; } = DefaultConsumerExpiry;
    public static readonly TimeSpan DefaultConsumerExpiry = TimeSpan.FromSeconds(120);
    /// <summary>Queue locks (LOCK_BATCH_MQ, orderly consumers) one connection holds at once; past it a queue is not
    /// locked (left out of lockOKMQSet) until the connection's own locks end (60 s lease) or are released.</summary>
    public int MaxQueueLocksPerConnection { get; init; } = 4096;
    /// <summary>Upper bound of a PULL_MESSAGE long poll, whatever the client asks.</summary>
    public TimeSpan MaxSuspend { get; init; } = TimeSpan.FromSeconds(30);
    /// <summary>Access key → secret (RocketMQ 4 ACL). Empty = unsigned requests are accepted.</summary>
    public IReadOnlyDictionary<string, string> Credentials { get; init; } = new Dictionary<string, string>();
}
