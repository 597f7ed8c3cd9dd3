namespace HalfMsg.Broker.Core;

/// <summary>When an acknowledged write reaches the disk.</summary>
public enum FlushMode
{
    /// <summary>A send, decision or ack is acknowledged only after its record is durable (group commit).</summary>
    Sync,
    /// <summary>Records are committed periodically; acknowledgements do not wait.</summary>
    Async,
}

/// <summary>When the reply to a commit or rollback is sent.</summary>
public enum DecisionDurability
{
    /// <summary>After the decision record is durable (the default).</summary>
    Sync,
    /// <summary>
    /// At once, as Apache RocketMQ's one-way END_TRANSACTION: a committed message still becomes visible only once its
    /// decision is durable, and a decision lost in a crash leaves its half pending, so a check-back recovers it.
    /// </summary>
    Relaxed,
}

/// <summary>
/// How a consumer group is served with respect to order, as Apache RocketMQ's subscription group setting
/// consumeMessageOrderly. Kept durably per group (the GroupConfigured record); a group nobody configured follows
/// <see cref="CoreOptions.DefaultGroupOrder"/>.
/// </summary>
public enum GroupOrder : byte
{
    /// <summary>Nobody configured the group: it follows <see cref="CoreOptions.DefaultGroupOrder"/>.</summary>
    NotConfigured = 0,
    /// <summary>Each queue is held in order: while a message of a queue is in flight for the group, no later message of
    /// that queue is delivered to it (consumeMessageOrderly=true).</summary>
    Orderly = 1,
    /// <summary>Messages are delivered without regard to queues or message groups (consumeMessageOrderly=false).</summary>
    Concurrent = 2,
}

/// <summary>How a consumer group that nobody configured (<see cref="GroupOrder.NotConfigured"/>) is served.</summary>
public enum DefaultGroupOrder
{
    /// <summary>A FIFO message group's message in flight holds that message group's later messages (and, as the pick
    /// walks a queue in order, the queue behind it): the broker's behaviour before groups had an order mode.</summary>
    MessageGroup,
    /// <summary>As <see cref="GroupOrder.Concurrent"/>: message groups are not held.</summary>
    Concurrent,
}

/// <summary>Everything the core needs to run. The host binds and validates these from configuration.</summary>
public sealed record CoreOptions
{
    public string DataDir { get; init; } = "./data";
    public FlushMode Flush { get; init; } = FlushMode.Sync;
    /// <summary>Whether the reply to a commit or rollback waits for its record to be durable.</summary>
    public DecisionDurability DecisionDurability { get; init; } = DecisionDurability.Sync;
    /// <summary>Commit period for <see cref="FlushMode.Async"/>.</summary>
    public TimeSpan AsyncFlushInterval { get; init; } = TimeSpan.FromMilliseconds(5);

    /// <summary>A half younger than this is not checked (RocketMQ transactionTimeOut, 6 s).</summary>
    public TimeSpan TransactionTimeout { get; init; } = TimeSpan.FromSeconds(6);
    /// <summary>How often the check-back scheduler wakes (RocketMQ transactionCheckInterval, 30 s).</summary>
    public TimeSpan TransactionCheckInterval { get; init; } = TimeSpan.FromSeconds(30);
    /// <summary>Checks per half before it is parked in TRANS_CHECK_MAX_TIME_TOPIC (RocketMQ transactionCheckMax, 15).</summary>
    public int TransactionCheckMax { get; init; } = 15;
    /// <summary>How long a decided transaction id is remembered, so that repeated decisions stay idempotent.</summary>
    public TimeSpan DecisionRetention { get; init; } = TimeSpan.FromHours(1);
    /// <summary>At most this many decided ids are remembered (about 110 bytes each, measured: DecidedIndex); the oldest are forgotten first.</summary>
    public int MaxRememberedDecisions { get; init; } = 1_000_000;
    /// <summary>At most this many recalls of delay messages are remembered until their delivery time (to drop a copy of
    /// the message stored after its recall); a recall beyond them is refused, to be retried once some are due.</summary>
    public int MaxRememberedRecalls { get; init; } = 1_000_000;
    /// <summary>Upper bound for a producer's requested check immunity, so no half escapes check-back for long.</summary>
    public TimeSpan MaxCheckImmunity { get; init; } = TimeSpan.FromHours(1);

    public int MaxDeliveryAttempts { get; init; } = 16;
    public int QueuesPerTopic { get; init; } = 8;
    /// <summary>
    /// Largest accepted body, in [1, <see cref="Storage.RecordLimits.MaxMessageSizeLimit"/>]. The log's page size is
    /// derived from it (<see cref="Storage.RecordLimits"/>), so every body up to it is stored.
    /// </summary>
    public int MaxMessageSize { get; init; } = 4 * 1024 * 1024;
    public bool AutoCreateTopics { get; init; } = true;
    /// <summary>
    /// Topics the broker holds before it stops creating them on first use (a send or receive naming a new one, a
    /// send-back's dead-letter topic, a consumer's retry topic) and at a Remoting client's UPDATE_AND_CREATE_TOPIC
    /// (mqadmin updateTopic, Java's createTopic): each costs memory, checkpoint space and a durable record, and any client
    /// may name one. Every topic counts, retry, dead-letter and system topics too. The operator's creation through the
    /// admin API is not limited, an existing topic may still be given more queues, and replay keeps every topic the log
    /// holds whatever the limit.
    /// </summary>
    public int MaxTopics { get; init; } = 10_000;
    /// <summary>
    /// Consumer groups the broker keeps progress for, counted per topic (a lease group's state on a topic, a pull group's
    /// offsets on a topic): a receive or offset commit that would start one more is refused until an operator deletes
    /// one. Each costs memory and checkpoint space, and every commit on a topic walks its groups.
    /// </summary>
    public int MaxConsumerGroups { get; init; } = 10_000;
    /// <summary>How a consumer group nobody configured with an order mode is served (--default-group-order).</summary>
    public DefaultGroupOrder DefaultGroupOrder { get; init; } = DefaultGroupOrder.MessageGroup;
    /// <summary>
    /// For a group served by message group (<see cref="DefaultGroupOrder.MessageGroup"/>): messages of a queue whose FIFO
    /// message group is in flight that the pick passes over to deliver the rest of the queue, at most this many per queue
    /// and group at once (each is remembered, 8 bytes, until delivered). Past it the queue waits at the next such
    /// message, as every queue did before 2026-12-07. 0: the whole queue waits behind a busy message group.
    /// </summary>
    public int MaxPassedOverPerQueue { get; init; } = 1024;
    /// <summary>Upper bound for a delay message's delivery time (RocketMQ timerMaxDelaySec, 3 days).</summary>
    public TimeSpan MaxDelay { get; init; } = TimeSpan.FromDays(3);
    public TimeSpan MaxInvisibleDuration { get; init; } = TimeSpan.FromHours(12);
    /// <summary>How long a push consumer's lease (auto_renew) is extended at most, from its delivery (RocketMQ's
    /// proxy: 3 hours).</summary>
    public TimeSpan MaxAutoRenew { get; init; } = TimeSpan.FromHours(3);
    /// <summary>A push consumer's leases are extended only while it was seen (heartbeat, receive, ack) within this
    /// (gRPC clients heartbeat every 10 s).</summary>
    public TimeSpan AutoRenewClientTimeout { get; init; } = TimeSpan.FromSeconds(30);
    /// <summary>A push consumer's renewed leases end this long after it leaves (RocketMQ's proxy: 1 s), so an ack it
    /// sends as it shuts down still holds.</summary>
    public TimeSpan LeaveReleaseDelay { get; init; } = TimeSpan.FromSeconds(1);
    /// <summary>A receive or a Remoting pull stops adding messages once their bodies reach this many bytes (at least one
    /// is always returned).</summary>
    public int ReceiveByteBudget { get; init; } = 8 * 1024 * 1024;

    /// <summary>
    /// Messages the operator look-up index remembers (by id and key, with their histories); the oldest are forgotten
    /// first. Its memory grows with it (about 800 bytes per message); its CPU per transaction does not (README, Not done
    /// yet).
    /// </summary>
    public int MessageIndexCapacity { get; init; } = 200_000;

    /// <summary>
    /// Estimated bytes the message index's keys may hold in all (<see cref="Diagnostics.MessageIndex.MaxKeyBytes"/>);
    /// past it the oldest messages are forgotten first, even below <see cref="MessageIndexCapacity"/>. A setting since
    /// 2026-12-06 (before, always 128 MiB): a broker whose messages carry many keys can give the look-up by key more
    /// memory, or a small one less.
    /// </summary>
    public long MessageIndexKeyBytes { get; init; } = Diagnostics.MessageIndex.MaxKeyBytesTotal;

    /// <summary>Take a checkpoint after this many records (and at shutdown), bounding replay on start.</summary>
    public int CheckpointEveryRecords { get; init; } = 200_000;
    /// <summary>Take a checkpoint once the log has grown this many bytes since the last one, however few records that
    /// is (bounds replay with large messages; 0 = no byte bound). An eighth of <see cref="RetentionBytes"/> and of
    /// <see cref="RetentionTime"/> bound the distance too (<see cref="Storage.CheckpointSchedule"/>).</summary>
    public long CheckpointEveryBytes { get; init; } = 1L << 30;
    /// <summary>Truncate the log head once the log holds more than this many bytes (0 = never).</summary>
    public long RetentionBytes { get; init; } = 8L * 1024 * 1024 * 1024;
    /// <summary>Truncate records older than this (0 = never).</summary>
    public TimeSpan RetentionTime { get; init; } = TimeSpan.FromHours(72);
    /// <summary>Refuse new messages while fewer bytes than this are free on the log's file system (0 = no byte limit);
    /// what is left is the reserve for decisions, acks, checkpoints and retention (<see cref="Storage.DiskSpaceGuard"/>).</summary>
    public long DiskMinFreeBytes { get; init; } = 256L * 1024 * 1024;
    /// <summary>Refuse new messages while the log's file system is used beyond this ratio (RocketMQ's
    /// diskSpaceWarningLevelRatio, 0.90; 1 = no ratio limit).</summary>
    public double DiskMaxUsedRatio { get; init; } = 0.90;
    /// <summary>FasterLog segment size as a power of two (default 2^28 = 256 MiB).</summary>
    public int SegmentSizeBits { get; init; } = 28;
    /// <summary>FasterLog in-memory tail buffer as a power of two (default 2^26 = 64 MiB).</summary>
    public int MemorySizeBits { get; init; } = 26;

    /// <summary>
    /// A log commit that does not complete within this is a storage failure, like a failed one: the broker stops
    /// accepting writes and reports it (FASTER's commit has been seen to hang; a hung commit would otherwise stall every
    /// acknowledged write forever, silently).
    /// </summary>
    public TimeSpan CommitTimeout { get; init; } = TimeSpan.FromSeconds(30);

    /// <summary>Sync flush: times the commit loop yields to the thread pool before a commit of less than 8 KiB, so that
    /// queued requests share it (<see cref="Storage.RecordLog.CommitLingerBytes"/>); 0 = commit at once.</summary>
    public int CommitLingerYields { get; init; } = Storage.RecordLog.DefaultCommitLingerYields;

    /// <summary>Test hook: wraps the log's device (fault injection). Null in production.</summary>
    internal Func<FASTER.core.IDevice, FASTER.core.IDevice>? WrapLogDevice { get; init; }

    /// <summary>Test hook: free and total bytes of the log's file system (<see cref="Storage.DiskSpaceGuard"/>). Null in production.</summary>
    internal Func<string, (long Free, long Total)>? DiskProbe { get; init; }
}
