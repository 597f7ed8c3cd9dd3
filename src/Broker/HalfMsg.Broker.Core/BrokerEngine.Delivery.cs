using System.Diagnostics;
using HalfMsg.Broker.Core.Delivery;
using HalfMsg.Broker.Core.Diagnostics;
using HalfMsg.Broker.Core.Model;
using HalfMsg.Broker.Core.Storage;
using Microsoft.Extensions.Logging;

namespace HalfMsg.Broker.Core;

public sealed partial class BrokerEngine
{
    /// <summary>
    /// Most entries (messages, halves, acks) a batch call stores under one hold of the engine lock. A request may carry
    /// thousands, and every other send, ack, receive and checkpoint waits while the lock is held; a batch takes it again
    /// for each further chunk (and still waits once, for the last). 256 small messages take well under a millisecond.
    /// </summary>
    public const int MaxEntriesPerLockHold = 256;

    /// <summary>
    /// The [start, end) chunks of a batch of <paramref name="count"/> entries, at most <see cref="MaxEntriesPerLockHold"/>
    /// each, for the caller to store under one hold of the lock apiece (no allocation; the test hook runs between two).
    /// </summary>
    private LockChunkList LockChunks(int count) => new(this, count);

    private readonly struct LockChunkList(BrokerEngine engine, int count)
    {
        public Enumerator GetEnumerator() => new(engine, count);

        public struct Enumerator(BrokerEngine engine, int count)
        {
            private int _start = -MaxEntriesPerLockHold;

            public readonly (int Start, int End) Current => (_start, Math.Min(count, _start + MaxEntriesPerLockHold));

            public bool MoveNext()
            {
                _start += MaxEntriesPerLockHold;
                if (_start >= count) return false;
                if (_start > 0) engine.BetweenLockHoldsForTests?.Invoke();
                return true;
            }
        }
    }

    /// <summary>What a message's record holds of the log's room until it is appended (<see cref="RecordLog.ReserveRoomAsync"/>):
    /// its body and a typical header. A larger header is not counted; the slack beyond the room covers it.</summary>
    private static long RoomFor(MessageDraft m) => m.Body.Length + RoomForHeader;

    /// <summary>What a reservation counts for a record's header beside its body.</summary>
    private const long RoomForHeader = 256;

    private static long RoomFor(IReadOnlyList<MessageDraft> messages)
    {
        long room = 0;
        for (int i = 0; i < messages.Count; i++) room += RoomFor(messages[i]);
        return room;
    }

    /// <summary>Stores a normal, FIFO or delay message. Completes once it is durable (flush sync).</summary>
    public async ValueTask<SendResult> SendAsync(MessageDraft msg, CancellationToken ct = default)
    {
        using var span = BrokerTracing.StartSend(msg); // trace hook (issue 12)
        long address;
        SendResult result;
        using (await _log.ReserveRoomAsync(RoomFor(msg), ct).ConfigureAwait(false))
        {
            lock (_gate) result = StoreMessage(msg, out address);
        }
        if (result.IsOk) await _log.WaitDurableAsync(address, ct).ConfigureAwait(false);
        BrokerTracing.EndSend(span, result.Error);
        return result;
    }

    /// <summary>A send span for each message (null where tracing is off for it: all null, no array); siblings, not
    /// nested: Activity.Current is restored after each.</summary>
    private static Activity?[]? StartSendSpans(IReadOnlyList<MessageDraft> messages)
    {
        Activity? current = Activity.Current;
        Activity?[]? spans = null;
        for (int i = 0; i < messages.Count; i++)
        {
            if (BrokerTracing.StartSend(messages[i]) is not { } span) continue;
            (spans ??= new Activity?[messages.Count])[i] = span;
            Activity.Current = current;
        }
        return spans;
    }

    /// <summary>
    /// Stores a batch of messages (a bounded number per lock hold) and waits once, for the highest address: a batch costs one
    /// group commit, not one per message. Each message gets its own result; one bad message does not fail the others.
    /// </summary>
    public async ValueTask<SendResult[]> SendBatchAsync(IReadOnlyList<MessageDraft> messages, CancellationToken ct = default)
    {
        // One send span per message, as SendAsync has.
        Activity?[]? spans = StartSendSpans(messages);
        var results = new SendResult[messages.Count];
        try
        {
            long highest = -1;
            using (await _log.ReserveRoomAsync(RoomFor(messages), ct).ConfigureAwait(false))
            {
                foreach (var (start, end) in LockChunks(messages.Count))
                {
                    lock (_gate)
                    {
                        for (int i = start; i < end; i++)
                        {
                            results[i] = StoreMessage(messages[i], out var address);
                            if (results[i].IsOk) highest = Math.Max(highest, address);
                        }
                    }
                }
            }
            if (highest >= 0) await _log.WaitDurableAsync(highest, ct).ConfigureAwait(false);
            if (spans is not null) for (int i = 0; i < spans.Length; i++) BrokerTracing.EndSend(spans[i], results[i].Error);
        }
        finally
        {
            if (spans is not null) foreach (var span in spans) span?.Dispose();
        }
        return results;
    }

    /// <summary>
    /// RocketMQ's batch send: the messages are validated as a whole (one bad message refuses the batch and nothing is
    /// stored), then stored one after another on ONE queue (the first message's choice), at most
    /// <see cref="MaxEntriesPerLockHold"/> per hold of the lock, and the call waits once, for the last of them. Returns
    /// one result per message, or the first error for all of them. A batch longer than one hold stays in order on its
    /// queue, but other sends to that queue may land between its chunks.
    /// </summary>
    /// <remarks>
    /// The answer has no status per message (Remoting's SEND_BATCH_MESSAGE), and a producer retries a refused batch whole:
    /// a refusal must mean nothing of the batch is stored. So only the first message can be refused while storing (the
    /// disk, its topic, the queue it names); from then on the batch is finished (the disk's reserve is for finishing
    /// accepted work), or, when its topic was deleted between two holds, refused with its first part gone with the topic.
    /// </remarks>
    public async ValueTask<(BrokerError Error, SendResult[] Results)> SendToOneQueueAsync(IReadOnlyList<MessageDraft> messages, CancellationToken ct = default)
    {
        if (messages.Count == 0) return (new(BrokerStatus.BadRequest, "the batch is empty"), []);
        // One send span per message, as SendBatchAsync has. Until 2026-12-06 this path had none, so a Remoting producer's
        // traceparent ended at a batch (review).
        Activity?[]? spans = StartSendSpans(messages);
        try
        {
            var (error, results) = await StoreOnOneQueueAsync(messages, ct).ConfigureAwait(false);
            if (spans is not null) foreach (var span in spans) BrokerTracing.EndSend(span, error);
            return (error, results);
        }
        finally
        {
            if (spans is not null) foreach (var span in spans) span?.Dispose();
        }
    }

    private async ValueTask<(BrokerError Error, SendResult[] Results)> StoreOnOneQueueAsync(IReadOnlyList<MessageDraft> messages, CancellationToken ct)
    {
        var results = new SendResult[messages.Count];
        long highest = -1;
        long now = NowMs;
        foreach (var m in messages)
        {
            var err = ValidateDraft(m, now);
            if (err.IsOk && m.Topic != messages[0].Topic) err = new(BrokerStatus.BadRequest, "every message of a batch must have the same topic");
            if (err.IsOk && m.DeliveryTimestampMs is long at && at > now) err = new(BrokerStatus.BadRequest, "batch messages cannot be delayed");
            if (!err.IsOk) return (err, []);
        }
        TopicState topic = null!;
        int queueId = -1, storedBefore = 0;
        BrokerError? gone = null;
        using (await _log.ReserveRoomAsync(RoomFor(messages), ct).ConfigureAwait(false))
        {
            foreach (var (start, end) in LockChunks(messages.Count))
            {
                lock (_gate)
                {
                    int i = start;
                    if (i == 0)
                    {
                        // Checked again as it is stored: nothing of the batch is stored yet, so a refusal here (the disk
                        // filled since, the topic cannot be created, the queue it names) is still the whole batch's.
                        results[0] = StoreMessage(messages[0], out highest, out topic);
                        if (!results[0].IsOk) return (results[0].Error, []);
                        queueId = results[0].QueueId;
                        i = 1;
                    }
                    else if (!_topics.TryGetValue(topic.Name, out var still) || !ReferenceEquals(still, topic))
                    {
                        // Deleted between two holds (and maybe made again, with other queues, by a send or an operator).
                        // The part stored went with the deleted topic, and the rest must not go to another topic of the
                        // same name: the batch is refused, and nothing of it is in the topic, so a retry duplicates
                        // nothing. Until 2026-12-06 the rest went on to a new topic: an IndexOutOfRangeException when it
                        // had fewer queues, else an OK for a batch whose first part was gone (review of batch sends).
                        storedBefore = start;
                        gone = new(BrokerStatus.TopicNotFound, $"topic '{topic.Name}' was deleted while the batch was being stored: "
                            + $"its first {start} messages went with the topic and the other {messages.Count - start} were not stored, "
                            + "so nothing of the batch is in the topic; send the batch again");
                        // The answer rests on the delete, whose record may still be on its way to the disk: a crash
                        // before it is durable would bring the first part back, and the retry would duplicate it.
                        highest = AppendedSoFar;
                        break;
                    }
                    // The rest is stored without checking again: the checks up front covered every message, and a disk
                    // that fills now must not refuse a batch part of which is stored (until 2026-12-06 it did, and the
                    // producer's retry of the whole batch duplicated that part; review of batch sends).
                    for (; i < end; i++) results[i] = AppendMessage(topic, queueId, messages[i], NowMs, out highest);
                }
            }
        }
        await _log.WaitDurableAsync(highest, ct).ConfigureAwait(false);
        if (gone is { } refused)
        {
            _logger.LogWarning("A one-queue batch of {Count} messages to topic {Topic} was refused: the topic was deleted after its first {Stored} were stored", messages.Count, topic.Name, storedBefore);
            return (refused, []);
        }
        return (BrokerError.None, results);
    }

    /// <summary>Validates and appends one message. Caller holds the lock.</summary>
    private SendResult StoreMessage(MessageDraft msg, out long address) => StoreMessage(msg, out address, out _);

    /// <summary>Validates and appends one message; <paramref name="topic"/> is the topic it was stored to. Caller holds the lock.</summary>
    private SendResult StoreMessage(MessageDraft msg, out long address, out TopicState topic)
    {
        address = -1;
        long now = NowMs;
        var err = ValidateDraft(msg, now);
        topic = null!;
        if (err.IsOk) err = TryGetTopicForWrite(msg.Topic, out topic);
        // Checked for a delayed message too: its queue is kept until its release, where a missing one is not refused.
        if (err.IsOk && TopicQueues.NamedQueueRefusal(topic, msg) is { } noSuchQueue) err = noSuchQueue;
        if (!err.IsOk) return new SendResult(err, msg.MessageId, -1, -1);
        bool delayed = msg.DeliveryTimestampMs is long at && at > now;
        return AppendMessage(topic, delayed ? -1 : PickQueue(topic, msg.QueueId ?? -1, msg.MessageGroup), msg, now, out address);
    }

    /// <summary>Appends one message already checked, on <paramref name="queueId"/> of <paramref name="topic"/> (-1: a
    /// delayed message, queued at its release). Caller holds the lock.</summary>
    private SendResult AppendMessage(TopicState topic, int queueId, MessageDraft msg, long now, out long address)
    {
        long offset = queueId < 0 ? -1 : topic.Queues[queueId].NextOffset;
        var kind = msg.MessageGroup is not null ? MessageKind.Fifo : msg.DeliveryTimestampMs is not null ? MessageKind.Delay : MessageKind.Normal;
        MessageStoredRecord.Write(_writer, queueId, offset, kind, msg.QueueId ?? -1, msg, now);
        address = AppendAndApply();
        Metrics.MessagesStored++;
        MessageIndex.OnStored(msg, queueId, offset, now, address); // MessageIndex hook (issue 12): operator look-up by id/key
        // A copy of a message recalled before (a send retried after the recall) was dropped as it was applied: accepted,
        // as Apache's broker accepts it, and never delivered.
        if (queueId < 0 && !_delayed.Contains(address)) MessageIndex.OnRecalled(msg.MessageId, msg.Topic, address, now);
        return new SendResult(BrokerError.None, msg.MessageId, queueId, offset) { LogAddress = address };
    }

    private GroupTopicState GetGroup(string group, TopicState topic) => _groups.GetOrAdd(group, topic);

    /// <summary>Consumer groups counted toward <see cref="CoreOptions.MaxConsumerGroups"/>, each once per topic: lease
    /// groups' states and pull groups' offsets, the re-drive cursors left out (<see cref="GroupLimitReached"/>).</summary>
    private int CountedGroups => _groups.Count - _groups.InternalCount + _consumerOffsets.GroupTopicCount;

    /// <summary>The refusal when one more consumer group on a topic would exceed <see cref="CoreOptions.MaxConsumerGroups"/>,
    /// else null. Caller holds the lock.</summary>
    /// <remarks>The re-drive cursors (<see cref="IsInternalGroup"/>) are not counted, and a re-drive's receive is not
    /// refused (<see cref="ReceiveRequest.RedriveCursor"/>): the refusal tells operators to delete groups, and those
    /// cannot be deleted (nor are they listed); a re-drive at the limit must still run. Only the engine's re-drive
    /// creates them (a client's receive or offset commit under such a name is refused), one per group re-driven and one
    /// per topic filter an operator gave.</remarks>
    private BrokerError? GroupLimitReached(string group, string topic)
    {
        int count = CountedGroups;
        if (count < _options.MaxConsumerGroups) return null;
        if (Metrics.GroupsRefused++ % 1000 == 0)
            _logger.LogWarning("Consumer group {Group} on topic {Topic} refused: the broker holds {Count} consumer groups (MaxConsumerGroups {Max}); delete unused ones or raise the limit", group, topic, count, _options.MaxConsumerGroups);
        return new BrokerError(BrokerStatus.TooManyConsumerGroups,
            $"consumer group '{group}' cannot start on topic '{topic}': the broker holds {count} consumer groups (each group counted once per topic), its limit (MaxConsumerGroups, --max-consumer-groups); an operator deletes unused groups (halfmsg group delete) or raises the limit");
    }

    private long NextLeaseId() => _groups.NextLeaseId();

    /// <summary>
    /// Leases up to <see cref="ReceiveRequest.BatchSize"/> messages to a consumer of the group: expired leases first (their
    /// delivery attempt + 1), then messages the group has not seen, in queue order. Long-polls up to
    /// <see cref="ReceiveRequest.LongPollTimeout"/> and wakes as soon as a message becomes visible.
    /// </summary>
    /// <remarks>
    /// A long-polling receive parks in its group's line (<see cref="ReceiveWaiters"/>), and something new wakes one
    /// receive of the group. The rules that keep a wake from being lost: park before looking; leaving with a wake taken
    /// after the look, or after a look that filled its batch (more may be there), wake the next one.
    /// </remarks>
    public async ValueTask<ReceiveResult> ReceiveAsync(ReceiveRequest req, CancellationToken ct = default)
    {
        using var span = BrokerTracing.StartReceive(req.Topic, req.ConsumerGroup); // trace hook (issue 12)
        if (!IsValidName(req.ConsumerGroup, 255) || IsSystemTopic(req.ConsumerGroup))
            return new(new(BrokerStatus.IllegalConsumerGroup, $"consumer group '{req.ConsumerGroup}' is not a valid name"), []);
        if (!req.RedriveCursor && ReservedGroupRefusal(req.ConsumerGroup) is { } reserved) return new(reserved, []);
        if (UnreadableTopicReason(req.Topic) is { } unreadable) return new(new(BrokerStatus.IllegalTopic, unreadable), []);
        if (!TagFilter.TryParse(req.TagExpression, out var filter, out var filterError))
            return new(new(BrokerStatus.BadRequest, filterError!), []);
        if (req.InvisibleDuration <= TimeSpan.Zero || req.InvisibleDuration > _options.MaxInvisibleDuration)
            return new(new(BrokerStatus.IllegalInvisibleTime, $"invisible duration must be in (0, {_options.MaxInvisibleDuration}]"), []);
        int batch = req.BatchSize <= 0 ? 32 : Math.Min(req.BatchSize, 1024);
        var deadline = _time.GetTimestamp() + (long)(req.LongPollTimeout.TotalSeconds * _time.TimestampFrequency);
        ReceiveWaiters? line = null;
        ReceiveWaiters.Waiter? parked = null;
        bool wokenBeforeLook = false, more = false;
        var sql = req.SqlFilter;
        int filteredOut = 0;
        try
        {
            while (true)
            {
                await _log.WaitForRoomAsync(ct).ConfigureAwait(false);
                List<(QueueEntry Entry, int Queue, long Offset, int Attempt, long LeaseId, long Until)> picked;
                TopicState topic;
                bool refused;
                ct.ThrowIfCancellationRequested(); // a call already given up leases nothing
                lock (_gate)
                {
                    if (!_topics.TryGetValue(req.Topic, out topic!))
                    {
                        if (!IsValidName(req.Topic)) return new(new(BrokerStatus.IllegalTopic, $"topic '{req.Topic}' is not a valid name"), []);
                        if (!_options.AutoCreateTopics && !IsSystemTopic(req.Topic)) return new(new(BrokerStatus.TopicNotFound, $"topic '{req.Topic}' does not exist"), []);
                        var err = TryGetOrCreate(req.Topic, out topic);
                        if (!err.IsOk) return new(err, []);
                    }
                    if (!req.RedriveCursor && !_groups.ContainsKey((req.ConsumerGroup, topic.Name)) && GroupLimitReached(req.ConsumerGroup, topic.Name) is { } full)
                        return new(full, []);
                    var group = GetGroup(req.ConsumerGroup, topic);
                    // The look below covers any wake the previous park got: leave it, park anew, then look.
                    if (parked is not null) line!.Leave(parked);
                    line = group.Waiters;
                    parked = line.Park();
                    // A wake taken before this point made its news visible before it: the look sees it (the look reads
                    // the durable address after this). One taken later may not be seen.
                    wokenBeforeLook = parked.IsWoken;
                    Metrics.ReceiveLooks++;
                    picked = PickForDelivery(group, filter, batch, req.InvisibleDuration, req.AutoRenew && !string.IsNullOrEmpty(req.ClientId) ? req.ClientId : null,
                        req.Allowance, out more, out refused, count: sql is null, leasedBefore: req.RedriveLeasedBefore);
                    // With an SQL filter the index is told once the bodies are read, of the messages that match only.
                    if (sql is null)
                        MessageIndex.OnDelivered(topic.Name, req.ConsumerGroup, req.ClientId, picked.ConvertAll(p => (p.Queue, p.Offset, p.Attempt)), NowMs); // MessageIndex hook (issue 12)
                }
                if (picked.Count > 0)
                {
                    // The leases exist now: the bodies are read whatever happens to the call (local reads of durable
                    // records), so the caller gets every picked message and releases them if it cannot hand them on.
                    // Until 2026-12-05 a call cancelled here (a client gone during its long poll) left them leased for
                    // the whole invisible duration, renewed for a push consumer that never got them (found by review).
                    var result = new List<DeliveredMessage>(picked.Count);
                    List<(int Queue, long Offset, long LeaseId, int Attempt)>? unmatched = null;
                    List<(long Offset, string ReceiptHandle)>? unread = null;
                    var handedOut = sql is null ? null : new List<(int Queue, long Offset, int Attempt)>(picked.Count);
                    foreach (var p in picked)
                    {
                        var message = await ReadStoredMessageAsync(p.Entry.BodyAddress, topic.Name, p.Queue, p.Offset, CancellationToken.None, p.Entry.Size).ConfigureAwait(false);
                        if (message is null)
                        {
                            // Retention may have moved the body since it was picked: read it where it lives now.
                            long now;
                            int size;
                            lock (_gate) (now, size) = topic.Queues[p.Queue].TryGet(p.Offset, out var e) && !e.IsHole ? (e.BodyAddress, e.Size) : (-1, 0);
                            if (now >= 0 && now != p.Entry.BodyAddress)
                                message = await ReadStoredMessageAsync(now, topic.Name, p.Queue, p.Offset, CancellationToken.None, size).ConfigureAwait(false);
                        }
                        if (message is null)
                        {
                            handedOut?.Add((p.Queue, p.Offset, p.Attempt)); // still leased, as without a filter
                            // A retention cut that expired it after the pick is a normal race with a lagging group, not an error.
                            if (IsGoneFromQueue(topic.Name, p.Queue, p.Offset))
                                _logger.LogDebug("Message {Topic}/{Queue}/{Offset} expired behind a retention cut while a receive read it", topic.Name, p.Queue, p.Offset);
                            else
                            {
                                _logger.LogError("Message {Topic}/{Queue}/{Offset} at {Address} could not be read; it stays leased and will be retried", topic.Name, p.Queue, p.Offset, p.Entry.BodyAddress);
                                // A re-drive is told: it counts the dead letter as not re-driven and releases it when it
                                // ends (until 2026-12-06 it stayed leased, out of the answer and of re-drives for a minute).
                                if (req.RedriveCursor) (unread ??= []).Add((p.Offset, new ReceiptHandle(p.Queue, p.Offset, p.LeaseId).Encode()));
                            }
                            // Never handed to the consumer: its lease must end, not be renewed for it while it is active.
                            if (req.AutoRenew) StopRenewal(topic, req.ConsumerGroup, p.Queue, p.Offset, p.LeaseId);
                            continue;
                        }
                        if (sql is not null && !sql.Matches(message))
                        {
                            (unmatched ??= []).Add((p.Queue, p.Offset, p.LeaseId, p.Attempt));
                            // The room the pick took for it goes back: a run of messages that do not match must not use
                            // up the caller's budget for an answer that does not hold them.
                            req.Allowance?.Return(p.Entry.Size);
                            continue;
                        }
                        handedOut?.Add((p.Queue, p.Offset, p.Attempt));
                        result.Add(new DeliveredMessage
                        {
                            Message = message,
                            ReceiptHandle = new ReceiptHandle(p.Queue, p.Offset, p.LeaseId).Encode(),
                            DeliveryAttempt = p.Attempt,
                            InvisibleUntilMs = p.Until,
                        });
                    }
                    if (sql is not null)
                    {
                        SettleFilteredOut(topic, req, handedOut!, unmatched);
                        filteredOut += unmatched?.Count ?? 0;
                    }
                    BrokerTracing.EndReceive(span, BrokerError.None, result);
                    if (result.Count > 0) return new(BrokerError.None, result) { Unreadable = unread };
                    if (unread is not null) return new(new(BrokerStatus.MessageNotFound, "no readable message"), []) { Unreadable = unread };
                    if (unmatched is not null)
                    {
                        // All filtered out: look on at once while the long poll has time (nothing wakes this receive for
                        // messages already in the queues), and for a bounded number without it; then answer empty.
                        if (deadline - _time.GetTimestamp() > 0 || filteredOut < MaxFilteredWithoutWait) continue;
                        return new(new(BrokerStatus.MessageNotFound, "no new message"), []);
                    }
                }
                else if (refused)
                {
                    // Something to deliver but no room for it in the caller's answer: nothing was leased, and the wake
                    // goes on to another receive of the group (more is set). The caller waits for room, not this loop.
                    return new(new(BrokerStatus.TooManyRequests, "no room for the answer"), []);
                }
                var remaining = deadline - _time.GetTimestamp();
                if (remaining <= 0) return new(new(BrokerStatus.MessageNotFound, "no new message"), []);
                var wait = TimeSpan.FromSeconds((double)remaining / _time.TimestampFrequency);
                try
                {
                    await parked.Task.WaitAsync(wait, _time, ct).ConfigureAwait(false);
                }
                catch (TimeoutException)
                {
                }
            }
        }
        finally
        {
            // Leaving (with messages, empty-handed or cancelled): a wake this receive took after its last look, or a
            // look that stopped at a full batch, goes on to the next receive of the group.
            if (parked is not null && ((!line!.Leave(parked) && !wokenBeforeLook) || more)) line.WakeOne();
        }
    }

    /// <summary>Messages an SQL-filtered receive may pass over once its long poll has ended (or when it has none)
    /// before it answers empty: a receive goes on past a run of messages that do not match without being asked again,
    /// and a long run costs more than one receive.</summary>
    private const int MaxFilteredWithoutWait = 4096;

    /// <summary>Offsets passed over that receives' picks looked at (for tests: since start).</summary>
    internal long PassedOverVisitedForTests;

    /// <summary>
    /// An SQL-filtered receive's messages that do not match are finished for the group, as a tag filter's are: each
    /// lease still held is acknowledged (a record, so they are not delivered again after a restart; nobody waits for it,
    /// and if a crash loses it the message is leased, read and settled again, never handed out). The record carries
    /// <see cref="RecordHeader.FilteredOutFlag"/>, so the message index rebuilt after a restart shows them filtered out
    /// for the group, as the live index does, not delivered and acked. Only the ones handed out (and the unreadable ones,
    /// still leased) are counted as delivered and told to the index as deliveries, here rather than at the pick: counted
    /// at the pick and taken back here, rocketmq_messages_out and halfmsg_messages_redelivered went down between two
    /// scrapes, which Prometheus takes for a counter reset (until 2026-12-06, found by review).
    /// </summary>
    private void SettleFilteredOut(TopicState topic, ReceiveRequest req, List<(int Queue, long Offset, int Attempt)> handedOut,
        List<(int Queue, long Offset, long LeaseId, int Attempt)>? unmatched)
    {
        List<(int Queue, long Offset)>? settled = null;
        lock (_gate)
        {
            foreach (var (_, _, attempt) in handedOut)
                if (attempt > 1) Metrics.Redelivered++; else Metrics.Delivered++;
            if (handedOut.Count > 0) MessageIndex.OnDelivered(topic.Name, req.ConsumerGroup, req.ClientId, handedOut, NowMs); // MessageIndex hook (issue 12)
            if (unmatched is null || !_groups.TryGetValue((req.ConsumerGroup, topic.Name), out var group)) return;
            foreach (var (q, off, leaseId, _) in unmatched)
            {
                // A lease that ended meanwhile (expired and leased again, the group or topic deleted) is not this receive's.
                if (q >= group.Queues.Length || !group.Queues[q].InFlight.TryGetValue(off, out var flight) || flight.LeaseId != leaseId) continue;
                new AckedRecord(group.Group, topic.Name, q, off, FilteredOut: true).Write(_writer);
                AppendAndApply();
                (settled ??= []).Add((q, off));
            }
            if (settled is null) return;
            MessageIndex.OnFilteredOut(topic.Name, req.ConsumerGroup, settled, NowMs); // MessageIndex hook (issue 12)
            if (_log.Flush == FlushMode.Sync) _log.RequestCommit();
        }
    }

    /// <summary>
    /// Leases up to <paramref name="batch"/> messages (see <see cref="ReceiveAsync"/>). <paramref name="more"/>: the
    /// pick stopped at its batch or byte budget; another receive of the group may find something. An expired lease the
    /// receive's filter does not take is finished for the group (filtered out), not left in line for another filter. Without <paramref name="count"/> (an SQL filter's pick) the leases are not
    /// counted as deliveries: the caller counts the ones it hands out (<see cref="SettleFilteredOut"/>).
    /// </summary>
    private List<(QueueEntry Entry, int Queue, long Offset, int Attempt, long LeaseId, long Until)> PickForDelivery(
        GroupTopicState group, TagFilter filter, int batch, TimeSpan invisible, string? renewFor, IDeliveryAllowance? allowance,
        out bool more, out bool refused, bool count = true, long? leasedBefore = null)
    {
        bool noRoom = false;
        var picked = new List<(QueueEntry, int, long, int, long, long)>();
        long now = NowMs;
        long until = now + (long)invisible.TotalMilliseconds;
        long durable = _log.DurableUntil;
        long bytes = 0;
        group.LastSeenMs = now;
        var topic = group.Topic;
        // A receive holds its bodies in memory until they are written out: stop at a byte budget (one message always fits).
        bool Full() => noRoom || picked.Count >= batch || (picked.Count > 0 && bytes >= _options.ReceiveByteBudget);
        // The caller's room for its answer, taken before the lease is written: a message without room stays where it is.
        bool Room(in QueueEntry entry) => allowance is null || allowance.TryTake(entry.Size) || !(noRoom = true);

        // 0. Offsets the retention cut removed before this group finished them: counted as expired, then skipped.
        for (int q = 0; q < topic.Queues.Length; q++)
            if (group.Queues[q].DoneBelow < topic.Queues[q].BaseOffset) CatchUpExpired(group, q);

        // An orderly group holds each queue while a message of it is leased (Apache's consumeMessageOrderly): a queue
        // is opened for this receive when none of its leases is live, and from then on every live lease of it is this
        // receive's, so it may take several consecutive messages of it. A concurrent group holds nothing; a group not
        // configured holds FIFO message groups (below), unless the broker's default says concurrent.
        var order = EffectiveOrder(group.Order);
        bool orderly = order == GroupOrder.Orderly;
        bool[]? opened = orderly ? new bool[topic.Queues.Length] : null;
        bool Open(int q) => opened![q] || (!group.Queues[q].HasLiveLease && (opened[q] = true));

        // 1. Expired leases, oldest expiry first (an orderly group's, of each queue it opens, in queue order).
        int redeliverable = group.Redeliver.Count;
        for (int i = 0; i < redeliverable && !Full(); i++)
        {
            if (orderly)
            {
                var (oq, ooff) = group.Redeliver.Dequeue();
                if (!group.Queues[oq].InFlight.TryGetValue(ooff, out var of) || !of.Expired) continue;
                // Held: an earlier message of the queue is leased still. Its ack (or expiry) wakes a receive.
                if (!Open(oq)) { group.Redeliver.Enqueue((oq, ooff)); continue; }
                RedeliverInOrder(oq);
                // Not taken (the batch filled, no room): it waits in line.
                if (group.Queues[oq].InFlight.TryGetValue(ooff, out of) && of.Expired) group.Redeliver.Enqueue((oq, ooff));
                continue;
            }
            // A re-drive's continuation stops at the first lease taken since its re-drive began: the line is in the
            // order the leases ended, and the ones its earlier calls left ended (were released) after every older one
            // (ReceiveRequest.RedriveLeasedBefore). One look, not a walk over the whole line.
            if (leasedBefore is { } before && group.Redeliver.TryPeek(out var head)
                && group.Queues[head.Queue].InFlight.TryGetValue(head.Offset, out var headFlight) && headFlight.Expired && headFlight.LeaseId >= before)
                break;
            var (q, off) = group.Redeliver.Dequeue();
            var gq = group.Queues[q];
            if (!gq.InFlight.TryGetValue(off, out var flight) || !flight.Expired) continue;
            if (!topic.Queues[q].TryGet(off, out var entry) || entry.IsHole) { FinishInFlight(group, q, off); continue; }
            // The group's consumers no longer subscribe to it (a new tag expression): finished for the group as a new
            // message that does not match is (step 2), and as Apache treats a message the subscription no longer takes
            // (consumed for the group). Until 2026-12-07 it was put back in line "for another filter" for ever: never
            // leased again nor dead-lettered (the sweep skips an expired lease), its in-flight entry kept the group's
            // DoneBelow where it was and, for a group not configured, its message group busy, so the pick stopped at
            // every later message of that message group, and on its queue behind them (found by review).
            if (!filter.Matches(entry.Tag)) { FinishFilteredOut(q, off); continue; }
            if (!Room(entry)) { group.Redeliver.Enqueue((q, off)); break; }
            Lease(entry, q, off, flight.Attempt + 1);
        }

        // 2. Messages the group has never seen, round-robin over queues.
        int queues = topic.Queues.Length;
        int start = group.RoundRobin++;
        for (int i = 0; i < queues && !Full(); i++)
        {
            int q = (int)((uint)(start + i) % (uint)queues);
            var queue = topic.Queues[q];
            var gq = group.Queues[q];
            // Orderly: a queue held by a live lease, or with an expired one still waiting (it goes first), gives nothing new.
            if (orderly && (!Open(q) || HasExpired(gq))) continue;
            // Messages passed over while their message group was in flight come before anything newer of the queue.
            if (gq.PassedOver.Count > 0) TakePassedOver(q);
            long lastPassedOver = -1; // the last offset of a run passed over since the pick's last lease on this queue
            while (!Full() && queue.TryGet(gq.NextOffset, out var entry))
            {
                if (entry.VisibleAt >= durable) break;            // not durable yet: invisible
                long off = gq.NextOffset;
                if (off < gq.DoneBelow || gq.Done.Count != 0 && gq.Done[^1].End > off && gq.IsDone(off))
                {
                    // Finished before this group got to it: a re-drive cursor's dead letter another cursor re-drove.
                    gq.NextOffset++;
                    continue;
                }
                if (entry.IsHole || !filter.Matches(entry.Tag) || (entry.ForGroup != 0 && !_topics.Targets.Admits(entry.ForGroup, group.Group)))
                {
                    // Filtered out for this group, a hole (damaged or expired), or another group's re-driven dead
                    // letter: finished without a delivery.
                    if (entry.BodyAddress == QueueEntry.Expired) group.Expired++;
                    gq.NextOffset++;
                    gq.MarkDone(off);
                    lastPassedOver = off;
                    continue;
                }
                // FIFO: an earlier message of this message group is in flight. Orderly groups too: a topic grown since
                // moves a message group to another queue, whose hold alone would let its next message overtake (found
                // by review).
                if (order != GroupOrder.Concurrent && entry.MessageGroup is not null && group.BusyMessageGroups.ContainsKey(entry.MessageGroup))
                {
                    // An orderly group's queue waits here. A group served by message group holds that message group
                    // only: the message is passed over (remembered, durably) and the rest of the queue goes on, up to
                    // MaxPassedOverPerQueue remembered; past it the queue waits, as every queue did until 2026-12-07.
                    if (orderly || gq.PassedOver.Count >= _options.MaxPassedOverPerQueue) break;
                    PassOver(q, off);
                    lastPassedOver = -1; // its record finishes the ones passed over before it, as a delivery's does
                    continue;
                }
                if (!Room(entry)) break;
                Lease(entry, q, off, 1);
                lastPassedOver = -1; // its delivery record finishes the ones passed over before it (RecordApplier)
            }
            // Passed over after the last lease: no delivery record finishes them on replay. One record, for the last
            // of them, does (a filtered-out ack beyond the group's position finishes every offset up to it), so after a
            // crash the group is where it was live. At most one per queue per receive; nobody waits for it (lost, the
            // messages are passed over again).
            if (lastPassedOver >= 0) FinishPassedOver(q, lastPassedOver);
        }
        more = Full();
        refused = noRoom;
        return picked;

        // Queue q's offsets passed over earlier (their message group was in flight), lowest first: each whose message
        // group is free now is leased (which makes it busy again, so that group's later ones stay), until the batch
        // fills or the caller's room runs out (then the rest of the queue waits too: nothing newer overtakes them). One
        // no longer receivable (a hole, expired, not taken by the group's filter now) is finished for the group, durably.
        // A look that found them all still held is not made again until a message group is freed (or the filter or the
        // order mode differs): a slow message group keeps up to MaxPassedOverPerQueue of its messages here, and until
        // review on 2026-12-07 every receive copied and walked them all, per queue, under the engine lock.
        void TakePassedOver(int q)
        {
            var gq = group.Queues[q];
            if (gq.PassedOverHeldAt == group.MessageGroupsFreed && gq.PassedOverHeldOrder == order && filter.SameAs(gq.PassedOverHeldFor))
                return;
            gq.PassedOverHeldAt = -1;
            for (int i = 0; i < gq.PassedOver.Count;)
            {
                if (Full()) return;
                long off = gq.PassedOver[i];
                PassedOverVisitedForTests++;
                if (!topic.Queues[q].TryGet(off, out var entry) || entry.IsHole || !filter.Matches(entry.Tag)
                    || (entry.ForGroup != 0 && !_topics.Targets.Admits(entry.ForGroup, group.Group)))
                {
                    if (entry.BodyAddress == QueueEntry.Expired) group.Expired++;
                    FinishFilteredOut(q, off); // takes it out of the list
                }
                else
                {
                    if (entry.VisibleAt >= durable) return; // cannot be: it was visible when passed over
                    // A group set concurrent since holds no message group: its passed-over messages go at once, as its
                    // newer ones do (until review on 2026-12-07 they waited for their message group, for ever under
                    // steady traffic).
                    if (order != GroupOrder.Concurrent && entry.MessageGroup is not null && group.BusyMessageGroups.ContainsKey(entry.MessageGroup))
                    {
                        i++;
                        continue;
                    }
                    if (!Room(entry)) return;
                    Lease(entry, q, off, 1); // takes it out of the list
                }
                if (i < gq.PassedOver.Count && gq.PassedOver[i] == off) i++; // not taken out after all: go on past it
            }
            // Every one left waits for its busy message group.
            (gq.PassedOverHeldAt, gq.PassedOverHeldFor, gq.PassedOverHeldOrder) = (group.MessageGroupsFreed, filter, order);
        }

        // Queue q's offset off is passed over, its message group in flight: a record (applied, it takes the group's
        // position past it and remembers it; replay does the same, so a later delivery does not finish it). Nobody
        // waits for it: it is in the log before the deliveries that follow, and lost with them in a crash.
        void PassOver(int q, long off)
        {
            DeliveredRecord.PassedOver(group.Group, topic.Name, q, off).Write(_writer);
            AppendAndApply();
        }

        // An orderly group's expired leases of queue q, lowest offset first, until the batch fills or one cannot be
        // taken (the rest of the queue waits behind it).
        void RedeliverInOrder(int q)
        {
            var gq = group.Queues[q];
            var expired = new List<long>();
            foreach (var (off, f) in gq.InFlight)
                if (f.Expired) expired.Add(off);
            expired.Sort();
            foreach (long off in expired)
            {
                if (Full()) return;
                var flight = gq.InFlight[off];
                if (!topic.Queues[q].TryGet(off, out var entry) || entry.IsHole) { FinishInFlight(group, q, off); continue; }
                // The group's consumers no longer subscribe to it (a new tag expression): finished for the group as a
                // new message that does not match is, so it does not hold its queue for ever (found by review).
                if (!filter.Matches(entry.Tag)) { FinishFilteredOut(q, off); continue; }
                if (!Room(entry)) return;
                Lease(entry, q, off, flight.Attempt + 1);
            }
        }

        // An expired lease of queue q at off that the receive's filter does not take is finished for the group, as a
        // filtered-out message: a durable record (an ack flagged FilteredOut, as an SQL filter's are), so replay finishes
        // it too and the recovered state is the live one; applying it ends the lease and its FIFO hold. Nobody waits for
        // it: lost in a crash, the lease is back after the restart, expires and is finished again.
        void FinishFilteredOut(int q, long off)
        {
            new AckedRecord(group.Group, topic.Name, q, off, FilteredOut: true).Write(_writer);
            AppendAndApply();
            MessageIndex.OnFilteredOut(topic.Name, group.Group, [(q, off)], now); // MessageIndex hook (issue 12)
        }

        // The run of queue q's offsets up to off this receive passed over (filtered out, holes, other groups' re-driven
        // dead letters) after its last lease there: finished durably for the group (RecordApplier.ApplyAcked).
        void FinishPassedOver(int q, long off)
        {
            new AckedRecord(group.Group, topic.Name, q, off, FilteredOut: true).Write(_writer);
            AppendAndApply();
            MessageIndex.OnFilteredOut(topic.Name, group.Group, [(q, off)], now); // MessageIndex hook (issue 12)
        }

        // Leases queue q's offset off to this receive (its delivery record, applied) and takes it into the answer.
        void Lease(in QueueEntry entry, int q, long off, int attempt)
        {
            var rec = new DeliveredRecord(group.Group, topic.Name, q, off, attempt, until, NextLeaseId());
            rec.Write(_writer);
            AppendAndApply();
            if (renewFor is not null) SetRenewal(group, q, off, renewFor, until - now, now);
            picked.Add((entry, q, off, attempt, rec.LeaseId, until));
            bytes += entry.Size;
            if (count)
            {
                if (attempt == 1) Metrics.Delivered++;
                else Metrics.Redelivered++;
            }
        }

        static bool HasExpired(GroupQueueState gq)
        {
            foreach (var f in gq.InFlight.Values)
                if (f.Expired) return true;
            return false;
        }
    }

    /// <summary>
    /// The lease just handed out is renewed for the push consumer that took it (auto_renew). A delivery clears it
    /// (RecordApplier), so a message delivered again to a consumer that does not ask is not renewed for the previous one.
    /// </summary>
    private void SetRenewal(GroupTopicState group, int q, long off, string renewFor, long everyMs, long now)
    {
        if (!group.Queues[q].InFlight.TryGetValue(off, out var flight)) return;
        flight.RenewFor = renewFor;
        flight.RenewEveryMs = everyMs;
        flight.RenewUntilMs = now + (long)_options.MaxAutoRenew.TotalMilliseconds;
        _groups.NoteRenewal(renewFor, group, q, off);
    }

    /// <summary>A lease handed out by a receive but never delivered is not renewed (its lease id still matching).</summary>
    private void StopRenewal(TopicState topic, string group, int queue, long offset, long leaseId)
    {
        lock (_gate)
        {
            // The queue id is checked: the topic may have been deleted and made again with fewer queues since the receive.
            if (_groups.TryGetValue((group, topic.Name), out var state) && queue < state.Queues.Length && state.Queues[queue].InFlight.TryGetValue(offset, out var flight)
                && flight.LeaseId == leaseId)
                flight.RenewFor = null;
        }
    }

    /// <summary>
    /// At a push consumer's lease expiry (see <see cref="ReceiveRequest.AutoRenew"/>): extends it by its length, with
    /// the same lease id, so the receipt handle the client holds stays valid, while the client is active and within
    /// <see cref="CoreOptions.MaxAutoRenew"/> of the delivery. Nobody waits for the record: lost in a crash, the lease
    /// ends as first written and the message is delivered again (at least once). Caller holds the lock.
    /// </summary>
    private bool TryRenewLease(GroupTopicState group, int q, long off, InFlight flight, long now)
    {
        if (flight.RenewFor is not { } client) return false;
        if (now >= flight.RenewUntilMs || !Consumers.IsActive(group.Group, client, _options.AutoRenewClientTimeout))
        {
            flight.RenewFor = null;
            return false;
        }
        ChangeLease(group.Group, group.Topic.Name, q, off, Math.Min(now + Math.Max(1, flight.RenewEveryMs), flight.RenewUntilMs), flight.LeaseId);
        Metrics.LeasesRenewed++;
        return true;
    }

    /// <summary>
    /// A gRPC client left (NotifyClientTermination) one group, or every group when <paramref name="group"/> is null: it
    /// is no longer a member (<see cref="ConsumerMembers.Left"/>), and the leases renewed for it as
    /// a push consumer (auto_renew) end <see cref="CoreOptions.LeaveReleaseDelay"/> from now instead of running their
    /// length, so the messages it held but will not process go to the group's other consumers at once, as RocketMQ's
    /// proxy does. The lease id stays: an ack the client still sends within that time holds. Returns how many leases
    /// were shortened. Nobody waits for the records: lost in a crash, a lease ends as it was. The leases are looked for
    /// only when the client was a member (every receive makes it one): a producer's termination does not look. They are
    /// found in a table of renewed leases by client (<see cref="ConsumerGroups.TakeRenewed"/>), so a termination costs
    /// the client's own leases, not every lease of its groups. With a null group and a <paramref name="groupPrefix"/>
    /// (a gRPC namespace's <c>ns%</c>), only the groups named with it: a client id used in two namespaces leaves only
    /// the caller's.
    /// </summary>
    public int ClientLeft(string? group, string clientId, string? groupPrefix = null)
    {
        if (!Consumers.Left(group, clientId, groupPrefix) || string.IsNullOrEmpty(clientId)) return 0;
        int released = 0;
        lock (_gate)
        {
            long now = NowMs, until = now + (long)_options.LeaveReleaseDelay.TotalMilliseconds;
            var shorten = new List<(GroupTopicState State, int Queue, long Offset, long LeaseId)>();
            foreach (var (state, q, off, flight) in _groups.TakeRenewed(clientId, group, groupPrefix))
            {
                flight.RenewFor = null;
                if (flight.InvisibleUntilMs > until) shorten.Add((state, q, off, flight.LeaseId));
            }
            foreach (var (state, q, off, leaseId) in shorten)
                ChangeLease(state.Group, state.Topic.Name, q, off, until, leaseId);
            released = shorten.Count;
            Metrics.LeasesReleased += released;
            if (released > 0 && _log.Flush == FlushMode.Sync) _log.RequestCommit();
        }
        return released;
    }

    /// <summary>A lease's new end (and id): the record, applied, and the message index told. Returns its log address.
    /// Caller holds the lock.</summary>
    private long ChangeLease(string group, string topic, int q, long off, long until, long leaseId)
    {
        new InvisibilityChangedRecord(group, topic, q, off, until, leaseId).Write(_writer);
        long address = AppendAndApply();
        MessageIndex.OnLeaseChanged(group, topic, q, off, until, NowMs); // MessageIndex hook (issue 12)
        return address;
    }

    /// <summary>The queue's head moved past offsets this group never finished: they expired (counted, then skipped).</summary>
    private static void CatchUpExpired(GroupTopicState group, int q)
    {
        var gq = group.Queues[q];
        long baseOffset = group.Topic.Queues[q].BaseOffset;
        long notDone = 0;
        for (long o = gq.DoneBelow; o < baseOffset; o++)
            if (!gq.IsDone(o)) notDone++;
        group.Expired += notDone;
        foreach (var off in gq.InFlight.Keys.Where(o => o < baseOffset).ToList()) FinishInFlight(group, q, off);
        gq.AdvanceTo(baseOffset);
    }

    private static void FinishInFlight(GroupTopicState group, int q, long off) => ConsumerGroups.FinishInFlight(group, q, off);

    /// <summary>Validates a receipt handle against the live lease. Caller holds the lock.</summary>
    private BrokerError TryGetLease(string groupName, string topicName, string receiptHandle, out GroupTopicState group, out ReceiptHandle handle, out InFlight flight)
    {
        group = null!; flight = null!;
        if (!ReceiptHandle.TryParse(receiptHandle, out handle))
            return new(BrokerStatus.InvalidReceiptHandle, "receipt handle is malformed");
        if (!_groups.TryGetValue((groupName, topicName), out group!) || handle.QueueId >= group.Queues.Length)
            return new(BrokerStatus.InvalidReceiptHandle, $"receipt handle does not belong to group '{groupName}' on topic '{topicName}'");
        if (!group.Queues[handle.QueueId].InFlight.TryGetValue(handle.QueueOffset, out flight!))
            return new(BrokerStatus.InvalidReceiptHandle, "receipt handle is stale: the message was already acknowledged or dead-lettered");
        // A push consumer's lease that ran out since the last sweep is renewed now, as the sweep would have: its ack must
        // not meet a stale handle in the time between the two.
        if (flight.LeaseId == handle.LeaseId && !flight.Expired && flight.RenewFor is not null && flight.InvisibleUntilMs <= NowMs)
            TryRenewLease(group, handle.QueueId, handle.QueueOffset, flight, NowMs);
        if (flight.LeaseId != handle.LeaseId || flight.Expired || flight.InvisibleUntilMs <= NowMs)
            return new(BrokerStatus.InvalidReceiptHandle, "receipt handle is stale: its invisibility expired or it was renewed; use the newest handle");
        return BrokerError.None;
    }

    /// <summary>Acknowledges a delivery. Completes once the ack is durable, so an acked message is never redelivered after a crash.</summary>
    public async ValueTask<BrokerError> AckAsync(string group, string topic, string receiptHandle, CancellationToken ct = default)
    {
        await _log.WaitForRoomAsync(ct).ConfigureAwait(false);
        long address;
        BrokerError err;
        lock (_gate) err = Ack(group, topic, receiptHandle, out address);
        if (err.IsOk) await _log.WaitDurableAsync(address, ct).ConfigureAwait(false);
        return err;
    }

    /// <summary>
    /// Acknowledges a batch of deliveries (a bounded number per lock hold) and waits once for the highest address (a batch of 32
    /// acks costs one group commit). Each handle gets its own result.
    /// </summary>
    public async ValueTask<BrokerError[]> AckBatchAsync(string group, string topic, IReadOnlyList<string> receiptHandles, CancellationToken ct = default)
    {
        await _log.WaitForRoomAsync(ct).ConfigureAwait(false);
        var results = new BrokerError[receiptHandles.Count];
        long highest = -1;
        foreach (var (start, end) in LockChunks(receiptHandles.Count))
        {
            lock (_gate)
            {
                for (int i = start; i < end; i++)
                {
                    results[i] = Ack(group, topic, receiptHandles[i], out var address);
                    if (results[i].IsOk) highest = Math.Max(highest, address);
                }
            }
        }
        if (highest >= 0) await _log.WaitDurableAsync(highest, ct).ConfigureAwait(false);
        return results;
    }

    /// <summary>Validates the lease and appends the ack. Caller holds the lock.</summary>
    private BrokerError Ack(string group, string topic, string receiptHandle, out long address) => Ack(group, topic, receiptHandle, out address, out _);

    /// <summary>As above, also giving the acknowledged lease's handle. Caller holds the lock.</summary>
    private BrokerError Ack(string group, string topic, string receiptHandle, out long address, out ReceiptHandle handle)
    {
        address = -1;
        var err = TryGetLease(group, topic, receiptHandle, out _, out handle, out _);
        if (!err.IsOk) return err;
        address = AckLease(group, topic, handle);
        return BrokerError.None;
    }

    /// <summary>Acknowledges the lease <paramref name="handle"/> names, which the caller checked is live in this hold of
    /// the lock; returns the address to wait for.</summary>
    private long AckLease(string group, string topic, ReceiptHandle handle)
    {
        new AckedRecord(group, topic, handle.QueueId, handle.QueueOffset).Write(_writer);
        long address = AppendAndApply();
        Acknowledged(group, topic, handle.QueueId, handle.QueueOffset);
        return address;
    }

    /// <summary>What follows an applied ack of a lease: also for the cursor's ack that a re-drive's put-back record carries
    /// (<see cref="RedriveAcks"/>), so that both end alike. Caller holds the lock.</summary>
    private void Acknowledged(string group, string topic, int queueId, long offset)
    {
        Metrics.Acked++;
        MessageIndex.OnAcked(group, topic, queueId, offset, NowMs); // MessageIndex hook (issue 12)
    }

    /// <summary>Extends or shortens a lease; returns the new receipt handle (the old one becomes stale). Zero = redeliver now.</summary>
    public async ValueTask<ChangeInvisibleResult> ChangeInvisibleDurationAsync(string group, string topic, string receiptHandle, TimeSpan duration, CancellationToken ct = default)
    {
        await _log.WaitForRoomAsync(ct).ConfigureAwait(false);
        long address;
        string newHandle;
        long until;
        lock (_gate)
        {
            if (duration < TimeSpan.Zero || duration > _options.MaxInvisibleDuration)
                return new(new(BrokerStatus.IllegalInvisibleTime, $"invisible duration must be in [0, {_options.MaxInvisibleDuration}]"), null, 0);
            var err = TryGetLease(group, topic, receiptHandle, out var state, out var handle, out var flight);
            if (!err.IsOk) return new(err, null, 0);
            flight.RenewFor = null; // the consumer chose the lease's end itself (a push consumer's nack): no more renewal
            until = NowMs + (long)duration.TotalMilliseconds;
            long leaseId = NextLeaseId();
            address = ChangeLease(group, topic, handle.QueueId, handle.QueueOffset, until, leaseId);
            newHandle = new ReceiptHandle(handle.QueueId, handle.QueueOffset, leaseId).Encode();
            if (duration == TimeSpan.Zero) SweepLeases(NowMs, SweepEntriesPerLockHold); // the rest, if any, on the sweeper
        }
        await _log.WaitDurableAsync(address, ct).ConfigureAwait(false);
        return new(BrokerError.None, newHandle, until);
    }

    /// <summary>Moves a leased message to the group's dead-letter topic <c>%DLQ%&lt;group&gt;</c> at the consumer's request.</summary>
    public async ValueTask<BrokerError> ForwardToDeadLetterAsync(string group, string topic, string receiptHandle, CancellationToken ct = default)
    {
        await _log.WaitForRoomAsync(ct).ConfigureAwait(false);
        long address;
        lock (_gate)
        {
            var err = TryGetLease(group, topic, receiptHandle, out var state, out var handle, out _);
            if (!err.IsOk) return err;
            address = DeadLetter(state, handle.QueueId, handle.QueueOffset);
        }
        await _log.WaitDurableAsync(address, ct).ConfigureAwait(false);
        return BrokerError.None;
    }

    private long DeadLetter(GroupTopicState group, int q, long off)
    {
        string dlqName = DeadLetterPrefix + group.Group;
        var dlq = _topics.GetOrAdd(dlqName, 1);
        new DeadLetteredRecord(group.Group, group.Topic.Name, q, off, dlq.Queues[0].NextOffset, NowMs).Write(_writer);
        long address = AppendAndApply();
        Metrics.DeadLettered++;
        MessageIndex.OnDeadLettered(group.Group, group.Topic.Name, q, off, dlqName, dlq.Queues[0].NextOffset - 1, NowMs); // MessageIndex hook (issue 12)
        _logger.LogInformation("Message {Topic}/{Queue}/{Offset} moved to {Dlq} for group {Group}", group.Topic.Name, q, off, dlqName, group.Group);
        return address;
    }

    /// <summary>
    /// Most leases, delayed messages and remembered decisions one hold of the engine lock sweeps (about a microsecond
    /// each). A sweep takes the lock again for the rest, so a million delayed messages due at the same instant no longer
    /// hold every send, ack and receive for a second: between two holds the sweeper waits for room in the log, as
    /// writers do, and lets them in.
    /// </summary>
    internal const int SweepEntriesPerLockHold = MaxEntriesPerLockHold;

    /// <summary>Expires leases and releases delay messages whose time has come, in holds of the lock of at most
    /// <see cref="SweepEntriesPerLockHold"/> entries each. Tests call it with a fake clock (the sweeper loop runs
    /// <see cref="SweepAndPlanAsync"/>).</summary>
    public void RunSweep()
    {
        long now = NowMs;
        while (true)
        {
            lock (_gate)
                if (!SweepSome(now)) return;
            BetweenLockHoldsForTests?.Invoke();
        }
    }

    /// <summary>The sweeper loop's sweep, one hold of the lock per <see cref="SweepEntriesPerLockHold"/> entries with a
    /// wait for room in the log before each; then plans the next one (<see cref="SweepAlarm"/>) and returns how long to
    /// wait for it.</summary>
    private async ValueTask<TimeSpan> SweepAndPlanAsync(CancellationToken ct)
    {
        lock (_gate) _sweepAlarm.Sweeping();
        // What is due when the sweep starts, as before: what becomes due meanwhile waits for the next sweep, so a sweep
        // ends even while leases end faster than it takes them.
        long now = NowMs;
        while (true)
        {
            await _log.WaitForRoomAsync(ct).ConfigureAwait(false);
            lock (_gate)
            {
                if (!SweepSome(now)) return _sweepAlarm.Plan(NowMs, Math.Min(_groups.NextLeaseDueMs, _delayed.NextDueMs));
            }
            BetweenLockHoldsForTests?.Invoke();
            await Task.Yield(); // the rest after the writers that queued on the lock meanwhile
        }
    }

    /// <summary>One sweep as the sweeper loop runs it (tests and the bench's lock-stall probe, with a fake clock).</summary>
    internal ValueTask<TimeSpan> RunSweepAsLoopDoesAsync(CancellationToken ct = default) => SweepAndPlanAsync(ct);

    /// <summary>Sweeps at most <see cref="SweepEntriesPerLockHold"/> entries (leases first, then delayed messages, then
    /// remembered decisions); true when it stopped at that bound, so more may be due.</summary>
    private bool SweepSome(long now)
    {
        int budget = SweepEntriesPerLockHold;
        budget -= SweepLeases(now, budget);
        if (budget > 0) budget -= ReleaseDelayed(now, budget);
        if (budget > 0) budget -= _txs.Decided.Expire(now, budget);
        return budget <= 0;
    }

    /// <summary>Expires (or renews) at most <paramref name="max"/> due leases; returns how many it took.</summary>
    private int SweepLeases(long now, int max)
    {
        bool renewed = false;
        int taken = 0;
        while (taken < max && _groups.TryTakeExpired(now, out var group, out var queue, out var offset, out var flight))
        {
            taken++;
            if (TryRenewLease(group, queue, offset, flight, now))
            {
                renewed = true;
                continue;
            }
            MessageIndex.OnLeaseExpired(group.Group, group.Topic.Name, queue, offset, flight.Attempt, now); // MessageIndex hook (issue 12)
            // A re-drive cursor's lease never ends in a dead-letter topic: its messages are dead letters already, and
            // until 2026-12-05 those a failing re-drive kept leased went to %DLQ%%REDRIVE%<group>, out of reach of
            // every later re-drive (found by review). Its expired leases are offered again, however many.
            if (flight.Attempt >= _options.MaxDeliveryAttempts && !IsRedriveCursor(group.Group))
            {
                DeadLetter(group, queue, offset);
                continue;
            }
            flight.Expired = true;
            group.Redeliver.Enqueue((queue, offset));
            group.Waiters.WakeOne();
        }
        if (renewed && _log.Flush == FlushMode.Sync) _log.RequestCommit(); // nobody waits for a renewal; make it durable soon anyway
        return taken;
    }

    /// <summary>Puts at most <paramref name="max"/> delayed messages whose time has come into their queues; returns how many.</summary>
    private int ReleaseDelayed(long now, int max)
    {
        int taken = _delayed.ForgetRecallsDue(now, max); // recalls remembered until their time (DelayIndex.RememberRecall)
        while (taken < max && _delayed.TryTakeDue(now, out var entry))
        {
            taken++;
            if (!_topics.TryGetValue(entry.Topic, out var topic))
            {
                DropDelayedOfMissingTopic(entry);
                continue;
            }
            int q = PickQueue(topic, entry.RequestedQueueId, entry.MessageGroup);
            long offset = topic.Queues[q].NextOffset;
            // With the release's time: the search by time goes by when an entry entered its queue, which is now, not the due
            // time (until 2026-12-07 a late release made the search skip messages stored between the two).
            // A committed delayed transactional message (no address sent at) names its commit's record: a replay of the log
            // alone that no longer holds the commit still knows the release (RecordApplier.ApplyQueueEntryAdded).
            new QueueEntryAddedRecord(entry.BodyAddress, entry.Topic, q, offset, entry.Tag, entry.MessageGroup, now,
                entry.SentAt < 0 ? entry.SendOrder : null).Write(_writer);
            AppendAndApply();
            MessageIndex.OnReleased(entry.BodyAddress, entry.Topic, q, offset, now); // MessageIndex hook: found on its queue
        }
        if (_log.Flush == FlushMode.Sync && _topics.WaitingForDurability > 0) _log.RequestCommit();
        return taken;
    }

    // Topics a delayed message was dropped for at its release (logged once each; bounded, as a name set must be).
    private readonly HashSet<string> _droppedDelayedTopics = new(StringComparer.Ordinal);

    /// <summary>
    /// A delayed message whose topic no longer exists at its delivery time is dropped. A topic's delete drops its
    /// delayed messages, so only a state that missed a delete holds one. Until 2026-12-06 the release created the topic
    /// in memory instead, with no record of it, past AutoCreateTopics and MaxTopics, and delivered the message there
    /// (found by review: a topic deleted while a checkpoint captured came back after a kill -9). No message relies on
    /// the release to make its topic: a send, a send-back (its %RETRY% topic) and a commit each create theirs, with
    /// its record, before the message starts to wait for its time (see TryGetOrCreate).
    /// </summary>
    private void DropDelayedOfMissingTopic(DelayedEntry entry)
    {
        _delayed.Remove(entry.BodyAddress, out _);
        if (_droppedDelayedTopics.Count >= 1_000) _droppedDelayedTopics.Clear();
        if (_droppedDelayedTopics.Add(entry.Topic))
            _logger.LogWarning("Delayed message at {Address} is due, but its topic {Topic} no longer exists: dropped (more of that topic are dropped without a log line)", entry.BodyAddress, entry.Topic);
    }

    /// <summary>Reads a stored body (a MessageStored, RedrivenStored or HalfStored record) and presents it at the given queue position.</summary>
    private async ValueTask<StoredMessage?> ReadStoredMessageAsync(long bodyAddress, string topic, int queueId, long offset, CancellationToken ct, int sizeHint = 0)
    {
        var bytes = await _log.ReadAsync(bodyAddress, sizeHint, ct).ConfigureAwait(false);
        if (bytes is null) return null;
        return DecodeStoredMessage(bytes, topic, queueId, offset, bytes);
    }

    /// <summary>
    /// Presents a body record (MessageStored, RedrivenStored, HalfStored, or one wrapped in BodyRelocated) at a queue position. With
    /// <paramref name="record"/> (the array <paramref name="bytes"/> lies in, a fresh one of the caller's that nothing
    /// writes afterwards) the message's body is a slice of it; without, a copy.
    /// </summary>
    internal StoredMessage? DecodeStoredMessage(ReadOnlySpan<byte> bytes, string topic, int queueId, long offset, byte[]? record = null)
    {
        try
        {
            // A move wraps the original record, never a wrapper (OriginalOf), so this version writes one level. The 8
            // steps still read the 7 wrappers that 7 moves left in logs of earlier versions, which wrapped the wrapper.
            for (int depth = 0; depth < 8; depth++)
            {
                if (!RecordHeader.TryOpen(bytes, out var kind, out var r, out var error))
                {
                    _logger.LogError("Stored message is corrupt: {Error}", error);
                    return null;
                }
                switch (kind)
                {
                    case RecordKind.BodyRelocated:
                        bytes = BodyRelocatedRecord.Read(ref r).Original;
                        continue;
                    case RecordKind.MessageStored:
                    {
                        var rec = MessageStoredRecord.Read(ref r);
                        return ToStoredMessage(rec.Message, rec.Kind, rec.TransactionId, topic, queueId, offset, record);
                    }
                    case RecordKind.RedrivenStored:
                    {
                        var rec = RedrivenStoredRecord.Read(ref r).Stored;
                        return ToStoredMessage(rec.Message, rec.Kind, rec.TransactionId, topic, queueId, offset, record);
                    }
                    case RecordKind.HalfStored:
                    {
                        var rec = HalfStoredRecord.Read(ref r);
                        return ToStoredMessage(rec.Message, MessageKind.Transaction, rec.TransactionId, topic, queueId, offset, record);
                    }
                    default:
                        _logger.LogError("Record of kind {Kind} is not a message body", kind);
                        return null;
                }
            }
            _logger.LogError("Stored message is wrapped in 8 or more BodyRelocated records (written by an earlier version; its next move unwraps it)");
            return null;
        }
        catch (InvalidDataException ex)
        {
            _logger.LogError("Stored message is malformed: {Error}", ex.Message);
            return null;
        }
    }

    private static StoredMessage ToStoredMessage(in MessageFields m, MessageKind kind, string? txId, string topic, int queueId, long offset, byte[]? record) => new()
    {
        Topic = topic, QueueId = queueId, QueueOffset = offset, MessageId = m.MessageId, TransactionId = txId, Tag = m.Tag, Keys = m.Keys(),
        Properties = m.Properties(out int flag), Flag = flag, Body = BodyOf(m.Body, record), BornTimestampMs = m.BornMs, BornHost = m.BornHost, StoreTimestampMs = m.StoreMs,
        MessageGroup = m.MessageGroup, DeliveryTimestampMs = m.DeliverAtMs > 0 ? m.DeliverAtMs : null, Kind = kind,
        OriginalTopic = m.Topic != topic ? m.Topic : null,
    };

    /// <summary>The body as a slice of the record it was read from (no copy), or a copy when there is no such record.</summary>
    internal static ReadOnlyMemory<byte> BodyOf(ReadOnlySpan<byte> body, byte[]? record) =>
        record is not null && ((ReadOnlySpan<byte>)record).Overlaps(body, out int at) ? record.AsMemory(at, body.Length) : body.ToArray();
}
