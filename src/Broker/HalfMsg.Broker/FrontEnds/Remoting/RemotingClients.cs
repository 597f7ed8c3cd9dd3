using HalfMsg.Protocol.Remoting;

namespace HalfMsg.Broker.FrontEnds.Remoting;

/// <summary>A topic's subscription as a heartbeat announces it: the expression (<c>subString</c>), its
/// <c>expressionType</c> (TAG, SQL92; null when the client sent none, which is TAG) and its <c>subVersion</c> (the
/// client's time when it made the subscription; 0 when the client sent none).</summary>
internal readonly record struct SubscriptionData(string Expression, string? ExpressionType = null, long SubVersion = 0);

/// <summary>
/// Consumer groups as Remoting clients announce them in HEART_BEAT (members, subscriptions), and the orderly-consumer
/// queue locks of LOCK_BATCH_MQ. A change of a group's members sends NOTIFY_CONSUMER_IDS_CHANGED to its members, so
/// they rebalance at once instead of at their next 20 s tick. A membership ends with its connection, or
/// <see cref="RemotingOptions.ConsumerExpiry"/> after the last heartbeat that named the group, as Java's broker drops a
/// group's channel (ConsumerManager.scanNotActiveChannel, 120 s).
/// </summary>
internal sealed class RemotingClients(RemotingServer server, TimeProvider? time = null, int? maxLocksPerOwner = null)
{
    /// <summary>Consumer groups one connection is a member of, at most (as <see cref="RemotingSession.MaxProducerGroups"/>):
    /// each is held for the connection's life and costs a NOTIFY to the group's members.</summary>
    public const int MaxConsumerGroupsPerSession = RemotingSession.MaxProducerGroups;
    /// <summary>Subscriptions of one group as one member announces them, at most (a consumer subscribes a few topics,
    /// plus its group's retry topic).</summary>
    public const int MaxSubscriptionsPerGroup = 256;
    /// <summary>
    /// Characters of a client id the Remoting front end keeps, at most (a HEART_BEAT's <c>clientID</c>, a LOCK_BATCH_MQ's
    /// <c>clientId</c>): RocketMQ's are ip@instance, tens of characters, and the consumer list keeps no longer one
    /// (<see cref="Core.Diagnostics.ConsumerMembers.MaxClientIdLength"/>). Until the late-night session of 2026-12-07 any
    /// length a 16 MiB frame holds was kept: a connection's id for its life (on each of its halves too), and a lock's for
    /// its lease, each lock request its own string, so one connection's 4,096 locks could hold gigabytes (found by review).
    /// </summary>
    public const int MaxClientIdLength = Core.Diagnostics.ConsumerMembers.MaxClientIdLength;

    /// <summary>The refusal of a client id longer than <see cref="MaxClientIdLength"/>, or null.</summary>
    public static string? ClientIdRefusal(string field, string? clientId)
        => clientId is { Length: > MaxClientIdLength }
            ? $"{field} is {clientId.Length} characters long, more than the {MaxClientIdLength} this broker keeps (RocketMQ's client ids are ip@instance, tens of characters)"
            : null;

    /// <summary>Characters of one group's subscriptions (topics and expressions together), at most.</summary>
    public const int MaxSubscriptionCharsPerGroup = 64 * 1024;
    /// <summary>
    /// Characters of the subscriptions of all the consumer groups one connection is a member of, at most (1 Mi, 2 MiB
    /// held): a Java process's consumers share one connection, and 64 groups of SQL92 selectors of the longest kind
    /// (16,384 characters) fit. Until the late-night session of 2026-12-07 only each group's were bounded, so a connection
    /// naming its 1,024 groups' subscriptions of 64 Ki characters each, over a few heartbeats, held 128 MiB for as long as
    /// its heartbeats renewed them (found by review).
    /// </summary>
    public const int MaxSubscriptionCharsPerConnection = 1024 * 1024;
    /// <summary>The lock table is swept of ended locks whenever it reaches this size (and twice its size after the last
    /// sweep), not only every <see cref="SweepEvery"/>.</summary>
    internal const int MinLockSweepSize = 4096;

    /// <summary>RocketMQ's rebalance lock lease (REBALANCE_LOCK_MAX_LIVE_TIME, 60 s).</summary>
    private static readonly TimeSpan LockLease = TimeSpan.FromSeconds(60);
    /// <summary>How often a lock request also drops every ended lock: clients name any group, topic and queue, and
    /// without a sweep the table kept each one until restart.</summary>
    internal static readonly TimeSpan SweepEvery = TimeSpan.FromMinutes(1);

    /// <summary>How often heartbeats also sweep the memberships no heartbeat renewed within the expiry (Java scans
    /// every 10 s); reads leave out expired members whether swept or not.</summary>
    internal static readonly TimeSpan MemberSweepEvery = TimeSpan.FromSeconds(10);

    // The server's clock is set after the server builds this table (its Time is an init property): read it when used.
    private TimeProvider Time => time ?? server?.Time ?? TimeProvider.System;
    private TimeSpan ConsumerExpiry => server?.Options.ConsumerExpiry ?? RemotingOptions.DefaultConsumerExpiry;
    private DateTime _nextSweep = DateTime.MinValue;
    private DateTime _nextMemberSweep = DateTime.MinValue;

    private sealed class Member
    {
        public required string ClientId;
        public Dictionary<string, SubscriptionData> Subscriptions = new(StringComparer.Ordinal);
        /// <summary>Characters of <see cref="Subscriptions"/> (<see cref="CharsOf"/>), counted in the connection's total.</summary>
        public long Chars;
        /// <summary>When a heartbeat last named the group on this connection.</summary>
        public DateTime LastSeen;
    }

    private bool Live(RemotingSession session, Member m, DateTime now) => session.IsAlive && now - m.LastSeen < ConsumerExpiry;

    private readonly object _gate = new();
    private readonly Dictionary<string, Dictionary<RemotingSession, Member>> _groups = new(StringComparer.Ordinal);
    /// <summary>The groups each session is a member of (the per-connection cap; RemoveSession visits only these).</summary>
    private readonly Dictionary<RemotingSession, HashSet<string>> _sessionGroups = new();
    /// <summary>Characters of the subscriptions of each session's memberships (<see cref="MaxSubscriptionCharsPerConnection"/>).</summary>
    private readonly Dictionary<RemotingSession, long> _sessionChars = new();
    private readonly GrpcV5.LogRateLimiter _refusedLog = new(1, TimeProvider.System);
    private readonly GrpcV5.LogRateLimiter _lockRefusedLog = new(1, TimeProvider.System);

    private sealed record LockEntry(string ClientId, DateTime Until, object Owner);
    private readonly Dictionary<(string Group, string Topic, int Queue), LockEntry> _locks = new();
    /// <summary>The locks each owner (the connection that took them) holds, ended ones not yet swept included.</summary>
    private readonly Dictionary<object, HashSet<(string Group, string Topic, int Queue)>> _lockOwners = new();
    private int _sweepAtCount = MinLockSweepSize;
    private int MaxLocksPerOwner => maxLocksPerOwner ?? server?.Options.MaxQueueLocksPerConnection ?? 4096;

    /// <summary>1-255 characters of [A-Za-z0-9_-%|.]: the names the core accepts for a group (a Java client checks
    /// ^[%|a-zA-Z0-9_-]+$, at most 255, before it sends one).</summary>
    public static bool IsValidGroupName(string? group)
    {
        if (string.IsNullOrEmpty(group) || group.Length > 255) return false;
        foreach (var c in group)
            if (!(char.IsAsciiLetterOrDigit(c) || c is '_' or '-' or '%' or '|' or '.')) return false;
        return true;
    }

    /// <summary>Why a heartbeat's entry for <paramref name="group"/> is not registered, or null when it is accepted. A
    /// caller with more than <see cref="MaxSubscriptionsPerGroup"/> subscriptions may pass the first one over.</summary>
    public string? Refusal(RemotingSession session, string group, IReadOnlyDictionary<string, SubscriptionData> subscriptions)
    {
        if (!IsValidGroupName(group)) return $"consumer group name '{Clip(group)}' is not valid (1-255 characters of [A-Za-z0-9_-%|.])";
        if (subscriptions.Count > MaxSubscriptionsPerGroup) return $"consumer group {group} names more than {MaxSubscriptionsPerGroup} subscriptions";
        long chars = CharsOf(subscriptions);
        if (chars > MaxSubscriptionCharsPerGroup) return $"consumer group {group}'s subscriptions are longer than {MaxSubscriptionCharsPerGroup} characters";
        lock (_gate)
        {
            if (_sessionGroups.TryGetValue(session, out var mine) && mine.Count >= MaxConsumerGroupsPerSession && !mine.Contains(group))
                return $"the connection is already a member of {MaxConsumerGroupsPerSession} consumer groups";
            if (!FitsConnectionLocked(session, group, chars))
                return $"the subscriptions of the connection's consumer groups would be longer than {MaxSubscriptionCharsPerConnection} characters with consumer group {group}'s";
        }
        return null;
    }

    /// <summary>Characters of a group's subscriptions: topics, expressions and their types.</summary>
    private static long CharsOf(IReadOnlyDictionary<string, SubscriptionData> subscriptions)
    {
        long chars = 0;
        foreach (var (topic, subscription) in subscriptions) chars += topic.Length + subscription.Expression.Length + (subscription.ExpressionType?.Length ?? 0);
        return chars;
    }

    /// <summary>Whether the session's subscriptions stay within <see cref="MaxSubscriptionCharsPerConnection"/> with
    /// <paramref name="chars"/> for <paramref name="group"/> (in place of what its membership holds now). Caller holds the lock.</summary>
    private bool FitsConnectionLocked(RemotingSession session, string group, long chars)
    {
        long held = _sessionChars.GetValueOrDefault(session);
        if (_groups.TryGetValue(group, out var members) && members.TryGetValue(session, out var existing)) held -= existing.Chars;
        return held + chars <= MaxSubscriptionCharsPerConnection;
    }

    /// <summary>Characters of subscriptions the session's memberships hold (tests).</summary>
    internal long SubscriptionCharsOf(RemotingSession session)
    {
        lock (_gate) return _sessionChars.GetValueOrDefault(session);
    }

    private static string Clip(string s) => s.Length <= 64 ? s : s[..64] + "...";

    /// <summary>Logs the consumer groups a heartbeat named that were not registered (at most once a minute).</summary>
    public void LogRefused(RemotingSession session, int count, string firstReason)
    {
        if (_refusedLog.TryEnter(out long suppressed))
            server.Logger.LogWarning("Heartbeat of {Client} from {Remote}: {Count} consumer groups not registered, e.g. {Reason} ({Suppressed} such lines left out since the last one)",
                session.ClientId, session.RemoteEndPoint, count, firstReason, suppressed);
    }

    /// <summary>Adds or refreshes a member; returns true when the group's members changed (others were notified). A
    /// closed session is not added: a heartbeat read before its connection closed may still be dispatched after
    /// <see cref="RemoveSession"/> ran, and would otherwise stay in the table for good. The check is made under the
    /// table's lock, which <see cref="RemoveSession"/> takes after the session stops being alive.</summary>
    public bool RegisterConsumer(RemotingSession session, string group, string clientId, Dictionary<string, SubscriptionData> subscriptions)
    {
        bool changed;
        var now = Time.GetUtcNow().UtcDateTime;
        lock (_gate)
        {
            if (!session.IsAlive) return false;
            long chars = CharsOf(subscriptions);
            if (!_sessionGroups.TryGetValue(session, out var mine)) _sessionGroups[session] = mine = new(StringComparer.Ordinal);
            // The caps are checked again here (Refusal checked them before): two heartbeats of one connection may be served at once.
            if ((!mine.Contains(group) && (mine.Count >= MaxConsumerGroupsPerSession || !IsValidGroupName(group))) || !FitsConnectionLocked(session, group, chars))
            {
                if (mine.Count == 0) _sessionGroups.Remove(session);
                return false;
            }
            mine.Add(group);
            if (!_groups.TryGetValue(group, out var members)) _groups[group] = members = new();
            changed = !members.TryGetValue(session, out var existing) || existing.ClientId != clientId || !Live(session, existing, now);
            _sessionChars[session] = _sessionChars.GetValueOrDefault(session) - (existing?.Chars ?? 0) + chars;
            members[session] = new Member { ClientId = clientId, Subscriptions = subscriptions, LastSeen = now, Chars = chars };
        }
        if (changed) Notify(group);
        SweepExpiredMembers(now);
        return changed;
    }

    public void UnregisterConsumer(RemotingSession session, string group)
    {
        bool removed;
        lock (_gate)
        {
            Member? member = null;
            removed = _groups.TryGetValue(group, out var members) && members.Remove(session, out member);
            if (removed && members!.Count == 0) _groups.Remove(group);
            if (removed) ForgetMembership(session, group, member!);
        }
        if (removed) Notify(group);
    }

    public void RemoveSession(RemotingSession session)
    {
        var left = new List<string>();
        lock (_gate)
        {
            _sessionChars.Remove(session);
            if (!_sessionGroups.Remove(session, out var mine)) return;
            foreach (var group in mine)
                if (_groups.TryGetValue(group, out var members) && members.Remove(session))
                {
                    left.Add(group);
                    if (members.Count == 0) _groups.Remove(group);
                }
        }
        foreach (var g in left)
        {
            server.Engine.Consumers.Left(g, session.ClientId);
            Notify(g);
        }
    }

    /// <summary>Caller holds the lock.</summary>
    private void ForgetMembership(RemotingSession session, string group, Member member)
    {
        if (_sessionChars.TryGetValue(session, out long chars))
        {
            if (chars - member.Chars > 0) _sessionChars[session] = chars - member.Chars;
            else _sessionChars.Remove(session);
        }
        if (_sessionGroups.TryGetValue(session, out var mine) && mine.Remove(group) && mine.Count == 0) _sessionGroups.Remove(session);
    }

    /// <summary>Client ids of the group's live members, sorted (every member must allocate queues from the same list).</summary>
    public List<string> ConsumerIds(string group)
    {
        var now = Time.GetUtcNow().UtcDateTime;
        lock (_gate)
        {
            if (!_groups.TryGetValue(group, out var members)) return [];
            return members.Where(m => Live(m.Key, m.Value, now)).Select(m => m.Value.ClientId).Distinct().Order(StringComparer.Ordinal).ToList();
        }
    }

    /// <summary>Ends the memberships no heartbeat renewed within the expiry (at most every <see cref="MemberSweepEvery"/>);
    /// the groups' other members are notified, and the client leaves the group unless it is still in it another way.</summary>
    private void SweepExpiredMembers(DateTime now)
    {
        var ended = new List<(string Group, string ClientId)>();
        lock (_gate)
        {
            if (now < _nextMemberSweep) return;
            _nextMemberSweep = now + (ConsumerExpiry < MemberSweepEvery ? ConsumerExpiry : MemberSweepEvery);
            var emptied = new List<string>();
            foreach (var (group, members) in _groups)
            {
                foreach (var (session, m) in members.Where(m => m.Key.IsAlive && now - m.Value.LastSeen >= ConsumerExpiry).ToList())
                {
                    members.Remove(session);
                    ForgetMembership(session, group, m);
                    ended.Add((group, m.ClientId));
                }
                if (members.Count == 0) emptied.Add(group);
            }
            foreach (var g in emptied) _groups.Remove(g);
        }
        foreach (var (group, clientId) in ended)
        {
            server.Logger.LogDebug("Consumer {Client} left group {Group}: no heartbeat named the group for {Expiry}", clientId, group, ConsumerExpiry);
            if (!ConsumerIds(group).Contains(clientId)) server.Engine.Consumers.Left(group, clientId);
        }
        foreach (var group in ended.Select(e => e.Group).Distinct()) Notify(group);
    }

    /// <summary>
    /// The subscription (expression and its type) the group registered for a topic, if any live member did: the newest
    /// (highest subVersion) of the members', as Apache's ConsumerGroupInfo keeps it. During a rolling change of a
    /// group's selector its members announce different ones; until 2026-12-06 the first member's in the table's order
    /// filtered every pull, and new instances got messages their SQL92 selector excludes (found by review).
    /// </summary>
    public SubscriptionData? Subscription(string group, string topic)
    {
        lock (_gate)
        {
            if (!_groups.TryGetValue(group, out var members)) return null;
            var now = Time.GetUtcNow().UtcDateTime;
            SubscriptionData? newest = null;
            foreach (var (session, m) in members)
                if (Live(session, m, now) && m.Subscriptions.TryGetValue(topic, out var s) && (newest is null || s.SubVersion > newest.Value.SubVersion))
                    newest = s;
            return newest;
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

    /// <summary>
    /// Locks each queue for <paramref name="clientId"/> unless another live client holds it; returns the queues now held.
    /// The caller names only existing queues. <paramref name="owner"/> (the connection; the client id when null) holds
    /// at most <see cref="RemotingOptions.MaxQueueLocksPerConnection"/> locks: past it a queue is not locked, until
    /// its own locks end or are released.
    /// </summary>
    public List<(string Topic, string BrokerName, int QueueId)> Lock(string group, string clientId, IEnumerable<(string Topic, string BrokerName, int QueueId)> queues, object? owner = null)
    {
        owner ??= clientId;
        var now = Time.GetUtcNow().UtcDateTime;
        var ok = new List<(string, string, int)>();
        int overCap = 0;
        lock (_gate)
        {
            if (now >= _nextSweep || _locks.Count >= _sweepAtCount)
            {
                foreach (var ended in _locks.Where(l => l.Value.Until <= now).Select(l => l.Key).ToList()) RemoveLock(ended);
                _nextSweep = now + SweepEvery;
                _sweepAtCount = Math.Max(MinLockSweepSize, 2 * _locks.Count);
            }
            foreach (var q in queues)
            {
                var key = (group, q.Topic, q.QueueId);
                bool held = _locks.TryGetValue(key, out var entry);
                if (held && entry!.ClientId != clientId && entry.Until > now) continue;
                if (!held || !Equals(entry!.Owner, owner))
                {
                    if (!_lockOwners.TryGetValue(owner, out var mine)) _lockOwners[owner] = mine = [];
                    if (mine.Count >= MaxLocksPerOwner)
                        foreach (var ended in mine.Where(k => _locks[k].Until <= now).ToList()) RemoveLock(ended);
                    if (mine.Count >= MaxLocksPerOwner)
                    {
                        overCap++;
                        continue;
                    }
                    if (held) RemoveLock(key);
                    mine.Add(key);
                }
                _locks[key] = new LockEntry(clientId, now + LockLease, owner);
                ok.Add(q);
            }
        }
        if (overCap > 0 && server is not null && _lockRefusedLog.TryEnter(out long suppressed))
            server.Logger.LogWarning("Queue locks of group {Group} for {Client}: {Count} queues left unlocked, the connection holds {Max} locks already (--remoting-max-queue-locks; {Suppressed} such lines left out since the last one)",
                group, clientId, overCap, MaxLocksPerOwner, suppressed);
        return ok;
    }

    /// <summary>Caller holds the lock.</summary>
    private void RemoveLock((string Group, string Topic, int Queue) key)
    {
        if (!_locks.Remove(key, out var entry)) return;
        if (_lockOwners.TryGetValue(entry.Owner, out var mine) && mine.Remove(key) && mine.Count == 0) _lockOwners.Remove(entry.Owner);
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
                if (_locks.TryGetValue(key, out var held) && held.ClientId == clientId) RemoveLock(key);
            }
        }
    }
}
