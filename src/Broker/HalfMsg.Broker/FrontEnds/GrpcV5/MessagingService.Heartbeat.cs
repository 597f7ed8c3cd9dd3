using Apache.Rocketmq.V2;
using Grpc.Core;
using Status = Apache.Rocketmq.V2.Status;

namespace HalfMsg.Broker.FrontEnds.GrpcV5;

internal sealed partial class MessagingService
{
    /// <summary>Keep-alive. Liveness of producers is their open Telemetry stream; a consumer's heartbeat (every 10 s)
    /// keeps it on its group's member list (dashboard, admin API).</summary>
    public override Task<HeartbeatResponse> Heartbeat(HeartbeatRequest request, ServerCallContext context)
    {
        if (request.ClientType is not (ClientType.Producer or ClientType.Unspecified) && request.Group?.Name is { Length: > 0 } group)
            _engine.Consumers.Seen(V5Namespace.Wrap(V5Namespace.Of(context), group), ClientId(context), "gRPC", context.Peer);
        return Task.FromResult(new HeartbeatResponse { Status = V5Status.Ok() });
    }
}
