using HalfMsg.Broker.Core.Retention;

namespace HalfMsg.Broker.Core.Delivery;

/// <summary>
/// Owner of messages waiting for their delivery time (delay messages and committed delayed transactions), keyed by
/// the address of their body, with a due-time heap. Guarded by the engine lock.
/// </summary>
internal sealed class DelayIndex
{
    private readonly Dictionary<long, DelayedEntry> _byBody = new();
    private readonly PriorityQueue<DelayedEntry, long> _due = new();
    // The same entries by the block of the log their body lies in: a retention cut visits only those below it.
    private readonly AddressBlocks<DelayedEntry> _byBlock = new();

    public int Count => _byBody.Count;
    public IEnumerable<DelayedEntry> All => _byBody.Values;
    public bool Contains(long bodyAddress) => _byBody.ContainsKey(bodyAddress);

    /// <summary>The entries whose body may lie below <paramref name="boundary"/> (a retention cut's), without visiting the others.</summary>
    public IEnumerable<DelayedEntry> InBlocksBelow(long boundary) => _byBlock.InBlocksBelow(boundary);

    public void Add(DelayedEntry entry)
    {
        ref var slot = ref System.Runtime.InteropServices.CollectionsMarshal.GetValueRefOrAddDefault(_byBody, entry.BodyAddress, out bool replacing);
        if (replacing) _byBlock.Remove(slot!.BodyAddress, slot);
        slot = entry;
        _byBlock.Add(entry.BodyAddress, entry);
        _due.Enqueue(entry, entry.DeliverAtMs);
    }

    public bool Remove(long bodyAddress, out DelayedEntry entry)
    {
        if (!_byBody.Remove(bodyAddress, out entry!)) return false;
        _byBlock.Remove(bodyAddress, entry);
        return true;
    }

    /// <summary>Retention moved the body: the same entry (still in the heap) is now found at its new address.</summary>
    public void Move(long previous, long address, int size)
    {
        if (!_byBody.Remove(previous, out var entry)) return;
        _byBlock.Move(previous, address, entry);
        entry.BodyAddress = address;
        entry.Size = size;
        _byBody[address] = entry;
    }

    /// <summary>Takes every entry whose time has come (stale heap entries for released or moved ones are skipped).</summary>
    public List<DelayedEntry> TakeDue(long nowMs)
    {
        var due = new List<DelayedEntry>();
        while (_due.TryPeek(out var entry, out var at) && at <= nowMs)
        {
            _due.Dequeue();
            if (_byBody.TryGetValue(entry.BodyAddress, out var live) && ReferenceEquals(live, entry)) due.Add(entry);
        }
        return due;
    }

    public DelayedEntry[] Snapshot() => _byBody.Values.ToArray();

    public void Clear()
    {
        _byBody.Clear();
        _byBlock.Clear();
        _due.Clear();
    }
}
