using Apache.Rocketmq.V2;
using Grpc.Core;
using HalfMsg.Broker.Core;

namespace HalfMsg.Broker.FrontEnds.GrpcV5;

internal sealed partial class MessagingService
{
    /// <summary>
    /// RocketMQ 5.3's recall of a delay message before its delivery time, by the handle its send answered with
    /// (<see cref="V5RecallHandle"/>): once answered OK the message is never delivered, also after a restart. The other
    /// answers are the Apache proxy's: a handle it cannot read, one for another topic, and one whose delivery time has
    /// passed are refused with INTERNAL_SERVER_ERROR (the broker's ILLEGAL_OPERATION, which the proxy's code mapping does
    /// not know, and the proxy's own refusal of a handle it cannot decode); a handle whose message no longer waits
    /// though its time lies ahead (recalled already, or unknown) is OK, as Apache's broker, which only writes a marker,
    /// answers it; a topic that does not exist is TOPIC_NOT_FOUND. The topic is the caller's namespace's, as in every
    /// other RPC: a handle is recalled only in the namespace it was sent in.
    /// </summary>
    public override async Task<RecallMessageResponse> RecallMessage(RecallMessageRequest request, ServerCallContext context)
    {
        string ns = V5Namespace.Of(context);
        string name = request.Topic?.Name ?? string.Empty;
        if (name.Length == 0)
            return new RecallMessageResponse { Status = V5Status.Of(Code.IllegalTopic, "topic name cannot be empty") };
        string topic = V5Namespace.Wrap(ns, name);
        if (!V5RecallHandle.TryDecode(request.RecallHandle, BrokerName, out V5RecallHandle handle))
            return new RecallMessageResponse { Status = V5Status.Of(Code.InternalServerError, "recall handle is invalid") };
        if (handle.Topic != topic)
            return new RecallMessageResponse { Status = V5Status.Of(Code.InternalServerError, "recall failed, topic not match") };

        var (error, outcome) = await _engine.RecallDelayedAsync(topic, handle.SentAt, handle.DeliverAtMs, handle.MessageId, context.CancellationToken)
            .ConfigureAwait(false);
        if (!error.IsOk) return new RecallMessageResponse { Status = V5Status.From(error) };
        if (outcome == RecallOutcome.Delivered)
        {
            return new RecallMessageResponse
            {
                Status = V5Status.Of(Code.InternalServerError, "recall failed, timestamp invalid: the delivery time has passed and the message was delivered"),
            };
        }

        return new RecallMessageResponse { Status = V5Status.Ok(), MessageId = handle.MessageId };
    }
}
