namespace HalfMsg.Broker.Core.Delivery;

/// <summary>
/// Owner of messages waiting for their delivery time (delay messages and committed delayed transactions), keyed by
/// the address of their body, with a due-time heap. Guarded by the engine lock.
/// </summary>
internal sealed class DelayIndex
{
    private readonly Dictionary<long, DelayedEntry> _byBody = new();
    private readonly PriorityQueue<DelayedEntry, long> _due = new();

    public int Count => _byBody.Count;
    public IEnumerable<DelayedEntry> All => _byBody.Values;
    public bool Contains(long bodyAddress) => _byBody.ContainsKey(bodyAddress);

    public void Add(DelayedEntry entry)
    {
        _byBody[entry.BodyAddress] = entry;
        _due.Enqueue(entry, entry.DeliverAtMs);
    }

    public bool Remove(long bodyAddress, out DelayedEntry entry) => _byBody.Remove(bodyAddress, out entry!);

    /// <summary>Retention moved the body: the same entry (still in the heap) is now found at its new address.</summary>
    public void Move(long previous, long address, int size)
    {
        if (!_byBody.Remove(previous, out var entry)) return;
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
        _due.Clear();
    }
}
