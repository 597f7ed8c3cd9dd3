using HalfMsg.Broker.Core;
using HalfMsg.Protocol.Remoting;

namespace HalfMsg.Broker.FrontEnds.Remoting;

/// <summary>The core's <see cref="BrokerStatus"/> as a Remoting response code, mapped once (STYLE item 5).</summary>
internal static class RemotingErrors
{
    public static int CodeOf(BrokerStatus status) => status switch
    {
        BrokerStatus.Ok => ResponseCode.Success,
        BrokerStatus.BadRequest => ResponseCode.InvalidParameter,
        BrokerStatus.IllegalTopic => ResponseCode.NoPermission,
        BrokerStatus.TopicNotFound => ResponseCode.TopicNotExist,
        BrokerStatus.IllegalConsumerGroup => ResponseCode.SubscriptionGroupNotExist,
        BrokerStatus.MessageTooLarge => ResponseCode.MessageIllegal,
        BrokerStatus.IllegalDeliveryTime => ResponseCode.MessageIllegal,
        BrokerStatus.PropertiesTooLarge => ResponseCode.MessageIllegal, // RocketMQ's PROPERTIES_SIZE_EXCEEDED
        BrokerStatus.TransactionNotFound => ResponseCode.SystemError,
        BrokerStatus.TransactionConflict => ResponseCode.SystemError,
        BrokerStatus.InvalidTransactionId => ResponseCode.SystemError,
        BrokerStatus.TooManyRequests => ResponseCode.SystemBusy,
        // RocketMQ's SendMessageProcessor for PutMessageStatus.SERVICE_NOT_AVAILABLE (the store is not writable: disk
        // full); producers retry it (DefaultMQProducerImpl.sendDefaultImpl continues on SERVICE_NOT_AVAILABLE).
        BrokerStatus.DiskFull => ResponseCode.ServiceNotAvailable,
        // What RocketMQ answers when it may not create a group (autoCreateSubscriptionGroup off); the remark says why.
        BrokerStatus.TooManyConsumerGroups => ResponseCode.SubscriptionGroupNotExist,
        // RocketMQ's broker answers SYSTEM_ERROR when it does not create a topic (updateAndCreateTopic); mqadmin prints the remark.
        BrokerStatus.TooManyTopics => ResponseCode.SystemError,
        _ => ResponseCode.SystemError,
    };

    public static RemotingCommand Response(RemotingCommand request, BrokerError error)
        => RemotingCommand.ResponseTo(request, CodeOf(error.Status), error.IsOk ? null : error.Message);
}
