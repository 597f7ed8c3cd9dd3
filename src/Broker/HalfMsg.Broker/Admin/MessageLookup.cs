using HalfMsg.Broker.Core;
using HalfMsg.Broker.Core.Diagnostics;
using HalfMsg.Broker.Core.Model;

namespace HalfMsg.Broker.Admin;

/// <summary>
/// Where a message is, from the <see cref="MessageIndex"/> plus the engine's live state: pending or parked half,
/// rolled back, waiting for its delivery time, on a queue (and, per consumer group, acknowledged / delivered / not yet),
/// or cut by retention.
/// </summary>
public static class MessageLookup
{
    public sealed record GroupState(string Group, string State);

    public sealed record Location(string MessageId, string Topic, string? Tag, IReadOnlyList<string> Keys, DateTimeOffset StoredAt, string Kind,
        string State, int? QueueId, long? QueueOffset, string? TransactionId, string? ProducerGroup, string? Resolution, string? DecidedBy,
        DateTimeOffset? DecidedAt, IReadOnlyList<GroupState> Groups);

    public static Location Locate(BrokerEngine engine, MessageIndex.Entry e)
    {
        string state;
        var groups = new List<GroupState>();
        bool onQueue = e.QueueId >= 0 && e.QueueOffset >= 0;
        if (e.TransactionId is not null && e.Resolution is null)
        {
            var live = engine.FindTransaction(e.TransactionId);
            state = live is null ? "decided (not seen by this index)" : live.Parked ? "parked" : "pending";
        }
        else if (e.Resolution == TransactionResolution.Rollback)
        {
            state = "rolled back";
        }
        else if (!onQueue)
        {
            state = "scheduled (delivery time not reached when last seen)";
        }
        else
        {
            var topic = engine.ListTopics().FirstOrDefault(t => t.Name == e.Topic);
            var queue = topic?.Queues.FirstOrDefault(q => q.QueueId == e.QueueId);
            if (topic is null || queue is null || e.QueueOffset < queue.MinOffset)
            {
                state = "expired (cut by retention)";
            }
            else
            {
                state = e.Resolution == TransactionResolution.Commit ? "committed" : "stored";
                foreach (string g in topic.ConsumerGroups)
                {
                    var q = engine.FindGroup(g)?.Topics.FirstOrDefault(t => t.Topic == e.Topic)?.Queues.FirstOrDefault(x => x.QueueId == e.QueueId);
                    if (q is null) continue;
                    groups.Add(new GroupState(g, e.QueueOffset < q.AckedOffset ? "acked"
                        : e.QueueOffset < q.ConsumedOffset ? "delivered (in flight, or acked out of order)" : "not delivered yet"));
                }
            }
        }
        return new Location(e.MessageId, e.Topic, e.Tag, e.Keys, e.StoredAt, e.Kind.ToString(), state,
            onQueue ? e.QueueId : null, onQueue ? e.QueueOffset : null, e.TransactionId, e.ProducerGroup,
            e.Resolution?.ToString(), e.DecidedBy?.ToString(), e.DecidedAt, groups);
    }
}
