using HalfMsg.Broker.Core.Diagnostics;

namespace HalfMsg.Broker.Core
{
    public sealed partial class BrokerEngine
    {
        /// <summary>The consumer clients of each group, as the front-ends see them (see <see cref="ConsumerMembers"/>).</summary>
        public ConsumerMembers Consumers { get; }
    }
}

namespace HalfMsg.Broker.Core.Diagnostics
{
    /// <summary>
    /// Which consumer clients a group has, for operators (admin API and dashboard): the front-ends report every client
    /// they see acting for a group (gRPC: heartbeat, receive, ack; Remoting: HEART_BEAT and pull), with the protocol
    /// and the time. A client that leaves (gRPC NotifyClientTermination, Remoting UNREGISTER_CLIENT or connection
    /// closed) is removed; one not seen for <see cref="ForgetAfter"/> is forgotten. In memory only: after a restart
    /// members show up again with their next heartbeat (10 s for gRPC clients, 30 s for Remoting ones).
    /// </summary>
    public sealed class ConsumerMembers(TimeProvider? time = null)
    {
        /// <summary>A member not seen for this long is dropped from the list.</summary>
        public static readonly TimeSpan ForgetAfter = TimeSpan.FromMinutes(5);
        /// <summary>At most this many members per group are kept (the most recently seen).</summary>
        public const int MaxPerGroup = 1000;

        public sealed record Member(string ClientId, string Protocol, DateTimeOffset FirstSeen, DateTimeOffset LastSeen, string? Address);

        private readonly TimeProvider _time = time ?? TimeProvider.System;
        private readonly object _lock = new();
        private readonly Dictionary<string, Dictionary<string, Member>> _groups = new(StringComparer.Ordinal);

        /// <summary>Client ids longer than this are not recorded (RocketMQ's are ip@instance, tens of characters).</summary>
        public const int MaxClientIdLength = 1024;
        /// <summary>How often <see cref="Seen"/> also forgets the members of every group not seen within
        /// <see cref="ForgetAfter"/> (a look-up forgets its own group's at once).</summary>
        public static readonly TimeSpan SweepEvery = TimeSpan.FromMinutes(1);

        private DateTimeOffset _nextSweep = DateTimeOffset.MinValue;

        /// <summary>Groups and members held now (tests).</summary>
        internal (int Groups, int Members) Size
        {
            get { lock (_lock) return (_groups.Count, _groups.Values.Sum(m => m.Count)); }
        }

        /// <summary>
        /// A client acted for a group just now. The front ends call this before the request is validated, so a name no
        /// group can have (the engine's rule, 255 characters) is not recorded, and members of groups nobody looks up are
        /// forgotten by a sweep: a client naming a new group on every call does not fill memory for good.
        /// </summary>
        public void Seen(string group, string clientId, string protocol, string? address = null)
        {
            if (!BrokerEngine.IsValidName(group, 255) || string.IsNullOrEmpty(clientId) || clientId.Length > MaxClientIdLength) return;
            var now = _time.GetUtcNow();
            lock (_lock)
            {
                if (now >= _nextSweep)
                {
                    ForgetStaleLocked(now - ForgetAfter);
                    _nextSweep = now + SweepEvery;
                }
                if (!_groups.TryGetValue(group, out var members)) _groups[group] = members = new(StringComparer.Ordinal);
                members[clientId] = members.TryGetValue(clientId, out var known)
                    ? known with { LastSeen = now, Protocol = protocol, Address = address ?? known.Address }
                    : new Member(clientId, protocol, now, now, address);
                if (members.Count > MaxPerGroup)
                    members.Remove(members.Values.MinBy(m => m.LastSeen)!.ClientId);
            }
        }

        private void ForgetStaleLocked(DateTimeOffset cutoff)
        {
            foreach (var (name, members) in _groups.ToList())
            {
                foreach (var stale in members.Values.Where(m => m.LastSeen < cutoff).ToList()) members.Remove(stale.ClientId);
                if (members.Count == 0) _groups.Remove(name);
            }
        }

        /// <summary>Groups looked at by the last <see cref="Left"/> (tests: a named group is found, not searched for).</summary>
        internal int LastLeftExamined { get; private set; }

        /// <summary>The client left the group (or, with a null group, every group). True when it was a member of any.</summary>
        public bool Left(string? group, string clientId)
        {
            lock (_lock)
            {
                if (group is not null)
                {
                    LastLeftExamined = 1;
                    if (!_groups.TryGetValue(group, out var members) || !members.Remove(clientId)) return false;
                    if (members.Count == 0) _groups.Remove(group);
                    return true;
                }
                bool was = false;
                List<string>? emptied = null;
                foreach (var (name, members) in _groups)
                {
                    was |= members.Remove(clientId);
                    if (members.Count == 0) (emptied ??= []).Add(name);
                }
                LastLeftExamined = _groups.Count;
                if (emptied is not null) foreach (var name in emptied) _groups.Remove(name);
                return was;
            }
        }

        /// <summary>True when the client acted for the group (heartbeat, receive, ack) within <paramref name="within"/> and has not left.</summary>
        public bool IsActive(string group, string clientId, TimeSpan within)
        {
            var cutoff = _time.GetUtcNow() - within;
            lock (_lock)
            {
                return _groups.TryGetValue(group, out var members) && members.TryGetValue(clientId, out var member) && member.LastSeen >= cutoff;
            }
        }

        /// <summary>The group's members seen within <see cref="ForgetAfter"/>, most recently seen first.</summary>
        public IReadOnlyList<Member> Of(string group)
        {
            var cutoff = _time.GetUtcNow() - ForgetAfter;
            lock (_lock)
            {
                if (!_groups.TryGetValue(group, out var members)) return [];
                foreach (var stale in members.Values.Where(m => m.LastSeen < cutoff).ToList()) members.Remove(stale.ClientId);
                return members.Values.OrderByDescending(m => m.LastSeen).ThenBy(m => m.ClientId, StringComparer.Ordinal).ToList();
            }
        }
    }
}
