using HalfMsg.Broker.Core.Delivery;
using HalfMsg.Broker.Core.Diagnostics;
using HalfMsg.Broker.Core.Model;
using HalfMsg.Broker.Core.Storage;
using Microsoft.Extensions.Logging;

namespace HalfMsg.Broker.Core;

public sealed partial class BrokerEngine
{
    /// <summary>Completes when the message index has been rebuilt from the log after start (at once on an empty log).</summary>
    public Task MessageIndexReady { get; private set; } = Task.CompletedTask;

    /// <summary>
    /// Rebuilds the <see cref="MessageIndex"/> after a start (a clean one or a kill -9) by reading, in the background,
    /// the records the retained log held when recovery ended: message and half bodies (also those retention re-appended),
    /// decisions, releases, recalls, deliveries, acks, lease changes and dead-letters. It only reads the log and feeds
    /// the index: no engine state changes. Records appended after the start are the live hooks' business; they are kept
    /// aside meanwhile and replayed over the rebuilt index at the end (see <see cref="MessageIndex"/>). Called once, after
    /// recovery.
    /// </summary>
    internal void StartIndexRebuild()
    {
        long from = _log.BeginAddress, until = _log.TailAddress;
        if (from >= until) return;
        // The recalls remembered when recovery ended (the log's tail), before any live step: which delayed copies the
        // log holds were dropped as they were stored (see IndexScanner.NoteRecallOrCopy). Usually none.
        HashSet<DelayIndex.RecallKey>? recalls = null;
        lock (_gate)
        {
            if (_delayed.RecallCount > 0)
            {
                recalls = [];
                for (int shard = 0; shard < DelayIndex.Shards; shard++) recalls.UnionWith(_delayed.SnapshotRecallShard(shard));
            }
        }
        MessageIndex.BeginWarmup();
        MessageIndexReady = Task.Run(() =>
        {
            var started = System.Diagnostics.Stopwatch.GetTimestamp();
            var scanner = new IndexScanner(this, MessageIndex.NewState(), until, recalls);
            try
            {
                _log.Replay(from, ref scanner, until);
            }
            catch (OperationCanceledException)
            {
                return;
            }
            catch (Exception ex)
            {
                // Retention may cut the log under the scan, or a record may be unreadable: keep what was read.
                _logger.LogWarning(ex, "Message index rebuild stopped after {Records} records: {Error}", scanner.Records, ex.Message);
            }
            scanner.RecallDroppedCopies();
            bool complete = MessageIndex.CompleteWarmup(scanner.State, scanner.Records);
            _logger.LogInformation("Message index rebuilt from the log: {Messages} messages from {Records} records in {Ms} ms{Incomplete}",
                MessageIndex.Count, scanner.Records, (long)System.Diagnostics.Stopwatch.GetElapsedTime(started).TotalMilliseconds,
                complete ? "" : " (too much live traffic meanwhile: some live steps are missing)");
        });
    }

    /// <summary>
    /// Reads the log into a <see cref="MessageIndex.State"/>. A delayed copy of a message recalled before it was stored
    /// (a send retried after the recall) was dropped as it was stored, and the live index shows it recalled at once
    /// (AppendMessage). Its stored record comes after the recall's, so the rebuild shows it recalled too: a delayed copy
    /// whose recall was still remembered at the log's tail (<paramref name="recalls"/>) either is named by a recall's
    /// record later in the log (it waited, then was recalled), or was dropped. It is taken as dropped at once when a
    /// recall's record of the same message and time came before it, else at the end of the scan if no recall's record
    /// named it (retention cut the recall's record, which the engine then knows from its checkpoint). Until 2026-12-06
    /// the rebuilt index showed such a copy stored again and waiting for its time (found by review).
    /// </summary>
    private struct IndexScanner(BrokerEngine engine, MessageIndex.State state, long until, HashSet<DelayIndex.RecallKey>? recalls) : IRecordConsumer
    {
        public readonly MessageIndex.State State = state;
        public long Records;
        private readonly HashSet<DelayIndex.RecallKey>? _recalls = recalls;
        // Their ids: a delayed copy of another message is not read again for its delivery time.
        private readonly HashSet<string>? _recalledIds = recalls?.Select(k => k.MessageId).ToHashSet(StringComparer.Ordinal);
        // Only with recalls remembered: the delayed copies of recalled messages seen, by the address they were sent at
        // (a recall's record names it), and whether each may have been dropped (not one retention moved while it waited).
        private readonly Dictionary<long, (DelayIndex.RecallKey Key, long StoredAtMs, bool MayBeDropped)>? _copies = recalls is null ? null : [];
        // Recalls whose record the scan has read: a copy of theirs stored after it was dropped.
        private readonly HashSet<DelayIndex.RecallKey>? _recalledBefore = recalls is null ? null : [];
        // The address each of those ids was last stored at: a copy taken as dropped at the end of the scan only if no
        // later message of its id came (a send of the id for another time, or for now, is shown as itself).
        private readonly Dictionary<string, long>? _lastStored = recalls is null ? null : new(StringComparer.Ordinal);

        /// <summary>After the scan: the copies no recall's record named were dropped as they were stored.</summary>
        public readonly void RecallDroppedCopies()
        {
            if (_copies is null) return;
            foreach (var (address, copy) in _copies.OrderBy(c => c.Key))
            {
                // Until the evening session of 2026-12-06 a copy was taken as dropped however the id was sent after it,
                // and a message of the id sent later for now, and delivered, showed "recalled" (found by review).
                if (copy.MayBeDropped && _lastStored!.GetValueOrDefault(copy.Key.MessageId, -1) == address)
                    State.Apply(Dropped(address, copy.Key, copy.StoredAtMs));
            }
        }

        // As the live hook reports a dropped copy: recalled at its store time, found by its body's address.
        private static MessageIndex.Op Dropped(long address, DelayIndex.RecallKey key, long storedAtMs)
            => new(MessageIndex.OpKind.Recalled, key.MessageId, key.Topic, storedAtMs) { Address = address };

        private readonly void NoteRecallOrCopy(ReadOnlySpan<byte> record, long address, in MessageIndex.Op op)
        {
            if (op.Kind == MessageIndex.OpKind.Recalled)
            {
                if (!RecordHeader.TryOpen(record, out _, out var r, out _)) return;
                if (_copies!.Remove(DelayRecalledRecord.Read(ref r).SentAt, out var recalled)) _recalledBefore!.Add(recalled.Key);
                return;
            }
            if (op.Kind == MessageIndex.OpKind.Stored && !op.Relocated && op.MessageId is { } id && _recalledIds!.Contains(id))
                _lastStored![id] = address;
            bool waiting = op.Relocated ? op.Delayed : op.QueueId < 0;
            if (op.Kind != MessageIndex.OpKind.Stored || !waiting || op.MessageId is null || op.Topic is null
                || !_recalledIds!.Contains(op.MessageId) || DeliverAtOf(record) is not long dueMs) return;
            var key = new DelayIndex.RecallKey(op.Topic, dueMs, op.MessageId);
            if (!_recalls!.Contains(key)) return;
            if (op.Relocated)
                _copies![op.PreviousAddress] = (key, op.AtMs, false); // it waited when retention moved it: not dropped
            else if (_recalledBefore!.Contains(key))
                State.Apply(Dropped(address, key, op.AtMs));
            else
                _copies![address] = (key, op.AtMs, true);
        }

        private readonly void NoteCarriedRecall(ReadOnlySpan<byte> record)
        {
            if (!RecordHeader.TryOpen(record, out _, out var r, out _)) return;
            var rec = DelayRecalledRecord.Read(ref r);
            if (rec.SentAt < 0 && rec.DeliverAtMs is { } dueMs) _recalledBefore!.Add(new DelayIndex.RecallKey(rec.Topic, dueMs, rec.MessageId));
        }

        private static long? DeliverAtOf(ReadOnlySpan<byte> record)
        {
            if (!RecordHeader.TryOpen(record, out var kind, out var r, out _)) return null;
            return kind switch
            {
                RecordKind.MessageStored => MessageStoredRecord.Read(ref r).Message.DeliverAtMs,
                RecordKind.RedrivenStored => RedrivenStoredRecord.Read(ref r).Stored.Message.DeliverAtMs,
                RecordKind.BodyRelocated => DeliverAtOf(BodyRelocatedRecord.Read(ref r).Original),
                _ => null,
            };
        }

        public void Consume(ReadOnlySpan<byte> record, long address)
        {
            if (address >= until) return;
            // The engine is shutting down: stop reading the log before it is closed (caught below the scan).
            if (engine._stop.IsCancellationRequested) throw new OperationCanceledException("the broker is stopping");
            if ((++Records & 0xFFFF) == 0) engine.MessageIndex.ReportScanned(Records);
            try
            {
                // A recall a retention cut carried forward with no address (BrokerEngine.CarryRecallsBelowAsync): a copy
                // of its message stored after it was dropped, as after the recall's own record.
                if ((RecordKind)record[0] == RecordKind.DelayRecalled && _recalledBefore is not null) NoteCarriedRecall(record);
                if (ToOp(record, address, null) is { } op)
                {
                    State.Apply(op);
                    if (_recalls is not null) NoteRecallOrCopy(record, address, op);
                    // The kind byte first: the rest of the scan opens (and checksums) each record once.
                    if ((RecordKind)record[0] is RecordKind.Redriven or RecordKind.RedrivenAcked or RecordKind.RedrivenStored
                        && RedriveStep(record) is { } redriven)
                        State.Apply(redriven);
                }
            }
            catch (Exception ex) when (ex is InvalidDataException or OverflowException or IndexOutOfRangeException or ArgumentOutOfRangeException)
            {
                // A damaged record: recovery already reported it; the index just does without it.
            }
        }

        // relocated: the body a BodyRelocated record carries (its new place is `address`, it was at `previous`; `delayed`:
        // a delayed message still waiting for its time).
        private static MessageIndex.Op? ToOp(ReadOnlySpan<byte> record, long address, List<(string, int, long)>? positions,
            bool relocated = false, long previous = -1, bool delayed = false)
        {
            if (!RecordHeader.TryOpen(record, out var kind, out var r, out _)) return null;
            switch (kind)
            {
                case RecordKind.MessageStored:
                    return Stored(MessageStoredRecord.Read(ref r), address, relocated, previous, delayed, positions);
                case RecordKind.RedrivenStored:
                    // A re-drive into a retry topic: the message stored there (the re-drive cursors' acks are not indexed).
                    return Stored(RedrivenStoredRecord.Read(ref r).Stored, address, relocated, previous, delayed, positions);
                case RecordKind.HalfStored:
                {
                    var rec = HalfStoredRecord.Read(ref r);
                    ref readonly var m = ref rec.Message;
                    return new MessageIndex.Op(MessageIndex.OpKind.Half, rec.TransactionId, m.Topic, m.StoreMs)
                    {
                        Tag = m.Tag, Keys = m.Keys(), Group = rec.ProducerGroup, MessageKind = MessageKind.Transaction, Relocated = relocated, Positions = positions,
                        Address = address, PreviousAddress = previous, Delayed = delayed,
                    };
                }
                case RecordKind.BodyRelocated:
                {
                    var rec = BodyRelocatedRecord.Read(ref r);
                    return ToOp(rec.Original, address, rec.QueueRefs, relocated: true, rec.PreviousAddress, rec.Delayed);
                }
                case RecordKind.QueueEntryAdded:
                {
                    // A delayed message's release: found by its body's address, at the release's time (none in records
                    // written before 2026-12-07).
                    var rec = QueueEntryAddedRecord.Read(ref r);
                    return new MessageIndex.Op(MessageIndex.OpKind.Released, null, rec.Topic, rec.AtMs ?? -1) { Address = rec.BodyAddress, QueueId = rec.QueueId, Offset = rec.Offset };
                }
                case RecordKind.DelayRecalled:
                {
                    // It names the address the message was sent at, not where retention may have moved its body: found by id.
                    var rec = DelayRecalledRecord.Read(ref r);
                    // A recall a retention cut carried forward naming no address is no step of the message (see Consume).
                    if (rec.SentAt < 0) return null;
                    return new MessageIndex.Op(MessageIndex.OpKind.Recalled, rec.MessageId, rec.Topic, rec.AtMs);
                }
                case RecordKind.Redriven:
                    return PutBack(RedrivenRecord.Read(ref r));
                case RecordKind.RedrivenAcked:
                    return PutBack(RedrivenAckedRecord.Read(ref r).Put); // the re-drive cursors' acks are not indexed
                case RecordKind.TxDecided:
                {
                    var rec = TxDecidedRecord.Read(ref r);
                    return new MessageIndex.Op(MessageIndex.OpKind.Decided, rec.TransactionId, null, rec.AtMs)
                    {
                        Resolution = rec.Resolution, Source = rec.Source, QueueId = rec.QueueId, Offset = rec.Offset,
                    };
                }
                case RecordKind.Delivered:
                {
                    var rec = DeliveredRecord.Read(ref r);
                    // A message group's message passed over (not delivered: the live index is not told either).
                    if (rec.Group.StartsWith(RedrivePrefix, StringComparison.Ordinal) || rec.IsPassedOver) return null;
                    return new MessageIndex.Op(MessageIndex.OpKind.Delivered, null, rec.Topic, -1) { Group = rec.Group, QueueId = rec.QueueId, Offset = rec.Offset, Attempt = rec.Attempt };
                }
                case RecordKind.Acked:
                {
                    var rec = AckedRecord.Read(ref r);
                    if (rec.Group.StartsWith(RedrivePrefix, StringComparison.Ordinal)) return null;
                    // An SQL filter's settle: the message was leased (its DeliveredRecord came first) but never handed
                    // out. The step takes the place of that delivery, as the live index shows it (until 2026-12-06 the
                    // rebuilt history said it was delivered to the group and acked).
                    var step = (RecordHeader.FlagsOf(record) & RecordHeader.FilteredOutFlag) != 0 ? MessageIndex.OpKind.FilteredOut : MessageIndex.OpKind.Acked;
                    return new MessageIndex.Op(step, null, rec.Topic, -1) { Group = rec.Group, QueueId = rec.QueueId, Offset = rec.Offset, ReplacesDelivery = step == MessageIndex.OpKind.FilteredOut };
                }
                case RecordKind.InvisibilityChanged:
                {
                    var rec = InvisibilityChangedRecord.Read(ref r);
                    return new MessageIndex.Op(MessageIndex.OpKind.LeaseChanged, null, rec.Topic, -1) { Group = rec.Group, QueueId = rec.QueueId, Offset = rec.Offset, UntilMs = rec.UntilMs };
                }
                case RecordKind.DeadLettered:
                {
                    var rec = DeadLetteredRecord.Read(ref r);
                    return new MessageIndex.Op(MessageIndex.OpKind.DeadLettered, null, rec.Topic, -1)
                    {
                        Group = rec.Group, QueueId = rec.QueueId, Offset = rec.Offset, Detail = DeadLetterPrefix + rec.Group, DlqOffset = rec.DlqOffset,
                    };
                }
                default:
                    return null;
            }
        }

        private static MessageIndex.Op Stored(in MessageStoredRecord rec, long address, bool relocated, long previous, bool delayed, List<(string, int, long)>? positions)
        {
            ref readonly var m = ref rec.Message;
            return new MessageIndex.Op(MessageIndex.OpKind.Stored, m.MessageId, m.Topic, m.StoreMs)
            {
                Tag = m.Tag, Keys = m.Keys(), MessageKind = rec.Kind, QueueId = rec.QueueId, Offset = rec.Offset, Relocated = relocated, Positions = positions,
                Address = address, PreviousAddress = previous, Delayed = delayed,
            };
        }

        // The message again, at its new position (as the live hook reports it: stored again).
        /// <summary>
        /// A re-drive's own step, after the message's stored-again step, as the live hook adds it
        /// (<see cref="MessageIndex.OnRedriven"/>): the group and where it went. Until late on 2026-12-06 the rebuilt index
        /// had only the stored-again step, so a message's history after a restart lacked the re-drive (found by review).
        /// </summary>
        private static MessageIndex.Op? RedriveStep(ReadOnlySpan<byte> record)
        {
            if (!RecordHeader.TryOpen(record, out var kind, out var r, out _)) return null;
            switch (kind)
            {
                case RecordKind.Redriven:
                case RecordKind.RedrivenAcked: // its head is the put-back
                {
                    var put = RedrivenRecord.Read(ref r);
                    return new MessageIndex.Op(MessageIndex.OpKind.Redriven, put.MessageId, put.Topic, put.AtMs) { Group = put.Group };
                }
                case RecordKind.RedrivenStored:
                {
                    var rec = RedrivenStoredRecord.Read(ref r);
                    string dlq = rec.Acks.DeadLetterTopic;
                    string group = dlq.StartsWith(BrokerEngine.DeadLetterPrefix, StringComparison.Ordinal) ? dlq[BrokerEngine.DeadLetterPrefix.Length..] : dlq;
                    ref readonly var m = ref rec.Stored.Message;
                    return new MessageIndex.Op(MessageIndex.OpKind.Redriven, m.MessageId, m.Topic, m.StoreMs) { Group = group };
                }
                default:
                    return null;
            }
        }

        private static MessageIndex.Op PutBack(RedrivenRecord rec) => new(MessageIndex.OpKind.Stored, rec.MessageId, rec.Topic, rec.AtMs)
        {
            Tag = rec.Tag, QueueId = rec.QueueId, Offset = rec.Offset,
        };
    }
}
