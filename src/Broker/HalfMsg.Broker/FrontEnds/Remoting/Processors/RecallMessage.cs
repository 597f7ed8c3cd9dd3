using HalfMsg.Broker.Core;
using HalfMsg.Broker.FrontEnds.GrpcV5;
using HalfMsg.Protocol.Remoting;

namespace HalfMsg.Broker.FrontEnds.Remoting;

// RECALL_MESSAGE (370): RocketMQ 5.3.1+'s DefaultMQProducer.recallMessage(topic, recallHandle).
internal sealed partial class RemotingDispatcher
{
    /// <summary>
    /// Recalls a timer message before its delivery time by the handle its send answered with (<c>recallHandle</c>, see
    /// SendMessage.cs), with the engine method and handle form gRPC's RecallMessage uses: a handle from either protocol's
    /// send is recalled over the other. Once answered SUCCESS the message is never delivered, also after a restart. The
    /// answers are Apache's broker's (RecallMessageProcessor), checked in its order: a topic that does not exist is
    /// TOPIC_NOT_EXIST whatever the handle; a handle it cannot read (or issued by another broker), one for another topic,
    /// and one whose message was delivered already (its time has passed) are ILLEGAL_OPERATION; SUCCESS answers the
    /// message id, also for a handle whose message no longer waits though its time lies ahead (recalled already), as
    /// Apache's broker, which only writes a marker, answers it. The topic is taken as sent: a RocketMQ 4/5 Remoting
    /// client wraps its namespace into it itself, as into the topic of the send the handle came from.
    /// </summary>
    private async ValueTask<RemotingCommand?> RecallMessageAsync(RemotingSession session, RemotingCommand request)
    {
        string? topic = request.Get("topic");
        string? recallHandle = request.Get("recallHandle");
        if (string.IsNullOrEmpty(topic)) return Missing(request, "topic");
        if (string.IsNullOrEmpty(recallHandle)) return Missing(request, "recallHandle");

        if (Engine.QueueCount(topic) == 0) return Recall(request, ResponseCode.TopicNotExist, $"recall failed, the topic[{topic}] not exist");
        if (!V5RecallHandle.TryDecode(recallHandle, Options.BrokerName, out V5RecallHandle handle))
            return Recall(request, ResponseCode.IllegalOperation, "recall handle is invalid");
        if (handle.Topic != topic) return Recall(request, ResponseCode.IllegalOperation, "recall failed, topic not match");

        var (error, outcome) = await Engine.RecallDelayedAsync(topic, handle.SentAt, handle.DeliverAtMs, handle.MessageId, session.Closing)
            .ConfigureAwait(false);
        if (!error.IsOk) return Recall(request, RemotingErrors.CodeOf(error.Status), $"recall failed, {error.Message}");
        if (outcome == RecallOutcome.Delivered)
        {
            return Recall(request, ResponseCode.IllegalOperation,
                "recall failed, timestamp invalid: the delivery time has passed and the message was delivered");
        }
        return Recall(request, ResponseCode.Success, null).Set("msgId", handle.MessageId);
    }

    /// <summary>An answer with the MSG_REGION ext field Apache's RecallMessageProcessor puts on each of its answers.</summary>
    private static RemotingCommand Recall(RemotingCommand request, int code, string? remark)
        => RemotingCommand.ResponseTo(request, code, remark).Set(MessageConst.MsgRegion, "DefaultRegion");
}
