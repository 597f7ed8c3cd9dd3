namespace HalfMsg.Broker.Core.Delivery;

/// <summary>
/// Owner of the pull (Remoting) consumer groups' committed offsets, per group, topic and queue. Each record sets an
/// explicit value, so replaying one twice changes nothing. Guarded by the engine lock.
/// </summary>
internal sealed class PullOffsets
{
    private readonly Dictionary<(string Group, string Topic, int Queue), long> _offsets = new();
    private readonly Dictionary<(string Group, string Topic), int> _queuesPerGroup = new();

    public IEnumerable<KeyValuePair<(string Group, string Topic, int Queue), long>> All => _offsets;
    public int Count => _offsets.Count;
    /// <summary>Group-topic pairs with at least one committed offset (counted against <see cref="CoreOptions.MaxConsumerGroups"/>).</summary>
    public int GroupTopicCount => _queuesPerGroup.Count;

    public bool Has(string group, string topic) => _queuesPerGroup.ContainsKey((group, topic));
    public bool HasGroup(string group) => _queuesPerGroup.Keys.Any(k => k.Group == group);

    public bool TryGet(string group, string topic, int queue, out long offset) => _offsets.TryGetValue((group, topic, queue), out offset);

    public void Set(string group, string topic, int queue, long offset)
    {
        if (_offsets.TryAdd((group, topic, queue), offset))
            _queuesPerGroup[(group, topic)] = _queuesPerGroup.GetValueOrDefault((group, topic)) + 1;
        else
            _offsets[(group, topic, queue)] = offset;
    }

    /// <summary>Committed offsets on one topic, per group and queue.</summary>
    public IReadOnlyDictionary<string, IReadOnlyDictionary<int, long>> OfTopic(string topic)
        => _offsets.Where(e => e.Key.Topic == topic).GroupBy(e => e.Key.Group)
            .ToDictionary(g => g.Key, g => (IReadOnlyDictionary<int, long>)g.ToDictionary(e => e.Key.Queue, e => e.Value));

    /// <summary>Committed offsets of one group, per topic and queue: one pass over every committed offset.</summary>
    public IReadOnlyDictionary<string, IReadOnlyDictionary<int, long>> OfGroup(string group)
        => _offsets.Where(e => e.Key.Group == group).GroupBy(e => e.Key.Topic)
            .ToDictionary(g => g.Key, g => (IReadOnlyDictionary<int, long>)g.ToDictionary(e => e.Key.Queue, e => e.Value));

    /// <summary>Every group's committed offsets, per group, topic and queue: one pass over every committed offset, where
    /// <see cref="OfGroup"/> for each group made one per group.</summary>
    public Dictionary<string, Dictionary<string, Dictionary<int, long>>> ByGroup()
    {
        var byGroup = new Dictionary<string, Dictionary<string, Dictionary<int, long>>>(StringComparer.Ordinal);
        foreach (var ((group, topic, queue), offset) in _offsets)
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
