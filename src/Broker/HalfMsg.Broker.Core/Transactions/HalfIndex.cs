using HalfMsg.Broker.Core.Model;

namespace HalfMsg.Broker.Core.Transactions;

/// <summary>
/// Owner of the half-message state: pending (and parked) halves by transaction id, their next-check times in a due-time
/// heap, and the decided ids. Guarded by the engine lock; changed only through the engine's record appliers.
/// </summary>
/// <remarks>
/// The heap uses lazy deletion: a half is enqueued again whenever its next check moves, and stale entries (decided,
/// parked, rescheduled) are skipped when they surface, so a check pass costs O(due · log n), never O(pending).
/// A heap entry names its half by transaction id and a number the half got when it was added, not by reference: a
/// decided half's entry stays in the heap until its check time (6 s by default), and a reference would keep the whole
/// half (about 150 bytes and its strings) alive that long, long enough for the collector to copy it into the older
/// generations, at every transaction.
/// </remarks>
internal sealed class HalfIndex(DecidedIndex decided)
{
    private readonly Dictionary<string, HalfState> _byId = new(StringComparer.Ordinal);
    private readonly PriorityQueue<(string TransactionId, long Seq), long> _due = new();
    private long _seq;

    public DecidedIndex Decided { get; } = decided;
    public int Count => _byId.Count;
    /// <summary>Entries in the due-time heap, stale ones included (soak statistics: must stay bounded).</summary>
    public int DueCount => _due.Count;
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
        if (!half.Parked) _due.Enqueue((half.TransactionId, half.DueSeq), half.NextCheckAtMs);
    }

    public bool Remove(string transactionId, out HalfState half) => _byId.Remove(transactionId, out half!);

    /// <summary>Puts a half (back) into the due-time heap at its <see cref="HalfState.NextCheckAtMs"/>.</summary>
    public void Schedule(HalfState half) => _due.Enqueue((half.TransactionId, half.DueSeq), half.NextCheckAtMs);

    /// <summary>Takes every live, unparked half whose check time has come, each once.</summary>
    public List<HalfState> TakeDue(long nowMs)
    {
        var due = new List<HalfState>();
        var seen = new HashSet<HalfState>(ReferenceEqualityComparer.Instance);
        while (_due.TryPeek(out var entry, out var at) && at <= nowMs)
        {
            _due.Dequeue();
            if (TryGetLive(entry.TransactionId, entry.Seq, out var half) && !half.Parked && half.NextCheckAtMs == at && seen.Add(half)) due.Add(half);
        }
        return due;
    }

    /// <summary>A point-in-time copy of the pending halves (references), for a checkpoint to walk in chunks.</summary>
    public HalfState[] Snapshot() => _byId.Values.ToArray();

    public void Clear()
    {
        _byId.Clear();
        _due.Clear();
        Decided.Clear();
    }
}
