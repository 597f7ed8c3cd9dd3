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
/// </remarks>
internal sealed class DecidedIndex(long retentionMs, int maxCount)
{
    private readonly Dictionary<UInt128, Slot> _byKey = new();
    private readonly OrderRing _order = new();

    private readonly record struct Slot(long Address, long AtMs, TransactionResolution Resolution);

    public int Count => _byKey.Count;

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

    public bool TryGet(string transactionId, out TransactionResolution resolution, out long address)
    {
        if (_byKey.TryGetValue(KeyOf(transactionId), out var slot)) { resolution = slot.Resolution; address = slot.Address; return true; }
        resolution = default; address = 0;
        return false;
    }

    public bool Contains(string transactionId) => _byKey.ContainsKey(KeyOf(transactionId));

    public void Add(string transactionId, TransactionResolution resolution, long address, long atMs) => Add(KeyOf(transactionId), resolution, address, atMs);

    public void Add(UInt128 key, TransactionResolution resolution, long address, long atMs)
    {
        // Idempotent: a decision replayed over a checkpoint that already holds it changes nothing (no second ring slot).
        if (_byKey.TryGetValue(key, out var existing) && existing.AtMs == atMs && existing.Address == address) return;
        _byKey[key] = new Slot(address, atMs, resolution);
        _order.Enqueue((key, atMs));
        Added++;
        while (_byKey.Count > maxCount && _order.TryDequeue(out var oldest)) Forget(oldest);
    }

    /// <summary>Forgets decisions older than the time bound.</summary>
    public void Expire(long nowMs)
    {
        long horizon = nowMs - retentionMs;
        while (_order.TryPeek(out var d) && d.AtMs < horizon && _order.TryDequeue(out _)) Forget(d);
    }

    private void Forget((UInt128 Key, long AtMs) entry)
    {
        if (_byKey.TryGetValue(entry.Key, out var slot) && slot.AtMs == entry.AtMs) _byKey.Remove(entry.Key);
    }

    public void Clear() { _byKey.Clear(); _order.Clear(); Added = 0; }

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
        long oldest = Added - _order.Count;
        long first = Math.Max(from, oldest);
        int n = (int)Math.Clamp(Math.Min(until, Added) - first, 0, into.Length);
        _order.CopyRange((int)(first - oldest), into[..n]);
        next = first + n;
        return n;
    }

    /// <summary>The slot of <paramref name="key"/>, if it is still the one added at <paramref name="atMs"/>.</summary>
    public bool TryGetLive(UInt128 key, long atMs, out TransactionResolution resolution, out long address)
    {
        if (_byKey.TryGetValue(key, out var slot) && slot.AtMs == atMs) { resolution = slot.Resolution; address = slot.Address; return true; }
        resolution = default; address = 0;
        return false;
    }

    /// <summary>Snapshot order: oldest first, so a load re-adds them in expiry order.</summary>
    public IEnumerable<(UInt128 Key, TransactionResolution Resolution, long Address, long AtMs)> Entries()
    {
        foreach (var (key, at) in _order.Items())
            if (_byKey.TryGetValue(key, out var slot) && slot.AtMs == at) yield return (key, slot.Resolution, slot.Address, slot.AtMs);
    }

    /// <summary>
    /// The expiry order: a queue (add at the end, forget from the front) that also copies its newest items without
    /// walking the older ones, so a delta checkpoint's copy costs what was added since the previous one.
    /// </summary>
    internal sealed class OrderRing
    {
        private (UInt128 Key, long AtMs)[] _items = new (UInt128, long)[16];
        private int _head;

        public int Count { get; private set; }

        public void Enqueue((UInt128 Key, long AtMs) item)
        {
            if (Count == _items.Length)
            {
                var bigger = new (UInt128, long)[_items.Length * 2];
                CopyRange(0, bigger.AsSpan(0, Count));
                _items = bigger;
                _head = 0;
            }
            _items[(_head + Count) % _items.Length] = item;
            Count++;
        }

        public bool TryPeek(out (UInt128 Key, long AtMs) item)
        {
            item = Count == 0 ? default : _items[_head];
            return Count > 0;
        }

        public bool TryDequeue(out (UInt128 Key, long AtMs) item)
        {
            if (!TryPeek(out item)) return false;
            _items[_head] = default;
            _head = (_head + 1) % _items.Length;
            Count--;
            return true;
        }

        public void Clear()
        {
            Array.Clear(_items);
            _head = 0;
            Count = 0;
        }

        /// <summary>The newest <paramref name="n"/> items (at most <see cref="Count"/>), oldest first.</summary>
        public (UInt128 Key, long AtMs)[] CopyNewest(int n)
        {
            var result = new (UInt128, long)[Math.Min(n, Count)];
            CopyRange(Count - result.Length, result);
            return result;
        }

        /// <summary>Copies the items from position <paramref name="start"/> (0 = oldest) on, as many as <paramref name="into"/> holds.</summary>
        public void CopyRange(int start, Span<(UInt128 Key, long AtMs)> into)
        {
            if (into.Length == 0) return;
            if (start < 0 || start + into.Length > Count) throw new ArgumentOutOfRangeException(nameof(start));
            int at = (_head + start) % _items.Length;
            int first = Math.Min(into.Length, _items.Length - at);
            _items.AsSpan(at, first).CopyTo(into);
            _items.AsSpan(0, into.Length - first).CopyTo(into[first..]);
        }

        /// <summary>Oldest first.</summary>
        public IEnumerable<(UInt128 Key, long AtMs)> Items()
        {
            for (int i = 0; i < Count; i++) yield return _items[(_head + i) % _items.Length];
        }
    }
}
