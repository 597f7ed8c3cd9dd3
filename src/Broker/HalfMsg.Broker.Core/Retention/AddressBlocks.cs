namespace HalfMsg.Broker.Core.Retention;

/// <summary>
/// Items (pending halves, delayed messages) grouped by the block of the log their body lies in, so that a retention cut
/// visits only the items in the blocks below it instead of every one of them. A cut walks the live bodies below it
/// under the engine lock, once per relocation round and once more in the hold that cuts the head: with a million
/// pending halves that was a million look-ups each time, although the halves below a cut are the few sent before it
/// (a half pending that long was moved to the tail by the previous cut). Not thread-safe; guarded by the engine lock.
/// </summary>
/// <remarks>
/// Items are compared by reference. A block is <see cref="BlockBytes"/> of log; only blocks holding an item exist, so
/// an unlimited log costs nothing for its empty blocks. The owner keeps the index in step with every change of an
/// item's address (add, remove, move).
/// </remarks>
internal sealed class AddressBlocks<T> where T : class
{
    private const int BlockBits = 24;
    /// <summary>Log bytes per block (16 MiB).</summary>
    internal const long BlockBytes = 1L << BlockBits;

    private readonly Dictionary<long, HashSet<T>> _blocks = new();
    // Appends come in runs on one block (the log's tail): the last block's set is kept at hand.
    private long _lastBlock = -1;
    private HashSet<T>? _last;

    /// <summary>Items in all blocks.</summary>
    public int Count { get; private set; }

    public void Add(long address, T item)
    {
        long block = address >> BlockBits;
        if (block != _lastBlock || _last is null)
        {
            if (!_blocks.TryGetValue(block, out var set)) _blocks[block] = set = new HashSet<T>(ReferenceEqualityComparer.Instance);
            (_lastBlock, _last) = (block, set);
        }
        if (_last.Add(item)) Count++;
    }

    public void Remove(long address, T item)
    {
        long block = address >> BlockBits;
        var set = block == _lastBlock ? _last : _blocks.GetValueOrDefault(block);
        if (set is null || !set.Remove(item)) return;
        Count--;
        if (set.Count > 0) return;
        _blocks.Remove(block);
        if (ReferenceEquals(set, _last)) (_lastBlock, _last) = (-1, null);
    }

    public void Move(long from, long to, T item)
    {
        Remove(from, item);
        Add(to, item);
    }

    /// <summary>
    /// Every item whose body may lie below <paramref name="boundary"/>: those of the blocks that begin below it (the
    /// block holding the boundary also holds items above it; callers compare each item's address).
    /// </summary>
    public IEnumerable<T> InBlocksBelow(long boundary)
    {
        long lastBlock = (boundary - 1) >> BlockBits;
        foreach (var (block, set) in _blocks)
        {
            if (block > lastBlock) continue;
            foreach (var item in set) yield return item;
        }
    }

    /// <summary>
    /// The items of the blocks from the one holding <paramref name="address"/> upwards, block by block in address order
    /// (the items within a block in no order), until <paramref name="enough"/> says so after a block: a page of items
    /// above an address costs the blocks it needs, not every item. Sorting the blocks' numbers costs their count (a
    /// block is 16 MiB of log).
    /// </summary>
    public IEnumerable<T> FromBlockOf(long address, Func<bool> enough)
    {
        long first = Math.Max(0, address) >> BlockBits;
        var blocks = new List<long>();
        foreach (long block in _blocks.Keys)
            if (block >= first) blocks.Add(block);
        blocks.Sort();
        foreach (long block in blocks)
        {
            foreach (var item in _blocks[block]) yield return item;
            if (enough()) yield break;
        }
    }

    public void Clear()
    {
        _blocks.Clear();
        (_lastBlock, _last) = (-1, null);
        Count = 0;
    }
}
