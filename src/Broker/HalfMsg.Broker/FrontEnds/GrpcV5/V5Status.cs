using Apache.Rocketmq.V2;
using HalfMsg.Broker.Core;

namespace HalfMsg.Broker.FrontEnds.GrpcV5;

/// <summary>
/// The one place where core outcomes become RocketMQ v5 body statuses (<c>apache.rocketmq.v2.Status</c>, sent with
/// grpc-status 0 as the Apache proxy's <c>ResponseBuilder</c> does). Codes are chosen for how the official clients
/// classify them (<c>StatusChecker</c>): 400xx → BadRequestException, 404xx → NotFound, 429 → retry after backoff,
/// 500xx → InternalErrorException (retryable).
/// </summary>
internal static class V5Status
{
    public static Code ToCode(BrokerStatus status) => status switch
    {
        BrokerStatus.Ok => Code.Ok,
        BrokerStatus.BadRequest => Code.BadRequest,
        BrokerStatus.IllegalTopic => Code.IllegalTopic,
        BrokerStatus.TopicNotFound => Code.TopicNotFound,
        BrokerStatus.IllegalConsumerGroup => Code.IllegalConsumerGroup,
        BrokerStatus.MessageTooLarge => Code.MessageBodyTooLarge,
        // The Apache proxy answers OK to every EndTransaction (it forwards the decision one-way), so no client expects
        // a code here; Java and Node throw on any code but OK (Node: a BadRequestException for INVALID_TRANSACTION_ID, a
        // NotFoundException for NOT_FOUND, neither retried), with our message. The two are kept apart because they
        // mean opposite things to the producer: a conflict is a decision the other way (a late commit of a rolled-back
        // half: not delivered), while an id the broker does not know may be one whose decision it forgot (by default
        // after an hour, or a million later decisions), made by a check-back whose answer may have been Commit: the
        // outcome is unknown.
        BrokerStatus.TransactionNotFound => Code.NotFound,
        BrokerStatus.TransactionConflict => Code.InvalidTransactionId,
        BrokerStatus.InvalidTransactionId => Code.InvalidTransactionId,
        // The one code on which the Node push consumer stops retrying ack/nack.
        BrokerStatus.InvalidReceiptHandle => Code.InvalidReceiptHandle,
        BrokerStatus.IllegalInvisibleTime => Code.IllegalInvisibleTime,
        BrokerStatus.IllegalDeliveryTime => Code.IllegalDeliveryTime,
        // An empty receive; clients treat it as success.
        BrokerStatus.MessageNotFound => Code.MessageNotFound,
        BrokerStatus.TooManyRequests => Code.TooManyRequests,
        BrokerStatus.StorageFailure => Code.MasterPersistenceTimeout, // "could not persist": the broker's log failed (issue 8, defect 6)
        BrokerStatus.PropertiesTooLarge => Code.MessagePropertiesTooLarge,
        // What the Apache proxy answers for a broker whose store is not writable (SERVICE_NOT_AVAILABLE has no entry in
        // its ResponseBuilder code mapping, so it becomes INTERNAL_SERVER_ERROR): retryable in every official client.
        BrokerStatus.DiskFull => Code.InternalServerError,
        BrokerStatus.InternalError => Code.InternalServerError,
        // Not the client's mistake and not retryable at once: the operator has to act.
        BrokerStatus.TooManyConsumerGroups => Code.Forbidden,
        BrokerStatus.TooManyTopics => Code.Forbidden,
        _ => Code.InternalServerError,
    };

    public static Status From(BrokerError error) => new()
    {
        Code = ToCode(error.Status),
        Message = error.IsOk ? "OK" : error.Message,
    };

    public static Status Ok() => new() { Code = Code.Ok, Message = "OK" };

    public static Status Of(Code code, string message) => new() { Code = code, Message = message };

    /// <summary>The top-level status of a batch: the common code of all entries, or MULTIPLE_RESULTS when they differ
    /// (the proxy's <c>SendMessageActivity</c> / <c>AckMessageActivity</c> rule).</summary>
    public static Status Combine(IReadOnlyList<Status> entries)
    {
        if (entries.Count == 0)
        {
            return Ok();
        }

        Status first = entries[0];
        for (int i = 1; i < entries.Count; i++)
        {
            if (entries[i].Code != first.Code)
            {
                return Of(Code.MultipleResults, "Entries have different results; see each entry's status");
            }
        }

        return first.Clone();
    }
}
