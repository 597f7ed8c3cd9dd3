namespace HalfMsg.Broker.Core;

public sealed partial class BrokerEngine
{
    public sealed record QueueInfo(int QueueId, long MinOffset, long MaxOffset);
    public sealed record TopicInfo(string Name, IReadOnlyList<QueueInfo> Queues, IReadOnlyList<string> ConsumerGroups, bool System);
    public sealed record GroupQueueInfo(int QueueId, long ConsumedOffset, long AckedOffset, long MaxOffset, long Lag, int InFlight);
    public sealed record GroupTopicInfo(string Topic, IReadOnlyList<GroupQueueInfo> Queues, long Lag, int InFlight, int WaitingRedelivery, DateTimeOffset LastSeen, long Expired);
    public sealed record GroupInfo(string Group, IReadOnlyList<GroupTopicInfo> Topics, string DeadLetterTopic, long DeadLettered);

    /// <summary>A pull group's (RocketMQ 4 Remoting) committed progress on one topic: per queue, the committed offset
    /// (the queue's first offset where it committed none, or one a retention cut passed), the end and the lag between.</summary>
    public sealed record PullTopicInfo(string Topic, IReadOnlyList<GroupQueueInfo> Queues, long Lag);

    /// <summary>The topics on which a pull group committed offsets, with its progress on each (empty for none).</summary>
    public IReadOnlyList<PullTopicInfo> PullProgressOf(string group)
    {
        lock (_gate) return PullTopicsLocked(_consumerOffsets.OfGroup(group).Select(t => (t.Key, t.Value)));
    }

    /// <summary>
    /// Every pull group's progress (<see cref="PullProgressOf"/>), by group in name order, the re-drive cursors left out
    /// (<see cref="IsInternalGroup"/>): one pass over the committed offsets, for a <c>/metrics</c> scrape and the
    /// dashboard's group list, where asking <see cref="PullProgressOf"/> for each group made one pass per group.
    /// </summary>
    public IReadOnlyList<(string Group, IReadOnlyList<PullTopicInfo> Topics)> PullProgress()
    {
        lock (_gate)
        {
            var result = new List<(string, IReadOnlyList<PullTopicInfo>)>();
            foreach (var (group, offsets) in _consumerOffsets.ByGroup().OrderBy(g => g.Key, StringComparer.Ordinal))
            {
                if (IsInternalGroup(group)) continue;
                var topics = PullTopicsLocked(offsets.Select(t => (t.Key, (IReadOnlyDictionary<int, long>)t.Value)));
                if (topics.Count > 0) result.Add((group, topics));
            }
            return result;
        }
    }

    /// <summary>A pull group's progress on the topics it committed offsets on (those that still exist), in topic name
    /// order. Caller holds the lock.</summary>
    private List<PullTopicInfo> PullTopicsLocked(IEnumerable<(string Topic, IReadOnlyDictionary<int, long> Offsets)> offsetsByTopic)
    {
        var result = new List<PullTopicInfo>();
        foreach (var (topic, offsets) in offsetsByTopic.OrderBy(t => t.Topic, StringComparer.Ordinal))
        {
            if (!_topics.TryGetValue(topic, out var t)) continue;
            var queues = t.Queues.Select((q, i) =>
            {
                long committed = offsets.TryGetValue(i, out long o) ? Math.Max(o, q.BaseOffset) : q.BaseOffset;
                long lag = Math.Max(0, q.NextOffset - committed);
                return new GroupQueueInfo(i, committed, committed, q.NextOffset, lag, 0);
            }).ToList();
            result.Add(new PullTopicInfo(topic, queues, queues.Sum(q => q.Lag)));
        }
        return result;
    }

    /// <summary>The number of messages in a group's dead-letter topic.</summary>
    public long DeadLetteredOf(string group)
    {
        lock (_gate) return _topics.TryGetValue(DeadLetterPrefix + group, out var d) ? d.Queues[0].NextOffset : 0;
    }

    /// <summary>A lease group's position on one queue (for a message lookup).</summary>
    /// <remarks><c>PassedOver</c>: the offset asked about lies below <c>ConsumedOffset</c> but was never delivered to the
    /// group: passed over while its FIFO message group was in flight (since 2026-12-07).</remarks>
    public sealed record QueueGroupPosition(string Group, long ConsumedOffset, long AckedOffset, bool PassedOver = false);

    /// <summary>One queue's first offset and every lease group's position on it, in one short hold of the lock; null
    /// when the topic or queue does not exist. (A message lookup used to copy every topic, and each group's every topic,
    /// per message it located: up to 64 whole copies per request, found by review on 2026-12-05.)
    /// <paramref name="offset"/>: the message's offset, for <see cref="QueueGroupPosition.PassedOver"/> (-1: none).</summary>
    public (long MinOffset, IReadOnlyList<QueueGroupPosition> Groups)? QueuePositions(string topic, int queueId, long offset = -1)
    {
        lock (_gate)
        {
            if (!_topics.TryGetValue(topic, out var t) || queueId < 0 || queueId >= t.Queues.Length) return null;
            long baseOffset = t.Queues[queueId].BaseOffset;
            var groups = t.Groups.Select(g => new QueueGroupPosition(g.Group,
                Math.Max(g.Queues[queueId].NextOffset, baseOffset), Math.Max(g.Queues[queueId].DoneBelow, baseOffset),
                offset >= 0 && g.Queues[queueId].PassedOver.BinarySearch(offset) >= 0)).ToList();
            return (baseOffset, groups);
        }
    }

    /// <summary>
    /// Every topic with its queues and its consumer groups: the lease groups (gRPC) that receive from it, then the pull
    /// groups (RocketMQ 4 Remoting) with committed offsets on it, not yet named; the re-drive cursors left out
    /// (<see cref="IsInternalGroup"/>). Until 2026-12-06 the pull groups were missing, and with them from the dashboard
    /// and the lag metrics, which read the groups from here (found by review).
    /// </summary>
    public IReadOnlyList<TopicInfo> ListTopics()
    {
        lock (_gate)
        {
            // One pass over the (group, topic) pairs of committed offsets, not one per topic.
            var pullGroups = new Dictionary<string, List<string>>(StringComparer.Ordinal);
            foreach (var (group, topic) in _consumerOffsets.GroupTopics)
            {
                if (IsInternalGroup(group)) continue;
                if (!pullGroups.TryGetValue(topic, out var groups)) pullGroups[topic] = groups = [];
                groups.Add(group);
            }
            return _topics.Values.OrderBy(t => t.Name, StringComparer.Ordinal).Select(t =>
            {
                var groups = t.Groups.Select(g => g.Group).Where(g => !IsInternalGroup(g)).ToList();
                if (pullGroups.TryGetValue(t.Name, out var pull))
                {
                    var named = groups.ToHashSet(StringComparer.Ordinal);
                    groups.AddRange(pull.Where(g => !named.Contains(g)).Order(StringComparer.Ordinal));
                }
                return new TopicInfo(t.Name, t.Queues.Select((q, i) => new QueueInfo(i, q.BaseOffset, q.NextOffset)).ToList(), groups, IsSystemTopic(t.Name));
            }).ToList();
        }
    }

    public GroupInfo? FindGroup(string group)
    {
        lock (_gate)
        {
            var topics = _groups.OfGroup(group).ToList();
            if (topics.Count == 0) return null;
            var infos = topics.Select(g =>
            {
                var queues = g.Queues.Select((gq, i) =>
                {
                    long max = g.Topic.Queues[i].NextOffset;
                    long baseOffset = g.Topic.Queues[i].BaseOffset;
                    long lag = gq.DoneBelow >= baseOffset ? Math.Max(0, max - gq.DoneBelow - gq.DoneCountAboveBase) : max - baseOffset;
                    return new GroupQueueInfo(i, Math.Max(gq.NextOffset, baseOffset), Math.Max(gq.DoneBelow, baseOffset), max, lag, gq.InFlight.Count);
                }).ToList();
                return new GroupTopicInfo(g.Topic.Name, queues, queues.Sum(q => q.Lag), queues.Sum(q => q.InFlight), g.Redeliver.Count,
                    DateTimeOffset.FromUnixTimeMilliseconds(g.LastSeenMs), g.Expired);
            }).ToList();
            string dlq = DeadLetterPrefix + group;
            long dead = _topics.TryGetValue(dlq, out var d) ? d.Queues[0].NextOffset : 0;
            return new GroupInfo(group, infos, dlq, dead);
        }
    }
}
