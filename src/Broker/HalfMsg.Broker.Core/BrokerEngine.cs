using HalfMsg.Broker.Core.Delivery;
using HalfMsg.Broker.Core.Diagnostics;
using HalfMsg.Broker.Core.Model;
using HalfMsg.Broker.Core.Retention;
using HalfMsg.Broker.Core.Storage;
using HalfMsg.Broker.Core.Transactions;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;

namespace HalfMsg.Broker.Core;

/// <summary>
/// The transactional broker core: half messages, decisions, check-back, ack-based delivery, all persisted as records in
/// one FasterLog. Protocol front-ends are thin translators over the public methods here.
/// </summary>
/// <remarks>
/// Concurrency: every state change happens under one lock, in the same order as its record is appended to the log, so
/// the log replays to exactly the in-memory state. Durability waits happen outside the lock (group commit). Readers
/// (receives, check-backs) pick entries under the lock and read bodies from the log outside it.
/// </remarks>
public sealed partial class BrokerEngine : IAsyncDisposable
{
    public const string CheckMaxTopic = "TRANS_CHECK_MAX_TIME_TOPIC";
    public const string DeadLetterPrefix = "%DLQ%";

    private readonly object _gate = new();
    private readonly CoreOptions _options;
    private readonly TimeProvider _time;
    private readonly ILogger _logger;
    private readonly RecordLog _log;
    private readonly RecordWriter _writer = new();
    private readonly CheckpointStore _checkpoints;
    private readonly Checkpointer _checkpointer;
    /// <summary>The records that carry state past retention cuts (see <see cref="Retention.CarryingRecords"/>).</summary>
    private readonly Retention.CarryingRecords _carrying;
    private readonly RetentionPlanner _retention;
    private readonly RecordApplier _applier;

    // The state, each kind with its owner (single writer: the engine, under _gate, through the RecordApplier).
    private readonly TopicQueues _topics;                       // topic queues: entries and visibility

    /// <summary>Tests: change a queue as only retention does, under <see cref="GateForTests"/>.</summary>
    internal TopicQueues TopicsForTests => _topics;
    internal object GateForTests => _gate;
    /// <summary>Tests: how many leases this run has taken; set, as if that many had been.</summary>
    internal long LeasesTakenForTests
    {
        get { lock (_gate) return _groups.LeasesTakenForTests; }
        set { lock (_gate) _groups.LeasesTakenForTests = value; }
    }
    /// <summary>Tests: whether the lease id was handed out by this run (<see cref="ConsumerGroups.IsOfThisRun"/>).</summary>
    internal bool IsLeaseOfThisRunForTests(long leaseId) { lock (_gate) return _groups.IsOfThisRun(leaseId); }
    internal DelayIndex DelayedForTests => _delayed;
    /// <summary>Tests: namespaces some remembered decision is of, "" included (<see cref="DecidedIndex.NamespacesHeld"/>).</summary>
    internal int DecidedNamespacesForTests { get { lock (_gate) return _txs.Decided.NamespacesHeld; } }

    /// <summary>Tests: releases of a namespace number no remembered decision held (<see cref="DecidedIndex.NamespaceReleasesUnmatched"/>).</summary>
    internal long DecidedNamespaceReleasesUnmatchedForTests { get { lock (_gate) return _txs.Decided.NamespaceReleasesUnmatched; } }
    /// <summary>Tests: when the sweeper loop plans to run next (Unix ms; <see cref="long.MinValue"/> while it runs or is kicked).</summary>
    internal long SweepPlannedAtMsForTests { get { lock (_gate) return _sweepAlarm.PlannedAtMs; } }
    /// <summary>Tests: leases looked at to find a leaving client's renewed ones, and the renewed-lease table's size.</summary>
    internal (long Examined, int Entries) RenewedLeasesForTests { get { lock (_gate) return (_groups.RenewedExamined, _groups.RenewedEntries); } }

    /// <summary>Tests: runs between two holds of the engine lock by one batch call, outside the lock.</summary>
    internal Action? BetweenLockHoldsForTests { get; set; }
    /// <summary>Tests: runs after a pull picked its entries (or an offset search took its bounds) under the lock and before it reads bodies.</summary>
    internal Func<Task>? BetweenReadLockHoldsForTests { get; set; }
    internal Checkpointer CheckpointerForTests => _checkpointer;

    /// <summary>Tests: how many receives of the group on the topic are long-polling now.</summary>
    internal int ParkedReceivesForTests(string group, string topic)
    {
        lock (_gate) return _groups.TryGetValue((group, topic), out var g) ? g.Waiters.Count : 0;
    }
    private readonly ConsumerGroups _groups = new();            // in-flight deliveries: groups, leases, redeliveries
    private readonly HalfIndex _txs;                            // half messages: pending, parked, due checks, decided ids
    private readonly DelayIndex _delayed = new();               // messages waiting for their delivery time
    private readonly PullOffsets _consumerOffsets = new();      // pull groups' committed offsets
    private readonly TagInterner _tags = new();

    private long _recordsSinceCheckpoint;
    // 1 once a record was appended that replay cannot rebuild without it when it is damaged (a topic's growth: its
    // added queues that got no message yet are named by no other record), so the checkpoint loop writes a checkpoint at
    // its next pass instead of waiting for the schedule (see RunCheckpointPassAsync).
    private int _checkpointAsked;
    // Retention may cut at any record start below the newest checkpoint; one is remembered every this many log bytes
    // (CheckpointSchedule.EveryBytes), so a burst written between two checkpoints can still be cut close to the limit.
    private readonly long _boundaryStep;
    private long _nextBoundaryAt;
    private readonly CancellationTokenSource _stop = new();
    private readonly List<Task> _loops = new();
    private readonly SemaphoreSlim _checkKick = new(0, int.MaxValue);
    private readonly SweepAlarm _sweepAlarm = new();
    private readonly SemaphoreSlim _checkpointLock = new(1, 1);

    public ProducerRegistry Producers { get; } = new();
    public CoreOptions Options => _options;
    public BrokerMetrics Metrics { get; } = new();
    /// <summary>Healthy, degraded (damage found and contained) or failed, with the reasons.</summary>
    public BrokerHealth Health { get; } = new();
    /// <summary>Free space of the log's file system; while it is low, new messages are refused with <see cref="BrokerStatus.DiskFull"/>.</summary>
    public DiskSpaceGuard DiskSpace { get; }
    /// <summary>True once recovery finished; front-ends accept traffic only then.</summary>
    public bool IsReady { get; private set; }

    private BrokerEngine(CoreOptions options, TimeProvider time, ILoggerFactory loggers)
    {
        _options = options;
        _time = time;
        Consumers = new ConsumerMembers(time);
        _logger = loggers.CreateLogger("HalfMsg.Broker.Core");
        _log = new RecordLog(Path.Combine(options.DataDir, "log"), options.Flush, options.AsyncFlushInterval,
            options.SegmentSizeBits, options.MemorySizeBits, loggers.CreateLogger("HalfMsg.Broker.Storage"),
            RecordLimits.MaxRecordSize(options.MaxMessageSize), options.CommitTimeout, options.WrapLogDevice, options.CommitLingerYields);
        _log.Durable += OnDurable;
        DiskSpace = new DiskSpaceGuard(Path.Combine(options.DataDir, "log"), options.DiskMinFreeBytes, options.DiskMaxUsedRatio,
            () => _log.TailAddress, () => _log.TailAddress - _log.DurableUntil, loggers.CreateLogger("HalfMsg.Broker.Storage"), options.DiskProbe);
        _checkpoints = new CheckpointStore(Path.Combine(options.DataDir, "checkpoints"), _logger);
        _topics = new TopicQueues(() => _log.DurableUntil);
        _groups.Alarm = _sweepAlarm;
        _delayed.Alarm = _sweepAlarm;
        _txs = new HalfIndex(new DecidedIndex((long)options.DecisionRetention.TotalMilliseconds, options.MaxRememberedDecisions));
        var owners = new StateOwners(_topics, _groups, _txs, _delayed, _consumerOffsets, _tags);
        _carrying = owners.Carrying;
        _checkpointer = new Checkpointer(_gate, _log, _checkpoints, owners, time, _logger);
        _retention = new RetentionPlanner(owners, options);
        _boundaryStep = CheckpointSchedule.EveryBytes(options);
        _nextBoundaryAt = _boundaryStep > 0 ? 0 : long.MaxValue;
        _applier = new RecordApplier(owners, options, Metrics, Health, _logger);
        MessageIndex = new MessageIndex(options.MessageIndexCapacity, maxKeyBytes: options.MessageIndexKeyBytes)
        {
            FirstStepFailed = (kind, ex) => _logger.LogError(ex, "Message index: a {Kind} step failed and was dropped (later failures are only counted, GET /api/message-index); the broker goes on", kind),
        };
        Producers.ProducerJoined += _ => KickCheckPass();
        _applier.TopicDeleted = topic =>
        {
            MessageIndex.OnTopicDeleted(topic);
            Metrics.RecalledByTopic.TryRemove(topic, out _);
        };
        // The first refusal and every 1,000th after it: a client looping on registration must not flood the log.
        Producers.RegistrationRefused += (group, clientId) =>
        {
            if (Producers.RefusedRegistrations % 1_000 == 1) _logger.LogWarning(
                "Producer {ClientId} of group {ProducerGroup} not registered for check-backs: the group already has {Max} producer connections ({Refused} refused since start)",
                clientId, group, ProducerRegistry.MaxChannelsPerGroup, Producers.RefusedRegistrations);
        };
    }

    /// <summary>Opens (or creates) the data directory, recovers state from the last checkpoint plus the log, and starts the background loops.</summary>
    public static async Task<BrokerEngine> OpenAsync(CoreOptions options, TimeProvider? time = null, ILoggerFactory? loggers = null,
        bool startBackgroundLoops = true, CancellationToken ct = default)
    {
        // ---- storage preconditions (defects 4, 6, 7 of issue 8): a valid size limit, a writable dir, exclusive use.
        RecordLimits.ValidateMaxMessageSize(options.MaxMessageSize);
        EnsureWritable(options.DataDir);
        var dirLock = DataDirLock.Acquire(options.DataDir);
        BrokerEngine engine;
        try
        {
            engine = new BrokerEngine(options, time ?? TimeProvider.System, loggers ?? NullLoggerFactory.Instance);
        }
        catch
        {
            dirLock.Dispose();
            throw;
        }
        engine._dirLock = dirLock;
        try
        {
            await Task.Run(engine.Recover, ct).ConfigureAwait(false);
        }
        catch
        {
            await engine._log.DisposeAsync().ConfigureAwait(false);
            dirLock.Dispose();
            throw;
        }
        engine.StartIndexRebuild(); // MessageIndex hook (issue 12): rebuild the look-up index from the retained log, in the background
        if (startBackgroundLoops) engine.StartLoops();
        lock (engine._gate) engine._applier.Live = true; // (may note a carrying record without its copy: see RecordApplier.Live)
        engine.IsReady = true;
        return engine;
    }

    private long NowMs => _time.GetUtcNow().ToUnixTimeMilliseconds();

    // ---------------------------------------------------------------- storage health (issue 8, defects 6 and 7)

    private DataDirLock? _dirLock;

    /// <summary>
    /// Non-null once the log has failed (a commit failed or did not complete within <see cref="CoreOptions.CommitTimeout"/>):
    /// every write fails with it from then on, and the broker must be restarted. Said once in the log by
    /// <see cref="RecordLog"/>; front-ends answer <see cref="BrokerStatus.StorageFailure"/> and /health 503.
    /// </summary>
    public StorageFailureException? StorageFault => _log.Fault;

    /// <summary>Completes when the log fails (never on a healthy broker); the host watches it.</summary>
    public Task<StorageFailureException> StorageFailed => _log.Failed;

    /// <summary>True while any background loop still runs (they all end after a storage failure).</summary>
    internal bool BackgroundLoopsRunning => _loops.Any(t => !t.IsCompleted);

    /// <summary>Test hook: fails the log as a failed commit would.</summary>
    internal void FailStorageForTest(string reason) => _log.FailForTest(reason);
    /// <summary>Tests: the engine's log.</summary>
    internal RecordLog LogForTests => _log;

    /// <summary>
    /// Proves the data dir takes a durable write before anything else happens: a read-only or full file system must stop
    /// the start with a clear reason, not surface as INTERNAL on the first send.
    /// </summary>
    private static void EnsureWritable(string dataDir)
    {
        Directory.CreateDirectory(dataDir);
        // The log and the checkpoints may live on mounts of their own: each directory that exists must take a write.
        foreach (var dir in new[] { dataDir, Path.Combine(dataDir, "log"), Path.Combine(dataDir, "checkpoints") })
        {
            if (!Directory.Exists(dir)) continue;
            string probe = Path.Combine(dir, $".write-probe-{Environment.ProcessId}-{Guid.NewGuid():N}");
            try
            {
                using var file = new FileStream(probe, FileMode.CreateNew, FileAccess.Write, FileShare.None, 1, FileOptions.DeleteOnClose);
                file.Write(new byte[4096]);
                file.Flush(flushToDisk: true);
            }
            catch (Exception ex) when (ex is IOException or UnauthorizedAccessException)
            {
                throw new StorageFailureException($"data dir '{Path.GetFullPath(dir)}' is not writable ({ex.Message})", ex);
            }
        }
    }

    /// <summary>
    /// Asks the check loop for a pass now. Asks made before the pass starts fold into it: a pass looks at every due half
    /// anyway, and counting each ask made a client that names many producer groups worth as many passes back to back.
    /// </summary>
    private void KickCheckPass()
    {
        if (_checkKick.CurrentCount == 0) _checkKick.Release();
    }

    /// <summary>
    /// Asks for a check pass now (folded into one not yet started): a check-back channel that refused checks for want of
    /// room has room again (a Telemetry stream whose queue passed its bound while its client was still reading), so the
    /// halves it refused need not wait the check interval. Since the night session of 2026-12-07.
    /// </summary>
    public void RequestCheckPass() => KickCheckPass();

    /// <summary>Check-pass asks not yet taken by the check loop (tests).</summary>
    internal int PendingCheckKicks => _checkKick.CurrentCount;

    /// <summary>
    /// Seals the record in <see cref="_writer"/>, appends it, and applies it to the state through the same
    /// <see cref="RecordApplier"/> that replay uses: the live path and recovery cannot drift apart. Caller holds the lock.
    /// </summary>
    private long AppendAndApply()
    {
        var record = _writer.Seal();
        var address = _log.Append(record);
        _recordsSinceCheckpoint++;
        Metrics.RecordsAppended++;
        _applier.Apply(record, address);
        if (address >= _nextBoundaryAt)
        {
            _retention.AddBoundary(address, NowMs); // a record's start: a place the log may be cut once a checkpoint covers it
            _nextBoundaryAt = address > long.MaxValue - _boundaryStep ? long.MaxValue : address + _boundaryStep;
        }
        return address;
    }

    /// <summary>
    /// Runs on the commit loop. It must never take <see cref="_gate"/>: a writer holding the gate may be waiting for log
    /// space that only the next commit frees (a deadlock found by the async-flush benchmark). Visibility waiters have
    /// their own small lock.
    /// </summary>
    private void OnDurable(long durableUntil) => _topics.OnDurable(durableUntil);

    // ---------------------------------------------------------------- group names

    /// <summary>
    /// Whether a consumer group is the broker's own: a re-drive's cursor on a dead-letter topic (<see cref="RedrivePrefix"/>:
    /// <c>%REDRIVE%&lt;group&gt;</c>, and its sibling <c>%REDRIVE%&lt;group&gt;|&lt;topic&gt;</c> for a re-drive of one
    /// topic's dead letters). Its progress is the record of which dead letters were put back. It is left out of the
    /// group lists, the lag metrics and the count toward <see cref="CoreOptions.MaxConsumerGroups"/> (whose refusal tells
    /// operators to delete groups, which they cannot do to these), and an operator cannot delete, start or reset it
    /// (<see cref="InternalGroupRefusal"/>).
    /// </summary>
    public static bool IsInternalGroup(string group) => IsRedriveCursor(group);

    /// <summary>
    /// The refusal of an operator's delete, start or reset (<paramref name="action"/>) of an internal group
    /// (<see cref="IsInternalGroup"/>), else null. Until 2026-12-06 they were accepted like any group's: a delete or a
    /// reset to the earliest message made the next re-drive put back every retained dead letter once more, so the group
    /// received them twice, and a start from the latest skipped those still waiting (found by review).
    /// </summary>
    public static BrokerError? InternalGroupRefusal(string group, string action) => IsInternalGroup(group)
        ? new(BrokerStatus.BadRequest, $"consumer group '{group}' is the broker's re-drive cursor (it records which dead letters were put back) and cannot be {action}: "
            + "that would make the next re-drive put dead letters back again, or skip them. Re-drive with `halfmsg dlq redrive <group>` (POST /api/dlq/{group}/redrive).")
        : null;

    /// <summary>The refusal of a client's receive or offset commit under an internal group's name
    /// (<see cref="IsInternalGroup"/>), else null: the group lists and the group limit leave those out.</summary>
    private static BrokerError? ReservedGroupRefusal(string group) => IsInternalGroup(group)
        ? new(BrokerStatus.IllegalConsumerGroup, $"consumer group '{group}' is reserved: names starting with {RedrivePrefix} are the broker's re-drive cursors")
        : null;

    // ---------------------------------------------------------------- topics

    internal static bool IsValidName(string? name, int max = 127)
    {
        if (string.IsNullOrEmpty(name) || name.Length > max) return false;
        foreach (var c in name)
            if (!(char.IsAsciiLetterOrDigit(c) || c is '_' or '-' or '%' or '|' or '.')) return false;
        return true;
    }

    /// <summary>
    /// Why <paramref name="topic"/> cannot be consumed, or null. RocketMQ puts a copy of a half that reached the check
    /// limit into TRANS_CHECK_MAX_TIME_TOPIC, and its consumers read it, because there a park is final. Here a parked
    /// half is still pending (an operator resumes, commits or rolls it back), and a pending half is never delivered: the
    /// topic holds no entries of ours (only logs written before 2026-12-02 have some), and it is refused to readers.
    /// </summary>
    public static string? UnreadableTopicReason(string topic)
        => topic == CheckMaxTopic ? $"topic '{topic}' cannot be consumed: a parked half is still pending; list, resume or decide parked halves through the admin API (/api/transactions/parked)" : null;

    internal static bool IsSystemTopic(string topic)
        => topic == CheckMaxTopic || topic.StartsWith("RMQ_SYS_", StringComparison.Ordinal) || topic.StartsWith(DeadLetterPrefix, StringComparison.Ordinal);

    /// <summary>Finds or (when auto-creation is on, or <paramref name="explicitly"/>) creates a topic, a new one with
    /// <paramref name="queues"/> queues when given. Caller holds the lock.</summary>
    private BrokerError TryGetTopicForWrite(string topic, out TopicState state, bool explicitly = false, int? queues = null, bool withinMaxTopics = false)
    {
        state = null!;
        if (!IsValidName(topic)) return new(BrokerStatus.IllegalTopic, $"topic '{topic}' is not a valid name (1-127 characters of [A-Za-z0-9_-%|.])");
        if (IsSystemTopic(topic)) return new(BrokerStatus.IllegalTopic, $"topic '{topic}' is a system topic; producers cannot send to it");
        return TryGetOrCreate(topic, out state, explicitly, queues, withinMaxTopics);
    }

    /// <summary>Finds or creates a topic. Caller holds the lock. Every topic counts toward <see cref="CoreOptions.MaxTopics"/>
    /// (retry, dead-letter and system topics too); a creation on first use (not <paramref name="explicitly"/>) stops at
    /// it, and so does an explicit one <paramref name="withinMaxTopics"/> (a Remoting client's UPDATE_AND_CREATE_TOPIC).
    /// Replay applies the records and never comes here: the limit bounds new creations, not what the log holds.</summary>
    private BrokerError TryGetOrCreate(string topic, out TopicState state, bool explicitly = false, int? requestedQueues = null, bool withinMaxTopics = false)
    {
        if (_topics.TryGetValue(topic, out state!)) return BrokerError.None;
        // The retry topics are the broker's as the system topics are: a send-back (and the Java client's fallback, a
        // send to %RETRY%<group>) must work when producers may not create topics.
        if (!explicitly && !_options.AutoCreateTopics && !IsSystemTopic(topic) && !topic.StartsWith(RetryPrefix, StringComparison.Ordinal))
            return new(BrokerStatus.TopicNotFound, $"topic '{topic}' does not exist and auto-creation is off");
        if (!explicitly && _topics.Count >= _options.MaxTopics)
            return new(BrokerStatus.TopicNotFound, $"topic '{topic}' does not exist, and the broker holds {_topics.Count} topics, the most it creates on first use (MaxTopics, --max-topics); an operator creates it through the admin API (POST /api/topics/{{name}}) or raises the limit");
        if (withinMaxTopics && _topics.Count >= _options.MaxTopics)
            return new(BrokerStatus.TooManyTopics, $"topic '{topic}' was not created: the broker holds {_topics.Count} topics and its limit is {_options.MaxTopics} "
                + "(--max-topics, MaxTopics; every topic counts, retry and dead-letter topics too), which a Remoting client's UPDATE_AND_CREATE_TOPIC does not pass; "
                + "an operator creates it through the admin API (POST /api/topics/{name}) or raises --max-topics. Existing topics may still be given more queues.");
        // A retry topic has one queue, as RocketMQ's (retryQueueNums 1): its record says so, so replay keeps the queue
        // count of every retry topic made before 2026-12-05 (with QueuesPerTopic) as it was.
        int queues = IsSystemTopic(topic) || topic.StartsWith(RetryPrefix, StringComparison.Ordinal) ? 1 : requestedQueues ?? _options.QueuesPerTopic;
        new TopicCreatedRecord(topic, queues).Write(_writer);
        AppendAndApply();
        state = _topics[topic];
        return BrokerError.None;
    }

    /// <summary>Creates a topic explicitly (admin API, mqadmin's UPDATE_AND_CREATE_TOPIC) or finds the existing one,
    /// also when auto-creation is off: that is how topics come to exist then (until 2026-12-02 it was refused too, so a
    /// broker with auto-creation off could have no topic at all). Completes once the topic's record is durable, also
    /// when the topic already existed: its record may still be on its way to the disk (until 2026-12-05 the answer came
    /// at once, so a kill -9 right after it could lose a topic the operator was told exists). <c>Created</c> says
    /// whether this call made it.</summary>
    public ValueTask<(BrokerError Error, bool Created)> CreateTopicAsync(string topic, CancellationToken ct = default) => CreateTopicAsync(topic, null, ct);

    /// <summary>Most queues a topic may be created with or grown to (as <c>--queues-per-topic</c>): every queue is state the broker
    /// keeps and checkpoints, and a route or a consume-stats answer lists each.</summary>
    public const int MaxQueuesPerTopic = 1024;

    /// <summary>
    /// As <see cref="CreateTopicAsync(string, CancellationToken)"/>, a new topic with <paramref name="queues"/> queues
    /// (null: <see cref="CoreOptions.QueuesPerTopic"/>; 1 to <see cref="MaxQueuesPerTopic"/>). An existing topic with
    /// fewer queues is given more (see <see cref="CreateOrGrowTopicAsync"/>); one with more is refused.
    /// </summary>
    public async ValueTask<(BrokerError Error, bool Created)> CreateTopicAsync(string topic, int? queues, CancellationToken ct = default)
    {
        var (error, created, _) = await CreateOrGrowTopicAsync(topic, queues, ct).ConfigureAwait(false);
        return (error, created);
    }

    /// <summary>
    /// Creates a topic with <paramref name="queues"/> queues (null: <see cref="CoreOptions.QueuesPerTopic"/>), or finds
    /// it, as <see cref="CreateTopicAsync(string, CancellationToken)"/>; an existing topic with fewer queues than asked
    /// gets the queues it lacks, as RocketMQ's updateTopic gives them (consumers outnumbering the queues need more).
    /// Until 2026-12-06 another count for an existing topic was refused. The queues it has keep their messages and
    /// offsets, and every consumer group's progress on them; the new ones start empty at offset 0, and a group that
    /// received from the topic before gets everything sent to them. Producers and consumers see them at their next route
    /// refresh. Fewer queues are refused (BadRequest, naming the count): the messages in the queues dropped would be
    /// stranded, and pull groups' offsets for them meaningless. A retry topic has one queue, a system topic is the
    /// broker's: another count is refused. Completes once the change is durable (one TopicQueuesGrown record), as a
    /// creation does. <c>GrownFrom</c>: the count before, when this call added queues; 0 otherwise.
    /// </summary>
    public ValueTask<(BrokerError Error, bool Created, int GrownFrom)> CreateOrGrowTopicAsync(string topic, int? queues, CancellationToken ct = default)
        => CreateOrGrowTopicCoreAsync(topic, queues, withinMaxTopics: false, ct);

    /// <summary>
    /// As <see cref="CreateOrGrowTopicAsync"/> for a client that is not the operator (a
    /// Remoting UPDATE_AND_CREATE_TOPIC, which needs no credentials unless they are configured): a NEW topic counts toward
    /// <see cref="CoreOptions.MaxTopics"/> and is refused (<see cref="BrokerStatus.TooManyTopics"/>, naming the count, the
    /// limit and the flag) when the broker holds that many already; an existing topic is found or grown as before. The
    /// count and the creation are one step under the lock, so concurrent requests cannot pass the limit together. Until
    /// the small hours of 2026-12-08 such creations were not counted: any client reaching the Remoting port could create
    /// durable topics of up to 1,024 queues each until the disk or memory ran out (found by review).
    /// </summary>
    public ValueTask<(BrokerError Error, bool Created, int GrownFrom)> CreateOrGrowTopicWithinLimitAsync(string topic, int? queues, CancellationToken ct = default)
        => CreateOrGrowTopicCoreAsync(topic, queues, withinMaxTopics: true, ct);

    private async ValueTask<(BrokerError Error, bool Created, int GrownFrom)> CreateOrGrowTopicCoreAsync(string topic, int? queues, bool withinMaxTopics, CancellationToken ct)
    {
        if (queues is < 1 or > MaxQueuesPerTopic)
            return (new(BrokerStatus.BadRequest, $"a topic has 1 to {MaxQueuesPerTopic} queues, not {queues}"), false, 0);
        if (queues is not (null or 1) && topic.StartsWith(RetryPrefix, StringComparison.Ordinal))
            return (new(BrokerStatus.BadRequest, $"topic '{topic}' is a retry topic, which has one queue (as RocketMQ's), not {queues}"), false, 0);
        await _log.WaitForRoomAsync(ct).ConfigureAwait(false);
        long waitFor;
        bool created;
        int grownFrom = 0;
        lock (_gate)
        {
            if (queues is { } asked && _topics.TryGetValue(topic, out var existing) && existing.Queues.Length > asked)
                return (new(BrokerStatus.BadRequest, $"topic '{topic}' exists and has {existing.Queues.Length} queues, not {asked}: this broker "
                    + $"adds queues to a topic but never removes them (the messages in queues {asked} to {existing.Queues.Length - 1} "
                    + $"would be stranded); ask for {existing.Queues.Length} or more, or delete the topic and create it again"), false, 0);
            created = !_topics.ContainsKey(topic);
            var error = TryGetTopicForWrite(topic, out var state, explicitly: true, queues, withinMaxTopics);
            if (!error.IsOk) return (error, false, 0);
            if (queues is { } more && more > state.Queues.Length)
            {
                // Under the lock, as one record: the topic and every group on it grow together (TopicState.GrowTo), and a
                // send, receive or pull sees the old count or the new one, never a queue id that is half there.
                grownFrom = state.Queues.Length;
                new TopicQueuesGrownRecord(topic, more).Write(_writer);
                AppendAndApply();
                // A damaged growth record replays as a topic grown only as far as the highest queue a later record names:
                // the checkpoint at the loop's next pass (about a second) holds the whole count, and replay starts after it.
                Volatile.Write(ref _checkpointAsked, 1);
                _logger.LogInformation("Topic {Topic} grown from {Before} to {After} queues", topic, grownFrom, more);
            }
            waitFor = AppendedSoFar;
        }
        await _log.WaitDurableAsync(waitFor, ct).ConfigureAwait(false);
        return (BrokerError.None, created, grownFrom);
    }

    /// <summary>
    /// Creates a topic on the way (a Remoting consumer's retry topic, at its heartbeat) without waiting for the disk:
    /// nothing is acknowledged by it, and a topic lost to a crash is made again when it is next needed. It is created as
    /// on first use, within <see cref="CoreOptions.MaxTopics"/> (retry topics also when auto-creation is off): until
    /// 2026-12-05 it was created as an operator's, past every limit, so one heartbeat naming many groups made as many
    /// durable topics (found by review).
    /// </summary>
    public BrokerError EnsureTopic(string topic)
    {
        lock (_gate) return TryGetTopicForWrite(topic, out _);
    }

    /// <summary>
    /// An address that becomes durable only once every record appended so far is: an answer that rests on state an
    /// earlier call changed (a repeat of a commit, a "not found" after a delete) waits for it, since that call's record
    /// may still be on its way to the disk. Caller holds the lock.
    /// </summary>
    private long AppendedSoFar => _log.TailAddress - 1;

    /// <summary>Looks a topic up for routing. With auto-creation on, an unknown valid topic is created.</summary>
    public BrokerError RouteTopic(string topic, out int queueCount)
    {
        queueCount = 0;
        lock (_gate)
        {
            if (_topics.TryGetValue(topic, out var existing)) { queueCount = existing.Queues.Length; return BrokerError.None; }
            if (!IsValidName(topic)) return new(BrokerStatus.IllegalTopic, $"topic '{topic}' is not a valid name");
            var err = TryGetOrCreate(topic, out var state);
            if (err.IsOk) queueCount = state.Queues.Length;
            return err;
        }
    }

    private static int PickQueue(TopicState topic, int requested, string? messageGroup) => TopicQueues.PickQueue(topic, requested, messageGroup);

    public async ValueTask DisposeAsync()
    {
        if (_stop.IsCancellationRequested) return;
        _stop.Cancel();
        try { await Task.WhenAll(_loops).ConfigureAwait(false); } catch (OperationCanceledException) { }
        await MessageIndexReady.ConfigureAwait(false); // issue 12: the index rebuild reads the log; it stops at _stop and never throws
        // After a storage failure the in-memory state may hold records that never became durable: no snapshot of it.
        if (StorageFault is null)
        {
            try { await CheckpointAsync().ConfigureAwait(false); }
            catch (Exception ex) when (StorageFault is null) { _logger.LogWarning(ex, "Checkpoint at shutdown failed; the next start replays more of the log."); }
            catch (Exception) { /* the log failed during the checkpoint: already said once */ }
        }
        await _log.DisposeAsync().ConfigureAwait(false);
        _dirLock?.Dispose();
    }
}
