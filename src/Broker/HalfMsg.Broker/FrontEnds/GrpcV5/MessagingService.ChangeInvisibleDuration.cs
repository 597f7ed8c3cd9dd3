using Apache.Rocketmq.V2;
using Grpc.Core;
using Status = Apache.Rocketmq.V2.Status;
using HalfMsg.Broker.Core.Model;

namespace HalfMsg.Broker.FrontEnds.GrpcV5;

internal sealed partial class MessagingService
{
    /// <summary>
    /// Extends or shortens a lease (a push consumer's nack sends ~1 ms or 0). The response carries the new receipt
    /// handle: the Node SimpleConsumer replaces its handle with whatever comes back, even an empty one.
    /// </summary>
    public override async Task<ChangeInvisibleDurationResponse> ChangeInvisibleDuration(ChangeInvisibleDurationRequest request, ServerCallContext context)
    {
        string ns = V5Namespace.Of(context);
        string group = V5Namespace.Wrap(ns, request.Group?.Name ?? string.Empty);
        string topic = V5Namespace.Wrap(ns, request.Topic?.Name ?? string.Empty);
        if (!V5Time.TryToTimeSpan(request.InvisibleDuration, out TimeSpan? requested))
        {
            return new ChangeInvisibleDurationResponse
            {
                Status = V5Status.Of(Code.IllegalInvisibleTime, "invisible_duration is not a valid duration"),
                ReceiptHandle = request.ReceiptHandle,
            };
        }

        TimeSpan duration = requested ?? TimeSpan.Zero;
        ChangeInvisibleResult result = await _engine.ChangeInvisibleDurationAsync(group, topic, request.ReceiptHandle, duration, context.CancellationToken)
            .ConfigureAwait(false);
        return new ChangeInvisibleDurationResponse
        {
            Status = V5Status.From(result.Error),
            ReceiptHandle = result.IsOk ? result.ReceiptHandle ?? request.ReceiptHandle : request.ReceiptHandle,
        };
    }
}
