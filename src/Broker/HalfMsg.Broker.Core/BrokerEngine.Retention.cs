using HalfMsg.Broker.Core.Model;
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
// each reference it moves and is applied through the same ApplyRecord as everything else), in rounds, under the
// engine lock per batch, until one round finds no live reference below B. New references are only ever made from
// addresses already in the state (a commit takes the half's address, a release the delayed entry's), so once the
// state holds none below B it never gets one again. Then a checkpoint is made durable, and only then, under the lock,
// the head is cut and queue prefixes that entered before B expire (ExpireBelow, a pure function of the begin address
// that recovery applies the same way). A second checkpoint after the cut means a damaged newest checkpoint still
// leaves one that covers the log.
public sealed partial class BrokerEngine
{
    // Known record boundaries with the time they were the tail: truncation may only cut at a record boundary.
    private readonly List<(long Address, long AtMs)> _boundaries = new();
    private readonly SemaphoreSlim _retentionLock = new(1, 1);
    private const int MaxRelocationRounds = 16;

    /// <summary>The current log tail: a record boundary (used by tests and the admin API).</summary>
    public long LogTailAddress { get { lock (_gate) return _log.TailAddress; } }
    public long LogBeginAddress => _log.BeginAddress;
    /// <summary>Group commits (fsyncs) so far.</summary>
    public long LogCommits => _log.Commits;

    private long ComputeRetentionTarget()
    {
        lock (_gate)
        {
            long tail = _log.TailAddress;
            long now = NowMs;
            long target = _log.BeginAddress;
            foreach (var (address, at) in _boundaries)
            {
                bool bySize = _options.RetentionBytes > 0 && address <= tail - _options.RetentionBytes;
                bool byAge = _options.RetentionTime > TimeSpan.Zero && at <= now - (long)_options.RetentionTime.TotalMilliseconds;
                if ((bySize || byAge) && address > target && address <= LastCheckpointAddress) target = address;
            }
            return target;
        }
    }

    private async Task RunRetentionAsync(CancellationToken ct)
    {
        long target = ComputeRetentionTarget();
        if (target > _log.BeginAddress) await TruncateBeforeAsync(target, ct).ConfigureAwait(false);
    }

    /// <summary>One live reference to a body below the cut: a pending half, a delayed entry, or a queue position.</summary>
    private readonly record struct LiveRef(string? HalfTransactionId, bool Delayed, string? Topic, int QueueId, long Offset);

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
            int moved = 0;
            for (int round = 0; ; round++)
            {
                Dictionary<long, List<LiveRef>> live;
                lock (_gate) live = CollectLiveBelow(boundary);
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
                    lock (_gate)
                    {
                        if (Relocate(address, refs, bytes)) moved++;
                    }
                }
            }

            // From the checkpoint to the one after the cut, no other checkpoint may run: a fuzzy capture must never see
            // a queue's front move under it.
            await _checkpointLock.WaitAsync(ct).ConfigureAwait(false);
            try
            {
            await CheckpointLockedAsync(ct).ConfigureAwait(false);
            long cutRecord;
            lock (_gate)
            {
                // The state has not held a reference below the boundary since the last round (see above); check it
                // anyway, because a cut is the one operation that cannot be undone.
                var stray = CollectLiveBelow(boundary);
                if (stray.Count > 0)
                {
                    _logger.LogError("Retention: {Count} live records appeared below {Boundary} after relocation (a bug); cut abandoned", stray.Count, boundary);
                    return -1;
                }
                _log.TruncateUntil(boundary);
                ExpireBelow(boundary);
                _boundaries.RemoveAll(b => b.Address <= boundary);
                Metrics.RetentionCuts++;
                Metrics.RecordsRelocated += moved;
                new LogCutRecord(boundary, NowMs).Write(_writer);
                cutRecord = AppendAndApply();
            }
            await _log.WaitCommittedAsync(cutRecord, ct).ConfigureAwait(false);
            // A second checkpoint at or after the cut: should the newest ever be unreadable, an older one still covers the log.
            await CheckpointLockedAsync(ct).ConfigureAwait(false);
            _checkpoints.DeleteOlderThan(boundary);
            }
            finally
            {
                _checkpointLock.Release();
            }
            _logger.LogInformation("Retention: log cut before {Boundary}; {Moved} live records moved to the tail", boundary, moved);
            return moved;
        }
        finally
        {
            _retentionLock.Release();
        }
    }

    /// <summary>Every live reference to a body below <paramref name="boundary"/>, grouped by body address. Caller holds the lock.</summary>
    private Dictionary<long, List<LiveRef>> CollectLiveBelow(long boundary)
    {
        var live = new Dictionary<long, List<LiveRef>>();
        void Add(long address, LiveRef r)
        {
            if (!live.TryGetValue(address, out var list)) live[address] = list = new List<LiveRef>(1);
            list.Add(r);
        }
        foreach (var h in _txs.All)
            if (h.Address < boundary) Add(h.Address, new LiveRef(h.TransactionId, false, null, -1, -1));
        foreach (var d in _delayed.All)
            if (d.BodyAddress < boundary) Add(d.BodyAddress, new LiveRef(null, true, null, -1, -1));
        foreach (var topic in _topics.Values)
        {
            for (int q = 0; q < topic.Queues.Length; q++)
            {
                var entries = topic.Queues[q].Entries;
                // Entries enter a queue in log order, so those that entered at or after the boundary are a suffix.
                for (int i = FirstVisibleAtOrAfter(entries, boundary); i < entries.Count; i++)
                {
                    var e = entries[i];
                    if (!e.IsHole && e.BodyAddress < boundary)
                        Add(e.BodyAddress, new LiveRef(null, false, topic.Name, q, topic.Queues[q].BaseOffset + i));
                }
            }
        }
        return live;
    }

    private static int FirstVisibleAtOrAfter(List<QueueEntry> entries, long boundary)
    {
        int lo = 0, hi = entries.Count;
        while (lo < hi)
        {
            int mid = (lo + hi) >>> 1;
            // Holes carry no position in the log; treat them as old so the search stays monotonic.
            if (entries[mid].IsHole || entries[mid].VisibleAt < boundary) lo = mid + 1; else hi = mid;
        }
        // A hole inside the suffix would have sent the search too far right: step back over earlier live entries.
        while (lo > 0 && (entries[lo - 1].IsHole || entries[lo - 1].VisibleAt >= boundary)) lo--;
        return lo;
    }

    /// <summary>
    /// Appends a BodyRelocated record for the references that still point at <paramref name="address"/> now (the state
    /// may have moved on since they were collected; the next round sees any new one). Caller holds the lock.
    /// </summary>
    private bool Relocate(long address, List<LiveRef> refs, byte[] original)
    {
        string? halfTx = null;
        bool delayed = false;
        var queueRefs = new List<(string, int, long)>();
        foreach (var r in refs)
        {
            if (r.HalfTransactionId is { } tx && _txs.TryGet(tx, out var h) && h.Address == address) halfTx = tx;
            else if (r.Delayed && _delayed.Contains(address)) delayed = true;
            else if (r.Topic is not null && _topics.TryGetValue(r.Topic, out var t) && t.Queues[r.QueueId].TryGet(r.Offset, out var e) && e.BodyAddress == address)
                queueRefs.Add((r.Topic, r.QueueId, r.Offset));
        }
        if (halfTx is null && !delayed && queueRefs.Count == 0) return false;
        BodyRelocatedRecord.Write(_writer, address, halfTx, delayed, queueRefs, original);
        AppendAndApply();
        return true;
    }

    private void ApplyBodyRelocated(long address, int size, BodyRelocatedRecord rec)
    {
        long previous = rec.PreviousAddress;
        if (rec.HalfTransactionId is { } tx && _txs.TryGet(tx, out var half) && half.Address == previous)
        {
            half.Address = address;
            half.Size = size;
        }
        if (rec.Delayed) _delayed.Move(previous, address, size);
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
    }

    /// <summary>
    /// What a cut at <paramref name="begin"/> does to the state: each queue's prefix that entered before it expires.
    /// The same function runs after the live cut and at the end of recovery, so both reach the same state. Caller
    /// holds the lock.
    /// </summary>
    private void ExpireBelow(long begin)
    {
        foreach (var topic in _topics.Values)
        {
            foreach (var queue in topic.Queues)
            {
                int n = 0;
                while (n < queue.Entries.Count && (queue.Entries[n].IsHole || queue.Entries[n].VisibleAt < begin))
                {
                    if (!queue.Entries[n].IsHole) Metrics.MessagesExpired++;
                    n++;
                }
                if (n > 0)
                {
                    queue.Entries.RemoveRange(0, n);
                    queue.BaseOffset += n;
                }
                if (IsReady) continue;
                // Recovery only: after a degraded start an entry may still point below the begin; its body is gone.
                for (int i = 0; i < queue.Entries.Count; i++)
                {
                    var e = queue.Entries[i];
                    if (e.IsHole || e.BodyAddress >= begin) continue;
                    e.BodyAddress = QueueEntry.Missing;
                    queue.Entries[i] = e;
                    Health.ReportDegraded($"queue entry {topic.Name}/{queue.BaseOffset + i} points at {e.BodyAddress}, before the log start {begin}; it is lost");
                }
            }
        }
    }

    /// <summary>
    /// Forgets a consumer group: its progress, leases and waiting redeliveries on every topic. Messages stay for other
    /// groups; a group of the same name that receives again starts from the retained messages. Completes once durable.
    /// </summary>
    public async ValueTask<BrokerError> DeleteGroupAsync(string group, CancellationToken ct = default)
    {
        await _log.WaitForRoomAsync(ct).ConfigureAwait(false);
        long address;
        lock (_gate)
        {
            if (!_groups.Keys.Any(k => k.Group == group))
                return new(BrokerStatus.IllegalConsumerGroup, $"consumer group '{group}' is not known");
            new GroupDeletedRecord(group, NowMs).Write(_writer);
            address = AppendAndApply();
        }
        await _log.WaitDurableAsync(address, ct).ConfigureAwait(false);
        _logger.LogInformation("Consumer group {Group} deleted", group);
        return BrokerError.None;
    }

    private void ApplyGroupDeleted(GroupDeletedRecord rec)
    {
        foreach (var key in _groups.Keys.Where(k => k.Group == rec.Group).ToList())
        {
            var state = _groups[key];
            _groups.Remove(key);
            state.Topic.Groups.Remove(state);
            // Leases still in the due-time heap find no in-flight entry and are skipped.
            foreach (var gq in state.Queues) gq.InFlight.Clear();
            state.Redeliver.Clear();
        }
    }
}
