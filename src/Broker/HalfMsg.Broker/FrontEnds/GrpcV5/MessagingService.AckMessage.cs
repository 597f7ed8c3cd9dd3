using Apache.Rocketmq.V2;
using Grpc.Core;
using Status = Apache.Rocketmq.V2.Status;
using HalfMsg.Broker.Core;

namespace HalfMsg.Broker.FrontEnds.GrpcV5;

internal sealed partial class MessagingService
{
    /// <summary>Acknowledges every entry with one call into the core: one lock hold and ONE durable wait for the whole
    /// batch (32 entries cost one group commit, not 32 in a row). The top-level status is what the Node client checks:
    /// the common entry code, or MULTIPLE_RESULTS when entries differ.</summary>
    public override async Task<AckMessageResponse> AckMessage(AckMessageRequest request, ServerCallContext context)
    {
        string ns = V5Namespace.Of(context);
        string group = V5Namespace.Wrap(ns, request.Group?.Name ?? string.Empty);
        string topic = V5Namespace.Wrap(ns, request.Topic?.Name ?? string.Empty);
        var response = new AckMessageResponse();
        if (request.Entries.Count == 0)
        {
            response.Status = V5Status.Of(Code.BadRequest, "no entry to acknowledge");
            return response;
        }
        if (request.Entries.Count > MaxEntriesPerCall)
        {
            response.Status = V5Status.Of(Code.BadRequest, $"{request.Entries.Count} entries in one call; at most {MaxEntriesPerCall}");
            return response;
        }
        var handles = new string[request.Entries.Count];
        for (int i = 0; i < handles.Length; i++) handles[i] = request.Entries[i].ReceiptHandle;
        BrokerError[] errors = await _engine.AckBatchAsync(group, topic, handles, context.CancellationToken).ConfigureAwait(false);
        var statuses = new List<Status>(errors.Length);
        for (int i = 0; i < errors.Length; i++)
        {
            Status status = V5Status.From(errors[i]);
            statuses.Add(status);
            AckMessageEntry entry = request.Entries[i];
            response.Entries.Add(new AckMessageResultEntry { MessageId = entry.MessageId, ReceiptHandle = entry.ReceiptHandle, Status = status });
        }
        response.Status = V5Status.Combine(statuses);
        return response;
    }
}
