using HalfMsg.Broker.Core.Delivery;
using HalfMsg.Broker.Core.Diagnostics;
using HalfMsg.Broker.Core.Model;
using HalfMsg.Broker.Core.Storage;
using Microsoft.Extensions.Logging;

namespace HalfMsg.Broker.Core;

/// <summary>How a pull by offset ended (RocketMQ's GetMessageStatus, folded to what a front-end must answer).</summary>
public enum PullStatus
{
    /// <summary>Messages found; <see cref="PullResult.NextBeginOffset"/> follows the last one returned.</summary>
    Found,
    /// <summary>Caught up: nothing (matching) between the offset and the queue's end, even after the long poll.</summary>
    NoNewMessage,
    /// <summary>The offset is outside [min, max]: the consumer must jump to <see cref="PullResult.NextBeginOffset"/>.</summary>
    OffsetMoved,
    /// <summary>The topic exists but has no queue of that id.</summary>
    NoSuchQueue,
    /// <summary>The topic does not exist (never created, or deleted).</summary>
    NoSuchTopic,
    /// <summary>The topic exists but cannot be read: <see cref="BrokerEngine.CheckMaxTopic"/>.</summary>
    NotReadable,
    /// <summary>The pull's allowance had no room for the first message found: nothing was read, and the same offset is
    /// pulled again later (<see cref="PullResult.NextBeginOffset"/> is that message's offset).</summary>
    NoRoom,
}

/// <summary>One message returned by a pull: the stored message plus its body's log address (RocketMQ's physical offset).</summary>
public readonly record struct PulledMessage(StoredMessage Message, long PhysicalOffset, int ReconsumeTimes);

public readonly record struct PullResult(PullStatus Status, IReadOnlyList<PulledMessage> Messages, long NextBeginOffset, long MinOffset, long MaxOffset);

/// <summary>What CONSUMER_SEND_MSG_BACK did with a failed message.</summary>
public readonly record struct SendBackResult(BrokerError Error, string? Topic, bool DeadLettered);

/// <summary>
/// The pull (offset) consumption model of RocketMQ 4 Remoting consumers, beside the lease model of
/// <see cref="ReceiveAsync"/>. A pull group reads queues by offset and commits its own offsets (durable records of kind
/// <see cref="RecordKind.ConsumerOffsetCommitted"/>); it shares no state with a lease group of the same name: the two models are
/// two independent cursors over the same queues.
/// </summary>
public sealed partial class BrokerEngine
{
    /// <summary>Checkpoint record of one committed pull-consumer offset (same fields as the log record).</summary>

    /// <summary>Property that carries a retried message's reconsume count (RocketMQ's stored reconsumeTimes field).</summary>
    public const string ReconsumeTimesProperty = "RECONSUME_TIME";
    /// <summary>Property that carries a retried message's original topic (RocketMQ's MessageConst.PROPERTY_RETRY_TOPIC).</summary>
    public const string RetryTopicProperty = "RETRY_TOPIC";
    public const string RetryPrefix = "%RETRY%";

    /// <summary>RocketMQ's default <c>messageDelayLevel</c>: "1s 5s 10s 30s 1m 2m 3m 4m 5m 6m 7m 8m 9m 10m 20m 30m 1h 2h".</summary>
    public static readonly TimeSpan[] DelayLevels =
    [
        TimeSpan.FromSeconds(1), TimeSpan.FromSeconds(5), TimeSpan.FromSeconds(10), TimeSpan.FromSeconds(30),
        TimeSpan.FromMinutes(1), TimeSpan.FromMinutes(2), TimeSpan.FromMinutes(3), TimeSpan.FromMinutes(4), TimeSpan.FromMinutes(5),
        TimeSpan.FromMinutes(6), TimeSpan.FromMinutes(7), TimeSpan.FromMinutes(8), TimeSpan.FromMinutes(9), TimeSpan.FromMinutes(10),
        TimeSpan.FromMinutes(20), TimeSpan.FromMinutes(30), TimeSpan.FromHours(1), TimeSpan.FromHours(2),
    ];

    /// <summary>Largest number of queue entries one pull scans for matching tags before answering.</summary>
    private const int MaxPullScan = 4096;

    /// <summary>The [min, max) offsets of a queue; false when the topic or queue does not exist.</summary>
    public bool TryGetQueueOffsets(string topic, int queueId, out long minOffset, out long maxOffset)
    {
        lock (_gate)
        {
            minOffset = maxOffset = 0;
            if (!_topics.TryGetValue(topic, out var t) || queueId < 0 || queueId >= t.Queues.Length) return false;
            minOffset = t.Queues[queueId].BaseOffset;
            maxOffset = t.Queues[queueId].NextOffset;
            return true;
        }
    }

    /// <summary>The number of queues of an existing topic (0 = unknown), without creating it.</summary>
    public int QueueCount(string topic)
    {
        lock (_gate) return _topics.TryGetValue(topic, out var t) ? t.Queues.Length : 0;
    }

    /// <summary>
    /// Reads up to <paramref name="maxMessages"/> visible (durable, committed) messages of one queue from
    /// <paramref name="offset"/>, skipping those whose tag <paramref name="filter"/> rejects. When nothing matches and
    /// <paramref name="longPoll"/> is positive, waits until a message becomes visible on the topic or the time is up.
    /// With <paramref name="sql"/> (an SQL92 subscription) the messages are read and those whose properties do not match
    /// are skipped as well: the next pull starts after them, as Apache's pull goes past what its filter rejects.
    /// <paramref name="allowance"/> (the caller's room for its answer, see <see cref="ReceiveRequest.Allowance"/>) is
    /// asked for each message's stored size as it is picked, before its body is read: the pull stops at the first
    /// message without room (the next pull starts there), and answers <see cref="PullStatus.NoRoom"/> at once, without
    /// a long poll, when even the first has none. Room taken for a message left out after all (unreadable, rejected by
    /// <paramref name="sql"/>) is given back.
    /// </summary>
    public async ValueTask<PullResult> PullAsync(string topic, int queueId, long offset, int maxMessages, TagFilter filter, TimeSpan longPoll,
        CancellationToken ct = default, SqlFilter? sql = null, IDeliveryAllowance? allowance = null)
    {
        long filteredOut = 0;
        if (UnreadableTopicReason(topic) is not null) return new(PullStatus.NotReadable, [], 0, 0, 0);
        maxMessages = Math.Clamp(maxMessages, 1, 1024);
        using var span = BrokerTracing.StartReceive(topic, "", "pull"); // trace hook (issue 12)
        var deadline = _time.GetTimestamp() + (long)(longPoll.TotalSeconds * _time.TimestampFrequency);
        while (true)
        {
            var picked = new List<(long Address, long Offset, int Size)>();
            Task signal;
            long min, max, next;
            bool scanBound = false, noRoom = false;
            lock (_gate)
            {
                if (!_topics.TryGetValue(topic, out var t)) return new(PullStatus.NoSuchTopic, [], 0, 0, 0);
                if (queueId < 0 || queueId >= t.Queues.Length) return new(PullStatus.NoSuchQueue, [], 0, 0, 0);
                var queue = t.Queues[queueId];
                signal = t.Signal;
                min = queue.BaseOffset;
                max = queue.NextOffset;
                if (offset < min || offset > max)
                    return new(PullStatus.OffsetMoved, [], offset < min ? min : max, min, max);
                long durable = _log.DurableUntil;
                next = offset;
                // The bodies go out in one frame, and the Java 4 client drops a connection whose frame exceeds 16 MiB
                // (then pulls the same offset again): stop at the receive's byte budget, one message always fits.
                long bytes = 0;
                for (int scanned = 0; next < max && picked.Count < maxMessages; scanned++)
                {
                    if (scanned == MaxPullScan) { scanBound = true; break; }
                    if (!queue.TryGet(next, out var entry) || entry.VisibleAt >= durable) break;
                    // A hole (damaged or expired position) is skipped like a filtered-out entry, and so is a dead
                    // letter re-driven for one lease group (QueueEntry.ForGroup): a pull group already had it.
                    if (!entry.IsHole && entry.ForGroup == 0 && filter.Matches(entry.Tag))
                    {
                        if (picked.Count > 0 && bytes >= _options.ReceiveByteBudget) break;
                        if (allowance is not null && !allowance.TryTake(entry.Size))
                        {
                            noRoom = true;
                            break;
                        }
                        picked.Add((entry.BodyAddress, next, entry.Size));
                        bytes += entry.Size;
                    }
                    next++;
                }
            }
            if (picked.Count > 0)
            {
                if (BetweenReadLockHoldsForTests is { } afterPicked) await afterPicked().ConfigureAwait(false);
                var messages = new List<PulledMessage>(picked.Count);
                foreach (var (picked0, off, size) in picked)
                {
                    long address = picked0;
                    var message = await ReadStoredMessageAsync(address, topic, queueId, off, ct, size).ConfigureAwait(false);
                    if (message is null)
                    {
                        // Retention may have moved the body since it was picked: read it where it lives now.
                        long now = BodyAddressOf(topic, queueId, off);
                        if (now >= 0 && now != address)
                        {
                            message = await ReadStoredMessageAsync(now, topic, queueId, off, ct).ConfigureAwait(false);
                            address = now;
                        }
                    }
                    if (message is null && IsGoneFromQueue(topic, queueId, off))
                    {
                        // A retention cut expired it after it was picked (a lagging consumer racing the cut): not damage.
                        // Until 2026-12-05 this was reported as damage, and /health stayed degraded for good (found by review).
                        _logger.LogDebug("Message {Topic}/{QueueId}/{Offset} expired behind a retention cut while a pull read it; skipped", topic, queueId, off);
                        allowance?.Return(size);
                        continue;
                    }
                    if (message is null)
                    {
                        // Its record fails its checksum (damage below the checkpoint, which replay does not read): it
                        // cannot be delivered now or later. Stopping before it stopped its queue for every pull group for
                        // good; go past it, loudly, as replay goes past a damaged record.
                        string reason = $"message {topic}/{queueId}/{off} at log address {address} could not be read (damaged); pulls go past it";
                        _logger.LogError("{Reason}", reason);
                        Health.ReportDegraded(reason);
                        allowance?.Return(size);
                        continue;
                    }
                    if (sql is not null && !sql.Matches(message))
                    {
                        filteredOut++;
                        // Its room goes back: a run of messages the filter rejects must not use up the answer's.
                        allowance?.Return(size);
                        continue;
                    }
                    messages.Add(new PulledMessage(message, address, ReconsumeTimesOf(message)));
                }
                if (messages.Count > 0)
                {
                    BrokerTracing.EndPull(span, messages);
                    return new(PullStatus.Found, messages, next, min, max);
                }
                // Every message picked was unreadable or filtered out: go on from after them at once. A long run of
                // messages the SQL filter rejects is answered after a bounded number, as a tag scan's is (MaxPullScan),
                // with the offset after them: the client goes on from there.
                offset = next;
                if (filteredOut >= MaxPullScan) return new(PullStatus.NoNewMessage, [], next, min, max);
                continue;
            }
            // Messages to read and no room for the first: the caller says to come back, rather than parking a pull
            // whose answer could hold nothing.
            if (noRoom) return new(PullStatus.NoRoom, [], next, min, max);
            var remaining = deadline - _time.GetTimestamp();
            // Filtered-out entries are skipped for good: the next pull starts after them. A scan stopped by its bound
            // with more entries behind answers at once, so the client goes on from there without a long poll between.
            if (remaining <= 0 || (scanBound && picked.Count == 0)) return new(PullStatus.NoNewMessage, [], next, min, max);
            offset = next;
            try
            {
                await signal.WaitAsync(TimeSpan.FromSeconds((double)remaining / _time.TimestampFrequency), _time, ct).ConfigureAwait(false);
            }
            catch (TimeoutException)
            {
            }
        }
    }

    /// <summary>
    /// Whether the entry at <paramref name="offset"/> is no longer readable from its queue for a reason that is not
    /// damage: a retention cut moved the queue's front past it (or made it a hole), or the topic was deleted.
    /// </summary>
    private bool IsGoneFromQueue(string topic, int queueId, long offset)
    {
        lock (_gate)
        {
            if (!_topics.TryGetValue(topic, out var t) || queueId < 0 || queueId >= t.Queues.Length) return true;
            var queue = t.Queues[queueId];
            return offset < queue.BaseOffset || (queue.TryGet(offset, out var entry) && entry.IsHole);
        }
    }

    private static int ReconsumeTimesOf(StoredMessage m)
        => m.Properties.TryGetValue(ReconsumeTimesProperty, out var s) && int.TryParse(s, out int n) ? n : 0;

    /// <summary>
    /// The first offset of the queue whose message entered it at or after <paramref name="timestampMs"/> (max offset if
    /// none): RocketMQ's search by store time, whose store times grow with the offset because every message is written
    /// to its queue when it enters it. Here a committed half enters its queue at its commit and a delayed message when it
    /// is due, long after they were stored, so the search goes by when each entry entered (<see cref="EntryTimeAsync"/>).
    /// </summary>
    public async ValueTask<long?> SearchOffsetAsync(string topic, int queueId, long timestampMs, CancellationToken ct = default)
    {
        long lo, hi;
        QueueState queue;
        lock (_gate)
        {
            if (!_topics.TryGetValue(topic, out var t) || queueId < 0 || queueId >= t.Queues.Length) return null;
            queue = t.Queues[queueId];
            lo = queue.BaseOffset;
            hi = queue.NextOffset;
        }
        if (BetweenReadLockHoldsForTests is { } between) await between().ConfigureAwait(false);
        // Binary search: entries enter a queue in offset order, so the times they entered grow with the offset.
        while (lo < hi)
        {
            long mid = lo + (hi - lo) / 2;
            QueueEntry entry;
            bool cut = false;
            lock (_gate)
            {
                if (!queue.TryGet(mid, out entry))
                {
                    // A retention cut moved the front past the probe (until 2026-12-05 the search then answered hi, past
                    // entries still there): what it expired entered before everything left, so search on from the new front.
                    if (mid >= queue.BaseOffset) return hi;
                    lo = queue.BaseOffset;
                    hi = Math.Max(hi, lo);
                    cut = true;
                }
            }
            if (cut) continue;
            long? entered = entry.IsHole ? null : await EntryTimeAsync(entry, topic, queueId, mid, ct).ConfigureAwait(false);
            if (entered is null || entered < timestampMs) lo = mid + 1; else hi = mid;
        }
        return lo;
    }

    /// <summary>
    /// When an entry entered its queue: the time of the commit that put a half there (its decision record), of the
    /// re-drive that put a dead letter back (its re-drive record), of the dead-lettering that put it into a dead-letter
    /// topic or of the release that put a delayed message into its queue (its release record), the due time of a delayed
    /// message whose release record has no time (written before 2026-12-07) or was cut, otherwise the message's store
    /// time. Null when neither record can be read.
    /// </summary>
    private async ValueTask<long?> EntryTimeAsync(QueueEntry entry, string topic, int queueId, long offset, CancellationToken ct)
    {
        if (entry.VisibleAt != entry.BodyAddress && entry.VisibleAt >= _log.BeginAddress
            && await _log.ReadAsync(entry.VisibleAt, ct).ConfigureAwait(false) is { } bytes
            && EnteredAt(bytes) is { } enteredAt)
            return enteredAt;
        var m = await ReadStoredMessageAsync(entry.BodyAddress, topic, queueId, offset, ct).ConfigureAwait(false);
        if (m is null) return null;
        // A delayed message enters when due; a committed half whose decision record was cut enters no earlier than stored.
        return Math.Max(m.StoreTimestampMs, m.DeliveryTimestampMs ?? 0);
    }

    /// <summary>
    /// The time in the record that put an entry into its queue, when it has one: a commit's decision, a re-drive or a
    /// dead-lettering (a dead letter keeps its body, so its store time is its first send's; until late on 2026-12-06 the
    /// search went by that, out of order with the queue, and skipped messages) or a delayed message's release (until
    /// 2026-12-07 the search went by its due time, earlier than a late release, and skipped messages stored between the
    /// two). Null otherwise, or when the record does not read.
    /// </summary>
    private static long? EnteredAt(byte[] bytes)
    {
        if (!RecordHeader.TryOpen(bytes, out var kind, out var r, out _)) return null;
        try
        {
            return kind switch
            {
                RecordKind.TxDecided => TxDecidedRecord.Read(ref r).AtMs,
                RecordKind.Redriven or RecordKind.RedrivenAcked => RedrivenRecord.Read(ref r).AtMs, // the head of both
                RecordKind.DeadLettered => DeadLetteredRecord.Read(ref r).AtMs, // null when written before it had a time
                RecordKind.QueueEntryAdded => QueueEntryAddedRecord.Read(ref r).AtMs, // a delay's release; null when written before it had a time
                _ => null,
            };
        }
        catch (InvalidDataException)
        {
            return null; // the caller falls back to the message's own times
        }
    }

    /// <summary>
    /// The stored size of the record at <paramref name="physicalOffset"/> (RocketMQ's commit log offset), read before the
    /// record itself so that a caller can reserve room for it first (VIEW_MESSAGE_BY_ID); -1 when there is no record
    /// there, or the length read there is not one a record can have (a client-supplied offset that is not a record
    /// boundary). Give it to <see cref="ReadMessageAtAsync"/> as its size hint: the record is then read in one read.
    /// </summary>
    public async ValueTask<int> StoredSizeAtAsync(long physicalOffset, CancellationToken ct = default)
    {
        if (physicalOffset < _log.BeginAddress || physicalOffset >= _log.DurableUntil) return -1;
        try
        {
            int length = await _log.ReadLengthAsync(physicalOffset, ct).ConfigureAwait(false);
            return length > 0 && length <= _log.MaxRecordSize ? length : -1;
        }
        catch (Exception ex) when (ex is not OperationCanceledException)
        {
            _logger.LogDebug(ex, "No record at {Address}", physicalOffset);
            return -1;
        }
    }

    /// <summary>The stored size of the message at a queue position (as a pull reserves it), so that a caller can reserve
    /// room for it before reading it (QUERY_MESSAGE); -1 when the position is empty, a hole, or cut by retention.</summary>
    public int StoredSizeOf(string topic, int queueId, long offset)
    {
        lock (_gate)
            return _topics.TryGetValue(topic, out var t) && queueId >= 0 && queueId < t.Queues.Length && t.Queues[queueId].TryGet(offset, out var e) && !e.IsHole
                ? e.Size : -1;
    }

    /// <summary>Reads the message whose body record is at <paramref name="physicalOffset"/> (RocketMQ's commit log offset); null when there is none.
    /// <paramref name="sizeHint"/>: the record's size when known (<see cref="StoredSizeAtAsync"/>).</summary>
    public async ValueTask<StoredMessage?> ReadMessageAtAsync(long physicalOffset, CancellationToken ct = default, int sizeHint = 0)
    {
        if (physicalOffset < _log.BeginAddress || physicalOffset >= _log.DurableUntil) return null;
        byte[]? bytes;
        try
        {
            bytes = await _log.ReadAsync(physicalOffset, sizeHint, ct).ConfigureAwait(false);
        }
        catch (Exception ex) when (ex is not OperationCanceledException)
        {
            // A client-supplied offset that is not a record boundary.
            _logger.LogDebug(ex, "No record at {Address}", physicalOffset);
            return null;
        }
        // A body retention moved to the tail is wrapped in its BodyRelocated record, and that is the address a pull
        // hands out for it: until 2026-12-05 a send-back (or a look-up by offset) of such a message answered "no
        // message" (found by review).
        if (bytes is null || !RecordHeader.TryOpen(bytes, out var kind, out _, out _)
            || kind is not (RecordKind.MessageStored or RecordKind.RedrivenStored or RecordKind.HalfStored or RecordKind.BodyRelocated)) return null;
        try
        {
            var probe = DecodeStoredMessage(bytes, "", -1, -1, bytes); // no body copy for the probe either
            if (probe is null || !IsKnownCommittedIfHalf(probe, physicalOffset) || IsRecalledBody(probe)) return null;
            return DecodeStoredMessage(bytes, probe.OriginalTopic ?? probe.Topic, -1, -1, bytes);
        }
        catch (InvalidDataException)
        {
            return null;
        }
    }

    /// <summary>
    /// A half message's body is read by offset only once its transaction is known to be committed: pending, rolled back,
    /// or decided so long ago that the decision is forgotten, it is "no message". Until 2026-12-05 a send-back
    /// (CONSUMER_SEND_MSG_BACK) of a half's address copied a pending or rolled-back half into the group's retry or
    /// dead-letter topic, readable there and re-drivable onto its topic, and VIEW_MESSAGE_BY_ID showed its body (found
    /// by review). A committed transactional message whose decision is forgotten (after DecisionRetention) cannot be
    /// sent back by offset either: the Java client then stores the retry itself.
    /// <para>The commit must be of THIS body (at <paramref name="address"/>): an id is taken again once its decision is
    /// forgotten (HalfIndex.Exists), and until 2026-12-07 a rolled-back half's body became readable, and could be sent
    /// back into the group's retry or dead-letter topic and delivered, once a new half of its id was committed (found by
    /// review). The commit's queue entry names the body it delivers, kept where retention moves it, from a checkpoint
    /// and by replay alike; a delayed commit's body is in the delay index until its time. Once released, a delayed
    /// transactional message is found by its release's record (since 2026-12-07; before, it answered "no message"),
    /// through the body the release delivered, not through the commit's decision: that is forgotten after
    /// DecisionRetention or past MaxRememberedDecisions, often before a delay ends (until later on 2026-12-07 such a
    /// message read as no message from its delivery on; found by review).</para>
    /// </summary>
    private bool IsKnownCommittedIfHalf(StoredMessage message, long address)
    {
        if (message.Kind != MessageKind.Transaction || message.TransactionId is not { } transactionId) return true;
        lock (_gate)
        {
            // A released committed delayed transactional message: the entry its release put into a queue delivers this
            // body (its id may be pending again since, or its decision forgotten: the entry decides).
            if (_delayed.TryGetReleasedCommit(address, out long releasedAt))
                return _topics.TryGetValue(message.OriginalTopic ?? message.Topic, out var released) && CommitEntryBodyIs(released, releasedAt, address);
            if (_txs.TryGet(transactionId, out _)) return false;
            if (!_txs.Decided.TryGet(transactionId, out var resolution, out long decidedAt) || resolution != TransactionResolution.Commit) return false;
            if (_delayed.Contains(address)) return true;
            return _topics.TryGetValue(message.OriginalTopic ?? message.Topic, out var topic) && CommitEntryBodyIs(topic, decidedAt, address);
        }
    }

    /// <summary>
    /// Whether <paramref name="message"/> is the body of a recalled delay message, or of a copy dropped because its
    /// recall was remembered: never delivered, so "no message" to a read or send-back by offset, as a rolled-back half's
    /// body is, before its delivery time and after it, until retention cuts it (DelayIndex.NoteRecalledBody). Until
    /// 2026-12-07 a recall was remembered only until its delivery time: past it, a send-back of the producer's
    /// offsetMsgId copied the recalled message into the group's retry topic, and it was delivered from there (found by
    /// review). Only a message stored to wait for its time (its delivery time after its store time) can be one.
    /// </summary>
    private bool IsRecalledBody(StoredMessage message)
    {
        if (message.Kind == MessageKind.Transaction || message.DeliveryTimestampMs is not { } dueMs || dueMs <= message.StoreTimestampMs) return false;
        lock (_gate) return _delayed.IsRecalledMessage(message.OriginalTopic ?? message.Topic, dueMs, message.MessageId);
    }

    /// <summary>
    /// Whether the entry the commit recorded at <paramref name="decidedAt"/> put into a queue of <paramref name="topic"/>
    /// (the one whose <see cref="QueueEntry.VisibleAt"/> is that record's address) has its body at
    /// <paramref name="address"/>. Entries enter a queue in log order, so each queue is searched by halving, as
    /// RecordApplier.CommitIsApplied and the retention planner rely on: O(queues · log entries). Caller holds the lock.
    /// </summary>
    private static bool CommitEntryBodyIs(TopicState topic, long decidedAt, long address)
    {
        foreach (var queue in topic.Queues)
        {
            var entries = queue.Entries;
            int lo = 0, hi = entries.Count;
            while (lo < hi)
            {
                int mid = (lo + hi) >>> 1;
                // Holes carry no position in the log: taken as older, then stepped back over below.
                if (entries[mid].IsHole || entries[mid].VisibleAt < decidedAt) lo = mid + 1; else hi = mid;
            }
            while (lo > 0 && (entries[lo - 1].IsHole || entries[lo - 1].VisibleAt >= decidedAt)) lo--;
            for (int i = lo; i < entries.Count; i++)
            {
                var entry = entries[i];
                if (entry.IsHole) continue;
                if (entry.VisibleAt != decidedAt) break;
                return entry.BodyAddress == address;
            }
        }
        return false;
    }

    // ------------------------------------------------------------ consumer offsets

    /// <summary>The committed offset of a pull group on a queue, or null when the group never committed one.</summary>
    public long? QueryConsumerOffset(string group, string topic, int queueId)
    {
        lock (_gate) return _consumerOffsets.TryGet(group, topic, queueId, out var o) ? o : null;
    }

    /// <summary>
    /// Why a pull group may not pull a topic: it keeps no progress there yet and one more group would exceed
    /// <see cref="CoreOptions.MaxConsumerGroups"/>; else null. Takes the lock only when the broker is at the limit.
    /// </summary>
    public BrokerError? PullGroupRefusal(string group, string topic)
    {
        if (CountedGroups < _options.MaxConsumerGroups) return null; // a racy pre-check; exact below
        lock (_gate) return PullGroupLimitRefusal(group, topic);
    }

    /// <summary>
    /// The one rule for a pull group at <see cref="CoreOptions.MaxConsumerGroups"/>, for its pull and its offset commit
    /// alike: a group known on the topic (with committed offsets there, or receiving from it) goes on. Until 2026-12-06
    /// the commit did not count a group receiving from the topic, which the pull let pull: its progress was refused
    /// (UpdateOffset FORBIDDEN, UPDATE_CONSUMER_OFFSET refused) and it read everything again (found by review). Its
    /// offsets then count as one more group on the topic, at most one per group already there. Caller holds the lock.
    /// </summary>
    private BrokerError? PullGroupLimitRefusal(string group, string topic)
        => _consumerOffsets.Has(group, topic) || _groups.ContainsKey((group, topic)) ? null : GroupLimitReached(group, topic);

    /// <summary>
    /// Why <paramref name="group"/> cannot name a pull group: not a valid name, or a re-drive cursor's (reserved); else
    /// null. <see cref="CommitConsumerOffsetAsync"/> refuses by it, and a front end asks before a pull, so that a group
    /// whose offsets could never be committed is told so at once.
    /// </summary>
    public static BrokerError? PullGroupNameRefusal(string group)
        => IsValidName(group, 255) ? ReservedGroupRefusal(group) : new BrokerError(BrokerStatus.IllegalConsumerGroup, $"consumer group '{group}' is not a valid name");

    /// <summary>Commits a pull group's offset for a queue. Durable like every other state change; survives kill -9.</summary>
    public async ValueTask<BrokerError> CommitConsumerOffsetAsync(string group, string topic, int queueId, long offset, CancellationToken ct = default)
    {
        if (PullGroupNameRefusal(group) is { } badName) return badName; // invalid, or a re-drive cursor's (GroupLimitReached)
        if (offset < 0 || queueId < 0) return new(BrokerStatus.BadRequest, "offset and queue id must not be negative");
        await _log.WaitForRoomAsync(ct).ConfigureAwait(false);
        long address;
        lock (_gate)
        {
            if (!_topics.TryGetValue(topic, out var t) || queueId >= t.Queues.Length)
                return new(BrokerStatus.TopicNotFound, $"topic '{topic}' queue {queueId} does not exist");
            // A repeat (a client's retry, or its periodic commit) answers once the record that set the offset is durable:
            // until 2026-12-05 it answered at once, so a retry racing the first commit could be acknowledged and lost.
            if (_consumerOffsets.TryGet(group, topic, queueId, out var current) && current == offset) address = AppendedSoFar;
            else
            {
                if (PullGroupLimitRefusal(group, topic) is { } full) return full;
                new ConsumerOffsetCommittedRecord(group, topic, queueId, offset).Write(_writer);
                address = AppendAndApply();
            }
        }
        await _log.WaitDurableAsync(address, ct).ConfigureAwait(false);
        return BrokerError.None;
    }

    /// <summary>
    /// A pull group's committed offsets per topic and queue, each with its queue's max offset (GET_CONSUME_STATS): one
    /// pass over the committed offsets, where asking <see cref="ConsumerOffsetsOf"/> for every topic made one per topic.
    /// Queues that no longer exist are left out.
    /// </summary>
    public IReadOnlyList<(string Topic, int QueueId, long ConsumerOffset, long MaxOffset)> ConsumerProgressOf(string group)
    {
        lock (_gate)
        {
            var list = new List<(string, int, long, long)>();
            foreach (var (topic, offsets) in _consumerOffsets.OfGroup(group).OrderBy(t => t.Key, StringComparer.Ordinal))
            {
                if (!_topics.TryGetValue(topic, out var t)) continue;
                foreach (var (queueId, consumed) in offsets.OrderBy(o => o.Key))
                    if (queueId >= 0 && queueId < t.Queues.Length) list.Add((topic, queueId, consumed, t.Queues[queueId].NextOffset));
            }
            return list;
        }
    }

    /// <summary>Groups with committed pull offsets on a topic, with their offsets per queue.</summary>
    public IReadOnlyDictionary<string, IReadOnlyDictionary<int, long>> ConsumerOffsetsOf(string topic)
    {
        lock (_gate)
        {
            return _consumerOffsets.OfTopic(topic);
        }
    }

    // ------------------------------------------------------------ retry and dead letter

    /// <summary>
    /// Whether the delay message stored at <paramref name="address"/> still waits for its time in the delay index, or was
    /// recalled (remembered until its time). The address is its body's now, or the one it was sent at (what its producer
    /// was answered, its offsetMsgId) when retention has moved its body since: until 2026-12-07 only the body's address
    /// was asked, and a waiting message whose body was moved was copied into the retry topic by its send address,
    /// delivered before its time and again at it (found by review).
    /// </summary>
    private bool IsUndeliveredDelayMessage(long address, string topic, long dueMs, string messageId)
    {
        lock (_gate) return _delayed.Contains(address) || _delayed.TryGetSentAt(address, out _) || _delayed.IsRecalled(topic, dueMs, messageId);
    }

    /// <summary>
    /// RocketMQ's CONSUMER_SEND_MSG_BACK: the failed message (found by its physical offset) is stored again in
    /// <c>%RETRY%&lt;group&gt;</c>, due after delay level <c>3 + reconsumeTimes</c> (10 s, 30 s, 1 min, ...) unless the
    /// consumer asked for a level, with its reconsume count + 1; once the count reaches <paramref name="maxReconsumeTimes"/>
    /// (or the level is negative) it goes to <c>%DLQ%&lt;group&gt;</c> instead.
    /// </summary>
    public async ValueTask<SendBackResult> SendBackAsync(string group, long physicalOffset, int delayLevel, int maxReconsumeTimes, string? originTopic, CancellationToken ct = default)
    {
        if (!IsValidName(group, 255)) return new(new(BrokerStatus.IllegalConsumerGroup, $"consumer group '{group}' is not a valid name"), null, false);
        if (RetryTopicRefusal(group) is { } tooLong) return new(tooLong, null, false);
        var original = await ReadMessageAtAsync(physicalOffset, ct).ConfigureAwait(false);
        if (original is null)
            return new(new(BrokerStatus.BadRequest, $"no message at commit log offset {physicalOffset} (none there, a transaction not committed, or a recalled delay message)"), null, false);
        string sourceTopic = original.OriginalTopic ?? original.Topic;
        // A delay message still waiting for its time, or recalled, was never delivered: no consumer can have failed it.
        // Until late on 2026-12-06 a send-back of its address copied it into the retry topic, delivered at the retry's
        // time rather than its own, recalled or not (found by review; as the half's case above).
        if (original.DeliveryTimestampMs is { } dueMs && IsUndeliveredDelayMessage(physicalOffset, sourceTopic, dueMs, original.MessageId))
            return new(new(BrokerStatus.BadRequest, $"the message at commit log offset {physicalOffset} is a delay message not delivered yet (waiting for its time, or recalled)"), null, false);
        if (originTopic is not null && originTopic != sourceTopic && sourceTopic != RetryPrefix + group)
            return new(new(BrokerStatus.BadRequest, $"the message at {physicalOffset} belongs to '{sourceTopic}', not '{originTopic}'"), null, false);

        int reconsumed = ReconsumeTimesOf(original);
        var props = new Dictionary<string, string>(original.Properties);
        if (!props.ContainsKey(RetryTopicProperty)) props[RetryTopicProperty] = sourceTopic;
        if (!props.ContainsKey("ORIGIN_MESSAGE_ID")) props["ORIGIN_MESSAGE_ID"] = original.MessageId;
        props[ReconsumeTimesProperty] = (reconsumed + 1).ToString(System.Globalization.CultureInfo.InvariantCulture);
        bool dead = delayLevel < 0 || reconsumed >= maxReconsumeTimes;
        int level = delayLevel > 0 ? delayLevel : 3 + reconsumed;
        level = Math.Clamp(level, 1, DelayLevels.Length);
        string target = dead ? DeadLetterPrefix + group : RetryPrefix + group;
        var draft = new MessageDraft
        {
            Topic = target, MessageId = original.MessageId, Tag = original.Tag, Keys = original.Keys, Properties = props, Body = original.Body,
            BornTimestampMs = original.BornTimestampMs, BornHost = original.BornHost, Flag = original.Flag,
            DeliveryTimestampMs = dead ? null : NowMs + (long)DelayLevels[level - 1].TotalMilliseconds,
        };
        var sent = await StoreInternalAsync(draft, ct).ConfigureAwait(false);
        if (!sent.IsOk) return new(sent.Error, target, dead);
        if (dead)
        {
            Metrics.DeadLettered++;
            _logger.LogInformation("Message {MessageId} of {Topic} moved to {Dlq} after {Times} reconsumes", original.MessageId, sourceTopic, target, reconsumed);
        }
        return new(BrokerError.None, target, dead);
    }

    /// <summary>Longest consumer group whose <c>%RETRY%&lt;group&gt;</c> topic name is valid (127 characters).</summary>
    public const int MaxRetryGroupLength = 127 - 7; // RetryPrefix.Length

    /// <summary>
    /// Why a group can have no retry (or dead-letter) topic: <c>%RETRY%&lt;group&gt;</c> would be longer than a topic name
    /// may be. Until 2026-12-05 a send-back for a group of 121-255 characters made such topics (found by review).
    /// </summary>
    private static BrokerError? RetryTopicRefusal(string group)
        => group.Length <= MaxRetryGroupLength ? null
            : new BrokerError(BrokerStatus.IllegalConsumerGroup, $"consumer group '{group}' is {group.Length} characters long: its retry topic " +
                $"{RetryPrefix}<group> would exceed 127 characters, so messages cannot be sent back for it; use a group of at most {MaxRetryGroupLength} characters");

    /// <summary>Stores a copy of <paramref name="msg"/> in <c>%DLQ%&lt;group&gt;</c> (a retry-topic send past its maximum, as RocketMQ redirects it).</summary>
    public ValueTask<SendResult> SendToDeadLetterAsync(string group, MessageDraft msg, CancellationToken ct = default)
    {
        if (!IsValidName(group, 255)) return ValueTask.FromResult(new SendResult(new(BrokerStatus.IllegalConsumerGroup, $"consumer group '{group}' is not a valid name"), msg.MessageId, -1, -1));
        if (RetryTopicRefusal(group) is { } tooLong) return ValueTask.FromResult(new SendResult(tooLong, msg.MessageId, -1, -1));
        Metrics.DeadLettered++;
        return StoreInternalAsync(new MessageDraft
        {
            Topic = DeadLetterPrefix + group, MessageId = msg.MessageId, Tag = msg.Tag, Keys = msg.Keys, Properties = msg.Properties, Body = msg.Body,
            BornTimestampMs = msg.BornTimestampMs, BornHost = msg.BornHost, Flag = msg.Flag,
        }, ct);
    }

    /// <summary>
    /// As <see cref="SendAsync"/>, but also into broker-owned topics (<c>%DLQ%</c>, <c>%RETRY%</c>) that producers cannot
    /// name; dead-letter topics have one queue, like every system topic. For a re-drive, <paramref name="redrive"/>, in
    /// the same hold of the lock, may refuse the store before anything is written, or else names the acknowledgements
    /// the message's record carries (<see cref="RedrivenStoredRecord"/>).
    /// </summary>
    private async ValueTask<SendResult> StoreInternalAsync(MessageDraft msg, CancellationToken ct, Func<(BrokerError Error, RedriveAcks Acks)>? redrive = null)
    {
        long address;
        int queueId;
        long offset;
        using (await _log.ReserveRoomAsync(RoomFor(msg), ct).ConfigureAwait(false))
        {
            lock (_gate)
            {
                long now = NowMs;
                var err = ValidateDraft(msg, now);
                if (!err.IsOk) return new SendResult(err, msg.MessageId, -1, -1);
                RedriveAcks? acks = null;
                if (redrive is not null)
                {
                    var (refused, redriveAcks) = redrive();
                    if (!refused.IsOk) return new SendResult(refused, msg.MessageId, -1, -1);
                    acks = redriveAcks;
                }
                err = TryGetOrCreate(msg.Topic, out var topic);
                if (!err.IsOk) return new SendResult(err, msg.MessageId, -1, -1);
                bool delayed = msg.DeliveryTimestampMs is long at && at > now;
                queueId = delayed ? -1 : PickQueue(topic, -1, null);
                offset = delayed ? -1 : topic.Queues[queueId].NextOffset;
                var kind = delayed ? MessageKind.Delay : MessageKind.Normal;
                // A re-drive's acknowledgements in the message's own record: as records after it, a crash could keep the
                // message without them, and the next re-drive stored it a second time.
                if (acks is { } a) RedrivenStoredRecord.Write(_writer, a, queueId, offset, kind, -1, msg, now);
                else MessageStoredRecord.Write(_writer, queueId, offset, kind, -1, msg, now);
                address = AppendAndApply();
                Metrics.MessagesStored++;
                // MessageIndex hook, as StoreMessage's: send-backs, dead letters and re-drives into a retry topic are
                // found at their new place, and a delayed one (queue -1) by its body's address at its release. Until
                // 2026-12-06 this path told the index nothing (only the re-drive did, after the await and without the
                // address): live, a sent-back message stayed at its first place, "stored", and only the index rebuilt
                // after a restart showed it in %RETRY% (found by review). Not counted as bytes in (see OnStored).
                MessageIndex.OnStored(msg, queueId, offset, now, address, bytesIn: false);
                if (acks is { } done) Acknowledged(done.Cursor, done.DeadLetterTopic, done.QueueId, done.Offset);
            }
        }
        await _log.WaitDurableAsync(address, ct).ConfigureAwait(false);
        return new SendResult(BrokerError.None, msg.MessageId, queueId, offset);
    }

    /// <summary>The log address of the body behind a queue entry (RocketMQ's physical offset, for the offset msg id); -1 if none.</summary>
    public long BodyAddressOf(string topic, int queueId, long offset)
    {
        lock (_gate)
            return _topics.TryGetValue(topic, out var t) && queueId >= 0 && queueId < t.Queues.Length && t.Queues[queueId].TryGet(offset, out var e) ? e.BodyAddress : -1;
    }

    // ------------------------------------------------------------ topic deletion

    /// <summary>
    /// Deletes a topic (mqadmin deleteTopic): its queue index, the lease groups and pull offsets on it, and its delayed
    /// messages. Bodies stay in the log until retention cuts them. Pending halves of the topic stay pending; committing
    /// one creates the topic again (as a send would). System topics cannot be deleted. Waits while a checkpoint is being
    /// captured or a retention cut runs (cancellable: nothing is written then); the answer is the same either way.
    /// </summary>
    public async ValueTask<BrokerError> DeleteTopicAsync(string topic, CancellationToken ct = default)
    {
        if (IsSystemTopic(topic)) return new(BrokerStatus.IllegalTopic, $"topic '{topic}' is a system topic");
        long address;
        bool found;
        // Never during a checkpoint's capture: replay of the delete over a copy taken after it wipes what came after it
        // too, and not every later record can rebuild that. A half pending before the delete and committed after it
        // (which creates the topic again) was copied as decided, with its entry in the queues; replay of the delete
        // dropped the entry and replay of the commit found no half: until 2026-12-06 the acknowledged commit was lost
        // after a kill -9 (found by review). A delete is a rare operator action: it waits for a running capture to end.
        // The wait for log room comes first, outside the barrier: on a full disk the room comes back only after a
        // retention cut, which needs the checkpoint lock the barrier holds.
        await _log.WaitForRoomAsync(ct).ConfigureAwait(false);
        using (await HoldOffCapturesAsync(ct).ConfigureAwait(false))
        {
            lock (_gate)
            {
                // Not found may be the work of a delete whose record is not durable yet (mqadmin takes TOPIC_NOT_EXIST as
                // done): that answer waits for it too.
                found = _topics.ContainsKey(topic);
                if (found)
                {
                    new TopicDeletedRecord(topic).Write(_writer);
                    address = AppendAndApply();
                }
                else address = AppendedSoFar;
            }
        }
        await _log.WaitDurableAsync(address, ct).ConfigureAwait(false);
        if (!found) return new(BrokerStatus.TopicNotFound, $"topic '{topic}' does not exist");
        _logger.LogInformation("Topic {Topic} deleted", topic);
        return BrokerError.None;
    }

}
