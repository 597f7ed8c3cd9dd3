using HalfMsg.Protocol.Remoting;

namespace HalfMsg.Broker.FrontEnds.Remoting;

// CONSUMER_SEND_MSG_BACK (36).
internal sealed partial class RemotingDispatcher
{
    /// <summary>RocketMQ's subscription-group default retryMaxTimes, used when the client sends no maxReconsumeTimes.</summary>
    private const int DefaultMaxReconsumeTimes = 16;

    /// <summary>
    /// A consumer could not process the message at commit log offset <c>offset</c>: the core stores it again in
    /// <c>%RETRY%&lt;group&gt;</c> after the delay ladder (or in <c>%DLQ%&lt;group&gt;</c> after maxReconsumeTimes).
    /// </summary>
    private async ValueTask<RemotingCommand?> ConsumerSendMsgBackAsync(RemotingCommand request)
    {
        string? group = request.Get("group");
        if (string.IsNullOrEmpty(group)) return Missing(request, "group");
        if (!request.TryGetLong("offset", out long offset)) return Missing(request, "offset");
        int delayLevel = request.GetInt("delayLevel", 0);
        // maxReconsumeTimes in the header counts only for clients >= V3_4_9 (MQVersion ordinal 121), as in Java.
        int max = request.Version >= 121 ? request.GetInt("maxReconsumeTimes", DefaultMaxReconsumeTimes) : DefaultMaxReconsumeTimes;
        var result = await Engine.SendBackAsync(group, offset, delayLevel, max, request.Get("originTopic")).ConfigureAwait(false);
        return result.Error.IsOk ? Ok(request) : RemotingErrors.Response(request, result.Error);
    }
}
