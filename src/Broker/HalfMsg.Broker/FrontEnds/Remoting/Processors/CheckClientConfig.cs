using System.Text.Json;
using HalfMsg.Broker.Core.Delivery;
using HalfMsg.Protocol.Remoting;

namespace HalfMsg.Broker.FrontEnds.Remoting;

// CHECK_CLIENT_CONFIG (46).
internal sealed partial class RemotingDispatcher
{
    /// <summary>
    /// Body: CheckClientRequestBody JSON (<c>clientId</c>, <c>group</c>, <c>subscriptionData{topic, subString,
    /// expressionType, subVersion}</c>). The Java client sends it for every subscription that is not TAG before a push
    /// consumer starts (and when a lite pull consumer subscribes with a MessageSelector), and fails to start on any answer
    /// but SUCCESS: until 2026-12-06 it was REQUEST_CODE_NOT_SUPPORTED and a consumer with <c>MessageSelector.bySql</c>
    /// could not start (found by review). As Apache's ClientManageProcessor: SUCCESS for a TAG subscription (not parsed,
    /// as there) or none, SUCCESS for an SQL92 expression that parses, SUBSCRIPTION_PARSE_FAILED with the parser's reason
    /// otherwise. Apache answers SYSTEM_ERROR to a non-TAG type when its property filter is off; ours is always on.
    /// Nothing is registered: the heartbeat that follows announces the subscription.
    /// </summary>
    private RemotingCommand CheckClientConfig(RemotingCommand request)
    {
        using var body = ParseBody(request);
        if (body is null || body.RootElement.ValueKind != JsonValueKind.Object)
            return Error(request, ResponseCode.SystemError, "check client config body is not CheckClientRequestBody JSON");
        if (!body.RootElement.TryGetProperty("subscriptionData", out var subscription) || subscription.ValueKind != JsonValueKind.Object)
            return Ok(request);
        string? type = Str(subscription, "expressionType");
        if (string.IsNullOrEmpty(type) || type.Equals("TAG", StringComparison.OrdinalIgnoreCase)) return Ok(request);
        // The same types and reasons as a pull that names this subscription (PullMessage.cs).
        if (!type.Equals("SQL92", StringComparison.OrdinalIgnoreCase))
            return Error(request, ResponseCode.SubscriptionParseFailed, $"expression type {type} is not supported; use TAG or SQL92");
        if (!SqlFilter.TryParse(Str(subscription, "subString"), out _, out var error))
            return Error(request, ResponseCode.SubscriptionParseFailed, error!);
        return Ok(request);
    }
}
