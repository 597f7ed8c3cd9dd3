using Apache.Rocketmq.V2;

namespace HalfMsg.ClientCore.Transport;

/// <summary>Maps a response body <see cref="Status"/> to the client exception family, following the classification
/// of the official clients (rocketmq-clients StatusChecker): a missing status is success, code 0 is an error.</summary>
internal static class StatusChecker
{
    public static bool IsSuccess(Status? status, bool messageNotFoundIsSuccess = false) =>
        status is null
        || status.Code is Code.Ok or Code.MultipleResults
        || (messageNotFoundIsSuccess && status.Code == Code.MessageNotFound);

    public static void Check(Status? status, string? requestId, bool messageNotFoundIsSuccess = false)
    {
        if (IsSuccess(status, messageNotFoundIsSuccess))
        {
            return;
        }

        throw ToException(status!, requestId);
    }

    public static ClientException ToException(Status status, string? requestId)
    {
        Code code = status.Code;
        string message = $"{code} ({(int)code}): {status.Message}";
        int n = (int)code;
        return code switch
        {
            Code.BadRequest or Code.IllegalAccessPoint or Code.IllegalTopic or Code.IllegalConsumerGroup
                or Code.IllegalMessageTag or Code.IllegalMessageKey or Code.IllegalMessageGroup
                or Code.IllegalMessagePropertyKey or Code.InvalidTransactionId or Code.IllegalMessageId
                or Code.IllegalFilterExpression or Code.IllegalInvisibleTime or Code.IllegalDeliveryTime
                or Code.InvalidReceiptHandle or Code.MessagePropertyConflictWithType or Code.UnrecognizedClientType
                or Code.MessageCorrupted or Code.ClientIdRequired or Code.IllegalPollingTime
                => new BadRequestException(code, message, requestId),
            Code.Unauthorized => new UnauthorizedException(code, message, requestId),
            Code.PaymentRequired => new PaymentRequiredException(code, message, requestId),
            Code.Forbidden => new ForbiddenException(code, message, requestId),
            Code.NotFound or Code.MessageNotFound or Code.TopicNotFound or Code.ConsumerGroupNotFound
                => new NotFoundException(code, message, requestId),
            Code.PayloadTooLarge or Code.MessageBodyTooLarge => new PayloadTooLargeException(code, message, requestId),
            Code.TooManyRequests => new TooManyRequestsException(code, message, requestId),
            Code.RequestHeaderFieldsTooLarge or Code.MessagePropertiesTooLarge
                => new RequestHeaderFieldsTooLargeException(code, message, requestId),
            Code.InternalError or Code.InternalServerError or Code.HaNotAvailable
                => new InternalErrorException(code, message, requestId),
            Code.ProxyTimeout or Code.MasterPersistenceTimeout or Code.SlavePersistenceTimeout
                => new ProxyTimeoutException(code, message, requestId),
            _ => n == 0
                ? new UnsupportedException(code, "the server returned a Status with code 0 (unset): " + status.Message, requestId)
                : new UnsupportedException(code, message, requestId),
        };
    }
}
