using HalfMsg.Broker.Core.Model;

namespace HalfMsg.Broker.Core.Delivery;

/// <summary>
/// Owner of the topic queues: each topic's queues of entries (where a body lives, when it became visible), and the
/// receivers waiting for entries that become visible at a later group commit.
/// </summary>
/// <remarks>
/// Guarded by the engine lock, except the visibility waiters: the commit loop calls <see cref="OnDurable"/> and must
/// never take the engine lock (a writer holding it may be waiting for log space that only the next commit frees), so
/// the waiters have a small lock of their own. An entry is visible once the log is durable past the record that put
/// it into its queue (<see cref="QueueEntry.VisibleAt"/>).
/// </remarks>
internal sealed class TopicQueues(Func<long> durableUntil)
{
    private readonly Dictionary<string, TopicState> _byName = new(StringComparer.Ordinal);
    private readonly Queue<(long VisibleAt, TopicState Topic)> _pendingVisible = new();

    /// <summary>The groups entries are reserved for (<see cref="QueueEntry.ForGroup"/>).</summary>
    public GroupTargets Targets { get; } = new();

    public int Count => _byName.Count;
    public Dictionary<string, TopicState>.ValueCollection Values => _byName.Values;
    public bool TryGetValue(string name, out TopicState topic) => _byName.TryGetValue(name, out topic!);
    public bool ContainsKey(string name) => _byName.ContainsKey(name);
    public TopicState this[string name] => _byName[name];

    /// <summary>The topic of that name, created with <paramref name="queues"/> queues if it does not exist yet.</summary>
    public TopicState GetOrAdd(string name, int queues)
    {
        if (_byName.TryGetValue(name, out var existing)) return existing;
        var state = new TopicState(name, queues);
        _byName[name] = state;
        return state;
    }

    public bool Remove(string name, out TopicState topic) => _byName.Remove(name, out topic!);

    /// <summary>Entries waiting for a group commit before their receivers are woken (read without the lock: a hint).</summary>
    public int WaitingForDurability => _pendingVisible.Count;

    /// <summary>
    /// Puts an entry at <paramref name="offset"/> of a queue. When <paramref name="live"/> (not during replay), wakes the
    /// topic's receivers now if the entry is already durable, or once a group commit covers it.
    /// </summary>
    public void AddEntry(TopicState topic, int queueId, long offset, QueueEntry entry, bool live)
    {
        topic.Queues[queueId].Set(offset, entry);
        if (!live) return;
        lock (_pendingVisible)
        {
            // Checked under the visibility lock: a commit that covers the entry either ran before (wake now) or will
            // find it in the queue.
            if (entry.VisibleAt >= durableUntil()) { _pendingVisible.Enqueue((entry.VisibleAt, topic)); return; }
        }
        topic.WakeForNewEntries();
    }

    /// <summary>The log is durable below <paramref name="durable"/>: wakes the receivers of every entry that became visible.</summary>
    public void OnDurable(long durable)
    {
        List<TopicState>? wake = null;
        lock (_pendingVisible)
        {
            while (_pendingVisible.TryPeek(out var p) && p.VisibleAt < durable)
            {
                _pendingVisible.Dequeue();
                (wake ??= new()).Add(p.Topic);
            }
        }
        if (wake is not null) foreach (var t in wake.Distinct()) t.WakeForNewEntries();
    }

    /// <summary>
    /// The queue for messages without a requested queue: a FIFO message group always maps to the same queue (a stable
    /// hash, also after a restart), a valid requested queue is kept, anything else goes round-robin.
    /// </summary>
    /// <remarks>
    /// A send naming a queue the topic does not have never gets here: it is refused at the send (<see cref="NamedQueueRefusal"/>).
    /// What still falls through is the queue a half or a delayed message kept from its send when, at its commit or
    /// release, the topic no longer has it (a topic deleted and made again with fewer queues in between): the commit was
    /// answered to the producer, so the message goes to a queue the topic has rather than being refused or lost.
    /// </remarks>
    public static int PickQueue(TopicState topic, int requested, string? messageGroup)
    {
        if (messageGroup is not null) return StableHash(messageGroup) % topic.Queues.Length;
        if (requested >= 0 && requested < topic.Queues.Length) return requested;
        return (int)((uint)topic.RoundRobin++ % (uint)topic.Queues.Length);
    }

    /// <summary>
    /// The refusal of a send that names a queue <paramref name="topic"/> does not have, else null. Apache's broker refuses
    /// such a send (AbstractSendMessageProcessor.msgCheck, "request queueId[..] is illegal"); storing it on another queue
    /// breaks the order a MessageQueueSelector producer keeps per queue. A negative queue is "any queue", as in Apache.
    /// Over Remoting the refusal is INVALID_PARAMETER, Apache's code for it since 5.3.2 (SYSTEM_ERROR before, which the
    /// Java producer retries on the next queue of the same stale route); a selector send is not retried either way.
    /// </summary>
    public static BrokerError? NamedQueueRefusal(TopicState topic, MessageDraft msg)
    {
        if (msg.QueueId is not int q || q < 0 || q < topic.Queues.Length) return null;
        int count = topic.Queues.Length;
        return new BrokerError(BrokerStatus.BadRequest,
            $"queue {q} of topic '{topic.Name}' does not exist: the topic has {count} queues (0-{count - 1}); a producer's route may be stale (a topic deleted and made again with fewer queues)");
    }

    private static int StableHash(string s)
    {
        // FNV-1a: string.GetHashCode is randomized per process, and FIFO groups must map to the same queue after restart.
        uint h = 2166136261;
        foreach (var c in s) { h ^= c; h *= 16777619; }
        return (int)(h & 0x7FFFFFFF);
    }

    public void Clear()
    {
        _byName.Clear();
        lock (_pendingVisible) _pendingVisible.Clear();
    }
}
