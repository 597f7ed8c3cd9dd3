using Apache.Rocketmq.V2;
using Grpc.Core;
using Status = Apache.Rocketmq.V2.Status;

namespace HalfMsg.Broker.FrontEnds.GrpcV5;

internal sealed partial class MessagingService
{
    /// <summary>
    /// Where a pull may begin, as the Apache proxy answers it: BEGINNING, the queue's first retained offset
    /// (GET_MIN_OFFSET); END, its next offset (GET_MAX_OFFSET); TIMESTAMP, the first offset whose message entered the
    /// queue at or after <c>timestamp</c>, or the next offset when none did (SEARCH_OFFSET_BY_TIMESTAMP). TIMESTAMP
    /// without a timestamp, and a policy this broker does not know, are BAD_REQUEST, as the proxy answers them.
    /// </summary>
    public override async Task<QueryOffsetResponse> QueryOffset(QueryOffsetRequest request, ServerCallContext context)
    {
        string ns = V5Namespace.Of(context);
        if (!V5PullTarget.TryRead(ns, group: null, request.MessageQueue, needsGroup: false, out V5PullTarget target, out Status? refused))
            return new QueryOffsetResponse { Status = refused };
        if (!_engine.TryGetQueueOffsets(target.Topic, target.QueueId, out long min, out long max))
            return new QueryOffsetResponse { Status = QueueRefusal(ns, target) ?? V5PullTarget.NoSuchTopic(ns, target.Topic) };

        switch (request.QueryOffsetPolicy)
        {
            case QueryOffsetPolicy.Beginning:
                return new QueryOffsetResponse { Status = V5Status.Ok(), Offset = min };
            case QueryOffsetPolicy.End:
                return new QueryOffsetResponse { Status = V5Status.Ok(), Offset = max };
            case QueryOffsetPolicy.Timestamp:
                if (request.Timestamp is null)
                    return new QueryOffsetResponse { Status = V5Status.Of(Code.BadRequest, "timestamp is required with query_offset_policy TIMESTAMP") };
                if (!V5Time.TryToUnixMilliseconds(request.Timestamp, out long? at))
                    return new QueryOffsetResponse { Status = V5Status.Of(Code.BadRequest, "timestamp is not a valid timestamp") };
                long? found = await _engine.SearchOffsetAsync(target.Topic, target.QueueId, at!.Value, context.CancellationToken).ConfigureAwait(false);
                // Null: the topic went away during the search (deleted).
                return found is { } offset
                    ? new QueryOffsetResponse { Status = V5Status.Ok(), Offset = offset }
                    : new QueryOffsetResponse { Status = V5PullTarget.NoSuchTopic(ns, target.Topic) };
            default:
                return new QueryOffsetResponse { Status = V5Status.Of(Code.BadRequest, $"query_offset_policy {(int)request.QueryOffsetPolicy} is not BEGINNING, END or TIMESTAMP") };
        }
    }
}
