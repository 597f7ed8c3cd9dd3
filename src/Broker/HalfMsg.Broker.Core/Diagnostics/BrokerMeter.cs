using System.Diagnostics.Metrics;
using HalfMsg.Broker.Core.Model;

namespace HalfMsg.Broker.Core.Diagnostics;

/// <summary>
/// The broker's <see cref="Meter"/> (<c>HalfMsg.Broker</c>): observable instruments over the engine's public state,
/// read when a collector asks (a Prometheus scrape), so the hot path pays nothing.
/// </summary>
/// <remarks>
/// Names follow RocketMQ 5's broker metrics where one exists, so existing Grafana dashboards work once the Prometheus
/// exporter turns dots into underscores and adds <c>_total</c> to counters: <c>rocketmq_messages_in_total</c>,
/// <c>rocketmq_throughput_in_total</c> (bytes),
/// <c>rocketmq_messages_out_total</c>, <c>rocketmq_consumer_lag_messages</c>, <c>rocketmq_consumer_inflight_messages</c>.
/// RocketMQ has no transactional-message metrics of this kind; ours are prefixed <c>halfmsg_</c>.
/// Counters are the engine's <see cref="BrokerMetrics"/>, so they restart from zero with the process (Prometheus'
/// <c>rate()</c> handles resets).
/// </remarks>
public sealed class BrokerMeter : IDisposable
{
    public const string Name = "HalfMsg.Broker";

    private readonly Meter _meter;
    private readonly BrokerEngine _engine;
    private readonly Histogram<double> _halfAge;
    private readonly Histogram<double> _commitDuration;
    private readonly Histogram<long> _commitBatch;
    private readonly Histogram<double> _checkpointDuration;
    private readonly Histogram<double> _checkpointHold;
    private readonly Histogram<long> _checkpointSize;
    private readonly Histogram<double> _cutHold;

    /// <summary>Instruments with a series per topic or per (topic, consumer group): <see cref="CardinalityLimit"/> is for them.</summary>
    public static readonly IReadOnlyList<string> PerTopicInstruments =
        ["rocketmq_messages_in", "rocketmq_throughput_in", "rocketmq_consumer_lag_messages", "rocketmq_consumer_inflight_messages", "halfmsg_messages_recalled"];

    /// <summary>Most series one per-topic instrument may have, whatever the limits (the exporter reserves room for them).</summary>
    public const int MaxCardinalityLimit = 200_000;

    /// <summary>
    /// Series a per-topic instrument may report (<see cref="PerTopicInstruments"/>): every topic the broker allows
    /// (<paramref name="maxTopics"/>), or every (topic, group) pair (<paramref name="maxConsumerGroups"/> counts each
    /// group once per topic), plus 1,000 for topics created by the admin API past the limit; at most
    /// <see cref="MaxCardinalityLimit"/>. OpenTelemetry's default is 2,000 per metric: past it series were folded
    /// into one labelled <c>otel_metric_overflow</c>.
    /// </summary>
    public static int CardinalityLimit(int maxTopics, int maxConsumerGroups)
        => (int)Math.Min(MaxCardinalityLimit, (long)Math.Max(maxTopics, 0) + Math.Max(maxConsumerGroups, 0) + 1_000);

    /// <summary>Seconds: from a few milliseconds (a producer that commits at once) to a day (a half an operator decides).</summary>
    private static readonly double[] HalfAgeBuckets = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600, 21600, 86400];
    /// <summary>Seconds: an fsync on a good SSD takes well under a millisecond, on a loaded disk tens of milliseconds.</summary>
    private static readonly double[] CommitBuckets = [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10];
    private static readonly long[] BatchBuckets = [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096, 16384];
    /// <summary>Seconds: a hold of the engine lock stalls every transaction behind it; well under a millisecond is the
    /// norm, tens of milliseconds are worth a look.</summary>
    private static readonly double[] HoldBuckets = [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5];
    /// <summary>Seconds: a checkpoint is written in the background; small deltas take milliseconds, a whole state of
    /// millions of entries seconds.</summary>
    private static readonly double[] CheckpointDurationBuckets = [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60];
    private static readonly long[] SizeBuckets = [1L << 10, 1L << 14, 1L << 17, 1L << 20, 1L << 23, 1L << 26, 1L << 28, 1L << 30, 1L << 32];

    /// <param name="engine">The engine to observe.</param>
    /// <param name="version">The broker version, reported as the meter's version.</param>
    /// <param name="name">The meter name; <see cref="Name"/> unless several brokers share one process (tests).</param>
    public BrokerMeter(BrokerEngine engine, string? version = null, string name = Name)
    {
        ArgumentNullException.ThrowIfNull(engine);
        _meter = new Meter(name, version);
        _engine = engine;
        var m = engine.Metrics;
        long beginAtStart = engine.LogBeginAddress;

        // RocketMQ 5 names. messages_in counts messages that reached a topic queue (sends and commits), per topic; like
        // RocketMQ 5 it leaves out the retry and dead-letter topics (see CountedIn).
        _meter.CreateObservableCounter("rocketmq_messages_in", () => PerTopic(engine, t => t.Queues.Sum(q => q.MaxOffset)),
            description: "Messages that reached a topic queue (normal sends and committed halves), since the topic was created; %RETRY% and %DLQ% topics are not counted.");
        _meter.CreateObservableCounter("rocketmq_throughput_in", () => BytesIn(engine),
            // No unit on purpose: with "By" the exporter would add _bytes, and RocketMQ's name has none.
            description: "Message body bytes accepted (sends and halves) since start or since the topic was deleted, per topic.");
        _meter.CreateObservableCounter("rocketmq_messages_out", () => Volatile.Read(ref m.Delivered),
            description: "Deliveries to consumers, redeliveries included.");
        _meter.CreateObservableGauge("rocketmq_consumer_lag_messages", () => PerGroup(engine, lag: true),
            description: "Messages a consumer group has not acknowledged yet (a RocketMQ 4 pull group: not yet committed), per topic.");
        _meter.CreateObservableGauge("rocketmq_consumer_inflight_messages", () => PerGroup(engine, lag: false),
            description: "Messages delivered to a consumer group and not acknowledged or expired yet, per topic (gRPC groups; a pull group's are its client's).");

        // Transactions.
        _meter.CreateObservableGauge("halfmsg_transactions_pending", () => Pending(engine, parked: false),
            description: "Half messages waiting for a decision and still being checked.");
        _meter.CreateObservableGauge("halfmsg_transactions_parked", () => Pending(engine, parked: true),
            description: "Half messages parked after the maximum check-backs (TRANS_CHECK_MAX_TIME_TOPIC); an operator decides them.");
        _meter.CreateObservableGauge("halfmsg_transactions_oldest_pending_age", () => OldestAge(engine), unit: "s",
            description: "Age of the oldest pending (not parked) half message, 0 when none.");
        _meter.CreateObservableCounter("halfmsg_half_messages_stored", () => Volatile.Read(ref m.HalvesStored),
            description: "Half messages accepted.");
        _meter.CreateObservableCounter("halfmsg_transaction_decisions", () => engine.MessageIndex.DecisionsBySource().Select(d =>
                new Measurement<long>(d.Value,
                    new KeyValuePair<string, object?>("resolution", d.Key.Resolution == TransactionResolution.Commit ? "commit" : "rollback"),
                    new KeyValuePair<string, object?>("source", d.Key.Source switch
                    {
                        DecisionSource.Client => "producer",
                        DecisionSource.CheckBack => "check_back",
                        _ => "operator",
                    }))),
            description: "Transactions decided since start, by resolution and by who decided (the producer, its check-back answer, an operator).");
        _meter.CreateObservableCounter("halfmsg_transaction_duplicate_decisions", () => Volatile.Read(ref m.DuplicateDecisions),
            description: "Repeated decisions answered idempotently.");
        _meter.CreateObservableCounter("halfmsg_transaction_checks", () => new[]
            {
                new Measurement<long>(Volatile.Read(ref m.ChecksSent), new KeyValuePair<string, object?>("outcome", "sent")),
                new Measurement<long>(Volatile.Read(ref m.ChecksWithoutProducer), new KeyValuePair<string, object?>("outcome", "no_producer")),
                new Measurement<long>(Volatile.Read(ref m.CheckSendFailures), new KeyValuePair<string, object?>("outcome", "send_failed")),
                new Measurement<long>(Volatile.Read(ref m.ChecksReturned), new KeyValuePair<string, object?>("outcome", "returned_unwritten")),
            },
            description: "Check-back attempts: sent to a live producer, skipped because no producer of the group was connected, or failed on a producer's channel (the check went to another instance or waits); of those sent, given back unwritten by a producer's stream that ended with them queued (the attempt not spent, the check offered to another instance).");
        _meter.CreateObservableCounter("halfmsg_transactions_parked_events", () => Volatile.Read(ref m.Parked),
            description: "Halves parked after the maximum check-backs.");

        // Delivery.
        _meter.CreateObservableCounter("halfmsg_messages_redelivered", () => Volatile.Read(ref m.Redelivered),
            description: "Deliveries after an invisibility timeout.");
        _meter.CreateObservableCounter("halfmsg_leases_renewed", () => Volatile.Read(ref m.LeasesRenewed),
            description: "Push consumers' leases extended at their expiry (auto_renew).");
        _meter.CreateObservableCounter("halfmsg_leases_released", () => Volatile.Read(ref m.LeasesReleased),
            description: "Push consumers' renewed leases ended early because the consumer left (its messages go to the group's other consumers).");
        _meter.CreateObservableCounter("halfmsg_messages_acked", () => Volatile.Read(ref m.Acked), description: "Acknowledged deliveries.");
        _meter.CreateObservableCounter("halfmsg_receive_looks", () => Volatile.Read(ref m.ReceiveLooks),
            description: "Looks of receives for messages: one per receive, one more per wake-up while it long-polls.");
        _meter.CreateObservableCounter("halfmsg_messages_recalled", () => Recalled(engine),
            description: "Delay messages recalled by their producers before their delivery time (gRPC RecallMessage, Remoting RECALL_MESSAGE), per topic.");
        _meter.CreateObservableCounter("halfmsg_messages_dead_lettered", () => Volatile.Read(ref m.DeadLettered),
            description: "Messages moved to a %DLQ% topic.");

        // Storage.
        _meter.CreateObservableGauge("halfmsg_log_size", () => Math.Max(0, engine.LogTailAddress - engine.LogBeginAddress), unit: "By",
            description: "Bytes between the log head and tail (what retention bounds).");
        _meter.CreateObservableGauge("halfmsg_log_head_address", () => engine.LogBeginAddress, unit: "By",
            description: "Log head address; it moves when retention cuts the log.");
        _meter.CreateObservableCounter("halfmsg_log_records_appended", () => Volatile.Read(ref m.RecordsAppended),
            description: "Records appended to the log.");
        _meter.CreateObservableGauge("halfmsg_recovery_duration", () => Volatile.Read(ref m.RecoveryMilliseconds) / 1000.0, unit: "s",
            description: "How long the last start-up recovery took.");
        _meter.CreateObservableCounter("halfmsg_log_corrupt_records_skipped", () => Volatile.Read(ref m.CorruptRecordsSkipped),
            description: "Records skipped at recovery because their checksum did not match.");
        _meter.CreateObservableCounter("halfmsg_sends_refused_busy", () => Volatile.Read(ref m.RefusedBusy),
            description: "Sends refused by load shedding (gRPC TOO_MANY_REQUESTS, Remoting SYSTEM_BUSY); clients back off and retry.");
        _meter.CreateObservableGauge("halfmsg_disk_full", () => engine.DiskSpace.IsFull ? 1 : 0,
            description: "1 while new messages are refused because the log's file system is (nearly) full; 0 otherwise.");
        _meter.CreateObservableGauge("halfmsg_disk_free", () => engine.DiskSpace.FreeBytes, unit: "By",
            description: "Free bytes on the log's file system at the last sample, minus log bytes not yet flushed.");
        _meter.CreateObservableCounter("halfmsg_messages_refused_disk_full", () => engine.DiskSpace.Refused,
            description: "New messages refused because the disk was full.");
        _meter.CreateObservableCounter("halfmsg_retention_cuts", () => Volatile.Read(ref m.RetentionCuts),
            description: "Times retention cut the head of the log.");
        _meter.CreateObservableCounter("halfmsg_retention_cut", () => Math.Max(0, engine.LogBeginAddress - beginAtStart), unit: "By",
            description: "Log bytes retention has cut since start.");
        _meter.CreateObservableCounter("halfmsg_messages_expired", () => Volatile.Read(ref m.MessagesExpired),
            description: "Queue entries that fell behind the retention limits before every group finished them (each counted once).");
        _meter.CreateObservableGauge("halfmsg_message_index_messages", () => engine.MessageIndex.Count,
            description: "Messages the look-up index (GET /api/messages/{id}) remembers.");

        _meter.CreateObservableCounter("halfmsg_checkpoints", () => new[]
            {
                new Measurement<long>(Volatile.Read(ref m.CheckpointsWhole), new KeyValuePair<string, object?>("kind", "whole")),
                new Measurement<long>(Volatile.Read(ref m.CheckpointsDelta), new KeyValuePair<string, object?>("kind", "delta")),
            },
            description: "Checkpoints written since start: whole (the whole state) or a delta on the previous one.");

        // Histograms, pushed by the engine: the age of halves when decided, each log commit's duration and size, each
        // checkpoint's and retention cut's cost.
        _halfAge = _meter.CreateHistogram("halfmsg_half_age", "s",
            "Age of half messages when they were decided (commit or rollback), by resolution and by who decided.", null,
            new InstrumentAdvice<double> { HistogramBucketBoundaries = HalfAgeBuckets });
        _commitDuration = _meter.CreateHistogram("halfmsg_log_commit_duration", "s",
            "Duration of each log group commit (write-out and fsync); every durable write waits for one.", null,
            new InstrumentAdvice<double> { HistogramBucketBoundaries = CommitBuckets });
        _commitBatch = _meter.CreateHistogram("halfmsg_log_commit_batch_records", null,
            "Records covered by each log group commit: how many writes shared one fsync.", null,
            new InstrumentAdvice<long> { HistogramBucketBoundaries = BatchBuckets });
        _checkpointDuration = _meter.CreateHistogram("halfmsg_checkpoint_duration", "s",
            "Duration of each checkpoint (copying the state in bounded steps, writing and syncing its file); it runs beside the traffic.", null,
            new InstrumentAdvice<double> { HistogramBucketBoundaries = CheckpointDurationBuckets });
        _checkpointHold = _meter.CreateHistogram("halfmsg_checkpoint_lock_hold", "s",
            "Each checkpoint's longest single hold of the engine lock: the longest it stalled transactions.", null,
            new InstrumentAdvice<double> { HistogramBucketBoundaries = HoldBuckets });
        _checkpointSize = _meter.CreateHistogram("halfmsg_checkpoint_size", "By",
            "Size of each checkpoint file.", null,
            new InstrumentAdvice<long> { HistogramBucketBoundaries = SizeBuckets });
        _cutHold = _meter.CreateHistogram("halfmsg_retention_cut_lock_hold", "s",
            "Each retention cut's hold of the engine lock (expiring the queues' prefixes and truncating the log).", null,
            new InstrumentAdvice<double> { HistogramBucketBoundaries = HoldBuckets });
        engine.CheckpointWritten += OnCheckpointWritten;
        engine.RetentionCutLockHeld += OnRetentionCut;
        engine.MessageIndex.Decided += OnDecided;
        engine.LogCommitStats.RecordCounter ??= () => Volatile.Read(ref m.RecordsAppended);
        engine.LogCommitStats.Committed += OnCommitted;

        _meter.CreateObservableGauge("halfmsg_producers_connected", () => engine.Producers.ChannelCount,
            description: "Producer connections that can receive check-backs.");
    }

    private static IEnumerable<Measurement<long>> PerTopic(BrokerEngine engine, Func<BrokerEngine.TopicInfo, long> value)
        => engine.ListTopics().Where(t => CountedIn(t.Name, t.System)).Select(t => new Measurement<long>(value(t), new KeyValuePair<string, object?>("topic", t.Name)));

    /// <summary>
    /// Whether a topic has messages_in and throughput_in series. RocketMQ 5's broker counts a send into neither a
    /// %RETRY% nor a %DLQ% topic (BrokerMetricsManager.isRetryOrDlqTopic): a retried message was counted when it came
    /// in, and a dashboard's sum over topics would count it again. Until 2026-12-06 the %RETRY% topics had series here
    /// (send-backs, and a RocketMQ 4 client's own send to its retry topic when a send-back failed). The system topics,
    /// %DLQ% among them, never had any.
    /// </summary>
    private static bool CountedIn(string topic, bool system)
        => !system && !topic.StartsWith(BrokerEngine.RetryPrefix, StringComparison.Ordinal)
            && !topic.StartsWith(BrokerEngine.DeadLetterPrefix, StringComparison.Ordinal);

    /// <summary>Bytes in per topic, of topics that exist: a deleted topic's tally goes when it is deleted, and a send
    /// that raced with the delete cannot bring its series back.</summary>
    private static IEnumerable<Measurement<long>> BytesIn(BrokerEngine engine)
    {
        var bytes = engine.MessageIndex.BytesInByTopic();
        if (bytes.Count == 0) return [];
        var topics = engine.ListTopics().Where(t => CountedIn(t.Name, t.System)).Select(t => t.Name).ToHashSet(StringComparer.Ordinal);
        return bytes.Where(t => topics.Contains(t.Key)).Select(t => new Measurement<long>(t.Value, new KeyValuePair<string, object?>("topic", t.Key)));
    }

    /// <summary>Recalls per topic, of topics that exist (as <see cref="BytesIn"/>): a recall that raced with the topic's
    /// delete cannot bring its series back.</summary>
    private static IEnumerable<Measurement<long>> Recalled(BrokerEngine engine)
    {
        var recalled = engine.Metrics.RecalledByTopic;
        if (recalled.IsEmpty) return [];
        var topics = engine.ListTopics().Select(t => t.Name).ToHashSet(StringComparer.Ordinal);
        return recalled.Where(t => topics.Contains(t.Key)).Select(t => new Measurement<long>(t.Value, new KeyValuePair<string, object?>("topic", t.Key)));
    }

    /// <summary>
    /// Per topic and consumer group: the lease groups' (gRPC) lag or messages in flight, and the pull groups' (RocketMQ 4
    /// Remoting, committed offsets) lag, read in one pass over the committed offsets. Until 2026-12-06 the pull groups
    /// had no series, so a stalled RocketMQ 4 consumer could not raise a lag alert (found by review). A pull group's
    /// messages in flight are its client's, unknown to the broker: no series. Where one name is both kinds on a topic,
    /// the lease group's series stands (one series per label set).
    /// </summary>
    private static IEnumerable<Measurement<long>> PerGroup(BrokerEngine engine, bool lag)
    {
        var result = new List<Measurement<long>>();
        var named = new HashSet<(string Group, string Topic)>();
        foreach (string group in engine.ListTopics().SelectMany(t => t.ConsumerGroups).Distinct(StringComparer.Ordinal))
        {
            if (engine.FindGroup(group) is not { } info) continue; // a pull group only: below
            foreach (var t in info.Topics)
            {
                named.Add((group, t.Topic));
                result.Add(GroupMeasurement(lag ? t.Lag : t.InFlight, t.Topic, group));
            }
        }
        if (!lag) return result;
        foreach (var (group, topics) in engine.PullProgress())
            foreach (var t in topics)
                if (!named.Contains((group, t.Topic))) result.Add(GroupMeasurement(t.Lag, t.Topic, group));
        return result;
    }

    private static Measurement<long> GroupMeasurement(long value, string topic, string group)
        => new(value, new KeyValuePair<string, object?>("topic", topic), new KeyValuePair<string, object?>("consumer_group", group));

    private static int Pending(BrokerEngine engine, bool parked)
    {
        var (pending, parkedCount) = engine.TransactionCounts();
        return parked ? parkedCount : pending;
    }

    private static double OldestAge(BrokerEngine engine)
    {
        var first = engine.ListTransactions(parked: false, -1, 1, out _);
        return first.Count == 0 ? 0 : Math.Max(0, (DateTimeOffset.UtcNow - first[0].StoredAt).TotalSeconds);
    }

    private void OnDecided(TransactionResolution resolution, DecisionSource source, double ageSeconds)
        => _halfAge.Record(ageSeconds,
            new KeyValuePair<string, object?>("resolution", resolution == TransactionResolution.Commit ? "commit" : "rollback"),
            new KeyValuePair<string, object?>("source", SourceLabel(source)));

    private void OnCommitted(long records, double seconds)
    {
        _commitDuration.Record(seconds);
        if (records > 0) _commitBatch.Record(records);
    }

    private void OnCheckpointWritten(BrokerEngine.CheckpointFacts c)
    {
        _checkpointDuration.Record(c.Seconds);
        _checkpointHold.Record(c.LongestHoldMicros / 1e6);
        _checkpointSize.Record(c.Bytes);
    }

    private void OnRetentionCut(double heldSeconds) => _cutHold.Record(heldSeconds);

    private static string SourceLabel(DecisionSource source) => source switch
    {
        DecisionSource.Client => "producer",
        DecisionSource.CheckBack => "check_back",
        _ => "operator",
    };

    public void Dispose()
    {
        _engine.MessageIndex.Decided -= OnDecided;
        _engine.CheckpointWritten -= OnCheckpointWritten;
        _engine.RetentionCutLockHeld -= OnRetentionCut;
        _engine.LogCommitStats.Committed -= OnCommitted;
        _meter.Dispose();
    }
}
