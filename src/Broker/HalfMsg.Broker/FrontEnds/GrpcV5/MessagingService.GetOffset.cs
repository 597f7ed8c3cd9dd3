using Apache.Rocketmq.V2;
using Grpc.Core;
using HalfMsg.Broker.Core;
using Status = Apache.Rocketmq.V2.Status;

namespace HalfMsg.Broker.FrontEnds.GrpcV5;

internal sealed partial class MessagingService
{
    /// <summary>
    /// A pull group's committed offset for one queue, as QUERY_CONSUMER_OFFSET answers it (the same store): a group that
    /// never committed one gets 0 on a queue that still starts at 0 (RocketMQ's broker, behind the Apache proxy, answers
    /// so), so a new group reads a young topic from its start; elsewhere OFFSET_NOT_FOUND, and the client chooses where
    /// to begin with QueryOffset.
    /// </summary>
    public override Task<GetOffsetResponse> GetOffset(GetOffsetRequest request, ServerCallContext context)
    {
        string ns = V5Namespace.Of(context);
        if (!V5PullTarget.TryRead(ns, request.Group, request.MessageQueue, needsGroup: true, out V5PullTarget target, out Status? refused))
            return Task.FromResult(new GetOffsetResponse { Status = refused });
        if (BrokerEngine.PullGroupNameRefusal(target.Group) is { } badGroup)
            return Task.FromResult(new GetOffsetResponse { Status = V5Status.From(badGroup) });
        if (!_engine.TryGetQueueOffsets(target.Topic, target.QueueId, out long min, out _))
            return Task.FromResult(new GetOffsetResponse { Status = QueueRefusal(ns, target) ?? V5PullTarget.NoSuchTopic(ns, target.Topic) });

        long? offset = _engine.QueryConsumerOffset(target.Group, target.Topic, target.QueueId);
        if (offset is null && min <= 0) offset = 0;
        return Task.FromResult(offset is { } committed
            ? new GetOffsetResponse { Status = V5Status.Ok(), Offset = committed }
            : new GetOffsetResponse
            {
                Status = V5Status.Of(Code.OffsetNotFound,
                    $"group '{V5Namespace.Name(ns, target.Group)}' has no offset on queue {target.QueueId} of '{V5Namespace.Name(ns, target.Topic)}'; choose one with QueryOffset"),
            });
    }
}
