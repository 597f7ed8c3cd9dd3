using Apache.Rocketmq.V2;
using Grpc.Core;
using Status = Apache.Rocketmq.V2.Status;

namespace HalfMsg.Broker.FrontEnds.GrpcV5;

internal sealed partial class MessagingService
{
    /// <summary>
    /// Route of a topic: all its queues on this broker, READ_WRITE, accepting every message type. Queue 0 must be
    /// present and writable: the Node client's load balancers only consider queue id 0. The core validates the name
    /// and auto-creates the topic.
    /// </summary>
    public override Task<QueryRouteResponse> QueryRoute(QueryRouteRequest request, ServerCallContext context)
    {
        string ns = V5Namespace.Of(context);
        string topic = V5Namespace.Wrap(ns, request.Topic?.Name ?? string.Empty);
        var error = _engine.RouteTopic(topic, out int queueCount);
        var response = new QueryRouteResponse { Status = V5Status.From(error) };
        if (error.IsOk)
        {
            Endpoints endpoints = LocalEndpoints(context, request.Endpoints);
            Resource resource = V5Namespace.Resource(ns, topic);
            for (int id = 0; id < Math.Max(queueCount, 1); id++)
            {
                response.MessageQueues.Add(Queue(resource, id, endpoints));
            }

            // Works around the Node client's startup race (reference §2a): a Settings reply that arrived while a later
            // QueryRoute was still running is lost, so re-push the current Settings whenever a client routes.
            _sessions.RepushSettings(ClientId(context));
        }

        return Task.FromResult(response);
    }
}
