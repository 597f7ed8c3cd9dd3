namespace HalfMsg.Broker.Core.Transactions;

/// <summary>
/// Live producer instances by producer group. Front-ends register a channel when a producer connects
/// (v5: a Telemetry stream with publishing settings) and dispose the registration when it goes away.
/// </summary>
public sealed class ProducerRegistry
{
    private readonly object _gate = new();
    private readonly Dictionary<string, List<ICheckBackChannel>> _groups = new(StringComparer.Ordinal);
    private readonly Dictionary<string, int> _roundRobin = new(StringComparer.Ordinal);

    /// <summary>Raised (outside the registry lock) when a producer joins a group, so pending checks can go out promptly.</summary>
    public event Action<string>? ProducerJoined;

    public IDisposable Register(string producerGroup, ICheckBackChannel channel)
    {
        lock (_gate)
        {
            if (!_groups.TryGetValue(producerGroup, out var list)) _groups[producerGroup] = list = new();
            // A reconnecting client id replaces its dead channel.
            list.RemoveAll(c => c.ClientId == channel.ClientId);
            list.Add(channel);
        }
        ProducerJoined?.Invoke(producerGroup);
        return new Registration(this, producerGroup, channel);
    }

    public void Unregister(string producerGroup, ICheckBackChannel channel)
    {
        lock (_gate)
        {
            if (_groups.TryGetValue(producerGroup, out var list))
            {
                list.Remove(channel);
                if (list.Count == 0) _groups.Remove(producerGroup);
            }
        }
    }

    /// <summary>
    /// Live channels of the group in the order to try: the preferred client first (the instance that sent the half),
    /// then the others round-robin. Dead channels are dropped on the way.
    /// </summary>
    public IReadOnlyList<ICheckBackChannel> Candidates(string producerGroup, string? preferredClientId)
    {
        lock (_gate)
        {
            if (!_groups.TryGetValue(producerGroup, out var list)) return [];
            list.RemoveAll(c => !c.IsAlive);
            if (list.Count == 0) { _groups.Remove(producerGroup); return []; }
            _roundRobin.TryGetValue(producerGroup, out var start);
            _roundRobin[producerGroup] = start + 1;
            var result = new List<ICheckBackChannel>(list.Count);
            if (preferredClientId is not null)
            {
                var preferred = list.Find(c => c.ClientId == preferredClientId);
                if (preferred is not null) result.Add(preferred);
            }
            for (int i = 0; i < list.Count; i++)
            {
                var c = list[(start + i) % list.Count];
                if (!result.Contains(c)) result.Add(c);
            }
            return result;
        }
    }

    public int CountLive(string producerGroup)
    {
        lock (_gate) return _groups.TryGetValue(producerGroup, out var l) ? l.Count(c => c.IsAlive) : 0;
    }

    public IReadOnlyDictionary<string, string[]> Snapshot()
    {
        lock (_gate) return _groups.ToDictionary(g => g.Key, g => g.Value.Select(c => c.ClientId).ToArray());
    }

    private sealed class Registration(ProducerRegistry owner, string group, ICheckBackChannel channel) : IDisposable
    {
        private int _disposed;
        public void Dispose()
        {
            if (Interlocked.Exchange(ref _disposed, 1) == 0) owner.Unregister(group, channel);
        }
    }
}
