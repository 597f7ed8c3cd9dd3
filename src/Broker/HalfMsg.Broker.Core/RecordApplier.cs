using HalfMsg.Broker.Core.Delivery;
using HalfMsg.Broker.Core.Diagnostics;
using HalfMsg.Broker.Core.Model;
using HalfMsg.Broker.Core.Storage;
using HalfMsg.Broker.Core.Transactions;
using Microsoft.Extensions.Logging;

namespace HalfMsg.Broker.Core;

/// <summary>
/// Applies records to the state owners: the one path for the live engine (which appends a record, then applies it)
/// and for replay at start (which applies the log after the checkpoint). The live path and recovery therefore cannot
/// drift apart; every state change the log can express is here, and nothing here appends.
/// </summary>
/// <remarks>
/// Every record is read whole before anything changes, so a damaged record changes nothing: during replay it costs
/// itself only and is reported loudly (Error log, degraded health, counter); on the live path a record that does not
/// apply is a bug, and throws. Records carry explicit values (offsets, counts, addresses), so applying one whose
/// effect a fuzzy checkpoint already captured changes nothing. Runs under the engine lock.
/// </remarks>
internal sealed class RecordApplier(StateOwners state, CoreOptions options, BrokerMetrics metrics, BrokerHealth health, ILogger logger)
{
    private readonly TopicQueues _topics = state.Topics;
    private readonly ConsumerGroups _groups = state.Groups;
    private readonly HalfIndex _txs = state.Halves;
    private readonly DelayIndex _delayed = state.Delayed;
    private readonly PullOffsets _consumerOffsets = state.PullOffsets;
    private readonly CoreOptions _options = options;
    private readonly BrokerMetrics _metrics = metrics;
    private readonly BrokerHealth _health = health;
    private readonly ILogger _logger = logger;

    /// <summary>False while replaying at start; true once the engine serves (live records wake receivers).</summary>
    public bool Live
    {
        get => _live;
        set
        {
            // The replay ended with a carrying record whose copy is not there (a crash between the two, before the cut
            // acted): its items are carried again by the next cut, which may come before any other record.
            if (value && !_live && _carryingOriginal >= 0)
            {
                Uncopied(_carryingOriginal);
                _carryingOriginal = -1;
            }
            _live = value;
        }
    }

    private bool _live;

    /// <summary>Called (live records only, under the engine lock) with the name of a topic just deleted.</summary>
    public Action<string>? TopicDeleted { get; set; }

    /// <summary>
    /// While replaying the log alone (no readable checkpoint: every one damaged or removed), the log's begin address;
    /// -1 otherwise (live, and over a checkpoint). Only then does a retention move whose state the replay lacks re-create
    /// it (see <see cref="ApplyBodyRelocated"/>).
    /// </summary>
    public long RebuildMovedFrom { get; set; } = -1;

    /// <summary>Pending halves, delayed messages and queue entries this replay re-created from the records a retention
    /// cut moved their bodies in (see <see cref="ApplyBodyRelocated"/>).</summary>
    public (int Halves, int Delayed, int Entries) RebuiltFromMoves { get; private set; }

    /// <summary>Records applied during replay (damaged ones included).</summary>
    public long ReplayedRecords { get; private set; }

    /// <summary>TopicQueuesGrown records replayed: the engine asks for a checkpoint soon after start when there were any.</summary>
    public long ReplayedGrowths { get; private set; }

    private string? Intern(string? value) => state.Tags.Intern(value);
    private TopicState ApplyTopicCreated(string topic, int queues) => _topics.GetOrAdd(topic, queues);

    /// <summary>
    /// The queues of a topic a record other than its creation's makes (its creation record damaged, or cut by retention
    /// before a replay of the log alone): one for the broker's own topics and for a retry topic (<c>%RETRY%group</c>),
    /// as the live broker makes them (BrokerEngine.TryGetOrCreate), else <see cref="CoreOptions.QueuesPerTopic"/>. Until
    /// review on 2026-12-07 a retry topic was made with QueuesPerTopic queues here (its route then named queues the live
    /// broker never had).
    /// </summary>
    private int QueuesOfTopicMadeByReplay(string topic)
        => BrokerEngine.IsSystemTopic(topic) || IsRetryTopic(topic) ? 1 : _options.QueuesPerTopic;

    private static bool IsRetryTopic(string topic) => topic.StartsWith(BrokerEngine.RetryPrefix, StringComparison.Ordinal);

    /// <summary>
    /// During replay, a record that names a queue beyond its topic's count: the record that grew the topic (or created
    /// it with more queues than <see cref="CoreOptions.QueuesPerTopic"/>) was damaged. The topic is grown to hold the
    /// queue, and the broker reports the growth, so the record and every later one of that queue still apply: an
    /// acknowledged message is not lost because another record was. Until review on 2026-12-06 each such record was
    /// skipped as damaged ("queue N does not exist") and the first checkpoint made the loss final. System topics keep
    /// their one queue; the live path never names a queue its topic lacks.
    /// </summary>
    private void GrowForRecordDuringReplay(TopicState topic, int queueId, long address)
    {
        if (Live || queueId < topic.Queues.Length || queueId >= BrokerEngine.MaxQueuesPerTopic || BrokerEngine.IsSystemTopic(topic.Name)) return;
        int from = topic.Queues.Length;
        topic.GrowTo(queueId + 1);
        string reason = $"log record at address {address} names queue {queueId} of topic '{topic.Name}', which had {from} queues: "
            + $"its growth (or creation) record was damaged; the topic now has {queueId + 1}";
        _logger.LogError("Topic {Topic} grown from {From} to {To} queues during replay for the record at {Address}: its growth or creation record was damaged",
            topic.Name, from, queueId + 1, address);
        _health.ReportDegraded(reason);
    }
    private void AddQueueEntry(TopicState topic, int queueId, long offset, QueueEntry entry) => _topics.AddEntry(topic, queueId, offset, entry, Live);
    private void AddDelayed(DelayedEntry entry) => _delayed.Add(entry);
    private GroupTopicState GetGroup(string group, TopicState topic) => _groups.GetOrAdd(group, topic);
    private static void AddInFlight(GroupTopicState group, int q, long off, InFlight flight) => ConsumerGroups.AddInFlight(group, q, off, flight);
    private static bool FinishInFlight(GroupTopicState group, int q, long off) => ConsumerGroups.FinishInFlight(group, q, off);
    private void ApplyConsumerOffset(ConsumerOffsetCommittedRecord rec, long address) => _consumerOffsets.Set(rec.Group, rec.Topic, rec.QueueId, rec.Offset, carrier: address);

    /// <summary>
    /// Applies one record to the in-memory state: the single path for replay and for the live engine
    /// (the engine's AppendAndApply). Every record is read whole before anything changes, so a damaged record changes
    /// nothing; during replay it costs itself only, and is reported loudly (Error log, degraded health, counter).
    /// </summary>
    public void Apply(ReadOnlySpan<byte> record, long address)
    {
        if (!Live) ReplayedRecords++;
        long original = _carryingOriginal;
        if (original >= 0)
        {
            _carryingOriginal = -1;
            if (!IsIntactCopyOf(record, _carryingOriginalPayload))
            {
                Uncopied(original);
                original = -1; // (a copy of another record, after a hole that took this one's copy and the other's first)
            }
        }
        if (!RecordHeader.TryOpen(record, out var kind, out var r, out var error))
        {
            ReportDamaged(address, kind, error);
            return;
        }
        try
        {
            switch (kind)
            {
                case RecordKind.TopicCreated:
                {
                    var rec = TopicCreatedRecord.Read(ref r);
                    ApplyTopicCreated(rec.Topic, rec.Queues);
                    break;
                }
                case RecordKind.MessageStored:
                    ApplyMessageStored(address, record.Length, MessageStoredRecord.Read(ref r));
                    break;
                case RecordKind.HalfStored:
                    ApplyHalfStored(address, record.Length, HalfStoredRecord.Read(ref r));
                    break;
                case RecordKind.TxDecided:
                    ApplyTxDecided(address, TxDecidedRecord.Read(ref r));
                    break;
                case RecordKind.TxChecked:
                    ApplyTxChecked(TxCheckedRecord.Read(ref r));
                    break;
                case RecordKind.TxParked:
                    ApplyTxParked(address, TxParkedRecord.Read(ref r));
                    break;
                case RecordKind.TxResumed:
                    ApplyTxResumed(TxResumedRecord.Read(ref r));
                    break;
                case RecordKind.Delivered:
                    ApplyDelivered(DeliveredRecord.Read(ref r));
                    break;
                case RecordKind.Acked:
                    ApplyAcked(AckedRecord.Read(ref r), filteredOut: (RecordHeader.FlagsOf(record) & RecordHeader.FilteredOutFlag) != 0);
                    break;
                case RecordKind.InvisibilityChanged:
                    ApplyInvisibilityChanged(InvisibilityChangedRecord.Read(ref r));
                    break;
                case RecordKind.DeadLettered:
                    ApplyDeadLettered(address, DeadLetteredRecord.Read(ref r));
                    break;
                case RecordKind.QueueEntryAdded:
                    ApplyQueueEntryAdded(address, QueueEntryAddedRecord.Read(ref r));
                    break;
                case RecordKind.Redriven:
                    ApplyRedriven(address, RedrivenRecord.Read(ref r));
                    break;
                case RecordKind.RedrivenAcked:
                {
                    // The put-back and its acknowledgements as one record: a crash keeps all or none (older logs hold
                    // Redriven, then Acked records).
                    var rec = RedrivenAckedRecord.Read(ref r);
                    ApplyRedriven(address, rec.Put);
                    ApplyRedriveAcks(rec.Acks);
                    break;
                }
                case RecordKind.RedrivenStored:
                {
                    // As above, the put-back a stored message (older logs hold MessageStored, then Acked records).
                    var rec = RedrivenStoredRecord.Read(ref r);
                    ApplyMessageStored(address, record.Length, rec.Stored);
                    ApplyRedriveAcks(rec.Acks);
                    break;
                }
                case RecordKind.BodyRelocated:
                    ApplyBodyRelocated(address, record.Length, BodyRelocatedRecord.Read(ref r));
                    break;
                case RecordKind.GroupDeleted:
                {
                    var rec = GroupDeletedRecord.Read(ref r);
                    ApplyGroupDeleted(rec);
                    // A deleted group's settings go with it; a reset (GroupReset below) keeps them.
                    _groups.SetOrder(rec.Group, GroupOrder.NotConfigured);
                    break;
                }
                case RecordKind.GroupConfigured:
                {
                    var rec = GroupConfiguredRecord.Read(ref r);
                    _groups.SetOrder(rec.Group, rec.Order);
                    break;
                }
                case RecordKind.LogCut:
                {
                    var rec = LogCutRecord.Read(ref r);
                    if (rec.Decisions is null) break; // the cut itself (its effect is a function of the begin address)
                    bool copy = (RecordHeader.FlagsOf(record) & RecordHeader.CarriedCopyFlag) != 0;
                    // The items stay carried by the first copy; a copy without its first one intact before it is the
                    // only one left, and the next cut carries its items again (-1), so that two copies are there again.
                    ApplyCarried(address, copy ? original : address, rec);
                    if (copy && original >= 0) state.Carrying.Add(original); // both copies intact: what a checkpoint names
                    if (!copy)
                    {
                        _carryingOriginal = address;
                        _carryingOriginalRecord = rec;
                        _carryingOriginalPayload = Crc32C.Compute(record[RecordHeader.Size..]);
                    }
                    break;
                }
                case RecordKind.Padding:
                    break;
                case RecordKind.GroupStarted:
                    ApplyGroupStarted(GroupStartedRecord.Read(ref r), address);
                    break;
                case RecordKind.GroupReset:
                {
                    // Forget, then start, as one record: a crash keeps both or neither (older logs hold the two records).
                    // What is forgotten is the group's lease state (on this topic alone: a reset of a group that receives
                    // from other topics is refused), not the pull offsets a pull consumer of the same name committed,
                    // which are its own (as a start does not touch them). Until late on 2026-12-06 a reset removed them on
                    // every topic, and that consumer read its committed messages again from offset 0 (found by review).
                    var rec = GroupResetRecord.Read(ref r);
                    ForgetLeaseGroup(rec.Group);
                    ApplyGroupStarted(rec.Started, address);
                    break;
                }
                case RecordKind.ConsumerOffsetCommitted:
                    ApplyConsumerOffset(ConsumerOffsetCommittedRecord.Read(ref r), address);
                    break;
                case RecordKind.TopicDeleted:
                    ApplyTopicDeleted(TopicDeletedRecord.Read(ref r).Topic);
                    break;
                case RecordKind.DelayRecalled:
                    ApplyDelayRecalled(address, DelayRecalledRecord.Read(ref r));
                    break;
                case RecordKind.TopicQueuesGrown:
                {
                    // Grows the topic and every group on it; a count it already has (replayed over a checkpoint that
                    // captured the growth) changes nothing. A topic not there had its creation record damaged: it is
                    // made here, as a message record makes it, so the records of its new queues still apply.
                    var rec = TopicQueuesGrownRecord.Read(ref r);
                    _topics.GetOrAdd(rec.Topic, rec.Queues).GrowTo(rec.Queues);
                    if (!Live) ReplayedGrowths++;
                    break;
                }
                default:
                    ReportDamaged(address, kind, $"unknown record kind {(byte)kind}");
                    break;
            }
        }
        catch (Exception ex) when (!Live && ex is InvalidDataException or OverflowException or IndexOutOfRangeException or ArgumentOutOfRangeException)
        {
            // Only during replay: on the live path a record we just wrote that does not apply is a bug, and throws.
            ReportDamaged(address, kind, ex.Message);
        }
    }

    private void ReportDamaged(long address, RecordKind kind, string error)
    {
        _metrics.CorruptRecordsSkipped++;
        string reason = $"log record at address {address} ({kind}) is damaged and was skipped: {error}";
        _logger.LogError("Damaged log record at {Address} ({Kind}) skipped: {Error}. Only this record is lost; replay continues.", address, kind, error);
        _health.ReportDegraded(reason);
    }

    private void ApplyMessageStored(long address, int size, MessageStoredRecord rec)
    {
        ref readonly var m = ref rec.Message;
        var topic = ApplyTopicCreated(m.Topic, QueuesOfTopicMadeByReplay(m.Topic));
        if (rec.Offset >= 0)
        {
            GrowForRecordDuringReplay(topic, rec.QueueId, address);
            if (rec.QueueId >= topic.Queues.Length) throw new InvalidDataException($"queue {rec.QueueId} does not exist in topic '{m.Topic}'");
            AddQueueEntry(topic, rec.QueueId, rec.Offset, new QueueEntry { BodyAddress = address, Size = size, VisibleAt = address, Tag = Intern(m.Tag), MessageGroup = m.MessageGroup });
        }
        else if (!_delayed.IsRecalled(m.Topic, m.DeliverAtMs, m.MessageId))
        {
            AddDelayed(new DelayedEntry { BodyAddress = address, Size = size, Topic = m.Topic, RequestedQueueId = rec.RequestedQueue, DeliverAtMs = m.DeliverAtMs, Tag = Intern(m.Tag), MessageGroup = m.MessageGroup, SentAt = address,
                SendOrder = address, IdHash = DelayedEntry.HashOfId(m.MessageId) });
        }
        else
        {
            // A copy of a message recalled before it was stored (a send retried after the recall): dropped, never
            // delivered, as Apache's timer drops it at its time. Replay drops it again: the recall's record is before it,
            // and a checkpoint after the recall carries the recall (DelayIndex.RememberRecall). Its body is refused by
            // offset as the recalled one's (DelayIndex.NoteRecalledBody).
            _delayed.NoteRecalledBody(Intern(m.Topic)!, m.DeliverAtMs, m.MessageId, address);
        }
    }

    private void ApplyQueueEntryAdded(long address, QueueEntryAddedRecord rec)
    {
        var topic = ApplyTopicCreated(rec.Topic, QueuesOfTopicMadeByReplay(rec.Topic));
        if (rec.QueueId >= 0) GrowForRecordDuringReplay(topic, rec.QueueId, address);
        if (rec.QueueId < 0 || rec.QueueId >= topic.Queues.Length) throw new InvalidDataException($"queue {rec.QueueId} does not exist in topic '{rec.Topic}'");
        bool released = _delayed.Remove(rec.BodyAddress, out var delayed);
        bool inQueue = false;
        int size = released ? delayed.Size
            : (inQueue = topic.Queues[rec.QueueId].TryGet(rec.Offset, out var existing)) ? existing.Size : 0; // replayed over a checkpoint that has it
        // A committed delayed transactional message (no address sent at; its SendOrder is its commit's record): a read or
        // send-back by offset finds its commit's entry through its release (DelayIndex.NoteReleasedCommit). A delay
        // message from a checkpoint written before recall came has none either: its entry is unused, and cut alike.
        if (released && delayed.SentAt < 0) _delayed.NoteReleasedCommit(delayed.SendOrder, address, rec.BodyAddress);
        // Replayed from the log alone, past a retention cut that took the commit (and so the delayed entry) but not the
        // release: the record names the commit. Not when a checkpoint has the entry: it has the release too (copied
        // before the queues), where retention may have moved it since. Until later on 2026-12-07 such a replay forgot
        // the release, and the message read as no message by offset (found by review).
        else if (!released && !inQueue && rec.CommittedAt is { } committedAt) _delayed.NoteReleasedCommit(committedAt, address, rec.BodyAddress);
        AddQueueEntry(topic, rec.QueueId, rec.Offset, new QueueEntry { BodyAddress = rec.BodyAddress, Size = size, VisibleAt = address, Tag = rec.Tag, MessageGroup = rec.MessageGroup });
    }

    private void ApplyRedriven(long address, RedrivenRecord rec)
    {
        var topic = ApplyTopicCreated(rec.Topic, QueuesOfTopicMadeByReplay(rec.Topic));
        if (rec.QueueId >= 0) GrowForRecordDuringReplay(topic, rec.QueueId, address);
        if (rec.QueueId < 0 || rec.QueueId >= topic.Queues.Length) throw new InvalidDataException($"queue {rec.QueueId} does not exist in topic '{rec.Topic}'");
        AddQueueEntry(topic, rec.QueueId, rec.Offset, new QueueEntry
        {
            BodyAddress = rec.BodyAddress, Size = rec.Size, VisibleAt = address, Tag = Intern(rec.Tag), MessageGroup = rec.MessageGroup,
            ForGroup = _topics.Targets.NumberOf(rec.Group),
        });
    }

    private void ApplyHalfStored(long address, int size, HalfStoredRecord rec)
    {
        if (_txs.TryGet(rec.TransactionId, out var existing))
        {
            // Replayed over a checkpoint that already has it: the address is the record's (a later BodyRelocated moves it again).
            _txs.MoveBody(existing, address, size);
            return;
        }
        _txs.Add(NewHalf(address, size, rec));
    }

    private HalfState NewHalf(long address, int size, scoped in HalfStoredRecord rec)
    {
        ref readonly var m = ref rec.Message;
        var half = new HalfState
        {
            // Shared strings: a pending half costs its numbers, not five copies of names it shares with thousands of others.
            TransactionId = rec.TransactionId, MessageId = m.MessageId == rec.TransactionId ? rec.TransactionId : m.MessageId,
            Topic = Intern(m.Topic)!, ProducerGroup = Intern(rec.ProducerGroup)!, OriginClientId = state.Tags.InternClientId(rec.OriginClientId),
            Address = address, Size = size, CheckToken = address, StoreTimestampMs = m.StoreMs, CheckImmunityMs = rec.CheckImmunityMs, RequestedQueueId = rec.RequestedQueue,
            Tag = Intern(m.Tag), MessageGroup = m.MessageGroup, DeliverAtMs = m.DeliverAtMs, CheckCount = rec.CheckCount, Parked = rec.Parked,
        };
        // A producer's check immunity replaces the transaction timeout, shorter or longer, as in Apache's broker
        // (TransactionalMessageServiceImpl reads CHECK_IMMUNITY_TIME_IN_SECONDS in place of transactionTimeout). Until
        // the afternoon session of 2026-12-06 the first check came after the longer of the two, so a producer that asked
        // for a check after 2 s got it after 6.
        half.NextCheckAtMs = rec.NextCheckAtMs > 0 ? rec.NextCheckAtMs
            : m.StoreMs + (rec.CheckImmunityMs > 0 ? rec.CheckImmunityMs : (long)_options.TransactionTimeout.TotalMilliseconds);
        return half;
    }

    private void ApplyTxDecided(long address, TxDecidedRecord rec)
    {
        if (!_txs.TryGet(rec.TransactionId, out var half))
        {
            RememberDecisionOfMissingHalf(address, rec);
            return;
        }
        TopicState? topic = null;
        if (rec.Resolution == TransactionResolution.Commit)
        {
            topic = ApplyTopicCreated(half.Topic, QueuesOfTopicMadeByReplay(half.Topic));
            GrowForRecordDuringReplay(topic, rec.QueueId, address);
            if (rec.QueueId >= topic.Queues.Length) throw new InvalidDataException($"queue {rec.QueueId} does not exist in topic '{half.Topic}'");
        }
        // Checked above, changed below: a record that does not fit changes nothing.
        _txs.Remove(rec.TransactionId, out _);
        if (topic is not null)
        {
            if (rec.QueueId >= 0)
                AddQueueEntry(topic, rec.QueueId, rec.Offset, new QueueEntry { BodyAddress = half.Address, Size = half.Size, VisibleAt = address, Tag = half.Tag, MessageGroup = half.MessageGroup });
            else
                AddDelayed(new DelayedEntry { BodyAddress = half.Address, Size = half.Size, Topic = half.Topic, RequestedQueueId = half.RequestedQueueId, DeliverAtMs = half.DeliverAtMs, Tag = half.Tag, MessageGroup = half.MessageGroup,
                    SendOrder = address });
        }
        _txs.Decided.Add(rec.TransactionId, rec.Resolution, address, rec.AtMs, half.Topic);
        _txs.Decided.Expire(rec.AtMs);
    }

    /// <summary>
    /// A decision whose half this replay does not have. Replaying the log alone (<see cref="RebuildMovedFrom"/>) after a
    /// retention cut took the half's record (stored below the cut's boundary, decided after it), the decision is
    /// remembered as the live broker remembered it (a repeat is a duplicate, the other decision a conflict), in the
    /// namespace the record carries (not known in records written before it did). Until the afternoon session of
    /// 2026-12-07 it was skipped, and a repeated commit of that id was told "unknown transaction" (a rollback of it was
    /// not refused as conflicting but answered the same). The commit's queue entry, if any, a later move of its body
    /// re-creates (see <see cref="ApplyBodyRelocated"/>). Elsewhere (over a checkpoint, which holds the decision when it
    /// holds neither the half nor the decision's effect; or a damaged half record) it is skipped as before, with a
    /// warning when the checkpoint does not have it.
    /// </summary>
    private void RememberDecisionOfMissingHalf(long address, TxDecidedRecord rec)
    {
        if (!Live && RebuildMovedFrom >= 0)
        {
            _txs.Decided.Add(DecidedIndex.KeyOf(rec.TransactionId), rec.Resolution, address, rec.AtMs, rec.Namespace);
            _txs.Decided.Expire(rec.AtMs);
            return;
        }
        if (!_txs.Decided.Contains(rec.TransactionId))
            _logger.LogWarning("Decision record for unknown transaction {TransactionId} at {Address}; skipped", rec.TransactionId, address);
    }

    /// <summary>
    /// What a retention cut carried past its boundary (see <see cref="LogCutRecord"/>). Replaying the log alone
    /// (<see cref="RebuildMovedFrom"/>), it is taken as the live broker held it when the record was written (the cut
    /// took the records it came from); live, and over a checkpoint (taken after the carrying, so it holds all of it),
    /// the state has it already and nothing changes. Until the afternoon session of 2026-12-07 such a replay forgot a
    /// decision whose record a cut took (a half moved by one cut, decided, then a second cut past the decision: a
    /// repeated commit was told "unknown transaction", the opposite decision was not refused), and a topic every record
    /// of which a cut took (gone: its next message took offset 0 again, skipped by a pull consumer going on from its
    /// offset), and a pull group's offset whose record a cut took.
    /// </summary>
    private void ApplyCarried(long address, long carrier, LogCutRecord rec)
    {
        // Live, over a checkpoint and from the log alone: a decision this record carries is carried here from now on (a
        // later cut carries it again only once this record, its first copy, lies below its boundary).
        if (Live || RebuildMovedFrom < 0)
        {
            // (Live and over a checkpoint the state holds what this record carries: the values it was read from.)
            NoteCarrying(carrier, rec);
            return;
        }
        int added = 0;
        foreach (var d in rec.Decisions ?? [])
        {
            if (_txs.Decided.AddCarried(d.Key, d.Resolution, d.Address, d.AtMs, d.Namespace, carrier)) added++;
            else _txs.Decided.NoteCarried(d.Key, d.AtMs, d.Address, carrier);
        }
        if (rec.Decisions is not null)
        {
            _txs.Decided.Expire(rec.AtMs);
            DecisionsRebuilt += added;
        }
        foreach (var carried in rec.Topics ?? [])
        {
            // The count the live topic had then (a growth's record may be cut too); the records after this one name
            // offsets at or past these.
            var topic = _topics.GetOrAdd(carried.Topic, carried.NextOffsets.Length);
            topic.GrowTo(carried.NextOffsets.Length);
            // More queues than the live topic had then (topics never shrink): this replay made it from a record that
            // named it before this one (between the cut's boundary and its carrying), with QueuesPerTopic, as the cut
            // took its creation's record. Until a review in the afternoon session of 2026-12-07 it kept them (its route
            // named queues the live broker never had).
            if (topic.Queues.Length > carried.NextOffsets.Length && !HasPullOffsetsFrom(carried.Topic, carried.NextOffsets.Length)
                && !topic.ShrinkUnusedForReplay(carried.NextOffsets.Length))
                _logger.LogWarning("Topic {Topic} has {Queues} queues in the replay, and {Carried} in the record at {Address} that carried it; kept (the others were used)",
                    carried.Topic, topic.Queues.Length, carried.NextOffsets.Length, address);
            topic.CarriedAt = carrier;
            for (int q = 0; q < carried.NextOffsets.Length; q++)
            {
                var queue = topic.Queues[q];
                long next = carried.NextOffsets[q];
                if (next <= queue.NextOffset) continue;
                if (queue.Entries.Count == 0) { queue.Reset(next); continue; }
                try
                {
                    queue.EnsureNext(next); // holes, the prefix of which the cut's expiry takes at the end of recovery
                }
                catch (InvalidDataException ex)
                {
                    _logger.LogWarning("Carried position {Next} of {Topic}/{Queue} in the record at {Address} not taken: {Error}", next, carried.Topic, q, address, ex.Message);
                }
            }
        }
        foreach (var offset in rec.PullOffsets ?? []) ApplyConsumerOffset(offset, carrier);
    }

    /// <summary>
    /// The items the carrying record at <paramref name="address"/> (read back from the log: a checkpoint named it, see
    /// <see cref="Retention.CarryingRecords"/>) carries, when the state still holds them as it carried them, are carried
    /// by it: as applying it live notes them (the state has them already), nothing else changes.
    /// </summary>
    public void NoteCarrying(long address, LogCutRecord rec)
    {
        foreach (var d in rec.Decisions ?? []) _txs.Decided.NoteCarried(d.Key, d.AtMs, d.Address, address);
        foreach (var carried in rec.Topics ?? [])
            if (_topics.TryGetValue(carried.Topic, out var known)) known.CarriedAt = Math.Max(known.CarriedAt, address);
        foreach (var o in rec.PullOffsets ?? []) _consumerOffsets.NoteCarried(o.Group, o.Topic, o.QueueId, o.Offset, address);
    }

    /// <summary>The address of the carrying record (the first copy, <see cref="Storage.LogCutRecord"/>) just applied, -1
    /// when the record just applied was another; <see cref="_carryingOriginalRecord"/> is what it carried.</summary>
    private long _carryingOriginal = -1;
    private LogCutRecord _carryingOriginalRecord;
    /// <summary>The checksum of that record's payload: its copy has the same payload.</summary>
    private uint _carryingOriginalPayload;

    /// <summary>
    /// Whether <paramref name="record"/> is an intact copy of the carrying record just applied (its payload's checksum
    /// <paramref name="payload"/>). The payload is compared since the evening session of 2026-12-07: a hole in the log
    /// (skipped by the replay, not handed to the applier) can take a record's copy and the next carrying record's first
    /// copy, and the copy after it is the other record's.
    /// </summary>
    private static bool IsIntactCopyOf(ReadOnlySpan<byte> record, uint payload)
        => (RecordHeader.FlagsOf(record) & RecordHeader.CarriedCopyFlag) != 0 && RecordHeader.TryOpen(record, out var kind, out _, out _)
            && kind == RecordKind.LogCut && Crc32C.Compute(record[RecordHeader.Size..]) == payload;

    /// <summary>
    /// The carrying record at <paramref name="original"/> has no intact copy after it (the copy damaged, or lost with a
    /// torn tail by a crash between the two, before the cut acted; or a build before the evening session of 2026-12-07
    /// wrote it): the items it carried, when it carries them still, are carried by no record below any cut (-1), so the
    /// next cut carries them again, in two copies.
    /// </summary>
    private void Uncopied(long original)
    {
        var rec = _carryingOriginalRecord;
        _carryingOriginalRecord = default;
        foreach (var d in rec.Decisions ?? []) _txs.Decided.ForgetCarrier(d.Key, d.AtMs, original);
        foreach (var carried in rec.Topics ?? [])
            if (_topics.TryGetValue(carried.Topic, out var topic) && topic.CarriedAt == original) topic.CarriedAt = -1;
        foreach (var o in rec.PullOffsets ?? []) _consumerOffsets.ForgetCarrier(o.Group, o.Topic, o.QueueId, original);
    }

    private bool HasPullOffsetsFrom(string topic, int queue) => _consumerOffsets.All.Any(e => e.Key.Topic == topic && e.Key.Queue >= queue);

    /// <summary>Decided ids this replay of the log alone took from the records retention cuts carried them in.</summary>
    public int DecisionsRebuilt { get; private set; }

    /// <summary>
    /// After replay: drops the pending halves whose decision the checkpoint remembers and whose effect it already holds,
    /// though the decision's own record did not replay (it was damaged). Returns how many were dropped.
    /// </summary>
    /// <remarks>
    /// The checkpoint is fuzzy: a half decided while it was being taken can be pending in the halves it captured (or
    /// stored after its start, so its HalfStored record replays), while its commit entry is in the queues and its id in
    /// the decided ids captured later. Replay of the TxDecided record removes it again; when that record is damaged, the
    /// half stayed pending, was checked back for a decision already carried out, and a second Commit delivered it
    /// twice. A decision recorded after the half's body was written is this half's (an id is reused only after its
    /// decision is forgotten, and then its new body lies after that decision). A rollback has no effect to look for; a
    /// commit counts as carried out only when its entry is in the checkpoint (in a queue, or in the delay index): if it
    /// was decided after the queues were captured, its entry went with the damaged record, and the half is better left
    /// pending, so that a check-back commits it once, than dropped and never delivered.
    /// </remarks>
    public int DropHalvesDecidedInCheckpoint()
    {
        List<HalfState>? settled = null;
        foreach (var half in _txs.All)
        {
            if (!_txs.Decided.TryGet(half.TransactionId, out var resolution, out long decidedAt) || decidedAt <= half.Address) continue;
            if (resolution == TransactionResolution.Commit && !CommitIsApplied(half, decidedAt)) continue;
            (settled ??= []).Add(half);
        }
        if (settled is null) return 0;
        foreach (var half in settled)
        {
            _txs.Remove(half.TransactionId, out _);
            _logger.LogWarning("Transaction {TransactionId} (topic {Topic}) was decided before the checkpoint was captured, but its decision record did not replay; it stays decided and is not checked again",
                half.TransactionId, half.Topic);
        }
        return settled.Count;
    }

    // The commit's entry: in a queue with the decision's address as its visibility (VisibleAt is the address of the
    // record that added an entry, so it grows along a queue and the search stops at the first older entry), or, for a
    // delayed message, still in the delay index, or released from it into a queue after the decision.
    private bool CommitIsApplied(HalfState half, long decidedAt)
    {
        if (_delayed.Contains(half.Address)) return true;
        if (!_topics.TryGetValue(half.Topic, out var topic)) return false;
        foreach (var queue in topic.Queues)
        {
            for (long offset = queue.NextOffset - 1; offset >= queue.BaseOffset; offset--)
            {
                if (!queue.TryGet(offset, out var entry) || entry.IsHole) continue;
                if (entry.VisibleAt < decidedAt) break;
                if (entry.VisibleAt == decidedAt || entry.BodyAddress == half.Address) return true;
            }
        }
        return false;
    }

    private void ApplyTxChecked(TxCheckedRecord rec)
    {
        if (!_txs.TryGet(rec.TransactionId, out var half)) return;
        half.CheckCount = rec.CheckCount;
        half.LastCheckAtMs = rec.AtMs;
        half.NextCheckAtMs = rec.NextCheckAtMs;
        if (!half.Parked) _txs.Schedule(half);
    }

    private void ApplyTxParked(long address, TxParkedRecord rec)
    {
        if (!_txs.TryGet(rec.TransactionId, out var half)) return;
        _txs.SetParked(half, true);
        half.ParkedAtMs = rec.AtMs;
        // Parks written before 2026-12-02 made an entry in the check-max topic: kept, so offsets stay as they were, but
        // that topic is never read (BrokerEngine.UnreadableTopicReason).
        if (rec.SystemOffset >= 0)
            AddQueueEntry(ApplyTopicCreated(BrokerEngine.CheckMaxTopic, 1), 0, rec.SystemOffset, new QueueEntry { BodyAddress = half.Address, Size = half.Size, VisibleAt = address, Tag = half.Tag });
    }

    private void ApplyTxResumed(TxResumedRecord rec)
    {
        if (!_txs.TryGet(rec.TransactionId, out var half)) return;
        _txs.SetParked(half, false);
        half.CheckCount = 0;
        half.NextCheckAtMs = rec.AtMs;
        _txs.Schedule(half);
    }

    /// <summary>
    /// The topic a consumer group's record (a start, a delivery, an acknowledgement, a change of
    /// invisibility, a dead letter: the last since the midday session of 2026-12-07) names; null when there is none. Replaying the log alone after a cut (<see cref="RebuildMovedFrom"/>), a
    /// topic every record of which before this one the cut took (a transactional message stored below the boundary and
    /// committed after it: the commit's record finds no half, and names no topic) is made here, as the group saw it, so
    /// that the group's records apply; the move that re-creates the entry (<see cref="ApplyBodyRelocated"/>) comes later
    /// in the log and finds the group's progress on it. Until review on 2026-12-07 these records were skipped, and the
    /// rebuilt entry was delivered again to a group that had acknowledged it, and at once to one that held it. Never
    /// over a checkpoint: there a missing topic may be one deleted after the record (a fuzzy capture).
    /// </summary>
    /// <remarks>The topic made here has the queues this record names; a later group record that names a queue beyond
    /// them (the group received from several queues, and the record that made the topic named a lower one) grows it, as
    /// a message's record grows a topic whose growth record it does not have (<see cref="GrowForRecordDuringReplay"/>):
    /// the cut took the records that made the topic's queues. Until review on 2026-12-07 such a record was skipped, and
    /// its queue was gone after the restart (sends to it refused, or its next message given the acknowledged offset).</remarks>
    private TopicState? TopicOfGroupRecord(string name, int queueId)
    {
        bool rebuilding = !Live && RebuildMovedFrom >= 0 && queueId >= 0 && queueId < BrokerEngine.MaxQueuesPerTopic;
        if (_topics.TryGetValue(name, out var topic))
        {
            if (rebuilding && queueId >= topic.Queues.Length && !BrokerEngine.IsSystemTopic(name) && !IsRetryTopic(name))
            {
                _logger.LogWarning("Topic {Topic} grown from {From} to {To} queues replaying the log alone: a group's record names queue {Queue}, and the records that made the topic's queues were cut (or damaged)",
                    name, topic.Queues.Length, queueId + 1, queueId);
                topic.GrowTo(queueId + 1);
            }
            return topic;
        }
        if (!rebuilding) return null;
        bool oneQueue = BrokerEngine.IsSystemTopic(name) || IsRetryTopic(name);
        return ApplyTopicCreated(name, oneQueue ? 1 : Math.Max(QueuesOfTopicMadeByReplay(name), queueId + 1));
    }

    private void ApplyDelivered(DeliveredRecord rec)
    {
        if (TopicOfGroupRecord(rec.Topic, rec.QueueId) is not { } topic || rec.QueueId < 0 || rec.QueueId >= topic.Queues.Length) return;
        var group = GetGroup(rec.Group, topic);
        var gq = group.Queues[rec.QueueId];
        // An offset a group was handed exists, even if the record that filled it was lost: never reuse it.
        topic.Queues[rec.QueueId].EnsureNext(rec.Offset + 1);
        if (rec.Offset >= gq.NextOffset)
        {
            // Offsets skipped before this fresh delivery were filtered out.
            for (long o = gq.NextOffset; o < rec.Offset; o++) gq.MarkDone(o);
            gq.NextOffset = rec.Offset + 1;
            // Passed over, its message group in flight (BrokerEngine.PickForDelivery): it waits, neither leased nor
            // finished, and a later delivery of the queue no longer takes it for filtered out.
            if (rec.IsPassedOver && !gq.IsDone(rec.Offset)) gq.AddPassedOver(rec.Offset);
        }
        // Passed over before the position this replay started from (a checkpoint captured after the record): the
        // checkpoint has it as it is.
        if (rec.IsPassedOver) return;
        if (gq.IsDone(rec.Offset)) return;
        if (gq.InFlight.TryGetValue(rec.Offset, out var flight))
        {
            flight.Attempt = rec.Attempt; flight.InvisibleUntilMs = rec.UntilMs; flight.LeaseId = rec.LeaseId; flight.Expired = false;
            flight.RenewFor = null; // a new delivery: renewed only if its receive asks (BrokerEngine.SetRenewal)
        }
        else
        {
            topic.Queues[rec.QueueId].TryGet(rec.Offset, out var entry);
            AddInFlight(group, rec.QueueId, rec.Offset, new InFlight { Attempt = rec.Attempt, InvisibleUntilMs = rec.UntilMs, LeaseId = rec.LeaseId, MessageGroup = entry.MessageGroup });
        }
        _groups.ScheduleLease(group, rec.QueueId, rec.Offset, rec.LeaseId, rec.UntilMs);
    }

    private void ApplyAcked(AckedRecord rec, bool filteredOut = false)
    {
        if (TopicOfGroupRecord(rec.Topic, rec.QueueId) is not { } topic || rec.QueueId < 0 || rec.QueueId >= topic.Queues.Length) return;
        var group = GetGroup(rec.Group, topic);
        var gq = group.Queues[rec.QueueId];
        if (filteredOut && rec.Offset >= gq.NextOffset)
        {
            // A filtered-out offset the group was never handed: the last of a run a tag filter passed over after the
            // queue's last delivery (BrokerEngine.PickForDelivery). Every offset up to it was passed over, as the ones
            // before a fresh delivery are (ApplyDelivered). Until 2026-12-07 no record named them, and after a crash
            // they were not finished: the group was handed them again (found by review).
            for (long o = gq.NextOffset; o < rec.Offset; o++) gq.MarkDone(o);
            gq.NextOffset = rec.Offset + 1;
        }
        else CatchUpToHandedOffset(topic, group, rec.QueueId, rec.Offset);
        // Only an ack that ends a FIFO hold can make something new receivable (the message group's next message), and
        // only for this group: an ack of any other message wakes nobody.
        if (FinishInFlight(group, rec.QueueId, rec.Offset) && Live) group.Waiters.WakeOne();
    }

    /// <summary>
    /// A group's record that finishes <paramref name="offset"/> (an acknowledgement, a dead letter): the group was handed
    /// it, so the offset exists (never reused), and, replaying the log alone after a cut that took the offset's delivery
    /// record (<see cref="RebuildMovedFrom"/>), the group's position is taken past it as that record took it (see
    /// <see cref="ApplyDelivered"/>: the offsets before it that the group had not reached were passed; they entered their
    /// queue before it, so below the cut's boundary, and expire with it). Until the midday session of 2026-12-07 such a
    /// replay finished the offset for a group whose position stayed before it, on a queue that had forgotten it: the
    /// group's next message took the finished offset and was skipped as finished, or, with the queue's front past it,
    /// the group's position stayed before the front and nothing more of the queue was delivered to it.
    /// </summary>
    private void CatchUpToHandedOffset(TopicState topic, GroupTopicState group, int q, long offset)
    {
        // Only past a cut (no delivery record was cut otherwise), and never for a re-drive cursor, which finishes the
        // dead letters it puts back without being handed them (its position stays where it is, live and replayed).
        if (Live || RebuildMovedFrom <= LogHoles.FirstLogAddress || offset < 0 || BrokerEngine.IsInternalGroup(group.Group)) return;
        topic.Queues[q].EnsureNext(offset + 1);
        var gq = group.Queues[q];
        if (offset < gq.NextOffset) return;
        for (long o = gq.NextOffset; o < offset; o++) gq.MarkDone(o);
        gq.NextOffset = offset + 1;
    }

    private void ApplyRedriveAcks(RedriveAcks acks)
    {
        ApplyAcked(acks.CursorAck);
        if (acks.SiblingAck is { } sibling) ApplyAcked(sibling);
    }

    private void ApplyInvisibilityChanged(InvisibilityChangedRecord rec)
    {
        if (TopicOfGroupRecord(rec.Topic, rec.QueueId) is not { } topic || rec.QueueId < 0 || rec.QueueId >= topic.Queues.Length) return;
        var group = GetGroup(rec.Group, topic);
        if (group.Queues[rec.QueueId].InFlight.TryGetValue(rec.Offset, out var flight))
        {
            flight.InvisibleUntilMs = rec.UntilMs; flight.LeaseId = rec.LeaseId; flight.Expired = false;
            _groups.ScheduleLease(group, rec.QueueId, rec.Offset, rec.LeaseId, rec.UntilMs);
        }
    }

    private void ApplyDeadLettered(long address, DeadLetteredRecord rec)
    {
        // Its topic made, replaying the log alone after a cut, when the cut took every record naming it before this one
        // (the group received the message before the cut's boundary): the queue keeps the offset (never reused), and the
        // dead letter its entry. Until the midday session of 2026-12-07 the record was skipped then, and the topic's
        // next message took the dead-lettered one's offset. An entry the record does not find (its body record cut) is a
        // hole the move that re-creates it fills (ApplyBodyRelocated re-creates a hole it names), so the dead letter is
        // kept either way (LogOnlyMovedBodyTests.A_dead_letter_of_a_rebuilt_entry_is_kept). The group's position goes
        // past the offset (CatchUpToHandedOffset).
        if (TopicOfGroupRecord(rec.Topic, rec.QueueId) is not { } topic || rec.QueueId < 0 || rec.QueueId >= topic.Queues.Length) return;
        var group = GetGroup(rec.Group, topic);
        CatchUpToHandedOffset(topic, group, rec.QueueId, rec.Offset);
        var dlq = ApplyTopicCreated(BrokerEngine.DeadLetterPrefix + rec.Group, 1);
        if (!topic.Queues[rec.QueueId].TryGet(rec.Offset, out var entry)) entry = new QueueEntry { BodyAddress = QueueEntry.Expired };
        // A dead-lettered FIFO message releases its message group's next one, as an ack does.
        if (FinishInFlight(group, rec.QueueId, rec.Offset) && Live) group.Waiters.WakeOne();
        // The dead-letter entry points at the original body: no copy of the message is written. (A hole stays a hole.)
        AddQueueEntry(dlq, 0, rec.DlqOffset, new QueueEntry { BodyAddress = entry.BodyAddress, Size = entry.Size, VisibleAt = address, Tag = entry.Tag, MessageGroup = null });
        // Taken from a dead-letter topic (a group reading %DLQ%A): the body names the original topic, not that one, so
        // the topic is kept beside the entry for a re-drive to put the dead letter back where its group reads it. Until
        // 2026-12-06 it was not, and the re-drive put it on the original topic, which the group does not read. (The
        // record always named the topic: logs written before replay to the kept topic too.)
        if (rec.Topic.StartsWith(BrokerEngine.DeadLetterPrefix, StringComparison.Ordinal))
            dlq.Queues[0].SetSource(rec.DlqOffset, topic.Name);
    }

    private void ApplyGroupStarted(GroupStartedRecord rec, long address)
    {
        // Fewer start offsets than queues: the group was started before the topic grew, and this record replays over a
        // checkpoint that captured the growth. The queues added later are the growth's (the group starts at their front).
        // More start offsets than queues: the topic's growth record was damaged (see GrowForRecordDuringReplay).
        if (_topics.TryGetValue(rec.Topic, out var grown) && rec.StartOffsets.Length > grown.Queues.Length)
            GrowForRecordDuringReplay(grown, rec.StartOffsets.Length - 1, address);
        if (rec.StartOffsets.Length > 0) TopicOfGroupRecord(rec.Topic, rec.StartOffsets.Length - 1);
        if (!_topics.TryGetValue(rec.Topic, out var topic) || rec.StartOffsets.Length > topic.Queues.Length) return;
        var group = GetGroup(rec.Group, topic);
        for (int q = 0; q < rec.StartOffsets.Length; q++)
        {
            var gq = group.Queues[q];
            long start = rec.StartOffsets[q];
            // Everything below the start is finished for this group; the queue keeps that position (never reused).
            topic.Queues[q].EnsureNext(start);
            if (gq.NextOffset < start) gq.NextOffset = start;
            gq.AdvanceTo(start);
        }
    }

    private void ApplyGroupDeleted(GroupDeletedRecord rec)
    {
        ForgetLeaseGroup(rec.Group);
        _consumerOffsets.RemoveGroup(rec.Group); // a pull group's progress too (since 2026-12-03)
    }

    /// <summary>The group's lease state on every topic: leases still in the due-time heap find no in-flight entry and
    /// are skipped.</summary>
    private void ForgetLeaseGroup(string group)
    {
        foreach (var state in _groups.OfGroup(group).ToList()) _groups.Remove(state);
    }

    private void ApplyTopicDeleted(string topic)
    {
        // The delayed messages and pull offsets go also when the topic is not there: a checkpoint copies the delayed
        // messages before the topics, so a delete during its capture leaves a file with the topic's delayed messages and
        // without the topic, and this record replays over it. Until 2026-12-06 it returned here first, and after a kill -9
        // the deleted topic's delayed messages were delivered (found by review). Since the same day a delete waits for a
        // running capture (BrokerEngine.DeleteTopicAsync), so only a log written before can have one inside a capture.
        _consumerOffsets.RemoveTopic(topic);
        _delayed.RemoveTopic(topic);
        if (!_topics.Remove(topic, out var state)) return;
        if (Live) TopicDeleted?.Invoke(topic);
        // Leases die with the topic: the sweeper must not dead-letter them later.
        foreach (var g in state.Groups.ToList()) _groups.Remove(g);
        // Parked pulls look again and find the topic gone (its groups' receives were woken as the groups went).
        state.WakeAll();
    }

    private void ApplyDelayRecalled(long address, DelayRecalledRecord rec)
    {
        // Not there: replayed over a checkpoint taken after the recall (or the topic was deleted since), or from the log
        // alone after a retention cut took the body, or carried forward by a cut (naming no address, or a copy dropped
        // live). Nothing to take out; the recall is remembered from the record's delivery time (none in records written
        // before the late-morning session of 2026-12-07), as it was live: a copy of the message stored later is dropped. Until
        // then a replay of the log alone past a cut that took the recall's record (or only its message's body)
        // delivered such a copy. One past its time is forgotten by the next sweep; a waiting copy of it stored before
        // this record (a replay of the log alone, where the cut kept copies dropped live) is taken out at start, before
        // the first sweep (BrokerEngine.RecallCopiesLeftByCrashAsync), or here when the record names it.
        if (!_delayed.TryGetSentAt(rec.SentAt, out var entry) || entry.Topic != rec.Topic)
        {
            if (rec.DeliverAtMs is not { } dueMs) return;
            string topic = Intern(rec.Topic)!;
            _delayed.RememberRecall(topic, dueMs, rec.MessageId);
            _delayed.NoteRecallRecord(topic, dueMs, rec.MessageId, address);
            return;
        }
        _delayed.Remove(entry.BodyAddress, out _);
        // Remembered until its time: a copy of the message stored later is dropped (see ApplyMessageStored). When the
        // message is not there over a checkpoint, the checkpoint has the recall as well (it copies the recalls after the
        // delayed messages, so one that found the message gone captured the recall that took it out).
        // The topic's name shared (up to 1,000,000 recalls are remembered), as a checkpoint's load shares it.
        _delayed.RememberRecall(Intern(rec.Topic)!, entry.DeliverAtMs, rec.MessageId);
        // And its bodies refused by offset until retention cuts them: the one it was sent at and the one it lies at
        // (moved by retention since, or the same), and every address between (moves go to the tail).
        _delayed.NoteRecalledBody(entry.Topic, entry.DeliverAtMs, rec.MessageId, Math.Max(entry.BodyAddress, entry.SentAt));
        // And where its last record lies: a retention cut past it carries the recall forward while it is needed.
        _delayed.NoteRecallRecord(entry.Topic, entry.DeliverAtMs, rec.MessageId, address);
    }

    /// <summary>
    /// Moves what the record names from <c>previous</c> to <paramref name="address"/>. Replaying the log alone
    /// (<see cref="RebuildMovedFrom"/>), a pending half, delayed message or queue entry it names that the replay does not
    /// have is re-created there from the original record it carries and the state it carries (<see cref="RelocatedState"/>,
    /// in records written since the evening session of 2026-12-07), as the original's own record (and the records after
    /// it the cut took: check-backs, a park, the commit that put an entry into its queue) made it. Until then such a
    /// replay after a cut, which no longer has those records, moved nothing: a pending half acknowledged to its producer
    /// was never checked back and its commit found no half, a delayed message was never delivered, and a message
    /// committed after the cut's boundary (its body before it) was never delivered (found by a helper, 2026-12-07).
    /// </summary>
    /// <remarks>
    /// Exact replaying the log alone: a move names only what was live when it was written (BrokerEngine.Relocate, under
    /// the lock), so a half decided, a delayed message released or recalled, before the move is not named by it, and
    /// every later change of what it names (a decision, a release, a recall, another move) is a later record, applied
    /// after it. What the replay does have it moves as before. Never over a checkpoint: the checkpoint is the state up to
    /// the address it covers, and there a half or delayed message the replay lacks is one the checkpoint saw decided,
    /// released or recalled (or its record damaged): re-created, a committed half would be checked back and delivered
    /// twice, a released delayed message delivered twice, a recalled one delivered after all. (Moves never fall inside a
    /// capture, BrokerEngine.HoldOffCapturesAsync, so a fuzzy checkpoint holds each move whole or not at all.)
    /// </remarks>
    private void ApplyBodyRelocated(long address, int size, BodyRelocatedRecord rec)
    {
        long previous = rec.PreviousAddress;
        // What is re-created is read whole first: a record that does not fit changes nothing.
        HalfState? lostHalf = null;
        DelayedEntry? lostDelayed = null;
        List<(TopicState Topic, int Queue, long Offset, QueueEntry Entry)>? lostEntries = null;
        (string TransactionId, string Topic)? committedHalf = null;
        if (!Live && RebuildMovedFrom >= 0) ReadLostState(address, size, rec, out lostHalf, out lostDelayed, out lostEntries, out committedHalf);
        if (rec.HalfTransactionId is { } tx && _txs.TryGet(tx, out var half) && half.Address == previous)
            _txs.MoveBody(half, address, size);
        if (rec.Delayed) _delayed.Move(previous, address, size);
        if (lostHalf is not null)
        {
            _txs.Add(lostHalf);
            RebuiltFromMoves = RebuiltFromMoves with { Halves = RebuiltFromMoves.Halves + 1 };
        }
        if (lostDelayed is not null)
        {
            // Its topic too, as its own record made it (the cut took every record of a topic that had only this one):
            // a delayed message whose topic is not there is dropped at its time, as one of a deleted topic.
            ApplyTopicCreated(lostDelayed.Topic, QueuesOfTopicMadeByReplay(lostDelayed.Topic));
            AddDelayed(lostDelayed);
            RebuiltFromMoves = RebuiltFromMoves with { Delayed = RebuiltFromMoves.Delayed + 1 };
        }
        if (lostEntries is not null)
        {
            foreach (var (topic, q, offset, entry) in lostEntries)
            {
                AddQueueEntry(topic, q, offset, entry);
                if (entry.MessageGroup is { } messageGroup) HoldMessageGroupOfRebuilt(topic, q, offset, messageGroup);
            }
            RebuiltFromMoves = RebuiltFromMoves with { Entries = RebuiltFromMoves.Entries + lostEntries.Count };
        }
        // The commit of the half whose body this move carries, remembered from a decision record that had no namespace
        // (written by a build before the midday session of 2026-12-07; the replay no longer had the half to take it
        // from): its namespace is its half's topic's. Since the afternoon session of 2026-12-07; before, it stayed not
        // known (answered to callers naming no namespace only, where the live broker answered its own namespace).
        if (committedHalf is { } ch) _txs.Decided.LearnNamespace(ch.TransactionId, TransactionResolution.Commit, ch.Topic);
        foreach (var (topicName, q, offset) in rec.QueueRefs)
        {
            if (!_topics.TryGetValue(topicName, out var topic) || q < 0 || q >= topic.Queues.Length) continue;
            var queue = topic.Queues[q];
            if (queue.TryGet(offset, out var entry) && entry.BodyAddress == previous)
            {
                entry.BodyAddress = address;
                entry.Size = size;
                queue.Set(offset, entry);
            }
        }
        // A released committed delayed transactional message is found by its entry's body (DelayIndex.NoteReleasedCommit).
        // Whether or not the entry is found moved already (replayed over a checkpoint that copied the queues after the
        // move): the release goes where the entry's body went, once, from wherever the checkpoint left it.
        if (rec.QueueRefs.Count > 0) _delayed.MoveReleasedCommit(previous, address);
    }

    /// <summary>
    /// A group holding <paramref name="offset"/> of a queue entry just re-created by a move (its delivery's record came
    /// earlier in the log and found no entry, so its lease names no message group) holds its FIFO message group, as live.
    /// Until review on 2026-12-07 it did not after such a replay, and the next message of the message group was
    /// delivered while this one was still held.
    /// </summary>
    private void HoldMessageGroupOfRebuilt(TopicState topic, int q, long offset, string messageGroup)
    {
        foreach (var group in _groups.Values)
        {
            if (!ReferenceEquals(group.Topic, topic) || q >= group.Queues.Length
                || !group.Queues[q].InFlight.TryGetValue(offset, out var flight) || flight.MessageGroup is not null) continue;
            flight.MessageGroup = messageGroup;
            group.BusyMessageGroups[messageGroup] = group.BusyMessageGroups.GetValueOrDefault(messageGroup) + 1;
        }
    }

    /// <summary>
    /// Replaying the log alone: what <paramref name="rec"/> names that the replay does not have, made from the record it
    /// carries, at <paramref name="address"/> (nothing is changed here). Throws <see cref="InvalidDataException"/> when the
    /// carried record does not fit what the move names.
    /// </summary>
    private void ReadLostState(long address, int size, BodyRelocatedRecord rec, out HalfState? lostHalf, out DelayedEntry? lostDelayed,
        out List<(TopicState, int, long, QueueEntry)>? lostEntries, out (string TransactionId, string Topic)? committedHalf)
    {
        lostHalf = null;
        lostDelayed = null;
        lostEntries = null;
        committedHalf = null;
        long previous = rec.PreviousAddress;
        bool halfLost = rec.HalfTransactionId is { } tx && !_txs.TryGet(tx, out _);
        bool delayedLost = rec.Delayed && !_delayed.Contains(previous) && !_delayed.Contains(address);
        List<int>? entriesLost = null;
        for (int i = 0; i < rec.QueueRefs.Count; i++)
        {
            var (topicName, q, offset) = rec.QueueRefs[i];
            if (_topics.TryGetValue(topicName, out var topic) && q >= 0 && q < topic.Queues.Length
                && topic.Queues[q].TryGet(offset, out var entry) && !entry.IsHole) continue; // there (moved below, or moved on since)
            if (q < 0 || offset < 0) throw new InvalidDataException($"moved queue entry {topicName}/{q}/{offset} is implausible");
            (entriesLost ??= []).Add(i);
        }
        if (!halfLost && !delayedLost && entriesLost is null) return;

        var moved = rec.State ?? new RelocatedState();
        if (!RecordHeader.TryOpen(rec.Original, out var kind, out var r, out var error))
            throw new InvalidDataException($"the record it carries is damaged: {error}");
        // The message the carried record holds: its topic, tag and group, for a delayed message or a queue entry.
        string topicOfBody;
        string? tag, messageGroup;
        if (kind == RecordKind.HalfStored)
        {
            var stored = HalfStoredRecord.Read(ref r);
            if (halfLost)
            {
                if (stored.TransactionId != rec.HalfTransactionId)
                    throw new InvalidDataException($"it moves half {rec.HalfTransactionId} and carries half {stored.TransactionId}");
                var half = NewHalf(address, size, stored);
                if (rec.State is { } known)
                {
                    half.CheckCount = known.CheckCount;
                    half.LastCheckAtMs = known.LastCheckAtMs;
                    half.NextCheckAtMs = known.NextCheckAtMs;
                    half.Parked = known.Parked;
                    half.ParkedAtMs = known.ParkedAtMs;
                    // The address it was stored at, carried (a move written before carried none: where it was moved from).
                    half.CheckToken = known.SentAt >= 0 ? known.SentAt : previous;
                }
                else half.CheckToken = previous;
                lostHalf = half;
            }
            ref readonly var m = ref stored.Message;
            (topicOfBody, tag, messageGroup) = (Intern(m.Topic)!, Intern(m.Tag), m.MessageGroup);
            // A committed half's body (a queue entry or a delayed message rebuilt from it): its decision's namespace.
            if (!halfLost) committedHalf = (stored.TransactionId, topicOfBody);
            // A committed delayed transactional message: no address sent at (no recall handle); its place in send order
            // is its commit's record (not known from a record written before the state was carried: the move's).
            if (delayedLost)
                lostDelayed = new DelayedEntry { BodyAddress = address, Size = size, Topic = topicOfBody, RequestedQueueId = stored.RequestedQueue, DeliverAtMs = m.DeliverAtMs,
                    Tag = tag, MessageGroup = messageGroup, SentAt = -1, SendOrder = moved.SendOrder >= 0 ? moved.SendOrder : previous };
        }
        else if (kind is RecordKind.MessageStored or RecordKind.RedrivenStored)
        {
            var stored = kind == RecordKind.MessageStored ? MessageStoredRecord.Read(ref r) : RedrivenStoredRecord.Read(ref r).Stored;
            if (halfLost) throw new InvalidDataException($"it moves half {rec.HalfTransactionId} and carries a {kind} record");
            ref readonly var m = ref stored.Message;
            (topicOfBody, tag, messageGroup) = (Intern(m.Topic)!, Intern(m.Tag), m.MessageGroup);
            // A delay message: the address it was sent at (its recall handle) and its place in send order, as carried; a
            // record written before they were carried moved it from there when it was moved once (the move's previous
            // address is its own record's), else from an earlier move's record (then a recall naming the address it was
            // sent at finds nothing).
            if (delayedLost)
            {
                long sentAt = rec.State is { } known ? known.SentAt : previous;
                lostDelayed = new DelayedEntry { BodyAddress = address, Size = size, Topic = topicOfBody, RequestedQueueId = stored.RequestedQueue, DeliverAtMs = m.DeliverAtMs,
                    Tag = tag, MessageGroup = messageGroup, SentAt = sentAt, SendOrder = moved.SendOrder >= 0 ? moved.SendOrder : sentAt >= 0 ? sentAt : previous,
                    IdHash = DelayedEntry.HashOfId(m.MessageId) };
            }
        }
        else throw new InvalidDataException($"it carries a {kind} record, not a message body");

        if (entriesLost is null) return;
        lostEntries = new(entriesLost.Count);
        foreach (int i in entriesLost)
        {
            var (topicName, q, offset) = rec.QueueRefs[i];
            var topic = ApplyTopicCreated(topicName, QueuesOfTopicMadeByReplay(topicName));
            GrowForRecordDuringReplay(topic, q, address);
            if (q >= topic.Queues.Length) throw new InvalidDataException($"queue {q} does not exist in topic '{topicName}'");
            var queue = topic.Queues[q];
            queue.TryGet(offset, out var hole); // a hole where a later record named the offset (a delivery, a dead letter)
            // When it entered its queue (the record that put it there, which the cut took or which found no half): as
            // carried; else the latest of the log's begin and the entry before it, so the entries of a queue stay in the
            // order they entered it (retention's search relies on it).
            long visibleAt = moved.VisibleAt is { } v && i < v.Length && v[i] >= 0 ? v[i] : Math.Max(RebuildMovedFrom, VisibleBefore(queue, offset));
            bool deadLetter = topicName.StartsWith(BrokerEngine.DeadLetterPrefix, StringComparison.Ordinal);
            lostEntries.Add((topic, q, offset, new QueueEntry
            {
                BodyAddress = address, Size = size, VisibleAt = hole.VisibleAt > 0 ? hole.VisibleAt : visibleAt, Tag = deadLetter ? hole.Tag ?? tag : tag,
                MessageGroup = deadLetter ? null : messageGroup, ForGroup = hole.ForGroup,
            }));
        }
    }

    // The VisibleAt of the nearest entry before offset that is not a hole (0 when there is none).
    private static long VisibleBefore(QueueState queue, long offset)
    {
        for (long o = Math.Min(offset, queue.NextOffset) - 1; o >= queue.BaseOffset; o--)
            if (queue.TryGet(o, out var e) && !e.IsHole) return e.VisibleAt;
        return 0;
    }
}
