using Apache.Rocketmq.V2;
using Grpc.Core;
using Status = Apache.Rocketmq.V2.Status;

namespace HalfMsg.Broker.FrontEnds.GrpcV5;

internal sealed partial class MessagingService
{
    /// <summary>
    /// Push-consumer assignment: one queue with id -1, "receive from any queue of the topic on this broker", as the
    /// proxy answers for a non-FIFO group. Message-group order is kept by the core whatever the assignment.
    /// </summary>
    public override Task<QueryAssignmentResponse> QueryAssignment(QueryAssignmentRequest request, ServerCallContext context)
    {
        string ns = V5Namespace.Of(context);
        string topic = V5Namespace.Wrap(ns, request.Topic?.Name ?? string.Empty);
        var error = _engine.RouteTopic(topic, out _);
        var response = new QueryAssignmentResponse { Status = V5Status.From(error) };
        if (error.IsOk)
        {
            response.Assignments.Add(new Assignment { MessageQueue = Queue(V5Namespace.Resource(ns, topic), -1, LocalEndpoints(context, request.Endpoints)) });
        }

        return Task.FromResult(response);
    }
}
