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
    // Check-backs an instance left unanswered since its last answer (by channel: a reconnect starts afresh).
    private readonly Dictionary<ICheckBackChannel, int> _unanswered = new(ReferenceEqualityComparer.Instance);
    // Channels in _groups' lists, all groups: changed with them, under _gate; read without it.
    private int _channels;

    /// <summary>Registered channels over all groups (what <see cref="Snapshot"/> lists, counted), kept as channels come and
    /// go: read without copying or locking the registry. Until the small-hours session of 2026-12-08 the dashboard, the
    /// <c>halfmsg_producers_connected</c> gauge and the index sizes copied the whole registry to count it.</summary>
    public int ChannelCount => Volatile.Read(ref _channels);

    /// <summary>An instance that left this many check-backs in a row unanswered is tried after every other live instance.</summary>
    public const int RepeatedlyUnanswered = 2;

    /// <summary>Producer connections one group may register; more are refused (<see cref="RegistrationRefused"/>): they
    /// get no check-backs, the group's registered ones do.</summary>
    public const int MaxChannelsPerGroup = 10_000;

    /// <summary>Raised (outside the registry lock) when a producer joins a group, so pending checks can go out promptly.</summary>
    public event Action<string>? ProducerJoined;

    /// <summary>Raised (outside the registry lock) with the group and client id of a registration refused because the
    /// group already has <see cref="MaxChannelsPerGroup"/> channels.</summary>
    public event Action<string, string>? RegistrationRefused;

    /// <summary>Registrations refused since start because their group was full.</summary>
    public long RefusedRegistrations => Interlocked.Read(ref _refused);
    private long _refused;

    public IDisposable Register(string producerGroup, ICheckBackChannel channel)
    {
        bool refused = false;
        lock (_gate)
        {
            if (!_groups.TryGetValue(producerGroup, out var list)) _groups[producerGroup] = list = new();
            // A reconnecting client id replaces its dead channel. A live one stays: two connections can share a client
            // id (RocketMQ 4 clients name themselves ip@pid, alike in containers on different hosts), and a connection
            // dropped here never learned it and never registered again, so its group lost a live producer for good.
            // (The gRPC front end ends an older stream with the same id before its successor registers.)
            bool Replaced(ICheckBackChannel c) => ReferenceEquals(c, channel) || (c.ClientId == channel.ClientId && !c.IsAlive);
            int first = list.FindIndex(Replaced); // one pass when nothing is replaced (a new connection), as nearly always
            if (first >= 0)
            {
                for (int i = first; i < list.Count; i++)
                    if (Replaced(list[i])) _unanswered.Remove(list[i]);
                _channels -= list.RemoveAll(Replaced);
            }
            if (list.Count >= MaxChannelsPerGroup)
            {
                // The caller keeps and disposes what it gets as usual; the connection just receives no check-backs.
                Interlocked.Increment(ref _refused);
                refused = true;
            }
            else
            {
                list.Add(channel);
                _channels++;
            }
        }
        if (refused)
        {
            RegistrationRefused?.Invoke(producerGroup, channel.ClientId);
            return NotRegistered.Instance;
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
                if (list.Remove(channel)) _channels--;
                if (list.Count == 0)
                {
                    _groups.Remove(producerGroup);
                    _roundRobin.Remove(producerGroup);
                }
            }
            if (_unanswered.ContainsKey(channel) && !_groups.Values.Any(l => l.Contains(channel))) _unanswered.Remove(channel);
        }
    }

    /// <summary>
    /// Live channels of the group in the order to try: the preferred client first (the instance that sent the half),
    /// then the others round-robin; but <paramref name="unansweredClientId"/> (the instance this half's last check went
    /// to, which did not answer it) after the others, so the next attempt goes to another live instance; and an
    /// instance that left <see cref="RepeatedlyUnanswered"/> or more check-backs in a row unanswered after every
    /// instance with a better record (fewest unanswered first). Dead channels are dropped on the way.
    /// </summary>
    public IReadOnlyList<ICheckBackChannel> Candidates(string producerGroup, string? preferredClientId, string? unansweredClientId = null)
    {
        lock (_gate)
        {
            if (!_groups.TryGetValue(producerGroup, out var list)) return [];
            foreach (var dead in list.Where(c => !c.IsAlive)) _unanswered.Remove(dead);
            _channels -= list.RemoveAll(c => !c.IsAlive);
            if (list.Count == 0)
            {
                _groups.Remove(producerGroup);
                _roundRobin.Remove(producerGroup);
                return [];
            }
            _roundRobin.TryGetValue(producerGroup, out var start);
            _roundRobin[producerGroup] = start == int.MaxValue ? 0 : start + 1;
            var ordered = new List<ICheckBackChannel>(list.Count);
            ICheckBackChannel? preferred = null;
            if (preferredClientId is not null)
            {
                // The newest channel of that id: an older one may be a connection that died silently.
                preferred = list.FindLast(c => c.ClientId == preferredClientId);
                if (preferred is not null) ordered.Add(preferred);
            }
            // A channel is in the list once (Register replaces it), so only the preferred one can repeat: O(n), not O(n²).
            for (int i = 0; i < list.Count; i++)
            {
                var c = list[(start + i) % list.Count];
                if (!ReferenceEquals(c, preferred)) ordered.Add(c);
            }
            if (unansweredClientId is null && _unanswered.Count == 0) return ordered; // every instance answers: as above
            // Stable: the order above holds among instances of the same standing.
            return ordered
                .Select((c, i) => (Channel: c, Index: i))
                .OrderBy(x => _unanswered.GetValueOrDefault(x.Channel) is var n && n >= RepeatedlyUnanswered ? n : 0)
                .ThenBy(x => x.Channel.ClientId == unansweredClientId ? 1 : 0)
                .ThenBy(x => x.Index)
                .Select(x => x.Channel)
                .ToList();
        }
    }

    /// <summary>A check-back sent to <paramref name="clientId"/> got no answer before the half was due again. Where
    /// several connections share the id, the record is the newest one's, as it is the one asked first.</summary>
    public void NoteUnanswered(string producerGroup, string clientId)
    {
        lock (_gate)
        {
            if (_groups.TryGetValue(producerGroup, out var list) && list.FindLast(c => c.ClientId == clientId) is { } channel)
                _unanswered[channel] = _unanswered.GetValueOrDefault(channel) + 1;
        }
    }

    /// <summary>A check-back sent to <paramref name="clientId"/> was answered (a decision, or "unknown"): it is a
    /// working check-back channel again. Takes only the registry's own lock.</summary>
    public void NoteAnswered(string producerGroup, string clientId)
    {
        lock (_gate)
        {
            if (_groups.TryGetValue(producerGroup, out var list) && list.FindLast(c => c.ClientId == clientId) is { } channel)
                _unanswered.Remove(channel);
        }
    }

    /// <summary>Check-backs <paramref name="clientId"/> left unanswered since its last answer (diagnostics, tests).</summary>
    public int UnansweredChecks(string producerGroup, string clientId)
    {
        lock (_gate)
            return _groups.TryGetValue(producerGroup, out var list) && list.FindLast(c => c.ClientId == clientId) is { } channel
                ? _unanswered.GetValueOrDefault(channel) : 0;
    }

    public int CountLive(string producerGroup)
    {
        lock (_gate) return _groups.TryGetValue(producerGroup, out var l) ? l.Count(c => c.IsAlive) : 0;
    }

    public IReadOnlyDictionary<string, string[]> Snapshot()
    {
        lock (_gate) return _groups.ToDictionary(g => g.Key, g => g.Value.Select(c => c.ClientId).ToArray());
    }

    /// <summary>A bounded view of the registry for listings (<see cref="Listing(int, int)"/>).</summary>
    /// <param name="Groups">The first groups by name (ordinal), each with the client ids of its first channels (in the
    /// order they registered).</param>
    /// <param name="GroupCount">Groups with a registered channel, all of them.</param>
    /// <param name="ChannelCount">Registered channels over all groups.</param>
    /// <param name="Truncated">Some group, or some channel of a listed group, is not in <paramref name="Groups"/>.</param>
    public sealed record ProducerListing(IReadOnlyDictionary<string, string[]> Groups, int GroupCount, long ChannelCount, bool Truncated);

    /// <summary>
    /// The first <paramref name="maxGroups"/> groups by name, each with at most <paramref name="maxClientIdsPerGroup"/>
    /// client ids, and the totals. <see cref="Snapshot"/> copies every group and channel: a producer registers up to 1,024
    /// groups per connection, each group up to <see cref="MaxChannelsPerGroup"/> channels, so a listing of all of them
    /// (the admin API's <c>/api/stats</c> until the late-night session of 2026-12-07) could run to hundreds of megabytes
    /// (found by review).
    /// </summary>
    public ProducerListing Listing(int maxGroups, int maxClientIdsPerGroup)
    {
        lock (_gate)
        {
            bool truncated = _groups.Count > maxGroups;
            var listed = new Dictionary<string, string[]>(StringComparer.Ordinal);
            foreach (string group in _groups.Keys.Order(StringComparer.Ordinal).Take(maxGroups))
            {
                var list = _groups[group];
                if (list.Count > maxClientIdsPerGroup) truncated = true;
                listed[group] = list.Take(maxClientIdsPerGroup).Select(c => c.ClientId).ToArray();
            }
            return new ProducerListing(listed, _groups.Count, _channels, truncated);
        }
    }

    private sealed class NotRegistered : IDisposable
    {
        public static readonly NotRegistered Instance = new();
        public void Dispose() { }
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
