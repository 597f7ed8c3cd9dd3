using HalfMsg.Broker.Core.Delivery;
using HalfMsg.Broker.Core.Model;
using HalfMsg.Broker.Core.Storage;
using Microsoft.Extensions.Logging;

namespace HalfMsg.Broker.Core;

public sealed partial class BrokerEngine
{
    /// <summary>Stores a normal, FIFO or delay message. Completes once it is durable (flush sync).</summary>
    public async ValueTask<SendResult> SendAsync(MessageDraft msg, CancellationToken ct = default)
    {
        await _log.WaitForRoomAsync(ct).ConfigureAwait(false);
        long address;
        int queueId;
        long offset;
        lock (_gate)
        {
            long now = NowMs;
            var err = ValidateDraft(msg, now);
            TopicState topic = null!;
            if (err.IsOk) err = TryGetTopicForWrite(msg.Topic, out topic);
            if (!err.IsOk) return new SendResult(err, msg.MessageId, -1, -1);
            bool delayed = msg.DeliveryTimestampMs is long at && at > now;
            queueId = delayed ? -1 : PickQueue(topic, msg.QueueId ?? -1, msg.MessageGroup);
            offset = delayed ? -1 : topic.Queues[queueId].NextOffset;
            var kind = msg.MessageGroup is not null ? MessageKind.Fifo : msg.DeliveryTimestampMs is not null ? MessageKind.Delay : MessageKind.Normal;
            _writer.Begin(RecordKind.MessageStored).I32(queueId).I64(offset).I64(-1).Byte((byte)kind).Str(null).Str(null).I32(msg.QueueId ?? -1);
            WriteMessageFields(msg, now);
            address = AppendRecord();
            ApplyMessageStored(address, msg.Topic, queueId, offset, -1, msg.QueueId ?? -1, msg.Tag, msg.MessageGroup, msg.DeliveryTimestampMs ?? 0);
            Metrics.MessagesStored++;
        }
        await _log.WaitDurableAsync(address, ct).ConfigureAwait(false);
        MessageIndex.OnStored(msg, queueId, offset, NowMs); // MessageIndex hook (issue 12): operator look-up by id/key
        return new SendResult(BrokerError.None, msg.MessageId, queueId, offset);
    }

    private void ApplyMessageStored(long address, string topicName, int queueId, long offset, long previousAddress, int requestedQueue, string? tag, string? messageGroup, long deliverAtMs)
    {
        var topic = ApplyTopicCreated(topicName, IsSystemTopic(topicName) ? 1 : _options.QueuesPerTopic);
        if (offset >= 0)
        {
            if (previousAddress >= 0 && topic.Queues[queueId].TryGet(offset, out var existing))
            {
                // Re-appended by retention: same queue position, new body address, visibility unchanged.
                existing.BodyAddress = address;
                topic.Queues[queueId].Set(offset, existing);
                return;
            }
            AddQueueEntry(topic, queueId, offset, new QueueEntry { BodyAddress = address, VisibleAt = address, Tag = tag, MessageGroup = messageGroup });
        }
        else
        {
            if (previousAddress >= 0 && _delayed.Remove(previousAddress, out var moved))
            {
                moved.BodyAddress = address;
                _delayed[address] = moved;
                _delayDue.Enqueue(moved, moved.DeliverAtMs);
                return;
            }
            AddDelayed(new DelayedEntry { BodyAddress = address, Topic = topicName, RequestedQueueId = requestedQueue, DeliverAtMs = deliverAtMs, Tag = tag, MessageGroup = messageGroup });
        }
    }

    private void AddDelayed(DelayedEntry entry)
    {
        _delayed[entry.BodyAddress] = entry;
        _delayDue.Enqueue(entry, entry.DeliverAtMs);
    }

    private void ApplyQueueEntryAdded(long address, long bodyAddress, string topicName, int queueId, long offset, string? tag, string? messageGroup)
    {
        _delayed.Remove(bodyAddress);
        var topic = ApplyTopicCreated(topicName, IsSystemTopic(topicName) ? 1 : _options.QueuesPerTopic);
        AddQueueEntry(topic, queueId, offset, new QueueEntry { BodyAddress = bodyAddress, VisibleAt = address, Tag = tag, MessageGroup = messageGroup });
    }

    private GroupTopicState GetGroup(string group, TopicState topic)
    {
        if (!_groups.TryGetValue((group, topic.Name), out var state))
        {
            state = new GroupTopicState(group, topic);
            _groups[(group, topic.Name)] = state;
            topic.Groups.Add(state);
        }
        return state;
    }

    private long NextLeaseId() => ((long)_incarnation << 32) | ++_leaseSeq;

    /// <summary>
    /// Leases up to <see cref="ReceiveRequest.BatchSize"/> messages to a consumer of the group: expired leases first (their
    /// delivery attempt + 1), then messages the group has not seen, in queue order. Long-polls up to
    /// <see cref="ReceiveRequest.LongPollTimeout"/> and wakes as soon as a message becomes visible.
    /// </summary>
    public async ValueTask<ReceiveResult> ReceiveAsync(ReceiveRequest req, CancellationToken ct = default)
    {
        if (!IsValidName(req.ConsumerGroup, 255) || IsSystemTopic(req.ConsumerGroup))
            return new(new(BrokerStatus.IllegalConsumerGroup, $"consumer group '{req.ConsumerGroup}' is not a valid name"), []);
        if (!TagFilter.TryParse(req.TagExpression, out var filter, out var filterError))
            return new(new(BrokerStatus.BadRequest, filterError!), []);
        if (req.InvisibleDuration <= TimeSpan.Zero || req.InvisibleDuration > _options.MaxInvisibleDuration)
            return new(new(BrokerStatus.IllegalInvisibleTime, $"invisible duration must be in (0, {_options.MaxInvisibleDuration}]"), []);
        int batch = req.BatchSize <= 0 ? 32 : Math.Min(req.BatchSize, 1024);
        var deadline = _time.GetTimestamp() + (long)(req.LongPollTimeout.TotalSeconds * _time.TimestampFrequency);
        while (true)
        {
            await _log.WaitForRoomAsync(ct).ConfigureAwait(false);
            List<(QueueEntry Entry, int Queue, long Offset, int Attempt, long LeaseId, long Until)> picked;
            Task signal;
            TopicState topic;
            lock (_gate)
            {
                if (!_topics.TryGetValue(req.Topic, out topic!))
                {
                    if (!IsValidName(req.Topic)) return new(new(BrokerStatus.IllegalTopic, $"topic '{req.Topic}' is not a valid name"), []);
                    if (!_options.AutoCreateTopics && !IsSystemTopic(req.Topic)) return new(new(BrokerStatus.TopicNotFound, $"topic '{req.Topic}' does not exist"), []);
                    var err = TryGetOrCreate(req.Topic, out topic);
                    if (!err.IsOk) return new(err, []);
                }
                var group = GetGroup(req.ConsumerGroup, topic);
                signal = topic.Signal;
                picked = PickForDelivery(group, filter, batch, req.InvisibleDuration);
            }
            if (picked.Count > 0)
            {
                var result = new List<DeliveredMessage>(picked.Count);
                foreach (var p in picked)
                {
                    var message = await ReadStoredMessageAsync(p.Entry.BodyAddress, topic.Name, p.Queue, p.Offset, ct).ConfigureAwait(false);
                    if (message is null)
                    {
                        _logger.LogError("Message {Topic}/{Queue}/{Offset} at {Address} could not be read; it stays leased and will be retried", topic.Name, p.Queue, p.Offset, p.Entry.BodyAddress);
                        continue;
                    }
                    result.Add(new DeliveredMessage
                    {
                        Message = message,
                        ReceiptHandle = new ReceiptHandle(p.Queue, p.Offset, p.LeaseId).Encode(),
                        DeliveryAttempt = p.Attempt,
                        InvisibleUntilMs = p.Until,
                    });
                }
                if (result.Count > 0) return new(BrokerError.None, result);
            }
            var remaining = deadline - _time.GetTimestamp();
            if (remaining <= 0) return new(new(BrokerStatus.MessageNotFound, "no new message"), []);
            var wait = TimeSpan.FromSeconds((double)remaining / _time.TimestampFrequency);
            try
            {
                await signal.WaitAsync(wait, _time, ct).ConfigureAwait(false);
            }
            catch (TimeoutException)
            {
            }
        }
    }

    private List<(QueueEntry Entry, int Queue, long Offset, int Attempt, long LeaseId, long Until)> PickForDelivery(
        GroupTopicState group, TagFilter filter, int batch, TimeSpan invisible)
    {
        var picked = new List<(QueueEntry, int, long, int, long, long)>();
        long now = NowMs;
        long until = now + (long)invisible.TotalMilliseconds;
        long durable = _log.DurableUntil;
        group.LastSeenMs = now;
        var topic = group.Topic;

        // 1. Expired leases, oldest expiry first.
        int redeliverable = group.Redeliver.Count;
        for (int i = 0; i < redeliverable && picked.Count < batch; i++)
        {
            var (q, off) = group.Redeliver.Dequeue();
            var gq = group.Queues[q];
            if (!gq.InFlight.TryGetValue(off, out var flight) || !flight.Expired) continue;
            if (!topic.Queues[q].TryGet(off, out var entry)) { FinishInFlight(group, q, off); continue; }
            if (!filter.Matches(entry.Tag)) { group.Redeliver.Enqueue((q, off)); continue; }
            flight.Expired = false;
            flight.Attempt++;
            flight.InvisibleUntilMs = until;
            flight.LeaseId = NextLeaseId();
            _writer.Begin(RecordKind.Delivered).Str(group.Group).Str(topic.Name).I32(q).I64(off).I32(flight.Attempt).I64(until).I64(flight.LeaseId);
            AppendRecord();
            _leaseDue.Enqueue((group, q, off, flight.LeaseId), until);
            picked.Add((entry, q, off, flight.Attempt, flight.LeaseId, until));
            Metrics.Redelivered++;
        }

        // 2. Messages the group has never seen, round-robin over queues.
        int queues = topic.Queues.Length;
        int start = group.RoundRobin++;
        for (int i = 0; i < queues && picked.Count < batch; i++)
        {
            int q = (int)((uint)(start + i) % (uint)queues);
            var queue = topic.Queues[q];
            var gq = group.Queues[q];
            if (gq.NextOffset < queue.BaseOffset) { gq.NextOffset = queue.BaseOffset; if (gq.DoneBelow < queue.BaseOffset) gq.DoneBelow = queue.BaseOffset; }
            while (picked.Count < batch && queue.TryGet(gq.NextOffset, out var entry))
            {
                if (entry.VisibleAt >= durable) break;            // not durable yet: invisible
                long off = gq.NextOffset;
                if (!filter.Matches(entry.Tag))
                {
                    gq.NextOffset++;
                    gq.MarkDone(off);                              // filtered out for this group
                    continue;
                }
                if (entry.MessageGroup is not null && group.BusyMessageGroups.ContainsKey(entry.MessageGroup))
                    break;                                         // FIFO: an earlier message of this group is in flight
                gq.NextOffset++;
                long lease = NextLeaseId();
                AddInFlight(group, q, off, new InFlight { Attempt = 1, InvisibleUntilMs = until, LeaseId = lease, MessageGroup = entry.MessageGroup });
                _writer.Begin(RecordKind.Delivered).Str(group.Group).Str(topic.Name).I32(q).I64(off).I32(1).I64(until).I64(lease);
                AppendRecord();
                _leaseDue.Enqueue((group, q, off, lease), until);
                picked.Add((entry, q, off, 1, lease, until));
                Metrics.Delivered++;
            }
        }
        return picked;
    }

    private static void AddInFlight(GroupTopicState group, int q, long off, InFlight flight)
    {
        group.Queues[q].InFlight[off] = flight;
        if (flight.MessageGroup is not null)
            group.BusyMessageGroups[flight.MessageGroup] = group.BusyMessageGroups.GetValueOrDefault(flight.MessageGroup) + 1;
    }

    private static void FinishInFlight(GroupTopicState group, int q, long off)
    {
        var gq = group.Queues[q];
        if (gq.InFlight.TryGetValue(off, out var flight) && flight.MessageGroup is not null)
        {
            int n = group.BusyMessageGroups.GetValueOrDefault(flight.MessageGroup) - 1;
            if (n <= 0) group.BusyMessageGroups.Remove(flight.MessageGroup); else group.BusyMessageGroups[flight.MessageGroup] = n;
        }
        gq.MarkDone(off);
    }

    private void ApplyDelivered(string groupName, string topicName, int q, long off, int attempt, long until, long leaseId)
    {
        if (!_topics.TryGetValue(topicName, out var topic) || q >= topic.Queues.Length) return;
        var group = GetGroup(groupName, topic);
        var gq = group.Queues[q];
        if (off >= gq.NextOffset)
        {
            // Offsets skipped before this fresh delivery were filtered out.
            for (long o = gq.NextOffset; o < off; o++) gq.MarkDone(o);
            gq.NextOffset = off + 1;
        }
        if (off < gq.DoneBelow || gq.Done.Contains(off)) return;
        if (gq.InFlight.TryGetValue(off, out var flight))
        {
            flight.Attempt = attempt; flight.InvisibleUntilMs = until; flight.LeaseId = leaseId; flight.Expired = false;
        }
        else
        {
            topic.Queues[q].TryGet(off, out var entry);
            AddInFlight(group, q, off, new InFlight { Attempt = attempt, InvisibleUntilMs = until, LeaseId = leaseId, MessageGroup = entry.MessageGroup });
        }
    }

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
        if (flight.LeaseId != handle.LeaseId || flight.Expired || flight.InvisibleUntilMs <= NowMs)
            return new(BrokerStatus.InvalidReceiptHandle, "receipt handle is stale: its invisibility expired or it was renewed; use the newest handle");
        return BrokerError.None;
    }

    /// <summary>Acknowledges a delivery. Completes once the ack is durable, so an acked message is never redelivered after a crash.</summary>
    public async ValueTask<BrokerError> AckAsync(string group, string topic, string receiptHandle, CancellationToken ct = default)
    {
        await _log.WaitForRoomAsync(ct).ConfigureAwait(false);
        long address;
        lock (_gate)
        {
            var err = TryGetLease(group, topic, receiptHandle, out var state, out var handle, out _);
            if (!err.IsOk) return err;
            _writer.Begin(RecordKind.Acked).Str(group).Str(topic).I32(handle.QueueId).I64(handle.QueueOffset);
            address = AppendRecord();
            FinishInFlight(state, handle.QueueId, handle.QueueOffset);
            Metrics.Acked++;
            // A FIFO group may have been waiting for this message.
            state.Topic.Wake();
        }
        await _log.WaitDurableAsync(address, ct).ConfigureAwait(false);
        return BrokerError.None;
    }

    private void ApplyAcked(string groupName, string topicName, int q, long off)
    {
        if (!_topics.TryGetValue(topicName, out var topic) || q >= topic.Queues.Length) return;
        FinishInFlight(GetGroup(groupName, topic), q, off);
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
            until = NowMs + (long)duration.TotalMilliseconds;
            flight.LeaseId = NextLeaseId();
            flight.InvisibleUntilMs = until;
            _writer.Begin(RecordKind.InvisibilityChanged).Str(group).Str(topic).I32(handle.QueueId).I64(handle.QueueOffset).I64(until).I64(flight.LeaseId);
            address = AppendRecord();
            _leaseDue.Enqueue((state, handle.QueueId, handle.QueueOffset, flight.LeaseId), until);
            newHandle = new ReceiptHandle(handle.QueueId, handle.QueueOffset, flight.LeaseId).Encode();
            if (duration == TimeSpan.Zero) SweepLeases(NowMs);
        }
        await _log.WaitDurableAsync(address, ct).ConfigureAwait(false);
        return new(BrokerError.None, newHandle, until);
    }

    private void ApplyInvisibilityChanged(string groupName, string topicName, int q, long off, long until, long leaseId)
    {
        if (!_topics.TryGetValue(topicName, out var topic) || q >= topic.Queues.Length) return;
        var group = GetGroup(groupName, topic);
        if (group.Queues[q].InFlight.TryGetValue(off, out var flight))
        {
            flight.InvisibleUntilMs = until; flight.LeaseId = leaseId; flight.Expired = false;
        }
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
        var dlq = ApplyTopicCreated(dlqName, 1);
        long dlqOffset = dlq.Queues[0].NextOffset;
        _writer.Begin(RecordKind.DeadLettered).Str(group.Group).Str(group.Topic.Name).I32(q).I64(off).I64(dlqOffset);
        long address = AppendRecord();
        ApplyDeadLettered(address, group.Group, group.Topic.Name, q, off, dlqOffset);
        Metrics.DeadLettered++;
        _logger.LogInformation("Message {Topic}/{Queue}/{Offset} moved to {Dlq} for group {Group}", group.Topic.Name, q, off, dlqName, group.Group);
        return address;
    }

    private void ApplyDeadLettered(long address, string groupName, string topicName, int q, long off, long dlqOffset)
    {
        if (!_topics.TryGetValue(topicName, out var topic) || q >= topic.Queues.Length) return;
        var group = GetGroup(groupName, topic);
        topic.Queues[q].TryGet(off, out var entry);
        FinishInFlight(group, q, off);
        var dlq = ApplyTopicCreated(DeadLetterPrefix + groupName, 1);
        // The dead-letter entry points at the original body: no copy of the message is written.
        AddQueueEntry(dlq, 0, dlqOffset, new QueueEntry { BodyAddress = entry.BodyAddress, VisibleAt = address, Tag = entry.Tag, MessageGroup = null });
    }

    /// <summary>Expires leases and releases delay messages whose time has come. Runs on the sweeper loop; tests call it with a fake clock.</summary>
    public void RunSweep()
    {
        lock (_gate)
        {
            long now = NowMs;
            SweepLeases(now);
            ReleaseDelayed(now);
            ExpireDecisions(now);
        }
    }

    private void SweepLeases(long now)
    {
        while (_leaseDue.TryPeek(out var item, out var due) && due <= now)
        {
            _leaseDue.Dequeue();
            var gq = item.Group.Queues[item.Queue];
            if (!gq.InFlight.TryGetValue(item.Offset, out var flight) || flight.LeaseId != item.LeaseId || flight.Expired) continue;
            if (flight.Attempt >= _options.MaxDeliveryAttempts)
            {
                DeadLetter(item.Group, item.Queue, item.Offset);
                continue;
            }
            flight.Expired = true;
            item.Group.Redeliver.Enqueue((item.Queue, item.Offset));
            item.Group.Topic.Wake();
        }
    }

    private void ReleaseDelayed(long now)
    {
        while (_delayDue.TryPeek(out var entry, out var due) && due <= now)
        {
            _delayDue.Dequeue();
            if (!_delayed.TryGetValue(entry.BodyAddress, out var live) || !ReferenceEquals(live, entry)) continue;
            var topic = ApplyTopicCreated(entry.Topic, _options.QueuesPerTopic);
            int q = PickQueue(topic, entry.RequestedQueueId, entry.MessageGroup);
            long off = topic.Queues[q].NextOffset;
            _writer.Begin(RecordKind.QueueEntryAdded).I64(entry.BodyAddress).Str(entry.Topic).I32(q).I64(off).Str(entry.Tag).Str(entry.MessageGroup);
            long address = AppendRecord();
            ApplyQueueEntryAdded(address, entry.BodyAddress, entry.Topic, q, off, entry.Tag, entry.MessageGroup);
        }
        if (_log.Flush == FlushMode.Sync && _pendingVisible.Count > 0) _log.RequestCommit();
    }

    /// <summary>Reads a stored body (a MessageStored or HalfStored record) and presents it at the given queue position.</summary>
    private async ValueTask<StoredMessage?> ReadStoredMessageAsync(long bodyAddress, string topic, int queueId, long offset, CancellationToken ct)
    {
        var bytes = await _log.ReadAsync(bodyAddress, ct).ConfigureAwait(false);
        if (bytes is null) return null;
        return DecodeStoredMessage(bytes, topic, queueId, offset);
    }

    internal StoredMessage? DecodeStoredMessage(byte[] bytes, string topic, int queueId, long offset)
    {
        if (!RecordHeader.TryOpen(bytes, out var kind, out var r, out var error))
        {
            _logger.LogError("Stored message is corrupt: {Error}", error);
            return null;
        }
        string? txId = null;
        MessageKind msgKind;
        if (kind == RecordKind.MessageStored)
        {
            r.I32(); r.I64(); r.I64(); msgKind = (MessageKind)r.Byte(); txId = r.Str(); r.Str(); r.I32();
        }
        else if (kind == RecordKind.HalfStored)
        {
            txId = r.Str(); r.Str(); r.Str(); r.I64(); r.I32(); r.I64(); r.Bool(); r.I32();
            msgKind = MessageKind.Transaction;
        }
        else
        {
            _logger.LogError("Record of kind {Kind} is not a message body", kind);
            return null;
        }
        string originalTopic = r.Str()!;
        string messageId = r.Str()!;
        string? tag = r.Str();
        var keys = r.StrList();
        var props = r.StrMap();
        long born = r.I64();
        string? bornHost = r.Str();
        long store = r.I64();
        string? messageGroup = r.Str();
        long deliverAt = r.I64();
        var body = r.Bytes().ToArray();
        return new StoredMessage
        {
            Topic = topic, QueueId = queueId, QueueOffset = offset, MessageId = messageId, TransactionId = txId, Tag = tag, Keys = keys,
            Properties = props, Body = body, BornTimestampMs = born, BornHost = bornHost, StoreTimestampMs = store, MessageGroup = messageGroup,
            DeliveryTimestampMs = deliverAt > 0 ? deliverAt : null, Kind = msgKind,
            OriginalTopic = originalTopic != topic ? originalTopic : null,
        };
    }
}
