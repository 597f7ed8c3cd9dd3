using System.Diagnostics.CodeAnalysis;
using Apache.Rocketmq.V2;
using Status = Apache.Rocketmq.V2.Status;

namespace HalfMsg.Broker.FrontEnds.GrpcV5;

/// <summary>
/// The queue a PullMessage, UpdateOffset, GetOffset or QueryOffset names: the broker's names of its consumer group and
/// topic (in the call's namespace, <see cref="V5Namespace"/>) and its queue id, read and checked the same way by all
/// four. The broker named in <c>message_queue.broker</c> is not looked at: routes name only this broker.
/// </summary>
internal readonly record struct V5PullTarget(string Group, string Topic, int QueueId)
{
    /// <summary>False, with the status to answer, when the request lacks the group (<paramref name="needsGroup"/>), the
    /// queue or its topic, or names a negative queue id (-1, "any queue", is ReceiveMessage's; a pull reads one queue).</summary>
    public static bool TryRead(string ns, Resource? group, MessageQueue? queue, bool needsGroup, out V5PullTarget target,
        [NotNullWhen(false)] out Status? refused)
    {
        target = default;
        string groupName = group?.Name ?? string.Empty;
        if (needsGroup && groupName.Length == 0)
        {
            refused = V5Status.Of(Code.IllegalConsumerGroup, "group.name is required");
            return false;
        }

        if (queue is null)
        {
            refused = V5Status.Of(Code.BadRequest, "message_queue is required: the topic and queue id to read");
            return false;
        }

        string topic = queue.Topic?.Name ?? string.Empty;
        if (topic.Length == 0)
        {
            refused = V5Status.Of(Code.IllegalTopic, "message_queue.topic.name is required");
            return false;
        }

        if (queue.Id < 0)
        {
            refused = V5Status.Of(Code.BadRequest, $"message_queue.id must name one queue (0 or more), not {queue.Id}");
            return false;
        }

        target = new V5PullTarget(V5Namespace.Wrap(ns, groupName), V5Namespace.Wrap(ns, topic), queue.Id);
        refused = null;
        return true;
    }

    /// <summary>TOPIC_NOT_FOUND, the topic as the client in <paramref name="ns"/> names it.</summary>
    public static Status NoSuchTopic(string ns, string topic)
        => V5Status.Of(Code.TopicNotFound, $"topic '{V5Namespace.Name(ns, topic)}' does not exist");

    /// <summary>BAD_REQUEST: the client asked for a queue the topic does not have (it read an old route, or made one up).</summary>
    public static Status NoSuchQueue(string ns, string topic, int queueId, int queueCount)
        => V5Status.Of(Code.BadRequest,
            $"queue {queueId} of topic '{V5Namespace.Name(ns, topic)}' does not exist: the topic has {queueCount} queues (0-{queueCount - 1}); query its route again");
}
