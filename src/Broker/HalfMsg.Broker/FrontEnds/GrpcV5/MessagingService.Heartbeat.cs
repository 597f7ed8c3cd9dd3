using Apache.Rocketmq.V2;

namespace HalfMsg.Broker.FrontEnds.GrpcV5;

internal sealed partial class MessagingService
{
    /// <summary>Keep-alive. Liveness of producers is their open Telemetry stream, so there is nothing to record.</summary>
    private static ValueTask<HeartbeatResponse> HeartbeatAsync(HeartbeatRequest request, GrpcCall call)
        => ValueTask.FromResult(new HeartbeatResponse { Status = V5Status.Ok() });
}
