namespace HalfMsg.Broker.Core.Retention;

/// <summary>
/// The records in the log that carry state past retention cuts (Storage.LogCutRecord, the first of its two copies,
/// when its copy followed it intact), by address, oldest first: what the items' carrier addresses (DecidedIndex,
/// PullOffsets, TopicState.CarriedAt) name. Those addresses are in memory only; a checkpoint holds this list instead
/// (a number per carrying record, at the end of its SnapEnd), and after a start from a checkpoint the first cut reads
/// the records in it that it keeps and notes their items as carried by them (<see cref="ToNote"/>), so that it carries
/// again only what it newly must. Since the evening session of 2026-12-07: before, the first cut after a start from a
/// checkpoint carried every remembered decision, topic and pull offset again (about 60 bytes per remembered decision
/// with the two copies). Guarded by the engine lock.
/// </summary>
internal sealed class CarryingRecords
{
    private readonly List<long> _addresses = [];

    /// <summary>Carrying records a checkpoint named whose items are not noted as carried by them yet (the first cut after
    /// the start reads them); empty once that cut noted them.</summary>
    public List<long> ToNote { get; private set; } = [];

    public int Count => _addresses.Count;

    /// <summary>A carrying record (applied, its copy after it intact), at an address after every one known.</summary>
    public void Add(long address)
    {
        if (_addresses.Count == 0 || _addresses[^1] < address) _addresses.Add(address);
        else if (_addresses.BinarySearch(address) is var i && i < 0) _addresses.Insert(~i, address);
    }

    /// <summary>Those at or above <paramref name="begin"/>, oldest first.</summary>
    public long[] From(long begin)
    {
        int i = _addresses.BinarySearch(begin);
        if (i < 0) i = ~i;
        return _addresses.GetRange(i, _addresses.Count - i).ToArray();
    }

    /// <summary>A cut at <paramref name="begin"/> took those below it.</summary>
    public void ForgetBelow(long begin)
    {
        int i = _addresses.BinarySearch(begin);
        if (i < 0) i = ~i;
        _addresses.RemoveRange(0, i);
    }

    /// <summary>Loaded from a checkpoint: the carrying records it named, to be noted by the first cut.</summary>
    public void Loaded(IReadOnlyList<long> addresses)
    {
        foreach (long a in addresses) Add(a);
        ToNote = [.. addresses];
    }

    /// <summary>The records loaded that are not noted yet, handed over once.</summary>
    public List<long> TakeToNote()
    {
        var taken = ToNote;
        ToNote = [];
        return taken;
    }

    public void Clear()
    {
        _addresses.Clear();
        ToNote = [];
    }
}
