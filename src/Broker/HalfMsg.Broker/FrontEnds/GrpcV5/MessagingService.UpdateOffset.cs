using Apache.Rocketmq.V2;
using Grpc.Core;
using HalfMsg.Broker.Core;
using Status = Apache.Rocketmq.V2.Status;

namespace HalfMsg.Broker.FrontEnds.GrpcV5;

internal sealed partial class MessagingService
{
    /// <summary>
    /// Commits a pull group's offset for one queue (<see cref="BrokerEngine.CommitConsumerOffsetAsync"/>): the store
    /// UPDATE_CONSUMER_OFFSET writes, so a RocketMQ 4 consumer of the group resumes where a gRPC one left off and the
    /// other way round. Answered once durable. A group the broker may not start is refused as a Remoting commit is.
    /// </summary>
    public override async Task<UpdateOffsetResponse> UpdateOffset(UpdateOffsetRequest request, ServerCallContext context)
    {
        string ns = V5Namespace.Of(context);
        if (!V5PullTarget.TryRead(ns, request.Group, request.MessageQueue, needsGroup: true, out V5PullTarget target, out Status? refused))
            return new UpdateOffsetResponse { Status = refused };
        if (request.Offset < 0)
            return new UpdateOffsetResponse { Status = V5Status.Of(Code.IllegalOffset, $"offset {request.Offset} is negative") };
        if (QueueRefusal(ns, target) is { } missing) return new UpdateOffsetResponse { Status = missing };

        BrokerError error = await _engine.CommitConsumerOffsetAsync(target.Group, target.Topic, target.QueueId, request.Offset, context.CancellationToken)
            .ConfigureAwait(false);
        return new UpdateOffsetResponse { Status = V5Status.From(error) };
    }

    /// <summary>Null when the target's topic has its queue; otherwise TOPIC_NOT_FOUND or BAD_REQUEST (no such queue).</summary>
    private Status? QueueRefusal(string ns, V5PullTarget target)
    {
        if (_engine.TryGetQueueOffsets(target.Topic, target.QueueId, out _, out _)) return null;
        int queues = _engine.QueueCount(target.Topic);
        return queues == 0 ? V5PullTarget.NoSuchTopic(ns, target.Topic) : V5PullTarget.NoSuchQueue(ns, target.Topic, target.QueueId, queues);
    }
}
