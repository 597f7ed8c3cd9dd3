namespace HalfMsg.Broker.Core.Delivery;

/// <summary>
/// Owner of the pull (Remoting) consumer groups' committed offsets, per group, topic and queue. Each record sets an
/// explicit value, so replaying one twice changes nothing. Guarded by the engine lock.
/// </summary>
internal sealed class PullOffsets
{
    // Each offset with the address of the record that carries it in the log now (its commit's record, or the retention
    // cut's record that last carried it; -1 when not known: loaded from a checkpoint): a cut carries it again only when
    // that record lies below its boundary (since the afternoon session of 2026-12-07). In memory only.
    private readonly Dictionary<(string Group, string Topic, int Queue), (long Offset, long Carrier)> _offsets = new();
    private readonly Dictionary<(string Group, string Topic), int> _queuesPerGroup = new();

    public IEnumerable<KeyValuePair<(string Group, string Topic, int Queue), long>> All
        => _offsets.Select(e => KeyValuePair.Create(e.Key, e.Value.Offset));
    public int Count => _offsets.Count;
    /// <summary>Group-topic pairs with at least one committed offset (counted against <see cref="CoreOptions.MaxConsumerGroups"/>).</summary>
    public int GroupTopicCount => _queuesPerGroup.Count;

    public bool Has(string group, string topic) => _queuesPerGroup.ContainsKey((group, topic));
    public bool HasGroup(string group) => _queuesPerGroup.Keys.Any(k => k.Group == group);

    public bool TryGet(string group, string topic, int queue, out long offset)
    {
        bool found = _offsets.TryGetValue((group, topic, queue), out var value);
        offset = value.Offset;
        return found;
    }

    /// <summary>Sets an offset, carried in the log by the record at <paramref name="carrier"/> (-1: not known).</summary>
    public void Set(string group, string topic, int queue, long offset, long carrier = -1)
    {
        if (_offsets.TryAdd((group, topic, queue), (offset, carrier)))
            _queuesPerGroup[(group, topic)] = _queuesPerGroup.GetValueOrDefault((group, topic)) + 1;
        else
            _offsets[(group, topic, queue)] = (offset, carrier);
    }

    /// <summary>The offset, when it is still <paramref name="offset"/>, is carried by the record at
    /// <paramref name="carrier"/> from now on (a retention cut's record that carried it).</summary>
    public void NoteCarried(string group, string topic, int queue, long offset, long carrier)
    {
        ref var value = ref System.Runtime.InteropServices.CollectionsMarshal.GetValueRefOrNullRef(_offsets, (group, topic, queue));
        if (!System.Runtime.CompilerServices.Unsafe.IsNullRef(ref value) && value.Offset == offset && value.Carrier < carrier) value.Carrier = carrier;
    }

    /// <summary>The offset, when the record at <paramref name="carrier"/> carries it, is carried by no record below any cut
    /// from now on: the next cut carries it again (that record has no intact copy).</summary>
    public void ForgetCarrier(string group, string topic, int queue, long carrier)
    {
        ref var value = ref System.Runtime.InteropServices.CollectionsMarshal.GetValueRefOrNullRef(_offsets, (group, topic, queue));
        if (!System.Runtime.CompilerServices.Unsafe.IsNullRef(ref value) && value.Carrier == carrier) value.Carrier = -1;
    }

    /// <summary>The offsets whose carrying record lies below <paramref name="boundary"/> (a retention cut there carries them).</summary>
    public List<(string Group, string Topic, int Queue)> ToCarryBelow(long boundary)
        => _offsets.Where(e => e.Value.Carrier < boundary).Select(e => e.Key).ToList();

    /// <summary>Committed offsets on one topic, per group and queue.</summary>
    public IReadOnlyDictionary<string, IReadOnlyDictionary<int, long>> OfTopic(string topic)
        => _offsets.Where(e => e.Key.Topic == topic).GroupBy(e => e.Key.Group)
            .ToDictionary(g => g.Key, g => (IReadOnlyDictionary<int, long>)g.ToDictionary(e => e.Key.Queue, e => e.Value.Offset));

    /// <summary>Committed offsets of one group, per topic and queue: one pass over every committed offset.</summary>
    public IReadOnlyDictionary<string, IReadOnlyDictionary<int, long>> OfGroup(string group)
        => _offsets.Where(e => e.Key.Group == group).GroupBy(e => e.Key.Topic)
            .ToDictionary(g => g.Key, g => (IReadOnlyDictionary<int, long>)g.ToDictionary(e => e.Key.Queue, e => e.Value.Offset));

    /// <summary>Every group's committed offsets, per group, topic and queue: one pass over every committed offset, where
    /// <see cref="OfGroup"/> for each group made one per group.</summary>
    public Dictionary<string, Dictionary<string, Dictionary<int, long>>> ByGroup()
    {
        var byGroup = new Dictionary<string, Dictionary<string, Dictionary<int, long>>>(StringComparer.Ordinal);
        foreach (var ((group, topic, queue), (offset, _)) in _offsets)
        {
            if (!byGroup.TryGetValue(group, out var topics)) byGroup[group] = topics = new(StringComparer.Ordinal);
            if (!topics.TryGetValue(topic, out var queues)) topics[topic] = queues = [];
            queues[queue] = offset;
        }
        return byGroup;
    }

    /// <summary>The (group, topic) pairs with at least one committed offset.</summary>
    public IEnumerable<(string Group, string Topic)> GroupTopics => _queuesPerGroup.Keys;

    public void RemoveTopic(string topic) => RemoveWhere(k => k.Topic == topic);

    public void RemoveGroup(string group) => RemoveWhere(k => k.Group == group);

    private void RemoveWhere(Func<(string Group, string Topic), bool> match)
    {
        foreach (var key in _offsets.Keys.Where(k => match((k.Group, k.Topic))).ToList()) _offsets.Remove(key);
        foreach (var pair in _queuesPerGroup.Keys.Where(match).ToList()) _queuesPerGroup.Remove(pair);
    }

    public void Clear()
    {
        _offsets.Clear();
        _queuesPerGroup.Clear();
    }
}
