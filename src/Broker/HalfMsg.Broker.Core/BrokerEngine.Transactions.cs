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
        if (msg.DeliveryTimestampMs is long at && at - nowMs > (long)_options.MaxDelay.TotalMilliseconds)
            return new(BrokerStatus.IllegalDeliveryTime, $"delivery time is more than {_options.MaxDelay} in the future");
        if (msg.Tag is { Length: > 255 } || (msg.Tag is not null && msg.Tag.Contains("||", StringComparison.Ordinal)))
            return new(BrokerStatus.BadRequest, "tag must be at most 255 characters and must not contain '||'");
        if (msg.MessageGroup is { Length: > 255 })
            return new(BrokerStatus.BadRequest, "message group must be at most 255 characters");
        return BrokerError.None;
    }

    /// <summary>
    /// Stores a half message: durable, invisible to every consumer until committed. Completes after the record is durable
    /// (flush sync). The transaction id is the message id, as RocketMQ does (its UNIQ_KEY).
    /// </summary>
    public async ValueTask<SendHalfResult> SendHalfAsync(MessageDraft msg, string producerGroup, string? clientId, TimeSpan? checkImmunity, CancellationToken ct = default)
    {
        await _log.WaitForRoomAsync(ct).ConfigureAwait(false);
        long address;
        lock (_gate)
        {
            long now = NowMs;
            var err = ValidateDraft(msg, now);
            if (err.IsOk && !IsValidName(producerGroup, 255)) err = new(BrokerStatus.BadRequest, $"producer group '{producerGroup}' is not a valid name");
            if (err.IsOk) err = TryGetTopicForWrite(msg.Topic, out _);
            if (!err.IsOk) return new SendHalfResult(err, msg.MessageId, "");
            string txId = msg.MessageId;
            if (_halves.ContainsKey(txId) || _decided.ContainsKey(txId))
                return new SendHalfResult(new(BrokerStatus.BadRequest, $"transaction '{txId}' already exists (message ids must be unique)"), msg.MessageId, "");
            long immunityMs = checkImmunity is { } ci && ci > TimeSpan.Zero ? (long)ci.TotalMilliseconds : 0;
            int requestedQueue = msg.QueueId ?? -1;
            _writer.Begin(RecordKind.HalfStored)
                .Str(txId).Str(producerGroup).Str(clientId).I64(immunityMs).I32(0).I64(0).Bool(false).I32(requestedQueue);
            WriteMessageFields(msg, now);
            address = AppendRecord();
            ApplyHalfStored(address, txId, msg.MessageId, msg.Topic, producerGroup, clientId, immunityMs, 0, 0, false, requestedQueue,
                msg.Tag, msg.MessageGroup, msg.DeliveryTimestampMs ?? 0, now);
            Metrics.HalvesStored++;
        }
        await _log.WaitDurableAsync(address, ct).ConfigureAwait(false);
        MessageIndex.OnHalf(msg, producerGroup, NowMs); // MessageIndex hook (issue 12): operator look-up by id/key
        return new SendHalfResult(BrokerError.None, msg.MessageId, msg.MessageId);
    }

    /// <summary>Writes the fields every stored message shares, in the order <see cref="DecodeStoredMessage"/> reads them.</summary>
    private void WriteMessageFields(MessageDraft msg, long storeMs)
    {
        _writer.Str(msg.Topic).Str(msg.MessageId).Str(msg.Tag).StrList(msg.Keys).StrMap(msg.Properties)
            .I64(msg.BornTimestampMs).Str(msg.BornHost).I64(storeMs).Str(msg.MessageGroup).I64(msg.DeliveryTimestampMs ?? 0)
            .Bytes(msg.Body.Span);
    }

    private void ApplyHalfStored(long address, string txId, string messageId, string topic, string producerGroup, string? clientId,
        long immunityMs, int checkCount, long nextCheckAtMs, bool parked, int requestedQueue, string? tag, string? messageGroup, long deliverAtMs, long storeMs)
    {
        if (_halves.TryGetValue(txId, out var existing))
        {
            // Re-appended by retention: only the address moves.
            existing.Address = address;
            return;
        }
        var half = new HalfState
        {
            TransactionId = txId, MessageId = messageId, Topic = topic, ProducerGroup = producerGroup, OriginClientId = clientId,
            Address = address, StoreTimestampMs = storeMs, CheckImmunityMs = immunityMs, RequestedQueueId = requestedQueue,
            Tag = tag, MessageGroup = messageGroup, DeliverAtMs = deliverAtMs, CheckCount = checkCount, Parked = parked,
        };
        half.NextCheckAtMs = nextCheckAtMs > 0 ? nextCheckAtMs : storeMs + Math.Max((long)_options.TransactionTimeout.TotalMilliseconds, immunityMs);
        _halves[txId] = half;
        if (!parked) _checkDue.Enqueue(half, half.NextCheckAtMs);
    }

    /// <summary>
    /// Commits or rolls back a half message. Exactly-once: the first decision wins atomically; a repeated identical decision
    /// returns success (after the original is durable) and changes nothing; a conflicting one returns
    /// <see cref="BrokerStatus.TransactionConflict"/> and changes nothing; an unknown id returns
    /// <see cref="BrokerStatus.TransactionNotFound"/>. <see cref="TransactionResolution.Unknown"/> changes nothing.
    /// </summary>
    public async ValueTask<DecisionResult> EndTransactionAsync(string transactionId, string? messageId, TransactionResolution resolution, DecisionSource source, CancellationToken ct = default)
    {
        await _log.WaitForRoomAsync(ct).ConfigureAwait(false);
        long waitFor;
        bool duplicate = false;
        lock (_gate)
        {
            if (string.IsNullOrEmpty(transactionId))
                return new(new(BrokerStatus.InvalidTransactionId, "transaction id is empty"), TransactionResolution.Unknown, false);
            if (_halves.TryGetValue(transactionId, out var half))
            {
                if (!string.IsNullOrEmpty(messageId) && messageId != half.MessageId)
                    return new(new(BrokerStatus.InvalidTransactionId, $"transaction '{transactionId}' does not belong to message '{messageId}'"), TransactionResolution.Unknown, false);
                if (resolution == TransactionResolution.Unknown)
                    return new(BrokerError.None, TransactionResolution.Unknown, false);
                long now = NowMs;
                int queueId = -1;
                long offset = -1;
                TopicState? topic = null;
                if (resolution == TransactionResolution.Commit)
                {
                    var err = TryGetOrCreate(half.Topic, out topic);
                    if (!err.IsOk) return new(err, TransactionResolution.Unknown, false);
                    // A delay on a transactional message is honoured after commit: the message waits in the delay index,
                    // never in the half store (RocketMQ #1540's loop cannot happen).
                    if (half.DeliverAtMs <= now)
                    {
                        queueId = PickQueue(topic, half.RequestedQueueId, half.MessageGroup);
                        offset = topic.Queues[queueId].NextOffset;
                    }
                }
                _writer.Begin(RecordKind.TxDecided).Str(transactionId).Byte((byte)resolution).Byte((byte)source).I64(now).I32(queueId).I64(offset);
                waitFor = AppendRecord();
                ApplyTxDecided(waitFor, transactionId, resolution, now, queueId, offset);
                MessageIndex.OnDecided(transactionId, resolution, source, queueId, offset, now); // MessageIndex hook (issue 12)
                if (resolution == TransactionResolution.Commit) Metrics.Commits++; else Metrics.Rollbacks++;
                if (source == DecisionSource.Operator)
                    _logger.LogInformation("Operator {Resolution} of transaction {TransactionId} (topic {Topic})", resolution, transactionId, half.Topic);
            }
            else if (_decided.TryGetValue(transactionId, out var decided))
            {
                if (resolution == TransactionResolution.Unknown || resolution == decided.Resolution)
                {
                    Metrics.DuplicateDecisions++;
                    duplicate = true;
                    waitFor = decided.RecordAddress;
                    resolution = decided.Resolution;
                }
                else
                {
                    return new(new(BrokerStatus.TransactionConflict,
                        $"transaction '{transactionId}' was already {(decided.Resolution == TransactionResolution.Commit ? "committed" : "rolled back")}; the {resolution.ToString().ToLowerInvariant()} changed nothing"),
                        decided.Resolution, false);
                }
            }
            else
            {
                return new(new(BrokerStatus.TransactionNotFound, $"transaction '{transactionId}' is unknown (never sent, or decided more than {_options.DecisionRetention} ago)"), TransactionResolution.Unknown, false);
            }
        }
        await _log.WaitDurableAsync(waitFor, ct).ConfigureAwait(false);
        return new(BrokerError.None, resolution, duplicate);
    }

    private void ApplyTxDecided(long address, string txId, TransactionResolution resolution, long atMs, int queueId, long offset)
    {
        if (!_halves.Remove(txId, out var half))
        {
            _logger.LogWarning("Decision record for unknown transaction {TransactionId} at {Address}; skipped", txId, address);
            return;
        }
        if (resolution == TransactionResolution.Commit)
        {
            var topic = ApplyTopicCreated(half.Topic, half.Topic == CheckMaxTopic ? 1 : _options.QueuesPerTopic);
            if (offset >= 0)
            {
                AddQueueEntry(topic, queueId, offset, new QueueEntry { BodyAddress = half.Address, VisibleAt = address, Tag = half.Tag, MessageGroup = half.MessageGroup });
            }
            else
            {
                AddDelayed(new DelayedEntry { BodyAddress = half.Address, Topic = half.Topic, RequestedQueueId = half.RequestedQueueId, DeliverAtMs = half.DeliverAtMs, Tag = half.Tag, MessageGroup = half.MessageGroup });
            }
        }
        _decided[txId] = new DecidedTx(resolution, address, atMs);
        _decidedOrder.Enqueue((txId, atMs));
        ExpireDecisions(atMs);
    }

    private void ExpireDecisions(long nowMs)
    {
        long horizon = nowMs - (long)_options.DecisionRetention.TotalMilliseconds;
        while (_decidedOrder.TryPeek(out var d) && d.AtMs < horizon)
        {
            _decidedOrder.Dequeue();
            if (_decided.TryGetValue(d.TxId, out var v) && v.AtMs == d.AtMs) _decided.Remove(d.TxId);
        }
    }

    private void ApplyTxChecked(string txId, int checkCount, long atMs, long nextCheckAtMs)
    {
        if (!_halves.TryGetValue(txId, out var half)) return;
        half.CheckCount = checkCount;
        half.LastCheckAtMs = atMs;
        half.NextCheckAtMs = nextCheckAtMs;
        if (!half.Parked) _checkDue.Enqueue(half, nextCheckAtMs);
    }

    private void ApplyTxParked(long address, string txId, long atMs, long sysOffset)
    {
        if (!_halves.TryGetValue(txId, out var half)) return;
        half.Parked = true;
        half.ParkedAtMs = atMs;
        var topic = ApplyTopicCreated(CheckMaxTopic, 1);
        if (sysOffset >= 0)
            AddQueueEntry(topic, 0, sysOffset, new QueueEntry { BodyAddress = half.Address, VisibleAt = address, Tag = half.Tag });
    }

    private void ApplyTxResumed(string txId, long atMs)
    {
        if (!_halves.TryGetValue(txId, out var half)) return;
        half.Parked = false;
        half.CheckCount = 0;
        half.NextCheckAtMs = atMs;
        _checkDue.Enqueue(half, atMs);
    }

    /// <summary>
    /// One pass of the check-back scheduler: every pending half whose next check time has come is sent to ONE live
    /// producer of its group (the instance that sent it first, then round-robin). The cost is O(due halves · log n):
    /// halves are indexed by next-check time, not scanned. Returns the number of checks sent.
    /// </summary>
    public async Task<int> RunCheckPassAsync(CancellationToken ct = default)
    {
        var due = new List<HalfState>();
        lock (_gate)
        {
            long now = NowMs;
            while (_checkDue.TryPeek(out var half, out var at) && at <= now)
            {
                _checkDue.Dequeue();
                // Lazy deletion: the heap may hold stale entries for decided, parked or rescheduled halves.
                if (!_halves.TryGetValue(half.TransactionId, out var live) || !ReferenceEquals(live, half) || half.Parked || half.NextCheckAtMs != at) continue;
                if (half.CheckCount >= _options.TransactionCheckMax)
                {
                    Park(half, now);
                    continue;
                }
                due.Add(half);
            }
        }
        int sent = 0;
        var retryLater = new List<HalfState>();
        foreach (var half in due)
        {
            ct.ThrowIfCancellationRequested();
            await _log.WaitForRoomAsync(ct).ConfigureAwait(false);
            var candidates = Producers.Candidates(half.ProducerGroup, half.OriginClientId);
            if (candidates.Count == 0)
            {
                // Nobody to ask: wait without burning a check.
                Metrics.ChecksWithoutProducer++;
                retryLater.Add(half);
                continue;
            }
            var message = await ReadStoredMessageAsync(half.Address, half.Topic, -1, -1, ct).ConfigureAwait(false);
            if (message is null)
            {
                _logger.LogError("Half message {TransactionId} at {Address} could not be read from the log", half.TransactionId, half.Address);
                retryLater.Add(half);
                continue;
            }
            var request = new CheckBackRequest { TransactionId = half.TransactionId, ProducerGroup = half.ProducerGroup, HalfMessage = message, CheckNumber = half.CheckCount + 1 };
            ICheckBackChannel? accepted = null;
            foreach (var channel in candidates)
            {
                // A channel that died since the lookup refuses; the check goes to the next live instance, not lost.
                if (channel.IsAlive && channel.TrySendCheck(request)) { accepted = channel; break; }
            }
            if (accepted is null) { retryLater.Add(half); continue; }
            sent++;
            lock (_gate)
            {
                if (!_halves.TryGetValue(half.TransactionId, out var live) || !ReferenceEquals(live, half)) continue; // decided meanwhile
                long now = NowMs;
                long next = now + (long)_options.TransactionCheckInterval.TotalMilliseconds;
                _writer.Begin(RecordKind.TxChecked).Str(half.TransactionId).I32(half.CheckCount + 1).I64(now).I64(next);
                AppendRecord();
                ApplyTxChecked(half.TransactionId, half.CheckCount + 1, now, next);
                Metrics.ChecksSent++;
            }
            _logger.LogDebug("Check-back {Number} of transaction {TransactionId} sent to {ClientId}", request.CheckNumber, half.TransactionId, accepted.ClientId);
        }
        if (retryLater.Count > 0)
        {
            lock (_gate)
            {
                foreach (var half in retryLater)
                    if (_halves.TryGetValue(half.TransactionId, out var live) && ReferenceEquals(live, half) && !half.Parked)
                        _checkDue.Enqueue(half, half.NextCheckAtMs);
            }
        }
        return sent;
    }

    private void Park(HalfState half, long now)
    {
        var sys = ApplyTopicCreated(CheckMaxTopic, 1);
        long sysOffset = sys.Queues[0].NextOffset;
        _writer.Begin(RecordKind.TxParked).Str(half.TransactionId).I64(now).I64(sysOffset);
        var address = AppendRecord();
        ApplyTxParked(address, half.TransactionId, now, sysOffset);
        Metrics.Parked++;
        _logger.LogWarning("Transaction {TransactionId} (topic {Topic}, producer group {Group}) gave no answer after {Checks} check-backs; parked in {SystemTopic}. Resume or decide it through the admin API.",
            half.TransactionId, half.Topic, half.ProducerGroup, half.CheckCount, CheckMaxTopic);
    }

    /// <summary>Operator action: a parked (or pending) half is checked again from scratch.</summary>
    public async ValueTask<BrokerError> ResumeTransactionAsync(string transactionId, CancellationToken ct = default)
    {
        await _log.WaitForRoomAsync(ct).ConfigureAwait(false);
        long address;
        lock (_gate)
        {
            if (!_halves.TryGetValue(transactionId, out var half))
                return _decided.ContainsKey(transactionId)
                    ? new(BrokerStatus.TransactionConflict, $"transaction '{transactionId}' is already decided")
                    : new(BrokerStatus.TransactionNotFound, $"transaction '{transactionId}' is unknown");
            long now = NowMs;
            _writer.Begin(RecordKind.TxResumed).Str(transactionId).I64(now);
            address = AppendRecord();
            ApplyTxResumed(half.TransactionId, now);
        }
        await _log.WaitDurableAsync(address, ct).ConfigureAwait(false);
        _checkKick.Release();
        return BrokerError.None;
    }

    /// <summary>A pending or parked half, as the admin API shows it.</summary>
    public sealed record PendingTransaction(string TransactionId, string MessageId, string Topic, string ProducerGroup, string? OriginClientId,
        DateTimeOffset StoredAt, int Checks, DateTimeOffset? NextCheckAt, bool Parked, DateTimeOffset? ParkedAt, long LogAddress);

    /// <summary>Pages through pending (or parked) halves in log order, starting after <paramref name="afterAddress"/>.</summary>
    public IReadOnlyList<PendingTransaction> ListTransactions(bool parked, long afterAddress, int limit, out int total)
    {
        // One O(n) pass under the lock; sorting happens outside it, so paging through a million pending halves does
        // not stall sends and decisions.
        var candidates = new List<PendingTransaction>();
        total = 0;
        lock (_gate)
        {
            foreach (var h in _halves.Values)
            {
                if (h.Parked != parked) continue;
                total++;
                if (h.Address > afterAddress) candidates.Add(ToView(h));
            }
        }
        candidates.Sort((a, b) => a.LogAddress.CompareTo(b.LogAddress));
        return candidates.Take(Math.Clamp(limit, 1, 1000)).ToList();
    }

    public PendingTransaction? FindTransaction(string transactionId)
    {
        lock (_gate) return _halves.TryGetValue(transactionId, out var h) ? ToView(h) : null;
    }

    private static PendingTransaction ToView(HalfState h) => new(h.TransactionId, h.MessageId, h.Topic, h.ProducerGroup, h.OriginClientId,
        DateTimeOffset.FromUnixTimeMilliseconds(h.StoreTimestampMs), h.CheckCount,
        h.Parked ? null : DateTimeOffset.FromUnixTimeMilliseconds(h.NextCheckAtMs), h.Parked,
        h.Parked ? DateTimeOffset.FromUnixTimeMilliseconds(h.ParkedAtMs) : null, h.Address);

    public int PendingCount { get { lock (_gate) return _halves.Count; } }
}
