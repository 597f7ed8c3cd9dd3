using HalfMsg.Protocol.Remoting;

namespace HalfMsg.Broker.FrontEnds.Remoting;

/// <summary>
/// Consumer groups as Remoting clients announce them in HEART_BEAT (members, subscriptions), and the orderly-consumer
/// queue locks of LOCK_BATCH_MQ. A change of a group's members sends NOTIFY_CONSUMER_IDS_CHANGED to its members, so
/// they rebalance at once instead of at their next 20 s tick.
/// </summary>
internal sealed class RemotingClients(RemotingServer server, TimeProvider? time = null)
{
    /// <summary>RocketMQ's rebalance lock lease (REBALANCE_LOCK_MAX_LIVE_TIME, 60 s).</summary>
    private static readonly TimeSpan LockLease = TimeSpan.FromSeconds(60);
    /// <summary>How often a lock request also drops every ended lock: clients name any group, topic and queue, and
    /// without a sweep the table kept each one until restart.</summary>
    internal static readonly TimeSpan SweepEvery = TimeSpan.FromMinutes(1);

    private readonly TimeProvider _time = time ?? TimeProvider.System;
    private DateTime _nextSweep = DateTime.MinValue;

    private sealed class Member
    {
        public required string ClientId;
        public Dictionary<string, string> Subscriptions = new(StringComparer.Ordinal);
    }

    private readonly object _gate = new();
    private readonly Dictionary<string, Dictionary<RemotingSession, Member>> _groups = new(StringComparer.Ordinal);
    private readonly Dictionary<(string Group, string Topic, int Queue), (string ClientId, DateTime Until)> _locks = new();

    /// <summary>Adds or refreshes a member; returns true when the group's members changed (others were notified). A
    /// closed session is not added: a heartbeat read before its connection closed may still be dispatched after
    /// <see cref="RemoveSession"/> ran, and would otherwise stay in the table for good. The check is made under the
    /// table's lock, which <see cref="RemoveSession"/> takes after the session stops being alive.</summary>
    public bool RegisterConsumer(RemotingSession session, string group, string clientId, Dictionary<string, string> subscriptions)
    {
        bool changed;
        lock (_gate)
        {
            if (!session.IsAlive) return false;
            if (!_groups.TryGetValue(group, out var members)) _groups[group] = members = new();
            changed = !members.TryGetValue(session, out var existing) || existing.ClientId != clientId;
            members[session] = new Member { ClientId = clientId, Subscriptions = subscriptions };
        }
        if (changed) Notify(group);
        return changed;
    }

    public void UnregisterConsumer(RemotingSession session, string group)
    {
        bool removed;
        lock (_gate)
        {
            removed = _groups.TryGetValue(group, out var members) && members.Remove(session);
            if (removed && members!.Count == 0) _groups.Remove(group);
        }
        if (removed) Notify(group);
    }

    public void RemoveSession(RemotingSession session)
    {
        var left = new List<string>();
        lock (_gate)
        {
            foreach (var (group, members) in _groups)
                if (members.Remove(session)) left.Add(group);
            foreach (var g in left)
                if (_groups[g].Count == 0) _groups.Remove(g);
        }
        foreach (var g in left)
        {
            server.Engine.Consumers.Left(g, session.ClientId);
            Notify(g);
        }
    }

    /// <summary>Client ids of the group's live members, sorted (every member must allocate queues from the same list).</summary>
    public List<string> ConsumerIds(string group)
    {
        lock (_gate)
        {
            if (!_groups.TryGetValue(group, out var members)) return [];
            return members.Where(m => m.Key.IsAlive).Select(m => m.Value.ClientId).Distinct().Order(StringComparer.Ordinal).ToList();
        }
    }

    /// <summary>The subscription expression the group registered for a topic, if any member did.</summary>
    public string? Subscription(string group, string topic)
    {
        lock (_gate)
        {
            if (!_groups.TryGetValue(group, out var members)) return null;
            foreach (var m in members.Values)
                if (m.Subscriptions.TryGetValue(topic, out var s)) return s;
            return null;
        }
    }

    public IReadOnlyList<string> Groups()
    {
        lock (_gate) return [.. _groups.Keys];
    }

    private void Notify(string group)
    {
        List<RemotingSession> sessions;
        lock (_gate)
            sessions = _groups.TryGetValue(group, out var members) ? [.. members.Keys] : [];
        foreach (var s in sessions)
        {
            var cmd = RemotingCommand.Request(RequestCode.NotifyConsumerIdsChanged);
            cmd.Flag = RemotingCommand.OnewayFlag;
            cmd.Set("consumerGroup", group);
            s.Enqueue(cmd);
        }
        server.Logger.LogDebug("Consumer group {Group} changed; {Count} members notified", group, sessions.Count);
    }

    // ------------------------------------------------------------ orderly locks

    /// <summary>Locks each queue for <paramref name="clientId"/> unless another live client holds it; returns the queues now held.</summary>
    public List<(string Topic, string BrokerName, int QueueId)> Lock(string group, string clientId, IEnumerable<(string Topic, string BrokerName, int QueueId)> queues)
    {
        var now = _time.GetUtcNow().UtcDateTime;
        var ok = new List<(string, string, int)>();
        lock (_gate)
        {
            if (now >= _nextSweep)
            {
                foreach (var ended in _locks.Where(l => l.Value.Until <= now).Select(l => l.Key).ToList()) _locks.Remove(ended);
                _nextSweep = now + SweepEvery;
            }
            foreach (var q in queues)
            {
                var key = (group, q.Topic, q.QueueId);
                if (_locks.TryGetValue(key, out var held) && held.ClientId != clientId && held.Until > now) continue;
                _locks[key] = (clientId, now + LockLease);
                ok.Add(q);
            }
        }
        return ok;
    }

    /// <summary>Locks in the table, ended ones not yet swept included (tests).</summary>
    internal int LockCount
    {
        get { lock (_gate) return _locks.Count; }
    }

    public void Unlock(string group, string clientId, IEnumerable<(string Topic, string BrokerName, int QueueId)> queues)
    {
        lock (_gate)
        {
            foreach (var q in queues)
            {
                var key = (group, q.Topic, q.QueueId);
                if (_locks.TryGetValue(key, out var held) && held.ClientId == clientId) _locks.Remove(key);
            }
        }
    }
}
