using Apache.Rocketmq.V2;
using Grpc.Core;
using Status = Apache.Rocketmq.V2.Status;
using HalfMsg.Broker.Core;

namespace HalfMsg.Broker.FrontEnds.GrpcV5;

internal sealed partial class MessagingService
{
    /// <summary>A FIFO push consumer gave up on a message after its local retries: move it to <c>%DLQ%&lt;group&gt;</c>.</summary>
    public override async Task<ForwardMessageToDeadLetterQueueResponse> ForwardMessageToDeadLetterQueue(
        ForwardMessageToDeadLetterQueueRequest request, ServerCallContext context)
    {
        string ns = V5Namespace.Of(context);
        string group = V5Namespace.Wrap(ns, request.Group?.Name ?? string.Empty);
        string topic = V5Namespace.Wrap(ns, request.Topic?.Name ?? string.Empty);
        BrokerError error = await _engine.ForwardToDeadLetterAsync(group, topic, request.ReceiptHandle, context.CancellationToken).ConfigureAwait(false);
        return new ForwardMessageToDeadLetterQueueResponse { Status = V5Status.From(error) };
    }
}
