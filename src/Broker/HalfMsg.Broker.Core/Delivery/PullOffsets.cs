namespace HalfMsg.Broker.Core.Delivery;

/// <summary>
/// Owner of the pull (Remoting) consumer groups' committed offsets, per group, topic and queue. Each record sets an
/// explicit value, so replaying one twice changes nothing. Guarded by the engine lock.
/// </summary>
internal sealed class PullOffsets
{
    private readonly Dictionary<(string Group, string Topic, int Queue), long> _offsets = new();

    public IEnumerable<KeyValuePair<(string Group, string Topic, int Queue), long>> All => _offsets;
    public int Count => _offsets.Count;

    public bool TryGet(string group, string topic, int queue, out long offset) => _offsets.TryGetValue((group, topic, queue), out offset);

    public void Set(string group, string topic, int queue, long offset) => _offsets[(group, topic, queue)] = offset;

    /// <summary>Committed offsets on one topic, per group and queue.</summary>
    public IReadOnlyDictionary<string, IReadOnlyDictionary<int, long>> OfTopic(string topic)
        => _offsets.Where(e => e.Key.Topic == topic).GroupBy(e => e.Key.Group)
            .ToDictionary(g => g.Key, g => (IReadOnlyDictionary<int, long>)g.ToDictionary(e => e.Key.Queue, e => e.Value));

    public void RemoveTopic(string topic)
    {
        foreach (var key in _offsets.Keys.Where(k => k.Topic == topic).ToList()) _offsets.Remove(key);
    }

    public void Clear() => _offsets.Clear();
}
