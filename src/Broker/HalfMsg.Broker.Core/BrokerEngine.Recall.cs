using HalfMsg.Broker.Core.Delivery;
using HalfMsg.Broker.Core.Storage;
using Microsoft.Extensions.Logging;

namespace HalfMsg.Broker.Core;

/// <summary>What a recall of a delay message found (<see cref="BrokerEngine.RecallDelayedAsync"/>).</summary>
public enum RecallOutcome
{
    /// <summary>It was waiting for its delivery time: it is recalled, durably, and will never be delivered.</summary>
    Recalled,
    /// <summary>Nothing waits under that name though its delivery time lies ahead: already recalled, its topic deleted
    /// and created again, or never sent here. Nothing changed.</summary>
    NotWaiting,
    /// <summary>Nothing waits under that name and its delivery time has passed: it was delivered (put on its queue)
    /// already, or never sent here. Nothing changed.</summary>
    Delivered,
}

public sealed partial class BrokerEngine
{
    /// <summary>
    /// Recalls the delay message of <paramref name="topic"/> sent as the record at <paramref name="sentAt"/> (its
    /// <see cref="Model.SendResult.LogAddress"/>) with delivery time <paramref name="deliverAtMs"/>, as RocketMQ 5.3's
    /// RecallMessage does: a <see cref="DelayRecalledRecord"/> takes it out of the delay index, so it is never put on
    /// its queue, and replay (after a restart, a kill -9, over any checkpoint) takes it out again. Completes once that
    /// record is durable. The address names one message for good: no other record is ever written there, and
    /// retention's moves are followed (<see cref="DelayedEntry.SentAt"/>). A committed delayed transaction message
    /// cannot be recalled (none is named by the address it was sent at). <paramref name="messageId"/> must be the id the
    /// message was stored with: a handle that names the address of one message and the id of another matches nothing
    /// (<see cref="RecallOutcome.NotWaiting"/> or <see cref="RecallOutcome.Delivered"/>), as a handle matching no
    /// message in Apache's broker, whose recall finds the message by its id. Every other waiting copy of the message (a
    /// send retried after a timeout stores it again, with the same id and time, at another address) is recalled with it,
    /// a record each: Apache's recall, a delete marker for the id in the time's slot, takes out every copy in the slot.
    /// A copy stored after the recall (a send retried later) is accepted and dropped, as Apache's marker drops it at the
    /// slot's time: the recall is remembered until its delivery time (<c>DelayIndex.RememberRecall</c>), at most
    /// <see cref="CoreOptions.MaxRememberedRecalls"/> of them; a recall beyond them is refused
    /// (<see cref="BrokerStatus.TooManyRequests"/>). A recall of a message whose recall is remembered but whose copy still
    /// waits (a kill -9 kept the handle's record and not the copy's) takes that copy out, and answers
    /// <see cref="RecallOutcome.NotWaiting"/>.
    /// </summary>
    public async ValueTask<(BrokerError Error, RecallOutcome Outcome)> RecallDelayedAsync(string topic, long sentAt, long deliverAtMs, string messageId,
        CancellationToken ct = default)
    {
        await _log.WaitForRoomAsync(ct).ConfigureAwait(false);
        var (error, storedId) = await WaitingMessageIdAsync(topic, sentAt, deliverAtMs, messageId, ct).ConfigureAwait(false);
        if (!error.IsOk) return (error, default);
        // A copy stored while the copies' bodies are read (a send retried meanwhile) is not on the list, and no tombstone
        // drops it yet: until the review of the afternoon session of 2026-12-06 it waited and was delivered. Under the
        // final lock the list is taken again (no reads: ids' hashes only); a candidate not seen before sends the recall
        // round again, three times at most; after the last, the copies are listed once more once the recall is
        // remembered (below).
        for (int round = 0; ; round++)
        {
            List<long> copies = [];
            List<long> listed = [];
            if (storedId == messageId)
            {
                (error, copies, listed) = await WaitingCopiesAsync(topic, sentAt, deliverAtMs, messageId, ct).ConfigureAwait(false);
                if (!error.IsOk) return (error, default);
            }
            bool lastRound = round >= 3;
            var result = RecallUnderLock(topic, sentAt, deliverAtMs, messageId, storedId, copies, listed, lastRound);
            if (result is not { } done) continue;
            if (!done.Error.IsOk) return (done.Error, default);
            long address = done.Address;
            // The recall is remembered now (or was before: a repeat, or one retried after a kill -9 that cut its copies'
            // records), so a copy stored from here on is dropped at its store: the copies stored before it are all there
            // is, and they are listed once more and recalled. Until the night session of 2026-12-06 a copy stored while
            // the last round read the copies' ids stayed waiting and was delivered (the index showed the message recalled).
            bool remembered;
            lock (_gate) remembered = _delayed.IsRecalled(topic, deliverAtMs, messageId);
            if (remembered && (lastRound || done.Outcome == RecallOutcome.NotWaiting))
            {
                // Not cancellable (its reads are bounded): the handle's record is written, and a recall cancelled here
                // left the copies stored during its last listing waiting (found by review of the night session).
                var (lateError, late) = await RecallRemainingCopiesAsync(topic, sentAt, deliverAtMs, messageId, CancellationToken.None).ConfigureAwait(false);
                if (!lateError.IsOk) return (lateError, default);
                address = Math.Max(address, late);
            }
            if (address >= 0) await _log.WaitDurableAsync(address, ct).ConfigureAwait(false);
            return (BrokerError.None, done.Outcome);
        }
    }

    /// <summary>
    /// Recalls the waiting copies of a message whose recall is remembered (<see cref="RecallDelayedAsync"/>): every copy
    /// stored after the recall was dropped at its store, so the list taken here is complete. Returns the address of the
    /// last record appended, or -1.
    /// </summary>
    private async ValueTask<(BrokerError Error, long Address)> RecallRemainingCopiesAsync(string topic, long sentAt, long deliverAtMs, string messageId,
        CancellationToken ct)
    {
        var (error, copies, _) = await WaitingCopiesAsync(topic, sentAt, deliverAtMs, messageId, ct).ConfigureAwait(false);
        if (!error.IsOk || copies.Count == 0) return (error, -1);
        lock (_gate) return (BrokerError.None, AppendRecalledCopies(topic, deliverAtMs, copies, messageId, NowMs));
    }

    /// <summary>
    /// At start, before the first sweep: takes out the waiting copies of messages whose recall is remembered. A recall
    /// appends the records of the copies it listed after its handle's own when copies were stored during its last
    /// listing (<see cref="RecallDelayedAsync"/>), so a kill -9 between them leaves the recall remembered and such a copy
    /// waiting, to be delivered unless the caller retried. Any waiting copy of a remembered recall is one of those: a
    /// copy stored after the recall is dropped at its store. The recalls are looked at one table of
    /// <see cref="DelayIndex.Shards"/> per hold of the lock (a dictionary look-up each); bodies are read only for
    /// candidates with the recalled id's hash, which a broker that did not crash there has none of. Returns how many
    /// copies it recalled.
    /// </summary>
    internal async Task<int> RecallCopiesLeftByCrashAsync(CancellationToken ct)
    {
        int recalled = 0;
        var withCopies = new List<DelayIndex.RecallKey>();
        for (int shard = 0; shard < DelayIndex.Shards; shard++)
        {
            withCopies.Clear();
            lock (_gate)
            {
                // Whether any candidate waits, not the list: the first one found answers (a time with many entries of
                // unknown id hash, from an old checkpoint, is not walked once per recall under one hold).
                foreach (var key in _delayed.SnapshotRecallShard(shard))
                {
                    if (_delayed.AnyCopyDueAt(key.Topic, key.DeliverAtMs, key.MessageId)) withCopies.Add(key);
                }
            }
            foreach (var (topic, dueMs, messageId) in withCopies)
            {
                var (error, address) = await RecallRemainingCopiesAsync(topic, -1, dueMs, messageId, ct).ConfigureAwait(false);
                // The log failing ends the pass (the broker says so; a retried recall takes them out); a body moved
                // twice by retention meanwhile only this recall's look (until review: every later recall skipped).
                if (!error.IsOk && StorageFault is not null) return recalled;
                if (address < 0) continue;
                await _log.WaitDurableAsync(address, ct).ConfigureAwait(false);
                recalled++;
                _logger.LogWarning("Copies of recalled delay message {MessageId} ({Topic}) were still waiting after the restart (a crash cut the recall's last records): recalled now",
                    messageId, topic);
            }
        }
        return recalled;
    }

    /// <summary>The recall's records, under the lock (<see cref="RecallDelayedAsync"/>); null when a copy was stored since
    /// <paramref name="listed"/> was taken and <paramref name="lastRound"/> is not set: list the copies again.</summary>
    private (BrokerError Error, long Address, RecallOutcome Outcome)? RecallUnderLock(string topic, long sentAt, long deliverAtMs, string messageId,
        string? storedId, List<long> copies, List<long> listed, bool lastRound)
    {
        long address;
        RecallOutcome outcome;
        lock (_gate)
        {
            if (!_topics.TryGetValue(topic, out _)) return (new(BrokerStatus.TopicNotFound, $"topic '{topic}' does not exist"), -1, default);
            if (storedId == messageId && !lastRound)
            {
                var now = new List<long>();
                _delayed.CopiesDueAt(topic, deliverAtMs, sentAt, messageId, now);
                var seen = new HashSet<long>(listed);
                if (now.Exists(a => !seen.Contains(a))) return null;
            }
            // Under the lock the sweeper takes to release: a message is either still waiting here, and recalled before its
            // release, or released already, and not found. The id was read before the lock, from the body of the message
            // sent at this address, which no other message is ever sent at: if it still waits, it is the one read.
            // The record carries the stored id, not the caller's: the index rebuilt from the log finds the message by it.
            // Until 2026-12-06 the handle's id was neither checked nor replaced, and a handle with the right address and
            // another waiting message's id showed that other message as recalled in the rebuilt index (found by review).
            if (storedId == messageId && _delayed.TryGetSentAt(sentAt, out var entry) && entry.Topic == topic && entry.DeliverAtMs == deliverAtMs)
            {
                long now = NowMs;
                // Each recall is remembered until its delivery time (DelayIndex.RememberRecall), bounded: past the limit
                // a recall is refused before anything is written, and may be retried once some of them are due.
                if (_delayed.RecallCount >= _options.MaxRememberedRecalls && !_delayed.IsRecalled(topic, deliverAtMs, storedId))
                {
                    _logger.LogWarning("Recall of {MessageId} ({Topic}) refused: {Count} recalls are remembered until their delivery time (MaxRememberedRecalls {Max})",
                        messageId, topic, _delayed.RecallCount, _options.MaxRememberedRecalls);
                    return (new(BrokerStatus.TooManyRequests, $"the broker remembers {_delayed.RecallCount} recalls until their delivery time, its limit "
                        + "(MaxRememberedRecalls, --max-remembered-recalls); retry the recall once some of them are due"), -1, default);
                }
                // The copies first, each if it still waits (then it is the one whose id was read: an address names one
                // message for good), and the handle's own last: a kill -9 that cuts these records cuts the last ones, so
                // the handle still names a waiting message, and the recall retried takes out the copies left.
                AppendRecalledCopies(topic, deliverAtMs, copies, storedId, now);
                address = AppendRecalled(entry, storedId, now);
                // One recall, counted once however many copies it took out. Here, not in replay: counted since start, as every counter.
                Metrics.RecalledByTopic.AddOrUpdate(topic, 1, (_, n) => n + 1);
                outcome = RecallOutcome.Recalled;
            }
            else
            {
                // A recall answered before its record was durable must not be reported done by a second one that finds
                // nothing: the answer waits for everything appended so far (the first recall's record included).
                address = _log.TailAddress - 1;
                outcome = deliverAtMs <= NowMs ? RecallOutcome.Delivered : RecallOutcome.NotWaiting;
            }
        }
        return (BrokerError.None, address, outcome);
    }

    /// <summary>Appends the recalls of those of <paramref name="copies"/> (addresses sent at) still waiting under
    /// <paramref name="topic"/> and <paramref name="deliverAtMs"/>; under the lock. Returns the last record's address, or
    /// -1.</summary>
    private long AppendRecalledCopies(string topic, long deliverAtMs, List<long> copies, string messageId, long now)
    {
        long address = -1;
        foreach (long copy in copies)
        {
            if (_delayed.TryGetSentAt(copy, out var other) && other.Topic == topic && other.DeliverAtMs == deliverAtMs)
                address = AppendRecalled(other, messageId, now);
        }
        return address;
    }

    /// <summary>Appends (and applies) the recall of the waiting <paramref name="entry"/>, stored with <paramref name="messageId"/>; under the lock.</summary>
    private long AppendRecalled(DelayedEntry entry, string messageId, long now)
    {
        long bodyAddress = entry.BodyAddress;
        // With its delivery time: a replay that no longer finds the message (its body cut) still remembers the recall.
        new DelayRecalledRecord(entry.SentAt, entry.Topic, messageId, now, entry.DeliverAtMs).Write(_writer);
        long address = AppendAndApply();
        MessageIndex.OnRecalled(messageId, entry.Topic, bodyAddress, now); // MessageIndex hook: no longer waits for its time
        return address;
    }

    /// <summary>
    /// The addresses sent at of the other waiting delay messages of <paramref name="topic"/> due at
    /// <paramref name="deliverAtMs"/> stored with <paramref name="messageId"/> (copies of the one sent at
    /// <paramref name="sentAt"/>). Only those of that topic and time with the id's hash, or whose hash is not known, are
    /// looked at, in one hold of the lock; their bodies are read outside it. One whose body cannot be read (damaged) is not
    /// taken for a copy: its id is not known, and its delivery could not read it either (it would be dead-lettered).
    /// </summary>
    private async ValueTask<(BrokerError Error, List<long> Copies, List<long> Listed)> WaitingCopiesAsync(string topic, long sentAt, long deliverAtMs, string messageId,
        CancellationToken ct)
    {
        var candidates = new List<long>();
        lock (_gate) _delayed.CopiesDueAt(topic, deliverAtMs, sentAt, messageId, candidates);
        var copies = new List<long>();
        foreach (long candidate in candidates)
        {
            // Looked up again by the address it was sent at: retention may move its body meanwhile.
            var (error, storedId) = await WaitingMessageIdAsync(topic, candidate, deliverAtMs, unreadableId: null, ct).ConfigureAwait(false);
            if (!error.IsOk) return (error, copies, candidates);
            if (storedId is null) continue;
            if (storedId == messageId) copies.Add(candidate);
            // One whose id the index did not know (read from an older checkpoint) is listed under its id's hash now:
            // the next recall at this time does not read it again.
            lock (_gate) _delayed.NoteIdOf(candidate, storedId);
        }
        return (BrokerError.None, copies, candidates);
    }

    /// <summary>
    /// The id the delay message sent at <paramref name="sentAt"/> was stored with, read from its body, while it waits
    /// under that topic and time; null when none does (the recall then finds nothing). The delay index keeps no ids (a
    /// recall is rare, the index holds every waiting message), so the body is read, outside the lock; a body retention
    /// moved and cut meanwhile is read where it lives now. A body that cannot be read where it still lives (damaged) is
    /// taken to be <paramref name="unreadableId"/>, the handle's: the address alone names the message, as before the id was
    /// checked, and delivery could not read it either (it would be dead-lettered). Refusing instead left such a message
    /// impossible to recall, each retry told to retry (found by review, 2026-12-06). For another copy than the handle's
    /// (<paramref name="unreadableId"/> null) such a body answers null: it is not taken for a copy. A read that fails because the body
    /// was moved again meanwhile is a storage failure: the recall is not answered as done, and may be retried.
    /// </summary>
    private async ValueTask<(BrokerError Error, string? MessageId)> WaitingMessageIdAsync(string topic, long sentAt, long deliverAtMs, string? unreadableId,
        CancellationToken ct)
    {
        long read = -1;
        for (int attempt = 0; attempt < 2; attempt++)
        {
            long bodyAddress;
            int size;
            lock (_gate)
            {
                if (!_delayed.TryGetSentAt(sentAt, out var entry) || entry.Topic != topic || entry.DeliverAtMs != deliverAtMs) return (BrokerError.None, null);
                (bodyAddress, size) = (entry.BodyAddress, entry.Size);
            }
            if (bodyAddress == read)
            {
                // Not moved since the read that failed: it will not read now. Recall it by its address (the handle's own).
                if (unreadableId is null)
                    _logger.LogWarning("Delay message sent at {SentAt} ({Topic}) could not be read from the log; not recalled as a copy of the message recalled at its time", sentAt, topic);
                else
                    _logger.LogWarning("Delay message sent at {SentAt} ({Topic}) could not be read from the log; recalled by its address, its id not checked", sentAt, topic);
                return (BrokerError.None, unreadableId);
            }
            read = bodyAddress;
            var message = await ReadStoredMessageAsync(bodyAddress, topic, -1, -1, ct, size).ConfigureAwait(false);
            if (message is not null) return (BrokerError.None, message.MessageId);
        }
        _logger.LogError("Delay message sent at {SentAt} ({Topic}) could not be read from the log to check its recall handle", sentAt, topic);
        return (new(BrokerStatus.StorageFailure, "the message could not be read from the log; retry the recall"), null);
    }
}
