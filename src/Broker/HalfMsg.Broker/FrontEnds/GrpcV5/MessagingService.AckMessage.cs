using Apache.Rocketmq.V2;
using Grpc.Core;
using Status = Apache.Rocketmq.V2.Status;
using HalfMsg.Broker.Core;

namespace HalfMsg.Broker.FrontEnds.GrpcV5;

internal sealed partial class MessagingService
{
    /// <summary>Acknowledges each entry. The top-level status is what the Node client checks: the common entry code, or
    /// MULTIPLE_RESULTS when entries differ.</summary>
    public override async Task<AckMessageResponse> AckMessage(AckMessageRequest request, ServerCallContext context)
    {
        string group = request.Group?.Name ?? string.Empty;
        string topic = request.Topic?.Name ?? string.Empty;
        var response = new AckMessageResponse();
        var statuses = new List<Status>(request.Entries.Count);
        foreach (AckMessageEntry entry in request.Entries)
        {
            BrokerError error = await _engine.AckAsync(group, topic, entry.ReceiptHandle, context.CancellationToken).ConfigureAwait(false);
            Status status = V5Status.From(error);
            statuses.Add(status);
            response.Entries.Add(new AckMessageResultEntry { MessageId = entry.MessageId, ReceiptHandle = entry.ReceiptHandle, Status = status });
        }

        response.Status = request.Entries.Count == 0 ? V5Status.Of(Code.BadRequest, "no entry to acknowledge") : V5Status.Combine(statuses);
        return response;
    }
}
