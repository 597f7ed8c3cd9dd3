using HalfMsg.Broker.Core.Delivery;
using HalfMsg.Broker.Core.Diagnostics;
using HalfMsg.Broker.Core.Model;
using HalfMsg.Broker.Core.Storage;
using HalfMsg.Broker.Core.Transactions;
using Microsoft.Extensions.Logging;

namespace HalfMsg.Broker.Core;

public sealed partial class BrokerEngine
{
    private BrokerError ValidateDraft(MessageDraft msg, long nowMs)
    {
        if (string.IsNullOrEmpty(msg.MessageId) || msg.MessageId.Length > 128)
            return new(BrokerStatus.BadRequest, "message id must be 1-128 characters");
        if (msg.Body.Length > _options.MaxMessageSize)
            return new(BrokerStatus.MessageTooLarge, $"message body of {msg.Body.Length} bytes exceeds the maximum of {_options.MaxMessageSize} bytes");
        if (RecordLimits.CheckMetadata(msg) is { IsOk: false } tooMuchMetadata) return tooMuchMetadata; // one record must fit a log page
        if (msg.DeliveryTimestampMs is long at && at - nowMs > (long)_options.MaxDelay.TotalMilliseconds)
            return new(BrokerStatus.IllegalDeliveryTime, $"delivery time is more than {_options.MaxDelay} in the future");
        if (msg.Tag is { Length: > 255 } || (msg.Tag is not null && msg.Tag.Contains("||", StringComparison.Ordinal)))
            return new(BrokerStatus.BadRequest, "tag must be at most 255 characters and must not contain '||'");
        if (msg.MessageGroup is { Length: > 255 })
            return new(BrokerStatus.BadRequest, "message group must be at most 255 characters");
        if (DiskSpace.IsFull) return DiskSpace.Refuse(); // a new message needs log space; the reserve is for finishing work
        return BrokerError.None;
    }

    /// <summary>
    /// Stores a half message: durable, invisible to every consumer until committed. Completes after the record is durable
    /// (flush sync). The transaction id is the message id, as RocketMQ does (its UNIQ_KEY).
    /// </summary>
    public async ValueTask<SendHalfResult> SendHalfAsync(MessageDraft msg, string producerGroup, string? clientId, TimeSpan? checkImmunity, CancellationToken ct = default)
    {
        using var span = BrokerTracing.StartSend(msg, half: true, producerGroup); // trace hook (issue 12)
        long address;
        using (await _log.ReserveRoomAsync(RoomFor(msg), ct).ConfigureAwait(false))
        {
            lock (_gate)
            {
                if (StoreHalfLocked(new HalfDraft(msg, producerGroup, clientId, checkImmunity), out address) is { } refused) return refused;
            }
        }
        await _log.WaitDurableAsync(address, ct).ConfigureAwait(false);
        MessageIndex.OnHalf(msg, producerGroup, NowMs); // MessageIndex hook (issue 12): operator look-up by id/key
        return new SendHalfResult(BrokerError.None, msg.MessageId, msg.MessageId);
    }

    /// <summary>
    /// Several halves at once, each with exactly the outcome <see cref="SendHalfAsync"/> would give it alone, in order:
    /// up to <see cref="MaxEntriesPerLockHold"/> of them per hold of the engine lock, then ONE durable wait for the
    /// newest, instead of a wait per half.
    /// A half that is refused does not stop the others.
    /// </summary>
    public async ValueTask<SendHalfResult[]> SendHalvesAsync(IReadOnlyList<HalfDraft> halves, CancellationToken ct = default)
    {
        var results = new SendHalfResult[halves.Count];
        var spans = new System.Diagnostics.Activity?[halves.Count];
        try
        {
            for (int i = 0; i < spans.Length; i++) spans[i] = BrokerTracing.StartSend(halves[i].Message, half: true, halves[i].ProducerGroup); // trace hook (issue 12)
            long room = 0;
            for (int i = 0; i < halves.Count; i++) room += RoomFor(halves[i].Message);
            long waitFor = -1;
            using (await _log.ReserveRoomAsync(room, ct).ConfigureAwait(false))
            {
                foreach (var (start, end) in LockChunks(results.Length))
                {
                    lock (_gate)
                    {
                        for (int i = start; i < end; i++)
                        {
                            if (StoreHalfLocked(halves[i], out long address) is { } refused)
                            {
                                results[i] = refused;
                                continue;
                            }

                            results[i] = new SendHalfResult(BrokerError.None, halves[i].Message.MessageId, halves[i].Message.MessageId);
                            waitFor = Math.Max(waitFor, address);
                        }
                    }
                }
            }

            if (waitFor < 0) return results;
            await _log.WaitDurableAsync(waitFor, ct).ConfigureAwait(false);
            long now = NowMs;
            for (int i = 0; i < results.Length; i++)
            {
                if (results[i].Error.IsOk) MessageIndex.OnHalf(halves[i].Message, halves[i].ProducerGroup, now); // MessageIndex hook (issue 12)
            }

            return results;
        }
        finally
        {
            for (int i = spans.Length - 1; i >= 0; i--) spans[i]?.Dispose();
        }
    }

    /// <summary>Stores one half under the engine lock: null with its log address, or the refusal (nothing written).</summary>
    private SendHalfResult? StoreHalfLocked(HalfDraft h, out long address)
    {
        address = -1;
        MessageDraft msg = h.Message;
        long now = NowMs;
        var err = ValidateDraft(msg, now);
        TopicState topic = null!;
        if (err.IsOk && !IsValidName(h.ProducerGroup, 255)) err = new(BrokerStatus.BadRequest, $"producer group '{h.ProducerGroup}' is not a valid name");
        if (err.IsOk) err = TryGetTopicForWrite(msg.Topic, out topic);
        // The half keeps its queue until its commit: a queue the topic does not have is refused now, as a send's is, and
        // not found at the commit, which is answered to the producer and must deliver (see TopicQueues.PickQueue).
        if (err.IsOk && TopicQueues.NamedQueueRefusal(topic, msg) is { } noSuchQueue) err = noSuchQueue;
        if (!err.IsOk) return new SendHalfResult(err, msg.MessageId, "");
        string txId = msg.MessageId;
        if (_txs.Exists(txId))
            return new SendHalfResult(new(BrokerStatus.BadRequest, $"transaction '{txId}' already exists (message ids must be unique)"), msg.MessageId, "");
        // A client-chosen immunity is capped: a half that is never checked would be kept forever.
        long immunityMs = h.CheckImmunity is { } ci && ci > TimeSpan.Zero ? (long)Math.Min(ci.TotalMilliseconds, _options.MaxCheckImmunity.TotalMilliseconds) : 0;
        HalfStoredRecord.Write(_writer, txId, h.ProducerGroup, h.ClientId, immunityMs, msg.QueueId ?? -1, msg, now);
        address = AppendAndApply();
        Metrics.HalvesStored++;
        return null;
    }

    /// <summary>
    /// Commits or rolls back a half message. Exactly-once: the first decision wins atomically; a repeated identical decision
    /// returns success (after the original is durable) and changes nothing; a conflicting one returns
    /// <see cref="BrokerStatus.TransactionConflict"/> and changes nothing; an unknown id returns
    /// <see cref="BrokerStatus.TransactionNotFound"/>. <see cref="TransactionResolution.Unknown"/> changes nothing.
    /// </summary>
    public ValueTask<DecisionResult> EndTransactionAsync(string transactionId, string? messageId, TransactionResolution resolution, DecisionSource source, CancellationToken ct = default)
        => EndTransactionAsync(new DecisionRequest(transactionId, messageId, resolution, source), ct);

    /// <summary>One decision as <see cref="EndTransactionAsync(string, string?, TransactionResolution, DecisionSource, CancellationToken)"/>
    /// carries it out, confined to <see cref="DecisionRequest.Topic"/> when the request names one.</summary>
    public async ValueTask<DecisionResult> EndTransactionAsync(DecisionRequest decision, CancellationToken ct = default)
    {
        TransactionResolution resolution = decision.Resolution;
        using var span = BrokerTracing.StartEndTransaction(decision.TransactionId, resolution, decision.Source); // trace hook (issue 12)
        await _log.WaitForRoomAsync(ct).ConfigureAwait(false);
        long waitFor;
        bool duplicate;
        DecisionResult? answer;
        lock (_gate) answer = DecideLocked(decision, ref resolution, out waitFor, out duplicate);
        if (answer is { } done)
        {
            // A conflict reports an earlier decision: answered once that one is durable (waitFor), others at once (-1).
            if (waitFor >= 0 && _options.DecisionDurability == DecisionDurability.Sync) await _log.WaitDurableAsync(waitFor, ct).ConfigureAwait(false);
            return done;
        }
        if (_options.DecisionDurability == DecisionDurability.Relaxed)
        {
            // Nobody waits for this record, so ask for a commit: the message becomes visible when it is durable.
            _log.RequestCommit();
            return new(BrokerError.None, resolution, duplicate);
        }
        await _log.WaitDurableAsync(waitFor, ct).ConfigureAwait(false);
        return new(BrokerError.None, resolution, duplicate);
    }

    /// <summary>
    /// Several decisions at once, each with exactly the outcome <see cref="EndTransactionAsync(DecisionRequest, CancellationToken)"/> would give it alone,
    /// in order: up to <see cref="MaxEntriesPerLockHold"/> of them per hold of the engine lock, then ONE durable wait for the newest record any of them
    /// needs (its own decision, or the original of a repeated one), instead of a wait per decision. A decision that
    /// fails does not stop the others. Each decision's span has its <see cref="DecisionRequest.TraceParent"/> as remote
    /// parent, as <see cref="BrokerTracing.SetRemoteParent"/> gives one for a single decision.
    /// </summary>
    public async ValueTask<DecisionResult[]> EndTransactionsAsync(IReadOnlyList<DecisionRequest> decisions, CancellationToken ct = default)
    {
        var results = new DecisionResult[decisions.Count];
        var spans = new System.Diagnostics.Activity?[decisions.Count];
        try
        {
            for (int i = 0; i < spans.Length; i++)
            {
                BrokerTracing.SetRemoteParent(decisions[i].TraceParent);
                spans[i] = BrokerTracing.StartEndTransaction(decisions[i].TransactionId, decisions[i].Resolution, decisions[i].Source); // trace hook (issue 12)
            }

            await _log.WaitForRoomAsync(ct).ConfigureAwait(false);
            long waitFor = -1;
            foreach (var (start, end) in LockChunks(results.Length))
            {
                lock (_gate)
                {
                    for (int i = start; i < end; i++)
                    {
                        DecisionRequest d = decisions[i];
                        TransactionResolution resolution = d.Resolution;
                        if (DecideLocked(d, ref resolution, out long address, out bool duplicate) is { } done)
                        {
                            results[i] = done;
                            waitFor = Math.Max(waitFor, address); // a conflict waits for the decision it reports
                            continue;
                        }

                        results[i] = new DecisionResult(BrokerError.None, resolution, duplicate);
                        waitFor = Math.Max(waitFor, address);
                    }
                }
            }

            if (waitFor >= 0)
            {
                if (_options.DecisionDurability == DecisionDurability.Relaxed) _log.RequestCommit();
                else await _log.WaitDurableAsync(waitFor, ct).ConfigureAwait(false);
            }

            return results;
        }
        finally
        {
            for (int i = spans.Length - 1; i >= 0; i--) spans[i]?.Dispose();
        }
    }

    /// <summary>
    /// The decision itself, under the engine lock: null when it was carried out (or is a repeat of one), with the log
    /// address to wait for in <paramref name="waitFor"/> and the outcome in <paramref name="resolution"/>; otherwise
    /// the result to answer at once (nothing written).
    /// </summary>
    private DecisionResult? DecideLocked(in DecisionRequest decision, ref TransactionResolution resolution, out long waitFor, out bool duplicate)
    {
        waitFor = -1;
        duplicate = false;
        string transactionId = decision.TransactionId;
        string? messageId = decision.MessageId;
        DecisionSource source = decision.Source;
        if (string.IsNullOrEmpty(transactionId))
            return new DecisionResult(new(BrokerStatus.InvalidTransactionId, "transaction id is empty"), TransactionResolution.Unknown, false);
        if (_txs.TryGet(transactionId, out var half))
        {
            // Answered as for an id never sent: another namespace's half is not there for this caller.
            if (!string.IsNullOrEmpty(decision.Topic) && decision.Topic != half.Topic)
                return new DecisionResult(new(BrokerStatus.TransactionNotFound, $"transaction '{transactionId}' is unknown in topic '{decision.Topic}'"), TransactionResolution.Unknown, false);
            // A caller in a namespace that names no topic: until 2026-12-05 it reached every namespace's halves.
            if (!string.IsNullOrEmpty(decision.TopicPrefix) && !half.Topic.StartsWith(decision.TopicPrefix, StringComparison.Ordinal))
                return new DecisionResult(new(BrokerStatus.TransactionNotFound, $"transaction '{transactionId}' is unknown in this namespace"), TransactionResolution.Unknown, false);
            if (!string.IsNullOrEmpty(messageId) && messageId != half.MessageId)
                return new DecisionResult(new(BrokerStatus.InvalidTransactionId, $"transaction '{transactionId}' does not belong to message '{messageId}'"), TransactionResolution.Unknown, false);
            // An id is taken again once its decision is forgotten (HalfIndex.Exists), and a check-back answer names the id
            // alone: an answer to a check of an EARLIER half of the id (its checker slow; the producer decided that half
            // meanwhile, the decision then forgotten) would decide this half, of which no check was ever sent. Until
            // 2026-12-07 it did: a late Rollback rolled back a new half its producer had not decided (found by review).
            // Refused as for an unknown id (the half it answers is gone); this half waits for its own check-back. After a
            // crash that lost a sent check's TxChecked record the answer is refused too, and the half is checked again.
            // An "unknown" answer changes nothing anyway: it is not refused, but not taken as this half's answer either.
            // Once this half has had its own check, a late answer to the earlier half's check was taken as this half's
            // until the midday session of 2026-12-07's check tokens. Now an answer that carries the check token of the half its
            // check named (the Remoting tranStateTableOffset, echoed by the Java client) is refused when that is another
            // half; an answer without one (a gRPC answer, a client that echoes nothing) is judged as before.
            bool answersAnEarlierHalf = source == DecisionSource.CheckBack
                && (!half.WasCheckedBack || (decision.CheckToken is long token && half.CheckToken >= 0 && token != half.CheckToken));
            if (answersAnEarlierHalf && resolution != TransactionResolution.Unknown)
                return new DecisionResult(new(BrokerStatus.TransactionNotFound,
                    half.WasCheckedBack
                        ? $"this answer is to a check of another half of transaction '{transactionId}' (check token {decision.CheckToken}; the pending half's is {half.CheckToken}): an earlier half of the id, decided and forgotten; it changes nothing"
                        : $"no check-back of the pending half of transaction '{transactionId}' was sent: this answer is to a check of an earlier half of the id, decided and forgotten, and changes nothing"),
                    TransactionResolution.Unknown, false);
            // An "unknown" to another half's check is no answer to this half's: not the asked instance's either (until
            // review on 2026-12-07 it cleared that instance's unanswered count, though the half still counted as unanswered).
            if (answersAnEarlierHalf) return new DecisionResult(BrokerError.None, TransactionResolution.Unknown, false);
            // The instance this half's last check went to answered it: a working check-back channel (registry lock only).
            if (source == DecisionSource.CheckBack && half.LastCheckedClientId is { } asked) Producers.NoteAnswered(half.ProducerGroup, asked);
            if (resolution == TransactionResolution.Unknown)
            {
                // Changes nothing durable; remembered (in memory) so an operator sees what the producer last said.
                half.LastAnswer = source == DecisionSource.CheckBack ? "unknown (check-back)" : "unknown";
                half.LastAnswerAtMs = NowMs;
                return new DecisionResult(BrokerError.None, TransactionResolution.Unknown, false);
            }
            long now = NowMs;
            int queueId = -1;
            long offset = -1;
            TopicState? topic = null;
            if (resolution == TransactionResolution.Commit)
            {
                var err = TryGetOrCreate(half.Topic, out topic);
                if (!err.IsOk) return new DecisionResult(err, TransactionResolution.Unknown, false);
                // A delay on a transactional message is honoured after commit: the message waits in the delay index,
                // never in the half store (RocketMQ #1540's loop cannot happen).
                if (half.DeliverAtMs <= now)
                {
                    queueId = PickQueue(topic, half.RequestedQueueId, half.MessageGroup);
                    offset = topic.Queues[queueId].NextOffset;
                }
            }
            new TxDecidedRecord(transactionId, resolution, source, now, queueId, offset, DecisionsWithoutNamespaceForTests ? null : NamespaceOf(half.Topic)).Write(_writer);
            waitFor = AppendAndApply();
            MessageIndex.OnDecided(transactionId, resolution, source, queueId, offset, now, half.StoreTimestampMs, half.Address); // MessageIndex hook (issue 12)
            if (resolution == TransactionResolution.Commit) Metrics.Commits++; else Metrics.Rollbacks++;
            if (source == DecisionSource.Operator)
                _logger.LogInformation("Operator {Resolution} of transaction {TransactionId} (topic {Topic})", resolution, transactionId, half.Topic);
        }
        else if (_txs.Decided.TryGet(transactionId, out var decidedAs, out var decidedAt, out string? decidedIn) && MayKnow(decision, decidedIn))
        {
            if (resolution == TransactionResolution.Unknown || resolution == decidedAs)
            {
                Metrics.DuplicateDecisions++;
                duplicate = true;
                waitFor = decidedAt;
                resolution = decidedAs;
            }
            else
            {
                // Answered once the decision it reports is durable, as a matching repeat is: until 2026-12-05 a
                // check-back's rollback racing the producer's commit was told "already committed" before that commit
                // reached the disk, and a crash then brought the half back pending (found by review).
                waitFor = decidedAt;
                return new DecisionResult(new(BrokerStatus.TransactionConflict,
                    $"transaction '{transactionId}' was already {(decidedAs == TransactionResolution.Commit ? "committed" : "rolled back")}; the {resolution.ToString().ToLowerInvariant()} changed nothing"),
                    decidedAs, false);
            }
        }
        else
        {
            // Also another namespace's decided transaction: answered word for word as an id never sent.
            return new DecisionResult(new(BrokerStatus.TransactionNotFound, $"transaction '{transactionId}' is unknown: never sent, or decided and forgotten (decisions are remembered for {_options.DecisionRetention}, at most the last {_options.MaxRememberedDecisions:N0}: --decision-retention, --max-remembered-decisions), so its outcome is not known here"), TransactionResolution.Unknown, false);
        }
        return null;
    }

    /// <summary>Tests: decisions are written as builds before the midday session of 2026-12-07 wrote them (no
    /// namespace, <see cref="TxDecidedRecord.Namespace"/>).</summary>
    internal bool DecisionsWithoutNamespaceForTests;

    /// <summary>
    /// The namespace of a topic or group as RocketMQ names them inside the broker (<c>ns%name</c>, over gRPC and over
    /// Remoting alike, where a client wraps its names itself): what comes before the first '%', or "" when there is
    /// none (a plain name, or one that starts with '%', as the retry and dead-letter topics do).
    /// </summary>
    public static string NamespaceOf(string name)
    {
        int i = name.IndexOf('%');
        return i > 0 ? name[..i] : "";
    }

    /// <summary>
    /// True when the caller of <paramref name="decision"/> may be told the outcome of a transaction decided in namespace
    /// <paramref name="decidedIn"/> ("" for none, null when not known). Until 2026-12-06 anyone was: a client of
    /// namespace b that knew a transaction id of namespace a was told "already committed", or OK for a repeat. It could
    /// change nothing, but it learned the outcome. A caller that gives no namespace (an operator, a gRPC call without
    /// one that names no topic) is told as before, as it reaches every namespace's pending halves.
    /// </summary>
    /// <remarks>A decision loaded from a checkpoint written before decisions kept their namespace (null) is told only
    /// to callers without a namespace: it may be any namespace's, and a caller of a namespace is better answered as for
    /// an unknown id (what it is told anyway once the decision is forgotten, after DecisionRetention) than told another
    /// namespace's outcome. So a deployment without namespaces answers exactly as before across the upgrade, and such
    /// decisions are gone after DecisionRetention.</remarks>
    private static bool MayKnow(in DecisionRequest decision, string? decidedIn)
    {
        string? caller = decision.Namespace
            ?? (!string.IsNullOrEmpty(decision.Topic) ? NamespaceOf(decision.Topic)
            : !string.IsNullOrEmpty(decision.TopicPrefix) ? decision.TopicPrefix.TrimEnd('%') : null);
        if (caller is null) return true;
        return decidedIn is null ? caller.Length == 0 : string.Equals(caller, decidedIn, StringComparison.Ordinal);
    }

    /// <summary>
    /// One pass of the check-back scheduler: every pending half whose next check time has come is sent to ONE live
    /// producer of its group (the instance that sent it first, then round-robin; an instance that did not answer the
    /// half's previous check, or left checks unanswered repeatedly, last: see <see cref="ProducerRegistry.Candidates"/>). The cost is O(due halves · log n):
    /// halves are indexed by next-check time, not scanned. Returns the number of checks sent.
    /// </summary>
    public async Task<int> RunCheckPassAsync(CancellationToken ct = default)
    {
        // The due halves are taken, and those out of checks parked, at most MaxEntriesPerLockHold per hold of the lock:
        // a storm of a million halves due at once no longer holds every send and decision for a second (2026-12-05).
        var due = new List<HalfState>();
        var seen = new HashSet<HalfState>(ReferenceEqualityComparer.Instance);
        int sent = 0;
        var retryLater = new List<HalfState>();
        // Channels that refused a check in this pass (full, or closing): not asked again until the pass ends (one that
        // threw is: the failure may be the one check's).
        // A channel refused for want of room asks for the next pass once it has room (RequestCheckPass). Until the night
        // session of 2026-12-07 every later half of the pass was read from the log and built into a check for it again
        // (a body copy under the lock each), only to be refused: with one instance's queue full, a pass of D due halves
        // read all D bodies, and each pass its room started did it again.
        HashSet<ICheckBackChannel>? refused = null;
        int next = 0;
        // The halves due when the pass starts, as before: a half that becomes due meanwhile is the next pass's, so a pass
        // ends, and what it put aside for later (no producer to ask) goes back into the index when it does.
        long dueBy = NowMs;
        try
        {
            bool more = true;
            while (more)
            {
                due.Clear();
                next = 0;
                await _log.WaitForRoomAsync(ct).ConfigureAwait(false);
                lock (_gate)
                {
                    long now = NowMs;
                    // A half this pass parked and an operator resumed since is due again: the next pass checks it.
                    more = _txs.TakeDue(dueBy, MaxEntriesPerLockHold, due, seen, retryLater);
                    int kept = 0;
                    for (int i = 0; i < due.Count; i++)
                    {
                        var half = due[i];
                        if (half.CheckCount >= _options.TransactionCheckMax) Park(half, now);
                        else due[kept++] = half;
                    }
                    due.RemoveRange(kept, due.Count - kept);
                }
                if (more)
                {
                    BetweenLockHoldsForTests?.Invoke();
                    if (due.Count == 0) await Task.Yield(); // all parked: the writers queued on the lock meanwhile first
                }
                for (; next < due.Count; next++)
                {
                    var half = due[next];
                    ct.ThrowIfCancellationRequested();
                    await _log.WaitForRoomAsync(ct).ConfigureAwait(false);
                    // A check the last asked instance left unanswered until now sends this one to another live instance.
                    string? unanswered = TakeUnansweredCheck(half);
                    if (unanswered is not null) Producers.NoteUnanswered(half.ProducerGroup, unanswered);
                    var candidates = Producers.Candidates(half.ProducerGroup, half.OriginClientId, unanswered);
                    if (candidates.Count == 0)
                    {
                        // Nobody to ask: wait without burning a check.
                        Metrics.ChecksWithoutProducer++;
                        retryLater.Add(half);
                        continue;
                    }
                    if (refused is not null && AllRefused(candidates, refused))
                    {
                        // Every instance refused a check in this pass: the half waits, its body not read.
                        retryLater.Add(half);
                        continue;
                    }
                    long address;
                    int size;
                    lock (_gate) (address, size) = (half.Address, half.Size);
                    var message = await ReadStoredMessageAsync(address, half.Topic, -1, -1, ct, size).ConfigureAwait(false);
                    if (message is null)
                    {
                        // Retention may have moved the body and cut its old place since the address was taken (found by the
                        // soak at 1,100 tx/s with a 1 MiB retention limit): read it where it lives now.
                        long now;
                        lock (_gate) (now, size) = _txs.IsLive(half) ? (half.Address, half.Size) : (-1, 0);
                        if (now < 0) continue; // decided meanwhile: nothing to check
                        if (now != address) message = await ReadStoredMessageAsync(now, half.Topic, -1, -1, ct, size).ConfigureAwait(false);
                    }
                    if (message is null)
                    {
                        _logger.LogError("Half message {TransactionId} at {Address} could not be read from the log", half.TransactionId, half.Address);
                        retryLater.Add(half);
                        continue;
                    }
                    var request = new CheckBackRequest { TransactionId = half.TransactionId, ProducerGroup = half.ProducerGroup, HalfMessage = message, CheckNumber = half.CheckCount + 1,
                        CheckToken = half.CheckToken, PreviousCheckAtMs = half.LastCheckAtMs, Sequence = Interlocked.Increment(ref _checkSequence) };
                    using var span = BrokerTracing.StartCheckBack(request); // trace hook (issue 12)
                    ICheckBackChannel? accepted = null;
                    // The pass took this half k disk reads ago; a commit or rollback may have come in since. Liveness is
                    // read, the check queued and its record written in one hold of the lock every decision takes, so a
                    // decided half gets no check-back, and a decision after this point came after the check was queued.
                    // Sending under the lock is safe: TrySendCheck only queues (a non-blocking TryWrite on both front-ends;
                    // the Remoting frame builder re-enters this lock on the same thread) and never awaits.
                    lock (_gate)
                    {
                        if (!_txs.IsLive(half)) continue; // decided meanwhile: nothing to check, nothing to reschedule
                        // A channel that answers while queueing answers a check that was sent (HalfState.WasCheckedBack).
                        half.CheckBeingSent = true;
                        try
                        {
                            foreach (var channel in candidates)
                            {
                                if (refused is not null && refused.Contains(channel)) continue;
                                // A channel that died since the lookup refuses; the check goes to the next live instance, not lost.
                                bool threw = false;
                                if (channel.IsAlive && TrySendCheck(channel, request, out threw)) { accepted = channel; break; }
                                if (!threw) (refused ??= new(ReferenceEqualityComparer.Instance)).Add(channel);
                            }
                        }
                        finally
                        {
                            half.CheckBeingSent = false;
                        }
                        // Still live unless the channel itself decided it while queueing (re-entering this lock): then
                        // the check went out before the decision, and the half has nothing left to record.
                        if (accepted is not null && _txs.IsLive(half))
                        {
                            long now = NowMs;
                            new TxCheckedRecord(half.TransactionId, half.CheckCount + 1, now, now + (long)_options.TransactionCheckInterval.TotalMilliseconds).Write(_writer);
                            AppendAndApply();
                            half.LastCheckedClientId = accepted.ClientId;
                            half.LastSentCheck = request.Sequence;
                            Metrics.ChecksSent++;
                        }
                    }
                    if (accepted is null) { retryLater.Add(half); continue; }
                    sent++;
                    _logger.LogDebug("Check-back {Number} of transaction {TransactionId} sent to {ClientId}", request.CheckNumber, half.TransactionId, accepted.ClientId);
                }
            }
        }
        finally
        {
            // Whatever ended the pass early (cancellation, a failed read, a bug), the halves it did not reach go back
            // into the due-time index: an exception never drops a due half until the next restart. They go back at most
            // MaxEntriesPerLockHold per hold, as they were taken: a group with many halves and no live producer (retired
            // with orphans, all down in a deploy, not heartbeating yet after a restart) puts them all back every pass,
            // each a heap insert, and in one hold a send waited 89 ms for 300,000 of them (found by review, 2026-12-06).
            if (next < due.Count) retryLater.AddRange(due.GetRange(next, due.Count - next));
            foreach (var (start, end) in LockChunks(retryLater.Count))
            {
                lock (_gate)
                {
                    for (int i = start; i < end; i++)
                    {
                        var half = retryLater[i];
                        if (_txs.IsLive(half) && !half.Parked) _txs.Schedule(half);
                    }
                }
            }
        }
        return sent;
    }

    private static bool AllRefused(IReadOnlyList<ICheckBackChannel> candidates, HashSet<ICheckBackChannel> refused)
    {
        foreach (var channel in candidates)
        {
            if (!refused.Contains(channel)) return false;
        }
        return true;
    }

    /// <summary>
    /// Queues one check on one channel. A channel that throws (a producer connection torn down while the check is
    /// written: ObjectDisposedException, InvalidOperationException) refuses, as a dead one does: the check goes to the
    /// next instance, or the half waits for a later pass without burning a check. Until 2026-12-07 the exception left
    /// the pass, and every half after it waited for the next pass, which met the same channel first again (found by
    /// review). Counted (<see cref="BrokerMetrics.CheckSendFailures"/>), logged at most once a minute. Caller holds the lock.
    /// </summary>
    private bool TrySendCheck(ICheckBackChannel channel, CheckBackRequest request, out bool threw)
    {
        threw = false;
        try
        {
            return channel.TrySendCheck(request);
        }
        catch (Exception ex) when (ex is not OutOfMemoryException)
        {
            threw = true;
            Metrics.CheckSendFailures++;
            _checkSendFailuresUnlogged++;
            long now = NowMs;
            if (now >= _nextCheckSendFailureLogMs)
            {
                _nextCheckSendFailureLogMs = now + 60_000;
                _logger.LogWarning(ex, "A check-back of transaction {TransactionId} could not be sent to {ClientId} of producer group {Group} ({Failures} such failures since the last of these lines); it goes to another instance or waits for the next pass",
                    request.TransactionId, channel.ClientId, request.ProducerGroup, _checkSendFailuresUnlogged);
                _checkSendFailuresUnlogged = 0;
            }
            return false;
        }
    }

    /// <summary>
    /// Checks a channel accepted and then never wrote (a Telemetry stream ended for not reading, or gone, with checks
    /// still queued on it) are given back: each one the half's last check went to, to this instance, counts as not sent.
    /// Its TxChecked record is undone by another (the check count and last check time the half had before it, due now),
    /// so the half keeps that attempt and is offered at once, by a pass started here, to another live instance of its
    /// group; with none, it is checked as soon as one joins (as a half whose group has no producer). A check of which
    /// another has been sent since, or whose half was decided, parked or taken by a later half of its id, is left as it
    /// is. Until 2026-12-07 these checks were lost: counted as sent (an attempt spent), and the halves waited a whole
    /// check interval. Returns how many were given back. A check is known by its <see cref="CheckBackRequest.Sequence"/>
    /// (<see cref="HalfState.LastSentCheck"/>), so a check given back twice is undone once, and a later check of the
    /// same number to the same client id (after a resume, or of a later half of the id) is never undone. A channel gives
    /// back only checks it never wrote (<c>TelemetrySession</c>, <c>RemotingSession</c>).
    /// </summary>
    public Task<int> ReturnUnsentChecksAsync(string clientId, IReadOnlyList<CheckBackRequest> checks, CancellationToken ct = default)
        => ReturnUnsentChecksAsync([clientId], checks, ct);

    /// <summary>
    /// As <see cref="ReturnUnsentChecksAsync(string, IReadOnlyList{CheckBackRequest}, CancellationToken)"/>, for a channel
    /// whose client id changed while checks were queued on it (a Remoting connection whose later HEART_BEAT names another
    /// clientID): a check is given back when its half's last check is this very one (its sequence) and went to any of
    /// <paramref name="clientIds"/>. Until the afternoon session of 2026-12-07 such a connection gave its checks back
    /// under its last id only, which the checks queued before the change had not gone to: they were kept as sent, and
    /// their halves waited a whole check interval.
    /// </summary>
    public async Task<int> ReturnUnsentChecksAsync(IReadOnlyCollection<string> clientIds, IReadOnlyList<CheckBackRequest> checks, CancellationToken ct = default)
    {
        int returned = 0;
        // Newest first: a half's checks queued on one channel are undone from its last back, each the one before the last
        // undone (the same half, the number just below), so a stream that stalled past a check interval with two checks of
        // a half (its instance the group's only one) gives back both. Until 2026-12-07 only the last was undone.
        Dictionary<HalfState, CheckBackRequest>? undone = null;
        foreach (var (start, end) in LockChunks(checks.Count))
        {
            await _log.WaitForRoomAsync(ct).ConfigureAwait(false);
            lock (_gate)
            {
                // Stopping (the front end's call, or the engine): left as they are, checked again after the interval.
                ct.ThrowIfCancellationRequested();
                if (_stop.IsCancellationRequested) break;
                for (int i = start; i < end; i++)
                {
                    var check = checks[checks.Count - 1 - i];
                    if (!_txs.TryGet(check.TransactionId, out var half) || half.Parked) continue;
                    if (half.CheckCount != check.CheckNumber || check.CheckNumber < 1) continue;
                    // The half's last check, this very one (not one of the same number to the same client id after a
                    // resume, nor one of a later half of the id), still unanswered by the instance it went to; or the
                    // check just before one this call undid, queued on the same channel, with nothing sent since.
                    bool last = check.Sequence > 0 && half.LastSentCheck == check.Sequence && half.LastCheckedClientId is { } to && clientIds.Contains(to, StringComparer.Ordinal);
                    bool before = !last && half.LastSentCheck == 0 && undone is not null && undone.TryGetValue(half, out var later)
                        && later.CheckToken == check.CheckToken && later.CheckNumber == check.CheckNumber + 1;
                    if (!last && !before) continue;
                    (undone ??= new(ReferenceEqualityComparer.Instance))[half] = check;
                    long now = NowMs;
                    new TxCheckedRecord(half.TransactionId, check.CheckNumber - 1, check.PreviousCheckAtMs, now).Write(_writer);
                    AppendAndApply();
                    half.LastCheckedClientId = null; // not left unanswered by that instance: never given to it
                    half.LastSentCheck = 0; // given back once
                    Metrics.ChecksReturned++;
                    returned++;
                }
            }
        }
        if (returned > 0)
        {
            KickCheckPass();
            _logger.LogDebug("{Count} check-backs queued for {ClientId} and never written given back", returned, string.Join(", ", clientIds));
        }
        return returned;
    }

    // Names each check-back sent (CheckBackRequest.Sequence).
    private long _checkSequence;

    // The rate limit of TrySendCheck's line: when the next may be written, and the failures since the last. Under the lock.
    private long _nextCheckSendFailureLogMs = long.MinValue;
    private long _checkSendFailuresUnlogged;

    /// <summary>The instance the half's last check-back went to, if it has not answered since (null otherwise). Taken
    /// once: the next check records whom it went to.</summary>
    private string? TakeUnansweredCheck(HalfState half)
    {
        lock (_gate)
        {
            string? asked = half.LastCheckedClientId;
            half.LastCheckedClientId = null;
            return asked is not null && half.LastAnswerAtMs < half.LastCheckAtMs ? asked : null;
        }
    }

    private void Park(HalfState half, long now)
    {
        // No entry in TRANS_CHECK_MAX_TIME_TOPIC (system offset -1): the half is still pending (UnreadableTopicReason).
        new TxParkedRecord(half.TransactionId, now, -1).Write(_writer);
        AppendAndApply();
        Metrics.Parked++;
        _logger.LogWarning("Transaction {TransactionId} (topic {Topic}, producer group {Group}) gave no answer after {Checks} check-backs; parked. Resume or decide it through the admin API.",
            half.TransactionId, half.Topic, half.ProducerGroup, half.CheckCount);
    }

    /// <summary>Operator action: a parked (or pending) half is checked again from scratch.</summary>
    public async ValueTask<BrokerError> ResumeTransactionAsync(string transactionId, CancellationToken ct = default)
    {
        await _log.WaitForRoomAsync(ct).ConfigureAwait(false);
        long address;
        lock (_gate)
        {
            if (!_txs.TryGet(transactionId, out var half))
                return _txs.Decided.Contains(transactionId)
                    ? new(BrokerStatus.TransactionConflict, $"transaction '{transactionId}' is already decided")
                    : new(BrokerStatus.TransactionNotFound, $"transaction '{transactionId}' is unknown");
            long now = NowMs;
            if (!half.Parked)
                return new(BrokerStatus.BadRequest, $"transaction '{transactionId}' is not parked; it is checked on its own schedule");
            new TxResumedRecord(transactionId, now).Write(_writer);
            address = AppendAndApply();
        }
        await _log.WaitDurableAsync(address, ct).ConfigureAwait(false);
        KickCheckPass();
        return BrokerError.None;
    }

    /// <summary>A pending or parked half, as the admin API shows it.</summary>
    public sealed record PendingTransaction(string TransactionId, string MessageId, string Topic, string ProducerGroup, string? OriginClientId,
        DateTimeOffset StoredAt, int Checks, DateTimeOffset? NextCheckAt, bool Parked, DateTimeOffset? ParkedAt, long LogAddress)
    {
        /// <summary>What the producer last answered without deciding ("unknown"), and when; null when it never did since start.</summary>
        public string? LastAnswer { get; init; }
        public DateTimeOffset? LastAnswerAt { get; init; }
        /// <summary>When the last check-back was sent, if any.</summary>
        public DateTimeOffset? LastCheckAt { get; init; }
    }

    /// <summary>Pages through pending (or parked) halves in log order, starting after <paramref name="afterAddress"/>
    /// (at most 1,000 a page). Costs the page and the log blocks it lies in, not the number of pending halves
    /// (<see cref="Transactions.HalfIndex.Page"/>).</summary>
    public IReadOnlyList<PendingTransaction> ListTransactions(bool parked, long afterAddress, int limit, out int total)
    {
        lock (_gate)
        {
            total = parked ? _txs.ParkedCount : _txs.Count - _txs.ParkedCount;
            return _txs.Page(parked, afterAddress, Math.Clamp(limit, 1, 1000)).ConvertAll(ToView);
        }
    }

    /// <summary>Pending halves that are not parked, and parked ones (O(1)).</summary>
    public (int Pending, int Parked) TransactionCounts()
    {
        lock (_gate) return (_txs.Count - _txs.ParkedCount, _txs.ParkedCount);
    }

    public PendingTransaction? FindTransaction(string transactionId)
    {
        lock (_gate) return _txs.TryGet(transactionId, out var h) ? ToView(h) : null;
    }

    private static PendingTransaction ToView(HalfState h) => new(h.TransactionId, h.MessageId, h.Topic, h.ProducerGroup, h.OriginClientId,
        DateTimeOffset.FromUnixTimeMilliseconds(h.StoreTimestampMs), h.CheckCount,
        h.Parked ? null : DateTimeOffset.FromUnixTimeMilliseconds(h.NextCheckAtMs), h.Parked,
        h.Parked ? DateTimeOffset.FromUnixTimeMilliseconds(h.ParkedAtMs) : null, h.Address)
    {
        LastAnswer = h.LastAnswer,
        LastAnswerAt = h.LastAnswer is null ? null : DateTimeOffset.FromUnixTimeMilliseconds(h.LastAnswerAtMs),
        LastCheckAt = h.LastCheckAtMs > 0 ? DateTimeOffset.FromUnixTimeMilliseconds(h.LastCheckAtMs) : null,
    };

    public int PendingCount { get { lock (_gate) return _txs.Count; } }
}
