namespace HalfMsg.Broker.Core.Retention;

/// <summary>One live reference to a body below a cut: a pending half, a delayed entry, or a queue position.</summary>
internal readonly record struct LiveRef(string? HalfTransactionId, bool Delayed, string? Topic, int QueueId, long Offset);

/// <summary>The references that still point at one body when it is moved (what a BodyRelocated record names).</summary>
internal readonly record struct RelocationTargets(string? HalfTransactionId, bool Delayed, List<(string Topic, int Queue, long Offset)> QueueRefs)
{
    public bool IsEmpty => HalfTransactionId is null && !Delayed && QueueRefs.Count == 0;
}

/// <summary>
/// Retention's view of the state: where the log may be cut (by size and age, only at a record boundary a checkpoint
/// covers), which bodies below a cut are still live, and what a cut expires. Pure functions over the state owners;
/// the engine runs the cut itself (reads, relocation records, checkpoints, the truncation) under its locks. The
/// contract and the argument for why no live record is lost are in <c>BrokerEngine.Retention.cs</c>.
/// </summary>
internal sealed class RetentionPlanner(StateOwners state, CoreOptions options)
{
    // Known record boundaries with the time they were the tail: truncation may only cut at a record boundary. They come
    // from checkpoints (the tail each covered), from appends (a record's start every CheckpointSchedule.EveryBytes) and
    // from recovery (the loaded checkpoint's address); a cut uses only those the newest checkpoint covers.
    private readonly List<(long Address, long AtMs)> _boundaries = new();

    /// <summary>The log may be cut at <paramref name="address"/> (a record boundary, the tail at <paramref name="atMs"/>)
    /// once a checkpoint covers it. Not kept when neither limit is set: nothing would ever cut there.</summary>
    public void AddBoundary(long address, long atMs)
    {
        if (options.RetentionBytes > 0 || options.RetentionTime > TimeSpan.Zero) _boundaries.Add((address, atMs));
    }

    public void ForgetBoundariesUpTo(long address) => _boundaries.RemoveAll(b => b.Address <= address);

    /// <summary>
    /// A cut by size goes this fraction of the limit (an eighth) deeper than the limit needs. Every cut writes two whole
    /// checkpoints, and their size grows with the retained log (66 MB each at 2 GiB of 1 KiB messages): cut at every
    /// new checkpoint boundary, as the limit alone allows, a full log wrote more checkpoint bytes than log bytes. An
    /// eighth deeper, a cut comes once per eighth of the limit written, whatever the limit. The log then holds between
    /// seven eighths of the limit and the limit, as Kafka's and RocketMQ's hold up to a segment or a file less.
    /// </summary>
    internal const int SizeCutStep = 8;

    /// <summary>The furthest boundary the size and age limits allow cutting before (at most the newest checkpoint's).</summary>
    public long ComputeTarget(long begin, long tail, long nowMs, long lastCheckpoint)
    {
        // Due by size once a boundary that may be cut lies a whole limit behind the tail; then the cut goes deeper.
        long sizeLimit = options.RetentionBytes;
        bool dueBySize = sizeLimit > 0 && _boundaries.Exists(b => b.Address > begin && b.Address <= lastCheckpoint && b.Address <= tail - sizeLimit);
        long sizeReach = dueBySize ? tail - sizeLimit + sizeLimit / SizeCutStep : long.MinValue;
        long target = begin;
        foreach (var (address, at) in _boundaries)
        {
            bool bySize = address <= sizeReach;
            bool byAge = options.RetentionTime > TimeSpan.Zero && at <= nowMs - (long)options.RetentionTime.TotalMilliseconds;
            if ((bySize || byAge) && address > target && address <= lastCheckpoint) target = address;
        }
        return target;
    }

    /// <summary>Pending halves and delayed messages the last <see cref="CollectLiveBelow"/> looked at (for tests).</summary>
    internal int LastHalvesAndDelayedVisited { get; private set; }

    /// <summary>Every live reference to a body below <paramref name="boundary"/>, grouped by body address.</summary>
    public Dictionary<long, List<LiveRef>> CollectLiveBelow(long boundary)
    {
        var live = new Dictionary<long, List<LiveRef>>();
        void Add(long address, LiveRef r)
        {
            if (!live.TryGetValue(address, out var list)) live[address] = list = new List<LiveRef>(1);
            list.Add(r);
        }
        int visited = 0;
        // Only the halves and delayed messages in the log blocks below the boundary: with a million pending, a walk of
        // all of them cost a million look-ups under the lock, once per relocation round and once in the cut's hold.
        foreach (var h in state.Halves.InBlocksBelow(boundary))
        {
            visited++;
            if (h.Address < boundary) Add(h.Address, new LiveRef(h.TransactionId, false, null, -1, -1));
        }
        foreach (var d in state.Delayed.InBlocksBelow(boundary))
        {
            visited++;
            if (d.BodyAddress < boundary) Add(d.BodyAddress, new LiveRef(null, true, null, -1, -1));
        }
        LastHalvesAndDelayedVisited = visited;
        foreach (var topic in state.Topics.Values)
        {
            for (int q = 0; q < topic.Queues.Length; q++)
            {
                var queue = topic.Queues[q];
                // Entries enter a queue in log order, so those that entered at or after the boundary are a suffix; of
                // it, the queue reads only the blocks that can hold a body below the boundary.
                foreach (int i in queue.EntriesWithBodyBelow(FirstVisibleAtOrAfter(queue.Entries, boundary), boundary))
                    Add(queue.Entries[i].BodyAddress, new LiveRef(null, false, topic.Name, q, queue.BaseOffset + i));
            }
        }
        return live;
    }

    private static int FirstVisibleAtOrAfter(SegmentedList<QueueEntry> entries, long boundary)
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
    /// Of the references collected for <paramref name="address"/>, those that still point at it now (the state may
    /// have moved on since they were collected; the next round sees any new one).
    /// </summary>
    public RelocationTargets StillPointingAt(long address, List<LiveRef> refs)
    {
        string? halfTx = null;
        bool delayed = false;
        var queueRefs = new List<(string, int, long)>();
        foreach (var r in refs)
        {
            if (r.HalfTransactionId is { } tx && state.Halves.TryGet(tx, out var h) && h.Address == address) halfTx = tx;
            else if (r.Delayed && state.Delayed.Contains(address)) delayed = true;
            else if (r.Topic is not null && state.Topics.TryGetValue(r.Topic, out var t) && r.QueueId < t.Queues.Length && t.Queues[r.QueueId].TryGet(r.Offset, out var e) && e.BodyAddress == address)
                queueRefs.Add((r.Topic, r.QueueId, r.Offset));
        }
        return new RelocationTargets(halfTx, delayed, queueRefs);
    }

    /// <summary>
    /// What a cut at <paramref name="begin"/> does to the state: each queue's prefix that entered before it expires.
    /// The same function runs after the live cut and at the end of recovery, so both reach the same state. During
    /// recovery (<paramref name="recovering"/>) an entry that still points below the begin after a degraded start has
    /// lost its body: it becomes a hole and is reported through <paramref name="lost"/>. Returns how many messages
    /// expired.
    /// </summary>
    // Compiled optimized at its first call: it runs once per cut, so tiered compilation would run the first cuts' scans of
    // an eighth of the log's entries (a quarter of a million and more, under the engine lock) in unoptimized code.
    [System.Runtime.CompilerServices.MethodImpl(System.Runtime.CompilerServices.MethodImplOptions.AggressiveOptimization)]
    public long ExpireBelow(long begin, bool recovering, Action<string> lost)
    {
        long expired = 0;
        if (recovering)
        {
            // A pending half or delayed message whose body is below the begin (its move above a cut was damaged, and the
            // state came from a checkpoint before the cut) can never be read again: it is lost. Left in place, every
            // later cut would collect it, fail to read it and be abandoned, and the log would grow until the disk was full.
            foreach (var half in state.Halves.InBlocksBelow(begin).Where(x => x.Address < begin).ToList())
            {
                lost($"pending transaction {half.TransactionId} (topic {half.Topic}, producer group {half.ProducerGroup}) has its body at {half.Address}, before the log start {begin}; it is lost: neither a commit nor a check-back can deliver it");
                state.Halves.Remove(half.TransactionId, out _);
            }
            foreach (var delayed in state.Delayed.InBlocksBelow(begin).Where(x => x.BodyAddress < begin).ToList())
            {
                lost($"delayed message for topic {delayed.Topic} has its body at {delayed.BodyAddress}, before the log start {begin}; it is lost");
                state.Delayed.Remove(delayed.BodyAddress, out _);
            }
        }
        foreach (var topic in state.Topics.Values)
        {
            foreach (var queue in topic.Queues)
            {
                // The prefix that entered before the cut, read segment by segment (a cut expires an eighth of the limit).
                int n = 0;
                for (ReadOnlySpan<QueueEntry> span = queue.Entries.SpanFrom(0); !span.IsEmpty; span = queue.Entries.SpanFrom(n))
                {
                    int k = 0;
                    while (k < span.Length && (span[k].IsHole || span[k].VisibleAt < begin))
                    {
                        if (!span[k].IsHole) expired++;
                        k++;
                    }
                    n += k;
                    if (k < span.Length) break;
                }
                queue.RemoveFront(n);
                if (!recovering) continue;
                for (int i = 0; i < queue.Entries.Count; i++)
                {
                    var e = queue.Entries[i];
                    if (e.IsHole || e.BodyAddress >= begin) continue;
                    lost($"queue entry {topic.Name}/{queue.BaseOffset + i} points at {e.BodyAddress}, before the log start {begin}; it is lost");
                    e.BodyAddress = QueueEntry.Missing;
                    queue.Replace(i, e);
                }
            }
        }
        return expired;
    }
}
