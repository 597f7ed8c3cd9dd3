using HalfMsg.Broker.Core.Model;

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
    private readonly Dictionary<string, HalfState> _byId = new(StringComparer.Ordinal);
    // Due times, in two parts: a first-in first-out run for entries due no earlier than the one before them (a new half
    // is due at its send time plus the same timeout, so nearly all arrive in order), and a heap for the rest (a custom
    // check time, a reschedule). A check pass takes the earlier head of the two. With the heap alone, every transaction
    // paid a heap insert and a removal among up to (tx/s × timeout) entries, 1.5 % of the broker's CPU at 256 in flight.
    private readonly Queue<(string TransactionId, long Seq, long At)> _inOrder = new();
    private long _inOrderTail = long.MinValue;
    private readonly PriorityQueue<(string TransactionId, long Seq), long> _due = new();
    private long _seq;

    public DecidedIndex Decided { get; } = decided;
    public int Count => _byId.Count;
    /// <summary>Entries in the due times (both parts), stale ones included (soak statistics: must stay bounded).</summary>
    public int DueCount => _inOrder.Count + _due.Count;
    public IEnumerable<HalfState> All => _byId.Values;

    public bool TryGet(string transactionId, out HalfState half) => _byId.TryGetValue(transactionId, out half!);

    /// <summary>True while <paramref name="half"/> is the pending half of its id (not decided, not replaced).</summary>
    public bool IsLive(HalfState half) => _byId.TryGetValue(half.TransactionId, out var live) && ReferenceEquals(live, half);

    private bool TryGetLive(string transactionId, long seq, out HalfState half)
        => _byId.TryGetValue(transactionId, out half!) && half.DueSeq == seq;

    /// <summary>An id is taken while its half is pending and while its decision is remembered.</summary>
    public bool Exists(string transactionId) => _byId.ContainsKey(transactionId) || Decided.Contains(transactionId);

    public void Add(HalfState half)
    {
        _byId[half.TransactionId] = half;
        half.DueSeq = ++_seq;
        if (!half.Parked) Enqueue(half.TransactionId, half.DueSeq, half.NextCheckAtMs);
    }

    private void Enqueue(string transactionId, long seq, long at)
    {
        if (_inOrder.Count == 0 || at >= _inOrderTail)
        {
            _inOrder.Enqueue((transactionId, seq, at));
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
        bool inOrder = _inOrder.TryPeek(out var first) && first.At <= nowMs;
        bool heap = _due.TryPeek(out var entry, out long heapAt) && heapAt <= nowMs;
        if (inOrder && (!heap || first.At <= heapAt))
        {
            _inOrder.Dequeue();
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

    public bool Remove(string transactionId, out HalfState half) => _byId.Remove(transactionId, out half!);

    /// <summary>Puts a half (back) into the due times at its <see cref="HalfState.NextCheckAtMs"/>.</summary>
    public void Schedule(HalfState half) => Enqueue(half.TransactionId, half.DueSeq, half.NextCheckAtMs);

    /// <summary>Takes every live, unparked half whose check time has come, each once.</summary>
    public List<HalfState> TakeDue(long nowMs)
    {
        var due = new List<HalfState>();
        var seen = new HashSet<HalfState>(ReferenceEqualityComparer.Instance);
        while (TryTakeDue(nowMs, out string transactionId, out long seq, out long at))
        {
            if (TryGetLive(transactionId, seq, out var half) && !half.Parked && half.NextCheckAtMs == at && seen.Add(half)) due.Add(half);
        }
        return due;
    }

    /// <summary>A point-in-time copy of the pending halves (references), for a checkpoint to walk in chunks.</summary>
    public HalfState[] Snapshot() => _byId.Values.ToArray();

    public void Clear()
    {
        _byId.Clear();
        _due.Clear();
        _inOrder.Clear();
        _inOrderTail = long.MinValue;
        Decided.Clear();
    }
}
