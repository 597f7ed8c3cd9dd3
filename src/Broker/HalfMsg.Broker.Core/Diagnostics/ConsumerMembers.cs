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
    /// Which consumer clients a group has, for operators (admin API and dashboard) and for the renewal of push
    /// consumers' leases: the front-ends report every client they see acting for a group (gRPC: heartbeat, receive,
    /// ack; Remoting: HEART_BEAT and pull), with the protocol and the time. A client that leaves (gRPC
    /// NotifyClientTermination, Remoting UNREGISTER_CLIENT or connection closed) is removed; one not seen for
    /// <see cref="ForgetAfter"/> is forgotten. In memory only: after a restart members show up again with their next
    /// heartbeat (10 s for gRPC clients, 30 s for Remoting ones).
    /// </summary>
    /// <remarks>
    /// Bounded whatever clients name: at most <see cref="MaxPerGroup"/> members per group and
    /// <see cref="MaxMembers"/> in all, the least recently seen going first. Every member is in two lists by recency,
    /// its group's and everybody's, so forgetting and evicting take the oldest from the front of a list instead of
    /// looking at every member.
    /// </remarks>
    public sealed class ConsumerMembers(TimeProvider? time = null, int maxMembers = ConsumerMembers.MaxMembers)
    {
        /// <summary>A member not seen for this long is dropped from the list.</summary>
        public static readonly TimeSpan ForgetAfter = TimeSpan.FromMinutes(5);
        /// <summary>At most this many members per group are kept (the most recently seen).</summary>
        public const int MaxPerGroup = 1000;
        /// <summary>At most this many members over all groups are kept (the most recently seen): a client naming a new
        /// group on every heartbeat cannot fill memory within <see cref="ForgetAfter"/>.</summary>
        public const int MaxMembers = 100_000;

        public sealed record Member(string ClientId, string Protocol, DateTimeOffset FirstSeen, DateTimeOffset LastSeen, string? Address);

        private sealed class Entry(string group, Member member)
        {
            public readonly string Group = group;
            public Member Member = member;
            public LinkedListNode<Entry> InGroup = null!;
            public LinkedListNode<Entry> InAll = null!;
        }

        private sealed class GroupTable
        {
            public readonly Dictionary<string, Entry> ById = new(StringComparer.Ordinal);
            /// <summary>The group's members, least recently seen first.</summary>
            public readonly LinkedList<Entry> ByRecency = new();
        }

        private readonly TimeProvider _time = time ?? TimeProvider.System;
        private readonly int _maxMembers = maxMembers > 0 ? maxMembers : throw new ArgumentOutOfRangeException(nameof(maxMembers));
        private readonly object _lock = new();
        private readonly Dictionary<string, GroupTable> _groups = new(StringComparer.Ordinal);
        /// <summary>Every member of every group, least recently seen first.</summary>
        private readonly LinkedList<Entry> _all = new();

        /// <summary>Client ids longer than this are not recorded (RocketMQ's are ip@instance, tens of characters).</summary>
        public const int MaxClientIdLength = 1024;

        /// <summary>Groups and members held now (tests).</summary>
        internal (int Groups, int Members) Size
        {
            get { lock (_lock) return (_groups.Count, _all.Count); }
        }

        /// <summary>Members looked at by the last <see cref="Seen"/> to forget or evict (tests: the oldest are taken from
        /// the front, not searched for).</summary>
        internal int LastSeenExamined { get; private set; }

        /// <summary>
        /// A client acted for a group just now. The front ends call this before the request is validated, so a name no
        /// group can have (the engine's rule, 255 characters) is not recorded, members not seen within
        /// <see cref="ForgetAfter"/> are forgotten on the next call, and past <see cref="MaxMembers"/> the least recently
        /// seen member goes: a client naming a new group on every call does not fill memory.
        /// </summary>
        public void Seen(string group, string clientId, string protocol, string? address = null)
        {
            if (!BrokerEngine.IsValidName(group, 255) || string.IsNullOrEmpty(clientId) || clientId.Length > MaxClientIdLength) return;
            var now = _time.GetUtcNow();
            lock (_lock)
            {
                int examined = ForgetStaleLocked(now - ForgetAfter);
                if (!_groups.TryGetValue(group, out var table)) _groups[group] = table = new GroupTable();
                if (table.ById.TryGetValue(clientId, out var entry))
                {
                    entry.Member = entry.Member with { LastSeen = now, Protocol = protocol, Address = address ?? entry.Member.Address };
                    table.ByRecency.Remove(entry.InGroup);
                    table.ByRecency.AddLast(entry.InGroup);
                    _all.Remove(entry.InAll);
                    _all.AddLast(entry.InAll);
                }
                else
                {
                    entry = new Entry(group, new Member(clientId, protocol, now, now, address));
                    entry.InGroup = table.ByRecency.AddLast(entry);
                    entry.InAll = _all.AddLast(entry);
                    table.ById[clientId] = entry;
                    if (table.ById.Count > MaxPerGroup) { RemoveLocked(table.ByRecency.First!.Value); examined++; }
                    if (_all.Count > _maxMembers) { RemoveLocked(_all.First!.Value); examined++; }
                }

                LastSeenExamined = examined;
            }
        }

        /// <summary>Forgets the members last seen before <paramref name="cutoff"/>; returns how many it looked at.</summary>
        private int ForgetStaleLocked(DateTimeOffset cutoff)
        {
            int examined = 0;
            while (_all.First is { } oldest)
            {
                examined++;
                if (oldest.Value.Member.LastSeen >= cutoff) break;
                RemoveLocked(oldest.Value);
            }

            return examined;
        }

        private void RemoveLocked(Entry entry)
        {
            GroupTable table = _groups[entry.Group];
            table.ById.Remove(entry.Member.ClientId);
            table.ByRecency.Remove(entry.InGroup);
            _all.Remove(entry.InAll);
            if (table.ById.Count == 0) _groups.Remove(entry.Group);
        }

        /// <summary>Groups looked at by the last <see cref="Left"/> (tests: a named group is found, not searched for).</summary>
        internal int LastLeftExamined { get; private set; }

        /// <summary>The client left the group (or, with a null group, every group whose name starts with
        /// <paramref name="groupPrefix"/>, every group when that is null). True when it was a member of any.</summary>
        public bool Left(string? group, string clientId, string? groupPrefix = null)
        {
            lock (_lock)
            {
                if (group is not null)
                {
                    LastLeftExamined = 1;
                    if (!_groups.TryGetValue(group, out var table) || !table.ById.TryGetValue(clientId, out var entry)) return false;
                    RemoveLocked(entry);
                    return true;
                }

                LastLeftExamined = _groups.Count;
                List<Entry>? leaving = null;
                foreach (var (name, table) in _groups)
                {
                    if (groupPrefix is not null && !name.StartsWith(groupPrefix, StringComparison.Ordinal)) continue;
                    if (table.ById.TryGetValue(clientId, out var entry)) (leaving ??= []).Add(entry);
                }

                if (leaving is null) return false;
                foreach (var entry in leaving) RemoveLocked(entry);
                return true;
            }
        }

        /// <summary>True when the client acted for the group (heartbeat, receive, ack) within <paramref name="within"/> and has not left.</summary>
        public bool IsActive(string group, string clientId, TimeSpan within)
        {
            var cutoff = _time.GetUtcNow() - within;
            lock (_lock)
            {
                return _groups.TryGetValue(group, out var table) && table.ById.TryGetValue(clientId, out var entry) && entry.Member.LastSeen >= cutoff;
            }
        }

        /// <summary>The groups with a member seen within <see cref="ForgetAfter"/>, but those <paramref name="skip"/>
        /// names, in ordinal order: at most <paramref name="max"/> of them, and how many there are in all.</summary>
        public (IReadOnlyList<string> Groups, int Total) GroupsWithMembers(int max, Func<string, bool>? skip = null)
        {
            var cutoff = _time.GetUtcNow() - ForgetAfter;
            lock (_lock)
            {
                ForgetStaleLocked(cutoff);
                var kept = _groups.Keys.Where(g => skip is null || !skip(g)).ToList();
                return (kept.Order(StringComparer.Ordinal).Take(max).ToList(), kept.Count);
            }
        }

        /// <summary>The group's members seen within <see cref="ForgetAfter"/>, most recently seen first.</summary>
        public IReadOnlyList<Member> Of(string group)
        {
            var cutoff = _time.GetUtcNow() - ForgetAfter;
            lock (_lock)
            {
                ForgetStaleLocked(cutoff);
                if (!_groups.TryGetValue(group, out var table)) return [];
                return table.ById.Values.Select(e => e.Member).OrderByDescending(m => m.LastSeen).ThenBy(m => m.ClientId, StringComparer.Ordinal).ToList();
            }
        }
    }
}
