namespace HalfMsg.Broker.Core.Delivery;

/// <summary>
/// Owner of the in-flight deliveries: each consumer group's progress on each topic (offsets handed out, finished
/// offsets, leases in flight, redeliveries waiting) and the due-time heap of lease expiries. Guarded by the engine lock;
/// changed only through the engine's record appliers.
/// </summary>
/// <remarks>
/// The lease heap uses lazy deletion like the half index: a lease is enqueued again whenever it is renewed, and an
/// entry whose lease id no longer matches the live lease (acked, renewed, dead-lettered, group deleted) is skipped when
/// it surfaces. Lease ids are unique across restarts (a run's first has a random high half) and only grow within a run.
/// </remarks>
internal sealed class ConsumerGroups
{
    private readonly Dictionary<(string Group, string Topic), GroupTopicState> _byKey = new();
    // The same by group name: a group's topics are found without a walk of every group of every topic (a /metrics
    // scrape asked for each group's, so a scrape cost the square of the groups: up to 10,000, --max-consumer-groups).
    private readonly Dictionary<string, List<GroupTopicState>> _byGroup = new(StringComparer.Ordinal);
    private readonly PriorityQueue<(GroupTopicState Group, int Queue, long Offset, long LeaseId), long> _leaseDue = new();
    private readonly List<((GroupTopicState Group, int Queue, long Offset, long LeaseId), long)> _live = [];
    private int _compactAbove = CompactionSlack;

    /// <summary>Entries the lease heap may hold beyond twice the live leases before it is rebuilt from them.</summary>
    internal const int CompactionSlack = 4096;
    // The high half of the run's first lease id, at random: ids of different runs do not meet (a handle of a lease
    // issued before a crash but never made durable matches no lease of the next run). Drawn below int.MaxValue by
    // 2^20 so the count below can carry into it for 2^52 leases without the id turning negative.
    private readonly int _incarnation = Random.Shared.Next(1, int.MaxValue - (1 << 20));
    // Leases taken in this run. 64 bits: until 2026-12-07 it was 32, or-ed into the low half, and after 2^32 leases in
    // one run (two days at 25,000 deliveries a second) it wrapped to 0: the run handed out its first ids again (a
    // handle whose lease had ended matched a new lease of the same message) and ids stopped ordering leases as they
    // were taken (a re-drive's continuation). Found by review.
    private long _leaseSeq;

    /// <summary>The engine's sweeper, told of each lease's end (none in tests that build this alone).</summary>
    internal SweepAlarm? Alarm;

    /// <summary>When the earliest lease in the heap ends (it may be stale), or <see cref="long.MaxValue"/>.</summary>
    public long NextLeaseDueMs => _leaseDue.TryPeek(out _, out long due) ? due : long.MaxValue;

    public int Count => _byKey.Count;
    /// <summary>Of <see cref="Count"/>, the re-drive cursors' (<see cref="BrokerEngine.IsInternalGroup"/>): the broker's
    /// own, not counted toward <see cref="CoreOptions.MaxConsumerGroups"/>.</summary>
    public int InternalCount { get; private set; }
    /// <summary>Entries in the lease-expiry heap, stale ones included (soak statistics: must stay bounded).</summary>
    public int LeaseDueCount => _leaseDue.Count;
    public Dictionary<(string Group, string Topic), GroupTopicState>.ValueCollection Values => _byKey.Values;
    public Dictionary<(string Group, string Topic), GroupTopicState>.KeyCollection Keys => _byKey.Keys;
    public bool TryGetValue((string Group, string Topic) key, out GroupTopicState group) => _byKey.TryGetValue(key, out group!);
    public bool ContainsKey((string Group, string Topic) key) => _byKey.ContainsKey(key);

    /// <summary>The group's state on each topic it receives from (empty when unknown). Not a copy: changes with the group.</summary>
    public IReadOnlyList<GroupTopicState> OfGroup(string group) => _byGroup.TryGetValue(group, out var states) ? states : [];

    /// <summary>The group's state on a topic, created (starting at the queues' current fronts) on first use.</summary>
    public GroupTopicState GetOrAdd(string group, TopicState topic)
    {
        if (!_byKey.TryGetValue((group, topic.Name), out var state))
        {
            state = new GroupTopicState(group, topic) { Order = OrderOf(group) };
            _byKey[(group, topic.Name)] = state;
            if (BrokerEngine.IsInternalGroup(group)) InternalCount++;
            if (!_byGroup.TryGetValue(group, out var states)) _byGroup[group] = states = [];
            states.Add(state);
            topic.AddGroup(state);
        }
        return state;
    }

    /// <summary>
    /// Forgets a group on one topic: its progress, leases (their heap entries become stale) and redeliveries. Its parked
    /// receives are woken: they look again (after the caller releases the engine lock) and start on the group's new state.
    /// </summary>
    public void Remove(GroupTopicState state)
    {
        if (_byKey.Remove((state.Group, state.Topic.Name)) && BrokerEngine.IsInternalGroup(state.Group)) InternalCount--;
        if (_byGroup.TryGetValue(state.Group, out var states) && states.Remove(state) && states.Count == 0) _byGroup.Remove(state.Group);
        state.Topic.RemoveGroup(state);
        foreach (var gq in state.Queues) gq.InFlight.Clear();
        state.Redeliver.Clear();
        state.Waiters.WakeAll();
    }

    // The order modes operators set, by group name (GroupConfigured records). Apart from the groups' progress: a group
    // is configured before its consumers first receive, and a reset (delete and start as one record) keeps its mode.
    private readonly Dictionary<string, GroupOrder> _orders = new(StringComparer.Ordinal);

    /// <summary>The order mode set for <paramref name="group"/>, or <see cref="GroupOrder.NotConfigured"/>.</summary>
    public GroupOrder OrderOf(string group) => _orders.TryGetValue(group, out var order) ? order : GroupOrder.NotConfigured;

    /// <summary>Every group's mode set (for the checkpoint).</summary>
    public IEnumerable<KeyValuePair<string, GroupOrder>> Orders => _orders;
    public int OrderCount => _orders.Count;

    /// <summary>Sets the group's order mode (<see cref="GroupOrder.NotConfigured"/>: forgets it), on its states on every
    /// topic too. Its parked receives are woken: what the mode held may now be receivable.</summary>
    public void SetOrder(string group, GroupOrder order)
    {
        if (order == GroupOrder.NotConfigured) _orders.Remove(group); else _orders[group] = order;
        foreach (var state in OfGroup(group))
        {
            state.Order = order;
            state.Waiters.WakeAll();
        }
    }

    /// <summary>
    /// A lease id no lease of this run had: (the incarnation &lt;&lt; 32) + the run's lease count, ever growing. For a run's
    /// first 2^32 leases that is the layout older builds used (incarnation in the high half, count in the low), so
    /// their handles, records and checkpoints read as before; the 2^32nd lease carries into the high half.
    /// </summary>
    public long NextLeaseId() => checked(((long)_incarnation << 32) + ++_leaseSeq);

    private long RunStart => (long)_incarnation << 32;

    /// <summary>Tests: how many leases this run has taken; set, as if that many had been (a run's billions of them).</summary>
    internal long LeasesTakenForTests { get => _leaseSeq; set => _leaseSeq = value; }

    /// <summary>
    /// Whether <paramref name="leaseId"/> was handed out by this run, at or before now: lease ids order leases as they
    /// were taken only within one run (each draws its incarnation at random), so an id from before a restart, or one
    /// no lease had yet, orders nothing.
    /// </summary>
    public bool IsOfThisRun(long leaseId) => leaseId > RunStart && leaseId - RunStart <= _leaseSeq;

    public static void AddInFlight(GroupTopicState group, int q, long off, InFlight flight)
    {
        group.Queues[q].InFlight[off] = flight;
        group.Queues[q].RemovePassedOver(off);
        if (flight.MessageGroup is not null)
            group.BusyMessageGroups[flight.MessageGroup] = group.BusyMessageGroups.GetValueOrDefault(flight.MessageGroup) + 1;
    }

    /// <summary>
    /// The offset is finished for the group (acked, dead-lettered, expired): its lease and FIFO hold end. True when it
    /// held a FIFO message group, whose next message may now be delivered, or when it was the last live lease of its
    /// queue for an orderly group, whose queue is now free.
    /// </summary>
    public static bool FinishInFlight(GroupTopicState group, int q, long off)
    {
        var gq = group.Queues[q];
        bool released = false;
        bool held = gq.InFlight.TryGetValue(off, out var flight);
        if (held && flight!.MessageGroup is not null)
        {
            int n = group.BusyMessageGroups.GetValueOrDefault(flight.MessageGroup) - 1;
            if (n <= 0) { group.BusyMessageGroups.Remove(flight.MessageGroup); group.MessageGroupsFreed++; }
            else group.BusyMessageGroups[flight.MessageGroup] = n;
            released = true;
        }
        gq.MarkDone(off);
        // An orderly group's in-flight offsets on a queue are one receive's batch at most (the queue is held meanwhile),
        // so this walk is short.
        if (held && group.Order == GroupOrder.Orderly && !gq.HasLiveLease) released = true;
        return released;
    }

    /// <summary>
    /// Enters a lease into the expiry heap (again, when renewed or changed). Superseded entries stay until they surface,
    /// which for a lease changed to 12 hours is 12 hours: once the heap holds more than twice the live leases (plus
    /// <see cref="CompactionSlack"/>), it is rebuilt from the live leases alone. Each rebuild costs O(live) and comes
    /// after at least that many enqueues, so the heap stays within 2 × live + slack at a constant cost per lease.
    /// </summary>
    public void ScheduleLease(GroupTopicState group, int q, long off, long leaseId, long untilMs)
    {
        _leaseDue.Enqueue((group, q, off, leaseId), untilMs);
        Alarm?.Note(untilMs);
        if (_leaseDue.Count > _compactAbove) CompactLeaseDue();
    }

    private void CompactLeaseDue()
    {
        _live.Clear();
        foreach (var g in _byKey.Values)
            for (int q = 0; q < g.Queues.Length; q++)
                foreach (var (off, f) in g.Queues[q].InFlight)
                    if (!f.Expired) _live.Add(((g, q, off, f.LeaseId), f.InvisibleUntilMs));
        _leaseDue.Clear();
        _leaseDue.EnqueueRange(_live);
        // The array keeps the size it grew to: give it back when it is far larger than what is live.
        if (_leaseDue.EnsureCapacity(0) > 4 * (_leaseDue.Count + CompactionSlack)) _leaseDue.TrimExcess();
        _compactAbove = 2 * _leaseDue.Count + CompactionSlack;
        _live.Clear();
        if (_live.Capacity > 4 * CompactionSlack) _live.Capacity = CompactionSlack;
    }

    /// <summary>After recovery: every lease restored from the checkpoint and the log expires on the sweeper.</summary>
    public void ScheduleAllInFlight()
    {
        foreach (var g in _byKey.Values)
            for (int q = 0; q < g.Queues.Length; q++)
                foreach (var (off, f) in g.Queues[q].InFlight)
                    _leaseDue.Enqueue((g, q, off, f.LeaseId), f.InvisibleUntilMs);
    }

    /// <summary>Takes the next live lease that expired at or before <paramref name="nowMs"/> (stale heap entries are skipped).</summary>
    public bool TryTakeExpired(long nowMs, out GroupTopicState group, out int queue, out long offset, out InFlight flight)
    {
        while (_leaseDue.TryPeek(out var item, out var due) && due <= nowMs)
        {
            _leaseDue.Dequeue();
            var gq = item.Group.Queues[item.Queue];
            // Stale: acked or finished, leased again, expired already, or renewed under the same lease id (a push
            // consumer's auto-renewal) to end later than this entry says.
            if (!gq.InFlight.TryGetValue(item.Offset, out flight!) || flight.LeaseId != item.LeaseId || flight.Expired
                || flight.InvisibleUntilMs > nowMs) continue;
            (group, queue, offset) = (item.Group, item.Queue, item.Offset);
            return true;
        }
        (group, queue, offset, flight) = (null!, -1, -1, null!);
        return false;
    }

    // Push consumers' renewed leases by client (auto_renew; see InFlight.RenewFor), so a client that leaves finds its own
    // leases without walking every lease of its groups under the engine lock (a client could receive and terminate in
    // a loop). Entries are not removed when a lease ends: they are checked against the live lease when taken, and the
    // whole table is pruned of stale ones past twice its live entries plus CompactionSlack, at a constant cost per entry.
    private readonly Dictionary<string, HashSet<(GroupTopicState Group, int Queue, long Offset)>> _renewedByClient = new(StringComparer.Ordinal);
    private int _renewedEntries;
    private int _renewedCompactAbove = CompactionSlack;

    /// <summary>Leases looked at by <see cref="TakeRenewed"/> and the table's pruning (tests: a termination must not walk
    /// other clients' leases).</summary>
    internal long RenewedExamined;
    /// <summary>Entries in the renewed-lease table, stale ones included (must stay bounded).</summary>
    internal int RenewedEntries => _renewedEntries;

    /// <summary>The lease at (<paramref name="q"/>, <paramref name="off"/>) is now renewed for <paramref name="clientId"/>.</summary>
    public void NoteRenewal(string clientId, GroupTopicState group, int q, long off)
    {
        if (!_renewedByClient.TryGetValue(clientId, out var leases)) _renewedByClient[clientId] = leases = [];
        if (!leases.Add((group, q, off))) return;
        if (++_renewedEntries > _renewedCompactAbove) PruneRenewed();
    }

    private bool IsRenewedFor(string clientId, (GroupTopicState Group, int Queue, long Offset) lease, out InFlight flight)
    {
        RenewedExamined++;
        return lease.Group.Queues[lease.Queue].InFlight.TryGetValue(lease.Offset, out flight!) && flight.RenewFor == clientId && !flight.Expired
            && _byKey.TryGetValue((lease.Group.Group, lease.Group.Topic.Name), out var live) && ReferenceEquals(live, lease.Group);
    }

    private void PruneRenewed()
    {
        int kept = 0;
        List<string>? empty = null;
        foreach (var (clientId, leases) in _renewedByClient)
        {
            leases.RemoveWhere(l => !IsRenewedFor(clientId, l, out _));
            if (leases.Count == 0) (empty ??= []).Add(clientId);
            else if (leases.EnsureCapacity(0) > 4 * leases.Count + 64) leases.TrimExcess();
            kept += leases.Count;
        }
        foreach (var clientId in empty ?? []) _renewedByClient.Remove(clientId);
        _renewedEntries = kept;
        _renewedCompactAbove = 2 * kept + CompactionSlack;
    }

    /// <summary>
    /// The leases still renewed for <paramref name="clientId"/>, in <paramref name="group"/> or in every group when null,
    /// each with its live lease; the client's entries for those groups are dropped from the table. Costs the client's own
    /// entries, not the groups' other leases.
    /// </summary>
    public List<(GroupTopicState Group, int Queue, long Offset, InFlight Flight)> TakeRenewed(string clientId, string? group, string? groupPrefix = null)
    {
        var taken = new List<(GroupTopicState, int, long, InFlight)>();
        if (!_renewedByClient.TryGetValue(clientId, out var leases)) return taken;
        int before = leases.Count;
        leases.RemoveWhere(l =>
        {
            if (group is not null && l.Group.Group != group) return false;
            if (groupPrefix is not null && !l.Group.Group.StartsWith(groupPrefix, StringComparison.Ordinal)) return false;
            if (IsRenewedFor(clientId, l, out var flight)) taken.Add((l.Group, l.Queue, l.Offset, flight));
            return true;
        });
        _renewedEntries -= before - leases.Count;
        if (leases.Count == 0) _renewedByClient.Remove(clientId);
        return taken;
    }

    public void Clear()
    {
        _orders.Clear();
        _byKey.Clear();
        _byGroup.Clear();
        InternalCount = 0;
        _leaseDue.Clear();
        _renewedByClient.Clear();
        _renewedEntries = 0;
    }
}
