using Apache.Rocketmq.V2;
using Grpc.Core;
using Status = Apache.Rocketmq.V2.Status;

namespace HalfMsg.Broker.FrontEnds.GrpcV5;

internal sealed partial class MessagingService
{
    /// <summary>
    /// A client shuts down: stop routing check-backs to it; as a push consumer, its renewed leases end in a second
    /// (<see cref="HalfMsg.Broker.Core.BrokerEngine.ClientLeft"/>). Always answered with grpc-status 0 and body OK, because
    /// a gRPC-level error makes the Node client's <c>shutdown()</c> reject before it closes its streams.
    /// </summary>
    public override Task<NotifyClientTerminationResponse> NotifyClientTermination(NotifyClientTerminationRequest request, ServerCallContext context)
    {
        _sessions.Terminate(ClientId(context));
        string ns = V5Namespace.Of(context);
        // Without a group: every group of the caller's namespace (all groups for a caller without one, which may name
        // any group, as Remoting clients do by wrapping names themselves).
        _engine.ClientLeft(request.Group?.Name is { Length: > 0 } group ? V5Namespace.Wrap(ns, group) : null, ClientId(context),
            ns.Length > 0 ? ns + "%" : null);
        return Task.FromResult(new NotifyClientTerminationResponse { Status = V5Status.Ok() });
    }
}
