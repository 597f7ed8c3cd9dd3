using Apache.Rocketmq.V2;
using Grpc.Core;
using Status = Apache.Rocketmq.V2.Status;

namespace HalfMsg.Broker.FrontEnds.GrpcV5;

internal sealed partial class MessagingService
{
    /// <summary>
    /// Push-consumer assignment, as the proxy answers (RouteActivity): for a group configured orderly, one assignment per
    /// queue (ids 0..n-1); for any other group, one queue with id -1, "receive from any queue of the topic on this
    /// broker". Order (an orderly group's queues, message groups) is kept by the core whatever the assignment: a receive
    /// takes from any queue of the topic, the id it names or not.
    /// </summary>
    public override Task<QueryAssignmentResponse> QueryAssignment(QueryAssignmentRequest request, ServerCallContext context)
    {
        if (LiteRefusal(context) is { } refused)
            return Task.FromResult(new QueryAssignmentResponse { Status = refused });
        string ns = V5Namespace.Of(context);
        string topic = V5Namespace.Wrap(ns, request.Topic?.Name ?? string.Empty);
        var error = _engine.RouteTopic(topic, out int queueCount);
        var response = new QueryAssignmentResponse { Status = V5Status.From(error) };
        if (error.IsOk)
        {
            var resource = V5Namespace.Resource(ns, topic);
            var endpoints = LocalEndpoints(context, request.Endpoints);
            string group = V5Namespace.Wrap(ns, request.Group?.Name ?? string.Empty);
            if (_engine.IsOrderlyGroup(group))
                for (int q = 0; q < queueCount; q++) response.Assignments.Add(new Assignment { MessageQueue = Queue(resource, q, endpoints) });
            else
                response.Assignments.Add(new Assignment { MessageQueue = Queue(resource, -1, endpoints) });
        }

        return Task.FromResult(response);
    }
}
