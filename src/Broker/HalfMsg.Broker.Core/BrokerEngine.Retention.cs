using HalfMsg.Broker.Core.Delivery;
using HalfMsg.Broker.Core.Model;
using HalfMsg.Broker.Core.Retention;
using HalfMsg.Broker.Core.Storage;
using Microsoft.Extensions.Logging;

namespace HalfMsg.Broker.Core;

// Retention: the contract, and why a cut cannot lose a live record.
//
// The contract (what a RocketMQ or Kafka user expects): the log is cut by size (RetentionBytes) and age
// (RetentionTime); limits are limits. A message that entered its queue before the cut point expires with it, whether
// or not every group consumed it (each group counts what expired before it finished it). Always kept, whatever the
// limits: pending (and parked) halves, delayed messages not yet due, and every queue entry that entered its queue
// after the cut point, even when its body was written before it (a half committed late, a delay released late).
//
// Why nothing live is lost: a cut at B first moves every live body below B to the tail (BodyRelocated, which names
// each reference it moves and is applied through the same RecordApplier as everything else), in rounds, under the
// engine lock per batch, until one round finds no live reference below B. New references are only ever made from
// addresses already in the state (a commit takes the half's address, a release the delayed entry's), so once the
// state holds none below B it never gets one again. Then a checkpoint is made durable, and only then, under the lock,
// the head is cut and queue prefixes that entered before B expire (ExpireBelow, a pure function of the begin address
// that recovery applies the same way). A second checkpoint after the cut means a damaged newest checkpoint still
// leaves one that covers the log: both are deltas (the moved fronts cost a number per queue) when the chain kept as
// the fallback still covers B, and the second is whole when it does not, so that the chain before it (the first
// checkpoint's) becomes the fallback. Checkpoint files below B are not deleted here: a chain's files are data for its
// newest, which covers B; the next whole checkpoint deletes the chains before its fallback.
public sealed partial class BrokerEngine
{
    /// <summary>Raised after each retention cut with how long it held the engine lock, in seconds.</summary>
    public event Action<double>? RetentionCutLockHeld;

    private readonly SemaphoreSlim _retentionLock = new(1, 1);
    private const int MaxRelocationRounds = 16;

    /// <summary>The current log tail: a record boundary (used by tests and the admin API).</summary>
    public long LogTailAddress { get { lock (_gate) return _log.TailAddress; } }
    public long LogBeginAddress => _log.BeginAddress;
    /// <summary>Group commits (fsyncs) so far.</summary>
    public long LogCommits => _log.Commits;
    /// <summary>Appends that waited inside the engine lock for a page write (<see cref="RecordLog.AppendsThatWaited"/>): zero
    /// unless writers outran the log's backpressure.</summary>
    public long LogAppendsThatWaited => _log.AppendsThatWaited;
    /// <summary>Sends that found the log's room reserved or full and waited for it outside the engine lock
    /// (<see cref="RecordLog.ReservationsThatWaited"/>): the log's backpressure at work.</summary>
    public long LogReservationsThatWaited => _log.ReservationsThatWaited;

    private long ComputeRetentionTarget()
    {
        lock (_gate) return _retention.ComputeTarget(_log.BeginAddress, _log.TailAddress, NowMs, LastCheckpointAddress);
    }

    private async Task RunRetentionAsync(CancellationToken ct)
    {
        long target = ComputeRetentionTarget();
        if (target > _log.BeginAddress) await TruncateBeforeAsync(target, ct).ConfigureAwait(false);
    }

    /// <summary>
    /// Cuts the log before <paramref name="boundary"/> (a record boundary, e.g. a former <see cref="LogTailAddress"/>),
    /// keeping every live record (see the contract above). Returns the number of bodies moved to the tail, or -1 when
    /// the cut was postponed (the state kept changing under it; the next retention pass tries again).
    /// </summary>
    public async Task<int> TruncateBeforeAsync(long boundary, CancellationToken ct = default)
    {
        await _retentionLock.WaitAsync(ct).ConfigureAwait(false);
        try
        {
            lock (_gate)
            {
                if (boundary <= _log.BeginAddress) return 0;
                if (boundary > _log.TailAddress) throw new ArgumentOutOfRangeException(nameof(boundary), "beyond the log tail");
            }
            // Everything below the boundary must be durable before it can be read back for relocation.
            await _log.CommitNowAsync(ct).ConfigureAwait(false);
            await NoteCarryingLoadedAsync(boundary, ct).ConfigureAwait(false);
            int moved = 0;
            for (int pass = 0; ; pass++)
            {
                for (int round = 0; ; round++)
                {
                    Dictionary<long, List<LiveRef>> live;
                    lock (_gate) live = _retention.CollectLiveBelow(boundary);
                    if (live.Count == 0) break;
                    if (round == MaxRelocationRounds)
                    {
                        _logger.LogWarning("Retention: {Count} live records below {Boundary} still moving after {Rounds} rounds; cut postponed", live.Count, boundary, round);
                        return -1;
                    }
                    foreach (var (address, refs) in live.OrderBy(p => p.Key))
                    {
                        var bytes = await _log.ReadAsync(address, ct).ConfigureAwait(false);
                        if (bytes is null)
                        {
                            string reason = $"retention: live record at {address} (below the cut at {boundary}) could not be read; the cut was abandoned";
                            _logger.LogError("{Reason}", reason);
                            Health.ReportDegraded(reason);
                            return -1;
                        }
                        // A cut may move many bodies at once: each waits for room outside the lock, not for a page write in it.
                        using (await _log.ReserveRoomAsync(bytes.Length + RoomForHeader, ct).ConfigureAwait(false))
                        // Never inside a checkpoint's capture: it copies the delayed messages one table (by body address) at a
                        // time, so a move from a table not yet copied into one already copied was in neither copy, and replay
                        // of the move found nothing to move (lost after a kill -9); the other way round the copy held it twice
                        // and replay left an entry nothing points at, which postponed every later cut (found by review,
                        // 2026-12-06). The checkpoint loop runs cuts after its checkpoints, so only a capture started apart
                        // from it (a test's, or a future admin action's) waits here.
                        using (await HoldOffCapturesAsync(ct, relocation: true).ConfigureAwait(false))
                        {
                            lock (_gate)
                            {
                                if (Relocate(address, refs, bytes)) moved++;
                            }
                        }
                    }
                }

                // The recalls whose last record lies below the boundary and that must outlive it, carried to the tail
                // before the checkpoint, as the bodies are.
                await CarryRecallsBelowAsync(boundary, ct).ConfigureAwait(false);
                // The decided ids still remembered whose records lie below the boundary, likewise, and every topic's
                // queue positions and pull group's offsets.
                await CarryDecisionsBelowAsync(boundary, ct).ConfigureAwait(false);
                await CarryPositionsAsync(boundary, ct).ConfigureAwait(false);

                // From the checkpoint to the one after the cut, no other checkpoint may run: a fuzzy capture must never see
                // a queue's front move under it.
                await _checkpointLock.WaitAsync(ct).ConfigureAwait(false);
                try
                {
                await CheckpointLockedAsync(ct).ConfigureAwait(false);
                long cutRecord = 0;
                long held = 0, searched = 0, expired = 0;
                TimeSpan gcPaused = default;
                int strays;
                lock (_gate)
                {
                    long holdStart = System.Diagnostics.Stopwatch.GetTimestamp();
                    var gcBefore = GC.GetTotalPauseDuration();
                    // Checked again, because a cut is the one operation that cannot be undone: a reference below the boundary
                    // can appear after the last round. An entry that entered its queue below the boundary is not live (the
                    // cut expires it) but may be in flight; dead-lettered meanwhile (by the sweeper, during the checkpoint
                    // above), its dead-letter topic's new entry points at its body, and that entry is live. Until late on
                    // 2026-12-06 this abandoned the cut with an Error calling it a bug (found by review): now the bodies
                    // are moved by more rounds, and the cut goes on.
                    strays = _retention.CollectLiveBelow(boundary).Count;
                    // A recall to carry cannot appear after the carrying above (a new recall's record is at the tail, and
                    // a copy is dropped only while its recall is remembered, so carried already); checked all the same.
                    if (_delayed.TakeRecallsToCarry(boundary, 0, into: null)) strays++;
                    if (strays == 0)
                    {
                        searched = System.Diagnostics.Stopwatch.GetTimestamp();
                        ExpireBelow(boundary);
                        _retention.ForgetBoundariesUpTo(boundary);
                        _carrying.ForgetBelow(boundary);
                        expired = System.Diagnostics.Stopwatch.GetTimestamp();
                        _log.TruncateUntil(boundary);
                        Metrics.RetentionCuts++;
                        Metrics.RecordsRelocated += moved;
                        new LogCutRecord(boundary, NowMs).Write(_writer);
                        cutRecord = AppendAndApply();
                        long holdEnd = System.Diagnostics.Stopwatch.GetTimestamp();
                        gcPaused = GC.GetTotalPauseDuration() - gcBefore;
                        (held, expired, searched) = (holdEnd - holdStart, expired - searched, searched - holdStart);
                    }
                }
                if (strays > 0)
                {
                    StrayPassesForTests++;
                    if (pass < MaxStrayPasses) continue; // the lock is released below; the rounds move what appeared
                    _logger.LogWarning("Retention: {Count} live records appeared below {Boundary} after relocation in each of {Passes} passes (dead letters or re-drives of old entries meanwhile); cut postponed",
                        strays, boundary, pass + 1);
                    return -1;
                }
                Metrics.LastRetentionCutPauseMicros = Micros(held);
                Metrics.LastRetentionCutSearchMicros = Micros(searched);
                Metrics.LastRetentionCutExpiryMicros = Micros(expired);
                Metrics.LastRetentionCutGcPauseMicros = (long)gcPaused.TotalMicroseconds;
                Metrics.RetentionCutLockHolds.Record(Metrics.LastRetentionCutPauseMicros);
                RetentionCutLockHeld?.Invoke(Metrics.LastRetentionCutPauseMicros / 1e6);
                await _log.WaitCommittedAsync(cutRecord, ct).ConfigureAwait(false);
                // A second checkpoint at or after the cut: should a file of the newest chain ever be unreadable, another
                // chain still covers the log (see the contract above).
                await CheckpointLockedAsync(ct, whole: !_checkpointer.FallbackCovers(boundary)).ConfigureAwait(false);
                }
                finally
                {
                    _checkpointLock.Release();
                }
                _logger.LogInformation("Retention: log cut before {Boundary}; {Moved} live records moved to the tail; the cut held the engine lock {HeldMicros} µs (search {SearchMicros} µs, expiry {ExpiryMicros} µs, GC pauses within it {GcPauseMicros} µs)",
                    boundary, moved, Metrics.LastRetentionCutPauseMicros, Metrics.LastRetentionCutSearchMicros, Metrics.LastRetentionCutExpiryMicros, Metrics.LastRetentionCutGcPauseMicros);
                return moved;
            }
        }
        finally
        {
            _retentionLock.Release();
        }
    }

    private static long Micros(long ticks) => ticks * 1_000_000 / System.Diagnostics.Stopwatch.Frequency;

    /// <summary>Passes of relocation rounds a cut runs again when references below its boundary appeared after its rounds
    /// (see <see cref="TruncateBeforeAsync"/>), before it is postponed.</summary>
    private const int MaxStrayPasses = 2;

    /// <summary>Tests: the cuts' final checks that found references below the boundary.</summary>
    internal int StrayPassesForTests;

    /// <summary>
    /// Appends a BodyRelocated record for the references that still point at <paramref name="address"/> now (the state
    /// may have moved on since they were collected; the next round sees any new one). Caller holds the lock.
    /// </summary>
    private bool Relocate(long address, List<LiveRef> refs, byte[] current)
    {
        var targets = _retention.StillPointingAt(address, refs);
        if (targets.IsEmpty) return false;
        BodyRelocatedRecord.Write(_writer, address, targets.HalfTransactionId, targets.Delayed, targets.QueueRefs, OriginalOf(current),
            MovesWithoutStateForTests ? null : StateMovedFrom(address, targets));
        long moved = AppendAndApply();
        if (targets.Delayed) MessageIndex.OnBodyMoved(address, moved); // MessageIndex hook: its release names the new address
        return true;
    }

    /// <summary>Tests: moves are written as builds before the evening session of 2026-12-07 wrote them (no
    /// <see cref="RelocatedState"/>).</summary>
    internal bool MovesWithoutStateForTests;

    /// <summary>
    /// What the references <paramref name="targets"/> names hold now, carried by the move's record so that a replay of
    /// the log alone after a cut re-creates them (see <see cref="RelocatedState"/> and RecordApplier.ApplyBodyRelocated).
    /// Caller holds the lock.
    /// </summary>
    private RelocatedState StateMovedFrom(long address, RelocationTargets targets)
    {
        var state = new RelocatedState { VisibleAt = new long[targets.QueueRefs.Count] };
        if (targets.HalfTransactionId is { } tx && _txs.TryGet(tx, out var half))
        {
            state.CheckCount = half.CheckCount;
            state.LastCheckAtMs = half.LastCheckAtMs;
            state.NextCheckAtMs = half.NextCheckAtMs;
            state.Parked = half.Parked;
            state.ParkedAtMs = half.ParkedAtMs;
            // A half is never also a delayed message (its commit makes one): SentAt carries its check token, which a
            // replay of the log alone re-creates it with. Builds before read SentAt for delayed messages only.
            state.SentAt = half.CheckToken;
        }
        if (targets.Delayed && _delayed.TryGet(address, out var delayed))
        {
            state.SentAt = delayed.SentAt;
            state.SendOrder = delayed.SendOrder;
        }
        for (int i = 0; i < targets.QueueRefs.Count; i++)
        {
            var (topic, q, offset) = targets.QueueRefs[i];
            state.VisibleAt[i] = _topics.TryGetValue(topic, out var t) && t.Queues[q].TryGet(offset, out var entry) ? entry.VisibleAt : -1;
        }
        return state;
    }

    /// <summary>
    /// The body record (MessageStored or HalfStored) inside <paramref name="record"/>: the record itself, or, when a
    /// cut moved it before, what its BodyRelocated wrapper carries. A move wraps this, never the wrapper: otherwise the
    /// nesting would grow by one level per cut, past the depth readers unwrap (a pending half or a delayed message is
    /// moved by every cut of its life). Wrappers nested by versions that did wrap the wrapper are unwrapped whole, so
    /// their next move flattens them too. Each carried record is a strict part of the one around it, so the loop ends;
    /// anything that does not open as a wrapper is carried as it is, and readers report it.
    /// </summary>
    internal static ReadOnlySpan<byte> OriginalOf(ReadOnlySpan<byte> record)
    {
        while (RecordHeader.TryOpen(record, out var kind, out var r, out _) && kind == RecordKind.BodyRelocated)
        {
            try
            {
                record = BodyRelocatedRecord.Read(ref r).Original;
            }
            catch (Exception ex) when (ex is InvalidDataException or OverflowException or IndexOutOfRangeException or ArgumentOutOfRangeException)
            {
                break;
            }
        }
        return record;
    }

    /// <summary>
    /// What a cut at <paramref name="begin"/> does to the state: each queue's prefix that entered before it expires.
    /// The same function runs after the live cut and at the end of recovery, so both reach the same state. Caller
    /// holds the lock.
    /// </summary>
    private void ExpireBelow(long begin)
    {
        Metrics.MessagesExpired += _retention.ExpireBelow(begin, recovering: !IsReady, lost: Health.ReportDegraded);
        // The recalled messages whose bodies are all cut: nothing is left to refuse a read or send-back of.
        _delayed.ForgetRecalledBodiesBelow(begin);
        // The releases of committed delayed transactional messages cut: their queue entries expired above.
        _delayed.ForgetReleasedCommitsBelow(begin);
        // The recalls' records cut that need no carrying (a cut carried those that do, CarryRecallsBelowAsync).
        _delayed.ForgetRecallRecordsBelow(begin);
    }

    /// <summary>Recalls a retention cut carried forward (for tests: since start).</summary>
    internal int RecallsCarriedForTests;

    /// <summary>Recalls carried per hold of the engine lock.</summary>
    private const int RecallsCarriedPerHold = 256;

    /// <summary>
    /// Before a cut at <paramref name="boundary"/>: re-appends the recall of each recalled message whose last
    /// <see cref="DelayRecalledRecord"/> lies below it and that must outlive it, so a replay of the log alone still knows
    /// it: one still remembered (its delivery time ahead: a copy stored later is dropped), or one with a copy dropped live
    /// still in the log at or above the boundary (a replay would take it for a waiting message, and deliver it). The new
    /// record carries the delivery time, and names that copy, which replay then takes out as a recall's record does
    /// (other such copies, seldom, are taken out at start: <see cref="RecallCopiesLeftByCrashAsync"/>), or no address
    /// (-1). A build before this one reads the record as a recall of that copy, or of nothing. Bounded: a recall past its
    /// time whose bodies are all cut is carried no more. Until the late-morning session of 2026-12-07 such a replay delivered a
    /// copy of a recalled message stored after the recall (left by the review of the morning session).
    /// </summary>
    private async Task CarryRecallsBelowAsync(long boundary, CancellationToken ct)
    {
        var batch = new List<DelayIndex.RecallToCarry>();
        while (true)
        {
            await _log.WaitForRoomAsync(ct).ConfigureAwait(false);
            lock (_gate)
            {
                batch.Clear();
                _delayed.TakeRecallsToCarry(boundary, RecallsCarriedPerHold, batch);
                if (batch.Count == 0) return;
                long now = NowMs;
                foreach (var (key, sentAt) in batch)
                {
                    new DelayRecalledRecord(sentAt, key.Topic, key.MessageId, now, key.DeliverAtMs).Write(_writer);
                    AppendAndApply();
                }
                RecallsCarriedForTests += batch.Count;
            }
        }
    }

    /// <summary>Decided ids a retention cut carried forward (for tests: since start).</summary>
    internal int DecisionsCarriedForTests;

    /// <summary>Entries of the decided ids' expiry order looked at per hold of the engine lock while a cut looks for
    /// the decisions to carry (about 0.1 ms of lookups; 64 KB of copy).</summary>
    private const int DecisionsScannedPerHold = 2048;

    /// <summary>
    /// Before a cut at <paramref name="boundary"/>: re-appends every decision the live broker still remembers
    /// (<see cref="CoreOptions.DecisionRetention"/>, <see cref="CoreOptions.MaxRememberedDecisions"/>) whose carrying
    /// record lies below it (its own record, or the record of an earlier cut that carried it last: DecidedIndex keeps
    /// which), as the index holds it (the id's digest, the record's address and time, its namespace), in
    /// <see cref="LogCutRecord"/>s of at most <see cref="LogCutRecord.MaxDecisions"/> each, one per hold of the engine
    /// lock, which also looks at no more than <see cref="DecisionsScannedPerHold"/> of them; a replay of the log alone
    /// after the cut remembers them from these (RecordApplier.ApplyCarried), and applying one notes it as the decisions'
    /// carrier. A new decision's record is at the tail, so none can appear below the boundary after this. Until the
    /// afternoon session of 2026-12-07 a replay of the log alone forgot a decision whose record a cut took when the cut
    /// took its half's record too (moved by an earlier cut); and, until a review later in that session, every cut
    /// carried every remembered decision below its boundary again, even those an earlier cut's record above the
    /// boundary still carried (up to a million remembered decisions, about 40 MB, per cut: more than a small retention
    /// size frees).
    /// </summary>
    private async Task CarryDecisionsBelowAsync(long boundary, CancellationToken ct)
    {
        var order = new (UInt128 Key, long AtMs)[DecisionsScannedPerHold];
        var batch = new List<CarriedDecision>(LogCutRecord.MaxDecisions);
        long next = 0, until;
        lock (_gate) until = _txs.Decided.Added; // decisions added after this have their records at the tail
        while (true)
        {
            await _log.WaitForRoomAsync(ct).ConfigureAwait(false);
            lock (_gate)
            {
                int n = _txs.Decided.CopyOrder(next, until, order, out long copiedUntil);
                if (n == 0) return;
                next = copiedUntil - n; // the number of order[0]
                batch.Clear();
                foreach (var (key, atMs) in order.AsSpan(0, n))
                {
                    next++;
                    if (_txs.Decided.TryGetToCarry(key, atMs, boundary, out var resolution, out long address, out string? ns))
                    {
                        batch.Add(new CarriedDecision(key, resolution, address, atMs, ns));
                        if (batch.Count == LogCutRecord.MaxDecisions) break;
                    }
                }
                if (batch.Count == 0) continue;
                AppendCarrying(new LogCutRecord(boundary, NowMs, batch)); // notes the first copy as the carrier of each
                DecisionsCarriedForTests += batch.Count;
            }
        }
    }

    /// <summary>
    /// Appends a record that carries state past a cut, twice: the record, then its copy
    /// (<see cref="RecordHeader.CarriedCopyFlag"/>), in this one hold of the engine lock, so nothing comes between them
    /// and a replay that finds one damaged takes the other. The items stay carried by the first (RecordApplier). Both are
    /// durable before the cut acts: its first checkpoint commits the log past them. The bytes a cut carries double (a
    /// remembered decision about 30 bytes twice; a topic of 8 queues about 40 bytes twice). Until the evening session of
    /// 2026-12-07 one record carried them: a flipped byte in it lost them for a replay of the log alone (a topic's next
    /// offset taken again, a remembered decision answered "unknown"). Caller holds the lock.
    /// </summary>
    private void AppendCarrying(LogCutRecord record)
    {
        record.Write(_writer, copy: false);
        AppendAndApply();
        if (CarryingWithoutCopyForTests) return;
        record.Write(_writer, copy: true);
        AppendAndApply();
    }

    /// <summary>Carrying records the first cut after a start from a checkpoint read back to note what they carry (for tests: since start).</summary>
    internal int CarryingRecordsNotedForTests;

    /// <summary>
    /// The first cut after a start from a checkpoint: the records the checkpoint named as carrying state past earlier
    /// cuts (<see cref="Retention.CarryingRecords"/>) that this cut keeps (at or above <paramref name="boundary"/>) are
    /// read back, and the items each carries, where the state still holds them as carried, are noted as carried by it,
    /// as applying it did before the restart; the carrying below then writes only what this cut newly needs. A record
    /// that cannot be read or is not a carrying record is passed over: its items are carried again (as before). Those
    /// below the boundary need no reading: what they carried is carried again anyway. Until the evening session of
    /// 2026-12-07 the carrier addresses were lost with a restart from a checkpoint, and that cut carried every remembered
    /// decision, topic and pull offset again (about 60 bytes per decision, two copies: some 60 MB at a million).
    /// </summary>
    private async Task NoteCarryingLoadedAsync(long boundary, CancellationToken ct)
    {
        List<long> toNote;
        lock (_gate) toNote = _carrying.TakeToNote();
        foreach (long address in toNote)
        {
            if (address < boundary || address < _log.BeginAddress) continue;
            var bytes = await _log.ReadAsync(address, ct).ConfigureAwait(false);
            if (bytes is null || !RecordHeader.TryOpen(bytes, out var kind, out var r, out _) || kind != RecordKind.LogCut
                || (RecordHeader.FlagsOf(bytes) & RecordHeader.CarriedCopyFlag) != 0)
            {
                _logger.LogWarning("Retention: the record at {Address} a checkpoint named as carrying state past a cut is not one; what it carried is carried again", address);
                continue;
            }
            LogCutRecord rec;
            try
            {
                rec = LogCutRecord.Read(ref r);
            }
            catch (InvalidDataException ex)
            {
                _logger.LogWarning("Retention: the carrying record at {Address} a checkpoint named could not be read ({Error}); what it carried is carried again", address, ex.Message);
                continue;
            }
            lock (_gate) _applier.NoteCarrying(address, rec);
            CarryingRecordsNotedForTests++;
        }
    }

    /// <summary>Tests: carrying records are written once, as builds before the evening session of 2026-12-07 wrote them.</summary>
    internal bool CarryingWithoutCopyForTests;

    /// <summary>Topics and pull offsets retention cuts carried forward (for tests: since start).</summary>
    internal int TopicsCarriedForTests, PullOffsetsCarriedForTests;

    /// <summary>About this many bytes of names and numbers in one carrying record, far below <see cref="RecordLimits.MaxMetadataBytes"/>
    /// (one topic of 1,024 queues and a name of 127 characters takes about 13 KB).</summary>
    private const int CarriedBytesPerRecord = 32 * 1024;

    /// <summary>
    /// Before a cut at <paramref name="boundary"/>: re-appends every topic's queue count and next offsets, and every pull
    /// group's committed offsets, as they are when each record is written (<see cref="LogCutRecord"/>; one per hold of the
    /// engine lock, about <see cref="CarriedBytesPerRecord"/> each), so a replay of the log alone after the cut keeps a
    /// topic every record of which the cut took, at its positions, and an offset whose record it took
    /// (RecordApplier.ApplyCarried). Bounded by the topics, their queues and the pull offsets; since a review later in
    /// the afternoon session of 2026-12-07 only a topic whose last carrying record (<see cref="TopicState.CarriedAt"/>)
    /// lies below the boundary, and an offset whose record (its commit's, or the carrying one) does: before, every cut
    /// carried all of them again (10,000 topics of 8 queues and as many pull offsets: about a megabyte per cut). Until the afternoon session
    /// of 2026-12-07 such a replay lost them: the topic's next message took offset 0 again (a pull consumer going on
    /// from the offset it had skipped it), its unused queues were gone, and a pull group's committed offset was forgotten.
    /// </summary>
    private async Task CarryPositionsAsync(long boundary, CancellationToken ct)
    {
        List<string> topics;
        List<(string Group, string Topic, int Queue)> offsets;
        lock (_gate)
        {
            topics = _topics.Values.Where(t => t.CarriedAt < boundary).Select(t => t.Name).ToList();
            offsets = _consumerOffsets.ToCarryBelow(boundary);
        }
        int nextTopic = 0, nextOffset = 0;
        var carriedTopics = new List<CarriedTopic>();
        var carriedOffsets = new List<ConsumerOffsetCommittedRecord>();
        while (nextTopic < topics.Count || nextOffset < offsets.Count)
        {
            await _log.WaitForRoomAsync(ct).ConfigureAwait(false);
            lock (_gate)
            {
                // Read when written, under the same hold: a record after this one holds a later value, never an earlier.
                carriedTopics.Clear();
                carriedOffsets.Clear();
                int bytes = 0;
                for (; nextTopic < topics.Count && bytes < CarriedBytesPerRecord; nextTopic++)
                {
                    // Deleted meanwhile, or made again and carried by a record at or above the boundary.
                    if (!_topics.TryGetValue(topics[nextTopic], out var topic) || topic.CarriedAt >= boundary) continue;
                    var queues = topic.Queues;
                    var next = new long[queues.Length];
                    for (int q = 0; q < next.Length; q++) next[q] = queues[q].NextOffset;
                    carriedTopics.Add(new CarriedTopic(topic.Name, next));
                    bytes += 3 * topic.Name.Length + 4 + 10 * next.Length;
                }
                for (; nextOffset < offsets.Count && bytes < CarriedBytesPerRecord; nextOffset++)
                {
                    var (group, topic, queue) = offsets[nextOffset];
                    if (!_consumerOffsets.TryGet(group, topic, queue, out long offset)) continue;
                    carriedOffsets.Add(new ConsumerOffsetCommittedRecord(group, topic, queue, offset));
                    bytes += 3 * (group.Length + topic.Length) + 24;
                }
                if (carriedTopics.Count == 0 && carriedOffsets.Count == 0) continue;
                AppendCarrying(new LogCutRecord(boundary, NowMs, [], carriedTopics, carriedOffsets));
                TopicsCarriedForTests += carriedTopics.Count;
                PullOffsetsCarriedForTests += carriedOffsets.Count;
            }
        }
    }

    /// <summary>
    /// Forgets a consumer group: its progress (a lease group's, and a pull group's committed offsets), leases and waiting
    /// redeliveries on every topic. Messages stay for other groups; a group of the same name that receives again starts
    /// from the retained messages. Completes once durable.
    /// </summary>
    public async ValueTask<BrokerError> DeleteGroupAsync(string group, CancellationToken ct = default)
    {
        if (InternalGroupRefusal(group, "deleted") is { } internalGroup) return internalGroup;
        await _log.WaitForRoomAsync(ct).ConfigureAwait(false);
        long address;
        bool known;
        lock (_gate)
        {
            // Not known may be the work of a delete whose record is not durable yet: that answer waits for it too.
            // A group only configured so far (its order mode) is known too: the delete clears its settings.
            known = _groups.OfGroup(group).Count > 0 || _consumerOffsets.HasGroup(group) || _groups.OrderOf(group) != GroupOrder.NotConfigured;
            if (known)
            {
                new GroupDeletedRecord(group, NowMs).Write(_writer);
                address = AppendAndApply();
            }
            else address = AppendedSoFar;
        }
        await _log.WaitDurableAsync(address, ct).ConfigureAwait(false);
        if (!known) return new(BrokerStatus.IllegalConsumerGroup, $"consumer group '{group}' is not known");
        _logger.LogInformation("Consumer group {Group} deleted", group);
        return BrokerError.None;
    }

}
