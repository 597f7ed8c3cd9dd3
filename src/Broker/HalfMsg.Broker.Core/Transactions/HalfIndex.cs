using HalfMsg.Broker.Core.Model;
using HalfMsg.Broker.Core.Retention;

namespace HalfMsg.Broker.Core.Transactions;

/// <summary>
/// Owner of the half-message state: pending (and parked) halves by transaction id, their next-check times (an in-order
/// queue and a heap), and the decided ids. Guarded by the engine lock; changed only through the engine's record appliers.
/// </summary>
/// <remarks>
/// The due times use lazy deletion: a half is enqueued again whenever its next check moves, and stale entries (decided,
/// parked, rescheduled) are skipped when they surface, so a check pass costs O(due · log n), never O(pending).
/// An entry names its half by transaction id and a number the half got when it was added, not by reference: a
/// decided half's entry stays queued until its check time (6 s by default), and a reference would keep the whole
/// half (about 150 bytes and its strings) alive that long, long enough for the collector to copy it into the older
/// generations, at every transaction.
/// </remarks>
internal sealed class HalfIndex(DecidedIndex decided)
{
    /// <summary>
    /// The pending halves are split by their id's hash into this many tables, as the decided ids are
    /// (<see cref="ShardedTable{TKey, TValue, TShard}"/>): a table grows by copying everything in it under the engine
    /// lock. Measured apart from the broker, one table's growth took 28 ms at 672,827 halves and 16 ms at 324,449 (the
    /// next, at about 1.4 million, longer); with 64 tables no add took a millisecond.
    /// </summary>
    internal const int Shards = ShardedTable<string, HalfState, ById>.Shards;

    private readonly ShardedTable<string, HalfState, ById> _byId = new(StringComparer.Ordinal);
    // Due times, in two parts: a first-in first-out run for entries due no earlier than the one before them (a new half
    // is due at its send time plus the same timeout, so nearly all arrive in order), and a heap for the rest (a custom
    // check time, a reschedule). A check pass takes the earlier head of the two. With the heap alone, every transaction
    // paid a heap insert and a removal among up to (tx/s × timeout) entries, 1.5 % of the broker's CPU at 256 in flight.
    // The run is kept in segments, so it never grows by copying all of it (see SegmentedList): as a Queue it took
    // 18-21 ms to grow at 1,048,576 entries. The heap is in segments too (SegmentedHeap): in a check-back storm over a
    // million pending halves it holds most of them, and a PriorityQueue's doubling copied all of it under the lock.
    private SegmentedList<(string TransactionId, long Seq, long At)> _inOrder = new();
    private long _inOrderTail = long.MinValue;
    private readonly SegmentedHeap<(string TransactionId, long Seq)> _due = new();
    private long _seq;
    // The same halves by the block of the log their body lies in: a retention cut visits only those below it, and a
    // page of the admin API's list only the blocks it needs. The unparked and the parked ones apart, each half in one
    // of the two, so a page of either and its count do not walk the other (a /metrics scrape asks for both). Until
    // 2026-12-06 the unparked page went through one index of all halves and skipped the parked ones: with most halves
    // parked (a producer group gone for good) every scrape walked all of them, 132 ms with 1,000,000 parked (review).
    private readonly AddressBlocks<HalfState> _unparkedByBlock = new();
    private readonly AddressBlocks<HalfState> _parkedByBlock = new();

    private struct ById : IShardOf<string>
    {
        public static int ShardOf(string transactionId) => StringComparer.Ordinal.GetHashCode(transactionId);
    }

    public DecidedIndex Decided { get; } = decided;
    /// <summary>Pending halves.</summary>
    public int Count => _byId.Count;
    /// <summary>Parked halves (counted in <see cref="Count"/>).</summary>
    public int ParkedCount => _parkedByBlock.Count;
    /// <summary>The most halves any one table holds (for tests: the tables fill evenly).</summary>
    internal int LargestShard => _byId.LargestShard;
    /// <summary>Entries in the due times (both parts), stale ones included (soak statistics: must stay bounded).</summary>
    public int DueCount => _inOrder.Count + _due.Count;
    public IEnumerable<HalfState> All => _byId.Values;

    /// <summary>
    /// The pending halves whose body may lie below <paramref name="boundary"/> (a retention cut's; each half's
    /// <see cref="HalfState.Address"/> tells), without visiting the others.
    /// </summary>
    public IEnumerable<HalfState> InBlocksBelow(long boundary)
        => _unparkedByBlock.InBlocksBelow(boundary).Concat(_parkedByBlock.InBlocksBelow(boundary));

    public bool TryGet(string transactionId, out HalfState half) => _byId.TryGetValue(transactionId, out half);

    /// <summary>True while <paramref name="half"/> is the pending half of its id (not decided, not replaced).</summary>
    public bool IsLive(HalfState half) => TryGet(half.TransactionId, out var live) && ReferenceEquals(live, half);

    private bool TryGetLive(string transactionId, long seq, out HalfState half)
        => TryGet(transactionId, out half) && half.DueSeq == seq;

    /// <summary>An id is taken while its half is pending and while its decision is remembered.</summary>
    public bool Exists(string transactionId) => _byId.ContainsKey(transactionId) || Decided.Contains(transactionId);

    public void Add(HalfState half)
    {
        ref var slot = ref _byId.GetValueRefOrAddDefault(half.TransactionId, out bool replacing);
        if (replacing) ForgetBlock(slot!);
        slot = half;
        BlocksOf(half).Add(half.Address, half);
        half.DueSeq = ++_seq;
        if (!half.Parked) Enqueue(half.TransactionId, half.DueSeq, half.NextCheckAtMs);
    }

    private void Enqueue(string transactionId, long seq, long at)
    {
        if (_inOrder.Count == 0 || at >= _inOrderTail)
        {
            _inOrder.Add((transactionId, seq, at));
            _inOrderTail = at;
        }
        else
        {
            _due.Enqueue((transactionId, seq), at);
        }
    }

    /// <summary>The earliest entry of either part, if any is due at <paramref name="nowMs"/>; removes it.</summary>
    private bool TryTakeDue(long nowMs, out string transactionId, out long seq, out long at)
    {
        var first = _inOrder.Count > 0 ? _inOrder[0] : default;
        bool inOrder = _inOrder.Count > 0 && first.At <= nowMs;
        bool heap = _due.TryPeek(out var entry, out long heapAt) && heapAt <= nowMs;
        if (inOrder && (!heap || first.At <= heapAt))
        {
            _inOrder.RemoveFront(1);
            (transactionId, seq, at) = first;
            return true;
        }
        if (heap)
        {
            _due.Dequeue();
            (transactionId, seq, at) = (entry.TransactionId, entry.Seq, heapAt);
            return true;
        }
        (transactionId, seq, at) = (null!, 0, 0);
        return false;
    }

    public bool Remove(string transactionId, out HalfState half)
    {
        if (!_byId.Remove(transactionId, out half)) return false;
        ForgetBlock(half);
        DropStaleEntriesIfMost();
        return true;
    }

    private void ForgetBlock(HalfState half) => BlocksOf(half).Remove(half.Address, half);

    private AddressBlocks<HalfState> BlocksOf(HalfState half) => half.Parked ? _parkedByBlock : _unparkedByBlock;

    /// <summary>A live half is parked (after its last check-back) or resumed (by an operator).</summary>
    public void SetParked(HalfState half, bool parked)
    {
        if (half.Parked == parked) return;
        bool live = IsLive(half);
        if (live) ForgetBlock(half);
        half.Parked = parked;
        if (live) BlocksOf(half).Add(half.Address, half);
    }

    /// <summary>
    /// The parked, or the unparked, halves whose body lies above <paramref name="afterAddress"/>, the
    /// <paramref name="limit"/> lowest by address: the admin API's page. Looks at the halves of the blocks it needs
    /// (<see cref="AddressBlocks{T}.FromBlockOf"/>) of the parked or the unparked halves only; until 2026-12-05 it looked
    /// at every pending half and copied those above the address, under the engine lock (0.16-0.47 s with 400,000
    /// pending, at every <c>/metrics</c> scrape), and until 2026-12-06 a page of unparked halves walked the parked ones.
    /// </summary>
    public List<HalfState> Page(bool parked, long afterAddress, int limit)
    {
        var found = new List<HalfState>();
        if (afterAddress == long.MaxValue) return found;
        var blocks = parked ? _parkedByBlock : _unparkedByBlock;
        // Whole blocks, so the lowest addresses are all in hand once enough were found (a block's items are unordered).
        foreach (var half in blocks.FromBlockOf(afterAddress + 1, () => found.Count >= limit))
        {
            PageLooked++;
            if (half.Address > afterAddress) found.Add(half);
        }
        found.Sort((a, b) => a.Address.CompareTo(b.Address));
        if (found.Count > limit) found.RemoveRange(limit, found.Count - limit);
        return found;
    }

    /// <summary>Halves looked at by <see cref="Page"/> since start (tests: a page must not look at every half).</summary>
    internal long PageLooked { get; private set; }

    /// <summary>Times the due times were rid of stale entries (for tests).</summary>
    internal int StaleDrops { get; private set; }

    // Stale entries above this many (and above the live halves' count) are dropped.
    internal const int StaleSlack = SegmentedHeap.StaleSlack;

    // A decided half's entry stays until its check time, and the client chooses that time (a check immunity of up to an
    // hour): committed at once, at 1,000 tx/s, 3.6 million entries for an hour, and one of them put the in-order run's
    // tail an hour ahead, so every later half went to the heap (review 2026-12-02, transactions 7). When the entries
    // are more than twice the pending halves plus a slack, the stale ones go: a pass over all entries, paid for by the
    // decisions and reschedules that made at least half of them stale since the last one.
    private void DropStaleEntriesIfMost()
    {
        if (!SegmentedHeap.MostlyStale(DueCount, _byId.Count)) return;
        var inOrder = new SegmentedList<(string TransactionId, long Seq, long At)>();
        foreach (var e in _inOrder.Items())
            if (IsCurrent(e.TransactionId, e.Seq, e.At)) inOrder.Add(e);
        _inOrder = inOrder;
        _inOrderTail = inOrder.Count > 0 ? inOrder[inOrder.Count - 1].At : long.MinValue;
        _due.RemoveWhere((e, at) => !IsCurrent(e.TransactionId, e.Seq, at));
        StaleDrops++;
    }

    // An entry a check pass would act on: its half is live, not parked, and still due at that time.
    private bool IsCurrent(string transactionId, long seq, long at)
        => TryGetLive(transactionId, seq, out var half) && !half.Parked && half.NextCheckAtMs == at;

    /// <summary>The half's body now lies at <paramref name="address"/> (a replay over a checkpoint, a retention move).</summary>
    public void MoveBody(HalfState half, long address, int size)
    {
        if (IsLive(half)) BlocksOf(half).Move(half.Address, address, half);
        half.Address = address;
        half.Size = size;
    }

    /// <summary>Puts a half (back) into the due times at its <see cref="HalfState.NextCheckAtMs"/>.</summary>
    public void Schedule(HalfState half)
    {
        Enqueue(half.TransactionId, half.DueSeq, half.NextCheckAtMs);
        DropStaleEntriesIfMost();
    }

    /// <summary>Takes every live, unparked half whose check time has come, each once.</summary>
    public List<HalfState> TakeDue(long nowMs)
    {
        var due = new List<HalfState>();
        TakeDue(nowMs, int.MaxValue, due, new HashSet<HalfState>(ReferenceEqualityComparer.Instance));
        return due;
    }

    /// <summary>Looks at most at <paramref name="max"/> due entries and adds to <paramref name="due"/> the live, unparked
    /// halves among them whose check time has come and that <paramref name="seen"/> (kept by the caller across calls)
    /// does not hold yet; true when it stopped at that bound, so more may be due. A half <paramref name="seen"/> holds
    /// whose entry is current again goes to <paramref name="seenAgain"/>, for the caller to schedule once it is done.</summary>
    /// <remarks>A check pass takes the lock several times; between two holds a half it parked may be resumed, due at
    /// once. Until 2026-12-05 a later hold of the same pass took that entry and dropped it (seen already): the half stayed
    /// pending and unparked with no due time, never checked again until a restart (found by review).</remarks>
    public bool TakeDue(long nowMs, int max, List<HalfState> due, HashSet<HalfState> seen, List<HalfState>? seenAgain = null)
    {
        int looked = 0; // stale entries count too: they cost the hold as much
        while (looked < max && TryTakeDue(nowMs, out string transactionId, out long seq, out long at))
        {
            looked++;
            if (!TryGetLive(transactionId, seq, out var half) || half.Parked || half.NextCheckAtMs != at) continue;
            if (seen.Add(half)) due.Add(half);
            else seenAgain?.Add(half);
        }
        return looked >= max;
    }

    /// <summary>The pending halves of one table (<see cref="Shards"/> of them): a checkpoint copies them table by table,
    /// each in its own hold of the engine lock, never all of them in one.</summary>
    public HalfState[] SnapshotShard(int shard) => _byId.SnapshotShard(shard);

    /// <summary>Every table's copy, as a checkpoint takes them (for tests).</summary>
    internal HalfState[] Snapshot() => _byId.Snapshot();

    public void Clear()
    {
        _byId.Clear();
        _unparkedByBlock.Clear();
        _parkedByBlock.Clear();
        _due.Clear();
        _inOrder.Clear();
        _inOrderTail = long.MinValue;
        Decided.Clear();
    }
}
