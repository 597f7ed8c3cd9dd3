using HalfMsg.Broker.Core.Delivery;
using HalfMsg.Broker.Core.Model;
using HalfMsg.Broker.Core.Storage;
using Microsoft.Extensions.Logging;

namespace HalfMsg.Broker.Core;

/// <summary>
/// Operator tools built only on the engine's own operations (issue 12): re-driving a group's dead letters back to that
/// group, and reading one stored message for the message page.
/// </summary>
public sealed partial class BrokerEngine
{
    /// <summary>The consumer-group prefix of the internal cursors a re-drive reads a dead-letter topic with.</summary>
    public const string RedrivePrefix = "%REDRIVE%";

    /// <summary>One re-drive at a time per group (<see cref="RedriveDeadLettersAsync"/>); an entry per group a re-drive
    /// runs or waits for now. Until the small-hours session of 2026-12-08 a group's entry stayed for the life of the
    /// process once it had been re-driven (its dead-letter topic deleted or not).</summary>
    private readonly KeyedLocks _redrivesRunning = new(StringComparer.Ordinal);

    /// <summary>Tests: groups a re-drive runs or waits for now.</summary>
    internal int RedrivesRunningForTests => _redrivesRunning.Count;

    /// <summary>Whether a consumer group is a re-drive's internal cursor (<see cref="RedrivePrefix"/>): its leases never
    /// dead-letter, whatever their delivery attempt.</summary>
    internal static bool IsRedriveCursor(string group) => group.StartsWith(RedrivePrefix, StringComparison.Ordinal);

    /// <summary>What one re-drive call did. <see cref="Error"/> is set when it stopped early (the counts stay true).
    /// <see cref="Skipped"/>: dead letters from other topics a filter passed over (and ones retention cut meanwhile);
    /// <see cref="NotRedriven"/>: dead letters that could not be put back and stay in the dead-letter topic for a later
    /// re-drive, the first <see cref="MaxNotRedrivenListed"/> of them with why in <see cref="NotRedrivenLetters"/>.
    /// <see cref="More"/>: the call stopped at its limit of letters left (<see cref="LeaveLimit"/>) with more dead letters
    /// perhaps behind them; the next call given <see cref="Continuation"/> goes on past the letters this one left.</summary>
    public sealed record RedriveResult(BrokerError Error, string DeadLetterTopic, int Redriven, int Skipped, IReadOnlyList<string> MessageIds)
    {
        public int NotRedriven { get; init; }
        public IReadOnlyList<NotRedrivenLetter> NotRedrivenLetters { get; init; } = [];
        public bool More { get; init; }
        /// <summary>What the next call of the same re-drive passes on (null when the call did not start): the lease id the
        /// re-drive began at, the one passed in if any.</summary>
        public long? Continuation { get; init; }
    }

    /// <summary>A dead letter a re-drive could not put back: its place in the dead-letter topic, the topic it was to go
    /// to, and the refusal. Id and topic are null for one whose record could not be read.</summary>
    public sealed record NotRedrivenLetter(string? MessageId, long DeadLetterOffset, string? Target, BrokerStatus Status, string Reason);

    /// <summary>How many dead letters not put back one answer lists (all are counted): an answer stays small when a
    /// deleted topic leaves thousands.</summary>
    public const int MaxNotRedrivenListed = 100;

    /// <summary>
    /// How many times one re-drive call may leave a dead letter it cannot put back before it stops (each time counted,
    /// one it is offered again too; checked between its batches of up to 32): ten per letter it may move, at least 1,000
    /// and at most 100,000. A call's work and
    /// memory (a lease, two records, an entry with its reason per letter left) then grow with what it was asked to
    /// move, not with the backlog that cannot go back: until 2026-12-06 a call for one letter walked every stuck one,
    /// and each CLI chunk walked them all again (found by review). 1,000 is a few hundred milliseconds and about 100 KB
    /// of log, so a small call still goes past the letters of a typical deleted topic; 100,000 bounds the dashboard's
    /// and the admin API's largest calls to seconds and tens of MB.
    /// </summary>
    public static int LeaveLimit(int max) => (int)Math.Clamp(10L * max, 1_000, 100_000);

    /// <summary>
    /// Moves up to <paramref name="max"/> messages of <c>%DLQ%&lt;group&gt;</c> back to <paramref name="group"/>, and to
    /// no other group, where it receives them again as new messages (same id, keys, tag, properties, body; delivery
    /// attempt 1). A dead letter a lease (gRPC) consumer left goes back onto the topic the group took it from (its
    /// original topic, or the dead-letter topic a group reading one took it from) as an entry for the group alone: the
    /// group's receives take it, the topic's other groups and pulls pass over it (<see cref="QueueEntry.ForGroup"/>).
    /// One a Remoting consumer sent back past its maximum reconsume times (stored in the dead-letter topic itself, its
    /// origin in RETRY_TOPIC) goes to <c>%RETRY%&lt;group&gt;</c>, which that consumer subscribes, with its reconsume
    /// count reset; a topic filter matches its RETRY_TOPIC.
    /// The dead-letter topic is read by an internal consumer group (<c>%REDRIVE%&lt;group&gt;</c>, or
    /// <c>%REDRIVE%&lt;group&gt;|&lt;topic&gt;</c> when only messages from <paramref name="originalTopic"/> are wanted);
    /// each message is put back and acknowledged there in one record, so a crash keeps both or neither: never lost,
    /// never put back twice. With a topic filter, dead letters from other topics are passed over by that filter's
    /// cursor only (counted as skipped) and stay for others. A dead letter that cannot be put back (its topic deleted
    /// with auto-creation off, its body over the size limit now in force, ...: <see cref="LeavesOneLetter"/>) is left in
    /// the dead-letter topic, unacknowledged on the cursor, counted in <see cref="RedriveResult.NotRedriven"/> with why,
    /// and the re-drive goes on; the next re-drive is offered it first. Only a failure of the broker itself (storage, a
    /// full disk, shutting down) or the caller's cancellation stops a re-drive, and, with <see cref="RedriveResult.More"/>,
    /// the limit of letters one call may leave (<see cref="LeaveLimit"/>). A call ends when it has moved
    /// <paramref name="max"/> or its receive finds nothing more, never earlier (the letters it left run past their lease
    /// in a long call are offered to it again, and it goes on behind them).
    /// A call given <paramref name="continuation"/> (the one the previous call of the same re-drive answered) is not
    /// offered again the letters that earlier calls of the re-drive left: the CLI's chunks each walk a stuck letter
    /// once. Those letters stay in the dead-letter topic, and a re-drive without a continuation is offered them first.
    /// Such a call counts a letter whose lease ran out before it was put back (a slow disk) as not re-driven too,
    /// rather than go back for it. A lease the previous calls hold still (only after a crash) may be passed over too:
    /// the letter stays, for a re-drive without a continuation.
    /// Re-drives of one group run one at a time (a second waits for the first), and a dead letter is put back only in the
    /// same hold of the engine lock that checks the cursor's lease is still live, by the record that also acknowledges it
    /// for the cursor and its sibling: whatever runs at once, and whatever a crash keeps, a dead letter is put back once.
    /// </summary>
    /// <remarks>
    /// RocketMQ brings a failed message back through the group's own retry topic, so only that group sees it again; its
    /// v5 proxy serves a receive of (group, topic) from the topic and from a per-(group, topic) retry topic. An entry on
    /// the topic marked for the group gives the same result without a second topic to look at on every receive: the
    /// receive path pays one integer test per new entry.
    /// </remarks>
    public async ValueTask<RedriveResult> RedriveDeadLettersAsync(string group, string? originalTopic, int max,
        IProgress<int>? progress = null, CancellationToken ct = default, long? continuation = null)
    {
        string dlq = DeadLetterPrefix + group;
        var moved = new List<string>();
        int skipped = 0;
        // The dead letters left this call, by their dead-letter offset: the delivery that leases each now (released when
        // the call ends) and why it was left. Bounded by the limit (leaves counts each time one is left).
        var left = new SortedDictionary<long, (string ReceiptHandle, NotRedrivenLetter Why)>();
        int leaves = 0;
        bool more = false;
        long? since = null;
        RedriveResult Done(BrokerError error) => new(error, dlq, moved.Count, skipped, moved)
        {
            NotRedriven = left.Count, NotRedrivenLetters = [.. left.Values.Take(MaxNotRedrivenListed).Select(l => l.Why)],
            More = more, Continuation = since,
        };

        if (!IsValidName(group, 255) || IsSystemTopic(group))
            return Done(new(BrokerStatus.IllegalConsumerGroup, $"consumer group '{group}' is not a valid name"));
        if (max < 1) return Done(new(BrokerStatus.BadRequest, "max must be at least 1"));
        lock (_gate)
        {
            // Checked first: a receive on a missing system topic would create it.
            if (!_topics.ContainsKey(dlq)) return Done(new(BrokerStatus.TopicNotFound, $"consumer group '{group}' has no dead letters ({dlq} does not exist)"));
        }
        string cursor = RedrivePrefix + group + (originalTopic is null ? "" : "|" + originalTopic);
        if (!IsValidName(cursor, 255)) return Done(new(BrokerStatus.BadRequest, $"group and topic names are too long for a re-drive cursor ('{cursor}')"));

        // Until 2026-12-05 a filtered and an unfiltered re-drive of a group at once each leased the same dead letter on
        // its own cursor and each put it back; the slower then met the sibling's ack and reported 0 re-driven (found by
        // review). One at a time, the second finds what the first put back finished for its cursor too.
        var running = await _redrivesRunning.TakeAsync(group, ct).ConfigureAwait(false);
        try
        {
            // Every lease this re-drive takes has an id from here on: a lease id orders leases as they were taken.
            lock (_gate)
            {
                // A continuation another run handed out (the broker restarted since) orders nothing here: the call starts
                // the re-drive afresh and answers a continuation of this run. Taken as it was, after a restart whose
                // incarnation sorted lower, every call was offered the same left letters again and answered More for
                // ever (found by review, 2026-12-06). The caller passes each answer's continuation on.
                if (continuation is long c && !_groups.IsOfThisRun(c)) continuation = null;
                since = continuation ?? NextLeaseId();
            }
            int limit = LeaveLimit(max);
            while (moved.Count < max)
            {
                // Checked between batches only: a batch's rest released now would be passed over by the next call's
                // continuation, though never visited.
                if (leaves >= limit)
                {
                    more = true;
                    break;
                }
                var batch = await ReceiveAsync(new ReceiveRequest
                {
                    ConsumerGroup = cursor, Topic = dlq, BatchSize = Math.Min(32, max - moved.Count), InvisibleDuration = TimeSpan.FromMinutes(1), RedriveCursor = true,
                    RedriveLeasedBefore = continuation is null ? null : since,
                }, ct).ConfigureAwait(false);
                // Leased but unreadable (a damaged record): left as any dead letter that cannot be put back.
                foreach (var (offset, handle) in batch.Unreadable ?? [])
                {
                    leaves++;
                    left[offset] = (handle, new NotRedrivenLetter(null, offset, null, BrokerStatus.StorageFailure,
                        $"its stored record ({dlq}/0/{offset}) could not be read (damaged); it stays in {dlq}"));
                }
                if (batch.Unreadable is not null && batch.Messages.Count == 0) continue;
                // Only a receive that finds nothing ends the walk. Until 2026-12-06 a batch made only of letters this
                // call had left already (their leases run out in a call longer than a minute, offered again first) ended
                // it too, with OK, before the letters behind them (found by review). Each time one is left again counts
                // toward the limit, so a call whose leases keep running out still ends.
                if (batch.Error.Status == BrokerStatus.MessageNotFound || batch.Messages.Count == 0) break;
                if (!batch.IsOk) return Done(batch.Error);
                // The messages of the batch from 'next' on are still leased: whatever ends the call early (a failure of
                // the broker, the caller's cancellation) releases them at once in the finally.
                // Until 2026-12-05 they stayed leased for the lease's minute, each such call cost them a delivery attempt,
                // and in the end the sweep dead-lettered them (found by review).
                int next = 0;
                try
                {
                    for (; next < batch.Messages.Count; next++)
                    {
                        var d = batch.Messages[next];
                        var m = d.Message;
                        // A lease group's dead letter is an entry pointing at the body stored on its topic; a send-back's (or a
                        // retry-topic send's past its maximum) is a body stored in the dead-letter topic, its origin a property.
                        // One taken from another dead-letter topic (a group reading %DLQ%A) goes back there, the topic its
                        // group reads, not onto the original topic its body names (until 2026-12-06 it did; found by review).
                        bool sentBack = m.OriginalTopic is null;
                        string? origin = DeadLetterSourceOf(dlq, m.QueueOffset) ?? m.OriginalTopic ?? m.Properties.GetValueOrDefault(RetryTopicProperty);
                        if (origin is null || (originalTopic is not null && origin != originalTopic))
                        {
                            var passed = await AckAsync(cursor, dlq, d.ReceiptHandle, ct).ConfigureAwait(false);
                            if (!passed.IsOk) return Done(passed);
                            skipped++;
                            continue;
                        }
                        string target = sentBack ? RetryPrefix + group : origin;
                        // Once the put-back is written the caller's cancellation (a CLI timeout, a closed browser tab) is not
                        // heard: the wait for it to be durable is not given up (found by review, 2026-12-05: then the put and
                        // its acknowledgements were separate records, and one written but not the other was put back again by
                        // the next re-drive). Only the wait for log room before it hears the cancellation.
                        ct.ThrowIfCancellationRequested();
                        // Done for the other cursor that would take it too (the unfiltered one, or the one filtering its
                        // origin): until 2026-12-05 a filtered re-drive and then an unfiltered one (or the other way round)
                        // each put the same dead letter back, and the group received it twice (found by review). The put and
                        // both acknowledgements are one record, written after a check of the cursor's lease in the same hold.
                        string sibling = RedrivePrefix + group + (originalTopic is null ? "|" + origin : "");
                        var put = sentBack ? await SendToRetryTopicAsync(target, m, cursor, sibling, dlq, d.ReceiptHandle).ConfigureAwait(false)
                            : await PutBackForGroupAsync(group, dlq, m.QueueOffset, m, target, cursor, sibling, d.ReceiptHandle, ct).ConfigureAwait(false);
                        if (put.Status == BrokerStatus.InvalidReceiptHandle)
                        {
                            // The cursor's lease ran out meanwhile (a slow disk): nothing was written; the dead letter is
                            // offered to this cursor again, but not to a continuation (it stops at leases taken since its
                            // re-drive began): that counts it as left, and a later re-drive is offered it.
                            if (continuation is null) continue;
                            leaves++;
                            left[m.QueueOffset] = (d.ReceiptHandle, new NotRedrivenLetter(m.MessageId, m.QueueOffset, target, put.Status,
                                $"its lease on the re-drive cursor ran out before it was put back; it stays in {dlq} for a later re-drive"));
                            continue;
                        }
                        if (LeavesOneLetter(put.Status))
                        {
                            // This dead letter cannot go back now; the others may. It is not acknowledged: it stays in the
                            // dead-letter topic, leased on the cursor until this call ends (so the receives here go past
                            // it) and then released, so the next re-drive is offered it first, as the oldest unfinished.
                            // Until 2026-12-06 it stopped the re-drive, and every later one stopped at it again: a deleted
                            // topic held back every dead letter behind its own (found by review).
                            leaves++;
                            left[m.QueueOffset] = (d.ReceiptHandle, new NotRedrivenLetter(m.MessageId, m.QueueOffset, target, put.Status, put.Message));
                            continue;
                        }
                        if (put.Status == BrokerStatus.MessageNotFound)
                        {
                            // Retention cut the dead letter's body since it was received: nothing is left to put back.
                            var gone = await AckAsync(cursor, dlq, d.ReceiptHandle, ct).ConfigureAwait(false);
                            if (!gone.IsOk) return Done(gone);
                            left.Remove(m.QueueOffset);
                            skipped++;
                            continue;
                        }
                        if (!put.IsOk)
                        {
                            // The broker itself failed (storage, a full disk, shutting down): not this letter's doing, and
                            // the next would fail too. Not acknowledged: the dead letter stays (released below with the
                            // rest of the batch), and the next re-drive tries it again.
                            return Done(new(put.Status, $"message '{m.MessageId}' could not be put back on '{target}': {put.Message}"));
                        }
                        left.Remove(m.QueueOffset); // left earlier in this call, put back now (its topic made meanwhile)
                        moved.Add(m.MessageId);
                        MessageIndex.OnRedriven(m.MessageId, group, target, NowMs); // MessageIndex hook (issue 12)
                        progress?.Report(moved.Count);
                    }
                }
                finally
                {
                    if (next < batch.Messages.Count
                        && await ReleaseRedriveLeasesAsync(cursor, dlq, [.. batch.Messages.Skip(next).Select(d => d.ReceiptHandle)]).ConfigureAwait(false) is var released and >= 0)
                        await _log.WaitDurableAsync(released, CancellationToken.None).ConfigureAwait(false);
                }
            }
        }
        finally
        {
            // The letters left, released at once (durably, before the answer) however the call ends: the next re-drive
            // is offered them all without waiting for the cursor's lease or the sweeper loop. Lost in a crash, the lease runs its length; a
            // re-drive cursor's lease never dead-letters, so they stay within every later re-drive's reach.
            try
            {
                if (left.Count > 0 && await ReleaseRedriveLeasesAsync(cursor, dlq, [.. left.Values.Select(l => l.ReceiptHandle)]).ConfigureAwait(false) is var released and >= 0)
                    await _log.WaitDurableAsync(released, CancellationToken.None).ConfigureAwait(false);
            }
            finally
            {
                running.Dispose();
            }
        }
        if (moved.Count > 0)
            _logger.LogInformation("Re-drove {Count} dead letters of group {Group} from {Dlq}", moved.Count, group, dlq);
        if (left.Count > 0)
        {
            var first = left.Values.First().Why;
            _logger.LogWarning("Re-drive of group {Group} left {Count} dead letters in {Dlq} that could not be put back (they stay there for a later re-drive){Limit}; the first, message {MessageId} at offset {Offset} for {Target}: {Status}: {Reason}",
                group, left.Count, dlq, more ? ", and stopped at its limit" : "", first.MessageId, first.DeadLetterOffset, first.Target, first.Status, first.Reason);
        }
        return Done(BrokerError.None);
    }

    /// <summary>
    /// Whether a put-back refused with <paramref name="status"/> is this dead letter's own matter, so the re-drive leaves
    /// it and goes on: its topic does not exist (deleted with auto-creation off, or the broker at its topic limit) or is
    /// not a name a put-back may use, its body or metadata are over the limits now in force, or its draft is refused.
    /// Anything else (the storage failed, the disk is full, the broker is shutting down or overloaded, a bug) would
    /// refuse the next one too: the re-drive stops with it.
    /// </summary>
    private static bool LeavesOneLetter(BrokerStatus status) => status is BrokerStatus.TopicNotFound or BrokerStatus.IllegalTopic
        or BrokerStatus.MessageTooLarge or BrokerStatus.PropertiesTooLarge or BrokerStatus.BadRequest or BrokerStatus.IllegalDeliveryTime;

    /// <summary>The dead-letter topic the dead letter at <paramref name="offset"/> of <paramref name="dlq"/> was taken
    /// from (<see cref="QueueState.SourceOf"/>), or null when its body names the topic it left.</summary>
    private string? DeadLetterSourceOf(string dlq, long offset)
    {
        lock (_gate)
            return _topics.TryGetValue(dlq, out var dead) ? dead.Queues[0].SourceOf(offset) : null;
    }

    /// <summary>
    /// Ends the cursor's live leases of <paramref name="left"/> (receipt handles) now (the rest of a batch a re-drive
    /// stopped in, and the dead letters it left), so the next re-drive is offered them at once, as a ChangeInvisibleDuration of zero would. Returns the address to wait for
    /// (-1 if nothing was released); lost in a crash, a lease runs its length, and a re-drive cursor's lease never
    /// dead-letters (<see cref="IsRedriveCursor"/>). The cursor's delivery counter goes on counting these offers, as
    /// for any group, but decides nothing. At most <see cref="MaxEntriesPerLockHold"/> leases per hold of the lock, and
    /// then the leases due are swept, as many holds as it takes: until 2026-12-06 one sweep of 256 made only that many
    /// offerable, the sweeper loop the rest later, and a re-drive in between (the CLI's next chunk) was offered and
    /// counted only those (found by review). Each hold waits for room in the log first, outside the lock, as a send and
    /// the sweeper loop do: until 2026-12-06 the holds followed one another without it, so releasing many leases on a
    /// log whose commits fell behind could fill its buffer, and an append then waited for a page write under the lock,
    /// holding every writer. Not cancellable: the leases are released however the call ends.
    /// </summary>
    private async ValueTask<long> ReleaseRedriveLeasesAsync(string cursor, string dlq, IReadOnlyList<string> left)
    {
        long address = -1;
        foreach (var (start, end) in LockChunks(left.Count))
        {
            await _log.WaitForRoomAsync(CancellationToken.None).ConfigureAwait(false);
            lock (_gate)
            {
                long now = NowMs;
                for (int i = start; i < end; i++)
                {
                    if (!TryGetLease(cursor, dlq, left[i], out _, out var handle, out var flight).IsOk) continue;
                    flight.RenewFor = null;
                    address = ChangeLease(cursor, dlq, handle.QueueId, handle.QueueOffset, now, NextLeaseId());
                }
            }
        }
        if (address < 0) return address;
        // What was due when the last lease was released: a bounded sweep; whatever ends meanwhile is the sweeper's.
        long due;
        lock (_gate) due = NowMs;
        while (true)
        {
            await _log.WaitForRoomAsync(CancellationToken.None).ConfigureAwait(false);
            lock (_gate)
                if (SweepLeases(due, SweepEntriesPerLockHold) < SweepEntriesPerLockHold) break;
            BetweenLockHoldsForTests?.Invoke();
        }
        return address;
    }

    /// <summary>
    /// The acknowledgements a re-drive's put-back carries: the dead letter <paramref name="handle"/> names is acknowledged
    /// for the cursor that took it (its lease checked by the caller in this hold) and finished for
    /// <paramref name="sibling"/> (created if new, so it starts with it done), as an ack of each would. Until 2026-12-06
    /// they were Acked records after the put-back's: a commit could end between them, and after a kill -9 there the next
    /// re-drive put the dead letter back a second time (the README's at-least-once case).
    /// </summary>
    private static RedriveAcks RedriveAcksFor(string cursor, string sibling, string dlq, ReceiptHandle handle)
        => new(cursor, IsValidName(sibling, 255) ? sibling : null, dlq, handle.QueueId, handle.QueueOffset);

    /// <summary>
    /// Puts the dead letter at <paramref name="dlqOffset"/> of <paramref name="dlq"/> back onto <paramref name="topic"/>
    /// as a new entry for <paramref name="group"/> only, pointing at the same body, and acknowledges it for the cursor
    /// and its sibling, in one record (<see cref="RedrivenAckedRecord"/>). Completes once it is durable. MessageNotFound
    /// when the dead letter's entry is gone or a hole; InvalidReceiptHandle, with nothing written, when the cursor's
    /// lease is no longer live.
    /// </summary>
    private async ValueTask<BrokerError> PutBackForGroupAsync(string group, string dlq, long dlqOffset, StoredMessage m, string topic,
        string cursor, string sibling, string receiptHandle, CancellationToken ct)
    {
        // Nothing is written yet: the caller may still give up here (a full disk holds the group's re-drive lock otherwise).
        await _log.WaitForRoomAsync(ct).ConfigureAwait(false);
        long address;
        lock (_gate)
        {
            // The entry as it is now: retention may have moved the body since the receive read it.
            if (!_topics.TryGetValue(dlq, out var dead) || !dead.Queues[0].TryGet(dlqOffset, out var entry) || entry.IsHole)
                return new(BrokerStatus.MessageNotFound, $"dead letter {dlq}/0/{dlqOffset} is gone");
            var err = TryGetLease(cursor, dlq, receiptHandle, out _, out var handle, out _);
            if (!err.IsOk) return err;
            // A dead-letter topic (the one a group reading it took the dead letter from) is the broker's: no producer
            // writes it, so it is not a topic for write; created again if deleted, as dead-lettering does.
            bool intoDeadLetters = topic.StartsWith(DeadLetterPrefix, StringComparison.Ordinal);
            err = intoDeadLetters ? TryGetOrCreate(topic, out var target) : TryGetTopicForWrite(topic, out target);
            if (!err.IsOk) return err;
            // Its entries carry no message group, as a dead letter's does: the group took it from there without FIFO order.
            string? messageGroup = intoDeadLetters ? null : m.MessageGroup;
            int q = PickQueue(target, -1, messageGroup);
            long offset = target.Queues[q].NextOffset;
            long now = NowMs;
            var acks = RedriveAcksFor(cursor, sibling, dlq, handle);
            new RedrivenAckedRecord(new RedrivenRecord(entry.BodyAddress, entry.Size, topic, q, offset, entry.Tag, messageGroup, group, m.MessageId, now), acks)
                .Write(_writer);
            address = AppendAndApply();
            MessageIndex.OnStored(new MessageDraft // MessageIndex hook (issue 12): the message is found at its new place
            {
                Topic = topic, MessageId = m.MessageId, Tag = m.Tag, Keys = m.Keys, Body = m.Body, MessageGroup = m.MessageGroup,
            }, q, offset, now, bytesIn: false); // not a send: out of rocketmq_throughput_in_total, as a re-drive into %RETRY%
            Acknowledged(cursor, dlq, handle.QueueId, handle.QueueOffset);
        }
        await _log.WaitDurableAsync(address, CancellationToken.None).ConfigureAwait(false);
        return BrokerError.None;
    }

    /// <summary>
    /// Stores a Remoting consumer's dead letter again in its group's retry topic, due now, with RETRY_TOPIC kept (the
    /// client restores the topic from it) and the reconsume count dropped, so its attempts start again: kept, its next
    /// failure would send it straight back to the dead-letter topic. Acknowledged for the cursor and its sibling by the
    /// same record (<see cref="RedrivenStoredRecord"/>), after a check of the cursor's lease in the same hold (as
    /// <see cref="PutBackForGroupAsync"/>). Completes once it is durable.
    /// </summary>
    private async ValueTask<BrokerError> SendToRetryTopicAsync(string retryTopic, StoredMessage m, string cursor, string sibling, string dlq, string receiptHandle)
    {
        var props = new Dictionary<string, string>(m.Properties);
        props.Remove(ReconsumeTimesProperty);
        var draft = new MessageDraft
        {
            Topic = retryTopic, MessageId = m.MessageId, Tag = m.Tag, Keys = m.Keys, Properties = props, Body = m.Body,
            BornTimestampMs = m.BornTimestampMs, BornHost = m.BornHost, Flag = m.Flag,
        };
        var sent = await StoreInternalAsync(draft, CancellationToken.None, redrive: () =>
        {
            var err = TryGetLease(cursor, dlq, receiptHandle, out _, out var handle, out _);
            return (err, err.IsOk ? RedriveAcksFor(cursor, sibling, dlq, handle) : default);
        }).ConfigureAwait(false);
        return sent.Error;
    }

    /// <summary>Reads the message stored at a queue position; null when the position is empty, a hole, or cut by retention.</summary>
    public async ValueTask<StoredMessage?> ReadMessageAsync(string topic, int queueId, long offset, CancellationToken ct = default)
    {
        long address;
        lock (_gate)
        {
            address = _topics.TryGetValue(topic, out var t) && queueId >= 0 && queueId < t.Queues.Length
                && t.Queues[queueId].TryGet(offset, out var e) && !e.IsHole ? e.BodyAddress : -1;
        }
        if (address < 0) return null;
        try
        {
            return await ReadStoredMessageAsync(address, topic, queueId, offset, ct).ConfigureAwait(false);
        }
        catch (Exception ex) when (ex is ArgumentOutOfRangeException or InvalidOperationException)
        {
            return null; // cut between the look-up and the read
        }
    }

    /// <summary>Reads the stored half of a pending or parked transaction; null when it is no longer pending.</summary>
    public async ValueTask<StoredMessage?> ReadPendingHalfAsync(string transactionId, CancellationToken ct = default)
    {
        long address;
        string topic;
        lock (_gate)
        {
            if (!_txs.TryGet(transactionId, out var half)) return null;
            address = half.Address;
            topic = half.Topic;
        }
        return await ReadStoredMessageAsync(address, topic, -1, -1, ct).ConfigureAwait(false);
    }
}
