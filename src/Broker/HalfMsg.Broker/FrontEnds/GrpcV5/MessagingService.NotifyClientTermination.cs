using Apache.Rocketmq.V2;

namespace HalfMsg.Broker.FrontEnds.GrpcV5;

internal sealed partial class MessagingService
{
    /// <summary>
    /// A client shuts down: stop routing check-backs to it. Always answered with grpc-status 0 and body OK, because
    /// a gRPC-level error makes the Node client's <c>shutdown()</c> reject before it closes its streams.
    /// </summary>
    private ValueTask<NotifyClientTerminationResponse> NotifyClientTerminationAsync(NotifyClientTerminationRequest request, GrpcCall call)
    {
        _sessions.Terminate(ClientId(call));
        return ValueTask.FromResult(new NotifyClientTerminationResponse { Status = V5Status.Ok() });
    }
}
