using HalfMsg.Protocol.Remoting;

namespace HalfMsg.Broker.FrontEnds.Remoting;

// QUERY_CONSUMER_OFFSET (14), UPDATE_CONSUMER_OFFSET (15), SEARCH_OFFSET_BY_TIMESTAMP (29), GET_MAX_OFFSET (30), GET_MIN_OFFSET (31).
internal sealed partial class RemotingDispatcher
{
    /// <summary>
    /// A group without a committed offset gets QUERY_NOT_FOUND, except on a queue that still starts at 0: then offset 0
    /// (RocketMQ answers so while the first message is in memory), so a brand-new group reads a young topic from the
    /// start instead of skipping what was sent before it first ran. <c>setZeroIfNotFound=false</c> always gets QUERY_NOT_FOUND.
    /// </summary>
    private RemotingCommand QueryConsumerOffset(RemotingCommand request)
    {
        string? group = request.Get("consumerGroup");
        string? topic = request.Get("topic");
        if (string.IsNullOrEmpty(group)) return Missing(request, "consumerGroup");
        if (string.IsNullOrEmpty(topic)) return Missing(request, "topic");
        if (!request.TryGetInt("queueId", out int queueId)) return Missing(request, "queueId");
        long? offset = Engine.QueryConsumerOffset(group, topic, queueId);
        if (offset is null && request.GetBool("setZeroIfNotFound", true) && Engine.TryGetQueueOffsets(topic, queueId, out long min, out _) && min <= 0)
            offset = 0;
        if (offset is null) return Error(request, ResponseCode.QueryNotFound, "Not found, V3_0_6_SNAPSHOT maybe this group consumer boot first");
        return Ok(request).Set("offset", offset.Value);
    }

    private async ValueTask<RemotingCommand?> UpdateConsumerOffsetAsync(RemotingCommand request)
    {
        string? group = request.Get("consumerGroup");
        string? topic = request.Get("topic");
        if (string.IsNullOrEmpty(group)) return Missing(request, "consumerGroup");
        if (string.IsNullOrEmpty(topic)) return Missing(request, "topic");
        if (!request.TryGetInt("queueId", out int queueId)) return Missing(request, "queueId");
        if (!request.TryGetLong("commitOffset", out long offset)) return Missing(request, "commitOffset");
        var err = await Engine.CommitConsumerOffsetAsync(group, topic, queueId, offset).ConfigureAwait(false);
        return err.IsOk ? Ok(request) : RemotingErrors.Response(request, err);
    }

    /// <summary>The next offset to be written (the count of messages ever in the queue); 0 for an unknown queue, as Java answers.</summary>
    private RemotingCommand GetMaxOffset(RemotingCommand request)
    {
        string? topic = request.Get("topic");
        if (string.IsNullOrEmpty(topic)) return Missing(request, "topic");
        Engine.TryGetQueueOffsets(topic, request.GetInt("queueId", 0), out _, out long max);
        return Ok(request).Set("offset", max);
    }

    private RemotingCommand GetMinOffset(RemotingCommand request)
    {
        string? topic = request.Get("topic");
        if (string.IsNullOrEmpty(topic)) return Missing(request, "topic");
        Engine.TryGetQueueOffsets(topic, request.GetInt("queueId", 0), out long min, out _);
        return Ok(request).Set("offset", min);
    }

    private async ValueTask<RemotingCommand?> SearchOffsetByTimestampAsync(RemotingCommand request)
    {
        string? topic = request.Get("topic");
        if (string.IsNullOrEmpty(topic)) return Missing(request, "topic");
        if (!request.TryGetLong("timestamp", out long timestamp)) return Missing(request, "timestamp");
        long? offset = await Engine.SearchOffsetAsync(topic, request.GetInt("queueId", 0), timestamp).ConfigureAwait(false);
        return Ok(request).Set("offset", offset ?? 0);
    }
}
