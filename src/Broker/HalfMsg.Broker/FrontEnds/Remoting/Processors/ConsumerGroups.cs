using System.Text.Json;
using HalfMsg.Protocol.Remoting;

namespace HalfMsg.Broker.FrontEnds.Remoting;

// GET_CONSUMER_LIST_BY_GROUP (38), LOCK_BATCH_MQ (41), UNLOCK_BATCH_MQ (42).
internal sealed partial class RemotingDispatcher
{
    private RemotingCommand GetConsumerListByGroup(RemotingCommand request)
    {
        string? group = request.Get("consumerGroup");
        if (string.IsNullOrEmpty(group)) return Missing(request, "consumerGroup");
        var ids = server.Clients.ConsumerIds(group);
        if (ids.Count == 0) return Error(request, ResponseCode.SystemError, $"no consumer for this group, {group}");
        var response = Ok(request);
        response.Body = JsonBody(new { consumerIdList = ids });
        return response;
    }

    /// <summary>Body <c>{consumerGroup, clientId, mqSet:[{topic, brokerName, queueId}]}</c>; answers <c>{lockOKMQSet:[...]}</c>.</summary>
    private RemotingCommand LockBatchMq(RemotingSession session, RemotingCommand request)
    {
        if (!TryParseLockBody(request, out string group, out string clientId, out var queues))
            return Error(request, ResponseCode.SystemError, "LOCK_BATCH_MQ body is not LockBatchRequestBody JSON");
        // Each lock keeps its client id for its lease: a longer one than any client has is refused, nothing locked.
        if (RemotingClients.ClientIdRefusal("clientId", clientId) is { } tooLong) return Error(request, ResponseCode.SystemError, tooLong);
        // Only queues that exist are locked (a lock of anything else would only fill the table), for valid groups.
        var existing = RemotingClients.IsValidGroupName(group)
            ? queues.Where(q => q.QueueId >= 0 && q.QueueId < Engine.QueueCount(q.Topic)).ToList()
            : [];
        var locked = server.Clients.Lock(group, clientId, existing, session);
        var response = Ok(request);
        response.Body = JsonBody(new { lockOKMQSet = locked.Select(q => new { brokerName = q.BrokerName, queueId = q.QueueId, topic = q.Topic }) });
        return response;
    }

    private RemotingCommand UnlockBatchMq(RemotingCommand request)
    {
        if (!TryParseLockBody(request, out string group, out string clientId, out var queues))
            return Error(request, ResponseCode.SystemError, "UNLOCK_BATCH_MQ body is not UnlockBatchRequestBody JSON");
        server.Clients.Unlock(group, clientId, queues);
        return Ok(request);
    }

    private static bool TryParseLockBody(RemotingCommand request, out string group, out string clientId, out List<(string Topic, string BrokerName, int QueueId)> queues)
    {
        group = clientId = "";
        queues = [];
        using var body = ParseBody(request);
        if (body is null || body.RootElement.ValueKind != JsonValueKind.Object) return false;
        var root = body.RootElement;
        group = Str(root, "consumerGroup") ?? "";
        clientId = Str(root, "clientId") ?? "";
        if (group.Length == 0 || clientId.Length == 0) return false;
        if (root.TryGetProperty("mqSet", out var set) && set.ValueKind == JsonValueKind.Array)
            foreach (var mq in set.EnumerateArray())
                if (Str(mq, "topic") is { } topic && mq.TryGetProperty("queueId", out var q) && q.TryGetInt32(out int queueId))
                    queues.Add((topic, Str(mq, "brokerName") ?? "", queueId));
        return true;
    }
}
