using Apache.Rocketmq.V2;
using HalfMsg.Broker.Core;

namespace HalfMsg.Broker.FrontEnds.GrpcV5;

internal sealed partial class MessagingService
{
    /// <summary>A FIFO push consumer gave up on a message after its local retries: move it to <c>%DLQ%&lt;group&gt;</c>.</summary>
    private async ValueTask<ForwardMessageToDeadLetterQueueResponse> ForwardMessageToDeadLetterQueueAsync(
        ForwardMessageToDeadLetterQueueRequest request, GrpcCall call)
    {
        string group = request.Group?.Name ?? string.Empty;
        string topic = request.Topic?.Name ?? string.Empty;
        BrokerError error = await _engine.ForwardToDeadLetterAsync(group, topic, request.ReceiptHandle, call.CancellationToken).ConfigureAwait(false);
        return new ForwardMessageToDeadLetterQueueResponse { Status = V5Status.From(error) };
    }
}
