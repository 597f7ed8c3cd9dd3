using Apache.Rocketmq.V2;
using Grpc.Core;
using Status = Apache.Rocketmq.V2.Status;

namespace HalfMsg.Broker.FrontEnds.GrpcV5;

internal sealed partial class MessagingService
{
    /// <summary>Keep-alive. Liveness of producers is their open Telemetry stream, so there is nothing to record.</summary>
    public override Task<HeartbeatResponse> Heartbeat(HeartbeatRequest request, ServerCallContext context)
        => Task.FromResult(new HeartbeatResponse { Status = V5Status.Ok() });
}
