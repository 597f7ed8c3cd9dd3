using System.Security.Cryptography;
using System.Text;
using HalfMsg.Broker.Core.Model;

namespace HalfMsg.Broker.Core.Transactions;

/// <summary>
/// Remembers decided transactions so that a repeated decision stays idempotent and a conflicting one is refused,
/// bounded by time (<see cref="CoreOptions.DecisionRetention"/>) and by count (<see cref="CoreOptions.MaxRememberedDecisions"/>).
/// </summary>
/// <remarks>
/// Memory: version 1 kept the id string, a record and an order-queue entry per decision (about 260 B measured). Here a
/// decision is a 128-bit digest of its id (MD5: a collision among 10^8 ids has odds below 10^-22), its address and
/// time in a struct slot: one dictionary entry (~48 B) plus one ring slot (24 B). Ids are never compared as strings,
/// so the id itself is not kept. Eviction is oldest first, by time or when the count bound is reached; an evicted id
/// answers "unknown", exactly as one older than the time bound always did.
/// <para>Each decision keeps the namespace of its half's topic (a small number into a table of names, in the slot's
/// padding), so a caller of another namespace is answered as for an unknown id instead of learning the outcome. It
/// costs no byte: measured on 2026-12-06, the slot is 24 B, a dictionary entry 64 B and an order item 32 B, before and
/// after, and a million ids hold about 108-118 B each either way. Until 2026-12-06 the set kept no namespace: a client of namespace b that knew an id of namespace a was
/// told "already committed" (or OK for a repeat).</para>
/// <para>Since the afternoon session of 2026-12-07 the slot also keeps the address of the record that carries the
/// decision in the log (its own, or the retention cut's record that last carried it): 8 bytes more per decision, 32 B
/// the slot.</para>
/// </remarks>
internal sealed class DecidedIndex(long retentionMs, int maxCount)
{
    /// <summary>
    /// The map is split by the key's low bits into this many tables: a table grows by rehashing everything in it, under
    /// the engine lock, and one table of a million ids took about 150 ms to grow (seen in a profile at 842,879 ids). A
    /// sixty-fourth of that is a fraction of a millisecond. The keys are MD5 digests, so the tables fill evenly.
    /// </summary>
    internal const int Shards = ShardedTable<UInt128, Slot, ByKey>.Shards;

    private readonly ShardedTable<UInt128, Slot, ByKey> _byKey = new();
    private readonly OrderRing _order = new();

    /// <summary>The slot's namespace when it is not known: a decision loaded from a checkpoint written before
    /// decisions kept their namespace.</summary>
    internal const int UnknownNamespace = -1;

    // Number 0 is "no namespace". Each remembered decision holds its namespace's number (on add, replace and learn) and
    // lets go of it when forgotten or replaced, so the table holds the namespaces some remembered decision is of; a
    // number let go of may be given to another namespace, never while a decision still carries it. Numbers are this
    // process's own, the checkpoint carries the names. Until the small-hours session of 2026-12-08 the table grew by one
    // per distinct namespace that ever had a decision and never forgot one.
    private readonly HeldNameNumbers _namespaces = new();

    /// <summary>Namespaces some remembered decision is of, "" (no namespace) included: for tests and sizes.</summary>
    internal int NamespacesHeld => _namespaces.Count;

    /// <summary>Releases of a namespace number no decision held (a bookkeeping defect): for tests.</summary>
    internal long NamespaceReleasesUnmatched => _namespaces.UnmatchedReleases;

    /// <summary>A remembered decision. <see cref="Carrier"/>: the address of the record that carries it in the log now,
    /// its own decision record (<see cref="Address"/>) or the retention cut's record (Storage.LogCutRecord) that last
    /// carried it; a cut carries it again only when that record lies below its boundary (since the afternoon session of
    /// 2026-12-07: 8 bytes more per decision).</summary>
    private readonly record struct Slot(long Address, long AtMs, TransactionResolution Resolution, int Namespace, long Carrier);

    private struct ByKey : IShardOf<UInt128>
    {
        public static int ShardOf(UInt128 key) => (int)(ulong)key;
    }

    public int Count => _byKey.Count;

    /// <summary>The most ids any one table holds (for tests: the tables fill evenly, so no one of them grows large).</summary>
    internal int LargestShard => _byKey.LargestShard;

    /// <summary>Entries ever put into the expiry order (a running count): a checkpoint takes only those added after
    /// the previous one's count, since the order only grows at its end.</summary>
    public long Added { get; private set; }

    public static UInt128 KeyOf(string transactionId)
    {
        Span<byte> utf8 = transactionId.Length <= 256 ? stackalloc byte[Encoding.UTF8.GetMaxByteCount(transactionId.Length)] : new byte[Encoding.UTF8.GetMaxByteCount(transactionId.Length)];
        int n = Encoding.UTF8.GetBytes(transactionId, utf8);
        Span<byte> hash = stackalloc byte[16];
        MD5.HashData(utf8[..n], hash);
        return new UInt128(BitConverter.ToUInt64(hash), BitConverter.ToUInt64(hash[8..]));
    }

    /// <summary>Any namespace's decision of <paramref name="transactionId"/> (for the broker's own uses, never for
    /// answering a client of a namespace: see the overload with the namespace).</summary>
    public bool TryGet(string transactionId, out TransactionResolution resolution, out long address) => TryGet(transactionId, out resolution, out address, out _);

    /// <summary>The decision of <paramref name="transactionId"/>, with the namespace of its half's topic in
    /// <paramref name="ns"/> ("" for none; null when not known: loaded from an older checkpoint).</summary>
    public bool TryGet(string transactionId, out TransactionResolution resolution, out long address, out string? ns)
    {
        UInt128 key = KeyOf(transactionId);
        if (_byKey.TryGetValue(key, out var slot)) { resolution = slot.Resolution; address = slot.Address; ns = NameOf(slot.Namespace); return true; }
        resolution = default; address = 0; ns = null;
        return false;
    }

    private string? NameOf(int number) => number == UnknownNamespace ? null : _namespaces.NameOf(number);

    /// <summary>The number of <paramref name="ns"/>, held once more: a slot that carries it must let go of it
    /// (<see cref="Release"/>) when forgotten or given another.</summary>
    private int Hold(string? ns) => ns is null ? UnknownNamespace : _namespaces.Hold(ns);

    private void Release(int number) => _namespaces.Release(number); // (UnknownNamespace and 0: nothing)

    public bool Contains(string transactionId)
    {
        UInt128 key = KeyOf(transactionId);
        return _byKey.ContainsKey(key);
    }

    /// <summary>Remembers the decision of a half of <paramref name="topic"/> (its namespace is kept).</summary>
    public void Add(string transactionId, TransactionResolution resolution, long address, long atMs, string topic)
        => Add(KeyOf(transactionId), resolution, address, atMs, BrokerEngine.NamespaceOf(topic));

    /// <summary>Remembers a decision of namespace <paramref name="ns"/> ("" for none, null when not known).</summary>
    public void Add(UInt128 key, TransactionResolution resolution, long address, long atMs, string? ns)
    {
        // Idempotent: a decision replayed over a checkpoint that already holds it changes nothing (no second ring slot).
        // Its namespace is taken, though: the replayed record's half names it where an older checkpoint did not.
        ref Slot slot = ref _byKey.GetValueRefOrAddDefault(key, out bool existed);
        if (existed && slot.AtMs == atMs && slot.Address == address)
        {
            if (ns is not null)
            {
                int learnt = Hold(ns);
                Release(slot.Namespace);
                slot = slot with { Namespace = learnt };
            }
            return;
        }
        int number = Hold(ns);
        if (existed) Release(slot.Namespace); // the id taken again: its earlier decision's slot is replaced
        slot = new Slot(address, atMs, resolution, number, address);
        _order.Enqueue((key, atMs));
        Added++;
        TrimToCount();
    }

    private void TrimToCount()
    {
        while (Count > maxCount && TryDequeueOldest(out var oldest)) Forget(oldest);
    }

    /// <summary>The oldest entry of the expiry order: the carried decisions a replay holds apart (<see cref="AddCarried"/>)
    /// come before every other.</summary>
    private bool TryPeekOldest(out (UInt128 Key, long AtMs) oldest)
        => _carried.TryPeek(out oldest, out _) || _order.TryPeek(out oldest);

    private bool TryDequeueOldest(out (UInt128 Key, long AtMs) oldest)
        => _carried.TryDequeue(out oldest, out _) || _order.TryDequeue(out oldest);

    /// <summary>
    /// A decision a retention cut carried (Storage.LogCutRecord) in the record at <paramref name="carrier"/>, replayed
    /// from the log alone: remembered as the live broker remembered it (its own record's address and time), unless the
    /// id is known already (the same decision, or a later one of the id taken again). Its own record lay below a cut's
    /// boundary, so before every decision whose record this replay applied: it is held apart, in the order of the
    /// records (their addresses), ahead of those in the expiry order (the count bound and the time bound forget it
    /// before them, as live), until <see cref="RestoreOrder"/> puts it in front of them. Until the afternoon session of
    /// 2026-12-07 it was put behind them, so that the count bound forgot, in place of the oldest carried decisions, the
    /// decisions whose records lay between the cut's boundary and its carrying (a repeated decision of such an id was
    /// told "unknown transaction" after the restart). Returns whether it was added.
    /// </summary>
    public bool AddCarried(UInt128 key, TransactionResolution resolution, long address, long atMs, string? ns, long carrier)
    {
        ref Slot slot = ref _byKey.GetValueRefOrAddDefault(key, out bool existed);
        if (existed) return false;
        slot = new Slot(address, atMs, resolution, Hold(ns), carrier);
        _carried.Enqueue((key, atMs), address);
        Added++;
        TrimToCount();
        return true;
    }

    /// <summary>Carried decisions added by a replay, in the order of their records, not yet in the expiry order.</summary>
    private readonly PriorityQueue<(UInt128 Key, long AtMs), long> _carried = new();

    /// <summary>
    /// The decision <paramref name="key"/> decided at <paramref name="atMs"/> (recorded at <paramref name="address"/>)
    /// is carried by the record at <paramref name="carrier"/>, if that is later than the one that carried it so far.
    /// </summary>
    public void NoteCarried(UInt128 key, long atMs, long address, long carrier)
    {
        if (!_byKey.TryGetValue(key, out var slot) || slot.AtMs != atMs || slot.Address != address || slot.Carrier >= carrier) return;
        _byKey.Set(key, slot with { Carrier = carrier });
    }

    /// <summary>
    /// The decision <paramref name="key"/> decided at <paramref name="atMs"/>, when the record at
    /// <paramref name="carrier"/> carries it, is carried by no record below any cut from now on: the next cut carries it
    /// again (that record has no intact copy).
    /// </summary>
    public void ForgetCarrier(UInt128 key, long atMs, long carrier)
    {
        if (_byKey.TryGetValue(key, out var slot) && slot.AtMs == atMs && slot.Carrier == carrier) _byKey.Set(key, slot with { Carrier = -1 });
    }

    /// <summary>
    /// The decision of <paramref name="key"/> added at <paramref name="atMs"/>, when it is still remembered and the record
    /// that carries it lies below <paramref name="boundary"/> (a retention cut there must carry it again).
    /// </summary>
    public bool TryGetToCarry(UInt128 key, long atMs, long boundary, out TransactionResolution resolution, out long address, out string? ns)
    {
        if (_byKey.TryGetValue(key, out var slot) && slot.AtMs == atMs && slot.Carrier < boundary)
        {
            (resolution, address, ns) = (slot.Resolution, slot.Address, NameOf(slot.Namespace));
            return true;
        }
        resolution = default; address = 0; ns = null;
        return false;
    }

    /// <summary>
    /// Gives the decision of <paramref name="transactionId"/>, when it is <paramref name="resolution"/> and its namespace
    /// is not known, the namespace of <paramref name="topic"/> (its half's, learnt after the decision: a replay of the
    /// log alone that rebuilt the committed message from a move of its body). Anything else is left as it is.
    /// </summary>
    public void LearnNamespace(string transactionId, TransactionResolution resolution, string topic)
    {
        UInt128 key = KeyOf(transactionId);
        if (!_byKey.TryGetValue(key, out var slot) || slot.Namespace != UnknownNamespace || slot.Resolution != resolution) return;
        _byKey.Set(key, slot with { Namespace = Hold(BrokerEngine.NamespaceOf(topic)) }); // (it held none: unknown)
    }

    /// <summary>
    /// After a replay that added carried decisions (<see cref="AddCarried"/>): the expiry order as the live broker's,
    /// the order the decisions' records were written in (the carried ones, by their addresses, in front). Entries and
    /// numbering (<see cref="Added"/>) are unchanged.
    /// </summary>
    public void RestoreOrder()
    {
        if (_carried.Count == 0) return;
        var items = new List<(UInt128 Key, long AtMs)>(_carried.Count + _order.Count);
        while (_carried.TryDequeue(out var item, out _)) items.Add(item);
        items.AddRange(_order.Items());
        _order.Clear();
        foreach (var item in items) _order.Enqueue(item);
    }

    /// <summary>Forgets decisions older than the time bound.</summary>
    public void Expire(long nowMs) => Expire(nowMs, int.MaxValue);

    /// <summary>Forgets at most <paramref name="max"/> decisions older than the time bound; returns how many.</summary>
    public int Expire(long nowMs, int max)
    {
        long horizon = nowMs - retentionMs;
        int n = 0;
        while (n < max && TryPeekOldest(out var d) && d.AtMs < horizon && TryDequeueOldest(out _))
        {
            Forget(d);
            n++;
        }
        return n;
    }

    private void Forget((UInt128 Key, long AtMs) entry)
    {
        if (_byKey.TryGetValue(entry.Key, out var slot) && slot.AtMs == entry.AtMs)
        {
            _byKey.Remove(entry.Key, out _);
            Release(slot.Namespace);
        }
    }

    public void Clear()
    {
        _byKey.Clear();
        _order.Clear();
        _carried.Clear();
        _namespaces.Clear();
        Added = 0;
    }

    /// <summary>
    /// Copies the expiry order's entries numbered from <paramref name="from"/> up to, not including,
    /// <paramref name="until"/> (entries are numbered by <see cref="Added"/> as it was before each was added; those
    /// already forgotten are skipped, so the copy starts at the oldest still held if that is later), at most as many as
    /// <paramref name="into"/> holds. Returns how many were copied; <paramref name="next"/> is the number to continue from.
    /// </summary>
    /// <remarks>A checkpoint walks the order this way in bounded steps, each under its own hold of the engine lock, so
    /// it never copies a million entries (32 MB) in one hold: with the order full, such a hold took 126-177 ms in the
    /// long bench row. Entries added meanwhile get later numbers and entries forgotten meanwhile are skipped.</remarks>
    public int CopyOrder(long from, long until, Span<(UInt128 Key, long AtMs)> into, out long next)
    {
        RestoreOrder(); // (after a replay, done already)
        long oldest = Added - _order.Count;
        long first = Math.Max(from, oldest);
        int n = (int)Math.Clamp(Math.Min(until, Added) - first, 0, into.Length);
        _order.CopyRange((int)(first - oldest), into[..n]);
        next = first + n;
        return n;
    }

    /// <summary>The slot of <paramref name="key"/>, if it is still the one added at <paramref name="atMs"/>.</summary>
    public bool TryGetLive(UInt128 key, long atMs, out TransactionResolution resolution, out long address, out string? ns)
    {
        if (_byKey.TryGetValue(key, out var slot) && slot.AtMs == atMs) { resolution = slot.Resolution; address = slot.Address; ns = NameOf(slot.Namespace); return true; }
        resolution = default; address = 0; ns = null;
        return false;
    }

    /// <summary>Snapshot order: oldest first, so a load re-adds them in expiry order.</summary>
    public IEnumerable<(UInt128 Key, TransactionResolution Resolution, long Address, long AtMs, string? Namespace)> Entries()
    {
        RestoreOrder(); // (after a replay, done already)
        foreach (var (key, at) in _order.Items())
            if (_byKey.TryGetValue(key, out var slot) && slot.AtMs == at) yield return (key, slot.Resolution, slot.Address, slot.AtMs, NameOf(slot.Namespace));
    }

    /// <summary>
    /// The expiry order: a queue (add at the end, forget from the front) that also copies its newest items without
    /// walking the older ones, so a delta checkpoint's copy costs what was added since the previous one.
    /// </summary>
    internal sealed class OrderRing
    {
        // In segments: a million entries (32 MB) are never copied at once to grow, and the front drops without moving
        // the rest.
        private readonly SegmentedList<(UInt128 Key, long AtMs)> _items = new();

        public int Count => _items.Count;

        public void Enqueue((UInt128 Key, long AtMs) item) => _items.Add(item);

        public bool TryPeek(out (UInt128 Key, long AtMs) item)
        {
            item = Count == 0 ? default : _items[0];
            return Count > 0;
        }

        public bool TryDequeue(out (UInt128 Key, long AtMs) item)
        {
            if (!TryPeek(out item)) return false;
            _items.RemoveFront(1);
            return true;
        }

        public void Clear() => _items.Clear();

        /// <summary>The newest <paramref name="n"/> items (at most <see cref="Count"/>), oldest first.</summary>
        public (UInt128 Key, long AtMs)[] CopyNewest(int n)
        {
            var result = new (UInt128, long)[Math.Min(n, Count)];
            CopyRange(Count - result.Length, result);
            return result;
        }

        /// <summary>Copies the items from position <paramref name="start"/> (0 = oldest) on, as many as <paramref name="into"/> holds.</summary>
        public void CopyRange(int start, Span<(UInt128 Key, long AtMs)> into) => _items.CopyTo(start, into);

        /// <summary>Oldest first.</summary>
        public IEnumerable<(UInt128 Key, long AtMs)> Items() => _items.Items();
    }
}
