using Apache.Rocketmq.V2;

namespace HalfMsg.Broker.FrontEnds.GrpcV5;

internal sealed partial class MessagingService
{
    /// <summary>
    /// Push-consumer assignment: one queue with id -1, "receive from any queue of the topic on this broker", as the
    /// proxy answers for a non-FIFO group. Message-group order is kept by the core whatever the assignment.
    /// </summary>
    private ValueTask<QueryAssignmentResponse> QueryAssignmentAsync(QueryAssignmentRequest request, GrpcCall call)
    {
        string topic = request.Topic?.Name ?? string.Empty;
        var error = _engine.RouteTopic(topic, out _);
        var response = new QueryAssignmentResponse { Status = V5Status.From(error) };
        if (error.IsOk)
        {
            response.Assignments.Add(new Assignment { MessageQueue = Queue(topic, -1, LocalEndpoints(call)) });
        }

        return ValueTask.FromResult(response);
    }
}
