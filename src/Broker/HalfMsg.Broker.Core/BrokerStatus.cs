namespace HalfMsg.Broker.Core;

/// <summary>
/// The core's one error vocabulary. Front-ends map it once per protocol
/// (gRPC v5: <c>apache.rocketmq.v2.Code</c> in the body Status; Remoting: response code + remark).
/// Business outcomes are results, not exceptions; exceptions are for bugs and I/O failure.
/// </summary>
public enum BrokerStatus
{
    Ok = 0,
    /// <summary>The request is malformed or a field is out of range.</summary>
    BadRequest,
    /// <summary>The topic name is not acceptable (empty, too long, illegal characters, reserved system topic).</summary>
    IllegalTopic,
    /// <summary>The topic does not exist and auto-creation is off.</summary>
    TopicNotFound,
    /// <summary>The consumer group name is not acceptable.</summary>
    IllegalConsumerGroup,
    /// <summary>The body exceeds the configured maximum message size.</summary>
    MessageTooLarge,
    /// <summary>No transaction (half message) with this id is known, or its decision has expired from memory.</summary>
    TransactionNotFound,
    /// <summary>The transaction was already decided the other way (e.g. rollback after commit). Nothing changed.</summary>
    TransactionConflict,
    /// <summary>The transaction id is empty or does not match the message id it is sent with.</summary>
    InvalidTransactionId,
    /// <summary>The receipt handle is malformed, unknown, or stale (the message was acked or redelivered since).</summary>
    InvalidReceiptHandle,
    /// <summary>The invisible duration is out of range.</summary>
    IllegalInvisibleTime,
    /// <summary>The delivery timestamp is too far in the future.</summary>
    IllegalDeliveryTime,
    /// <summary>No message is available (an empty receive; not an error for clients).</summary>
    MessageNotFound,
    /// <summary>The broker is overloaded or shutting down; retry later.</summary>
    TooManyRequests,
    /// <summary>The storage failed; the request's effect is unknown.</summary>
    StorageFailure,
    /// <summary>A bug.</summary>
    InternalError,
    /// <summary>The message's keys, properties and other metadata exceed what one record may carry besides the body.</summary>
    PropertiesTooLarge,
    /// <summary>The data dir's file system is (nearly) full: new messages are refused until space returns; reads,
    /// decisions on stored halves and acks go on. Retry later (RocketMQ: SERVICE_NOT_AVAILABLE, "the broker's disk is full").</summary>
    DiskFull,
    /// <summary>Starting one more consumer group would exceed <see cref="CoreOptions.MaxConsumerGroups"/>; an operator
    /// deletes an unused group or raises the limit.</summary>
    TooManyConsumerGroups,
    /// <summary>Creating one more topic would exceed <see cref="CoreOptions.MaxTopics"/> and the creation is bounded by it
    /// (a Remoting client's UPDATE_AND_CREATE_TOPIC); an operator creates it through the admin API or raises the limit.</summary>
    TooManyTopics,
}

/// <summary>A status with a human-readable detail for the client.</summary>
public readonly record struct BrokerError(BrokerStatus Status, string Message)
{
    public static readonly BrokerError None = new(BrokerStatus.Ok, "OK");
    public bool IsOk => Status == BrokerStatus.Ok;
    public override string ToString() => $"{Status}: {Message}";
}
