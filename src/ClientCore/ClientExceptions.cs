using Apache.Rocketmq.V2;
using Grpc.Core;

namespace HalfMsg.ClientCore;

/// <summary>
/// Base of every error the client reports for a call that reached the server: either a RocketMQ business
/// status in the response body (<see cref="Code"/> is set) or a gRPC/transport failure
/// (<see cref="TransportException"/>). The family mirrors the official clients' <c>StatusChecker</c>.
/// </summary>
public class ClientException : Exception
{
    /// <summary>Creates an exception for a body status <paramref name="code"/>.</summary>
    public ClientException(Code code, string message, string? requestId = null, Exception? inner = null)
        : base(message, inner)
    {
        Code = code;
        RequestId = requestId;
    }

    /// <summary>The RocketMQ status code (<see cref="Apache.Rocketmq.V2.Code.Unspecified"/> for transport failures).</summary>
    public Code Code { get; }

    /// <summary>The <c>x-mq-request-id</c> of the failed call, for correlating with server logs.</summary>
    public string? RequestId { get; }

    /// <summary>True when retrying the same call later may succeed (throttling, internal errors, transport failures).</summary>
    public virtual bool IsRetryable => false;
}

/// <summary>BAD_REQUEST and the ILLEGAL_* / INVALID_* family (40000–40018).</summary>
public sealed class BadRequestException(Code code, string message, string? requestId = null)
    : ClientException(code, message, requestId);

/// <summary>UNAUTHORIZED (40100): missing or wrong credentials.</summary>
public sealed class UnauthorizedException(Code code, string message, string? requestId = null)
    : ClientException(code, message, requestId);

/// <summary>PAYMENT_REQUIRED (40200).</summary>
public sealed class PaymentRequiredException(Code code, string message, string? requestId = null)
    : ClientException(code, message, requestId);

/// <summary>FORBIDDEN (40300).</summary>
public sealed class ForbiddenException(Code code, string message, string? requestId = null)
    : ClientException(code, message, requestId);

/// <summary>NOT_FOUND, TOPIC_NOT_FOUND, CONSUMER_GROUP_NOT_FOUND.</summary>
public sealed class NotFoundException(Code code, string message, string? requestId = null)
    : ClientException(code, message, requestId);

/// <summary>PAYLOAD_TOO_LARGE, MESSAGE_BODY_TOO_LARGE.</summary>
public sealed class PayloadTooLargeException(Code code, string message, string? requestId = null)
    : ClientException(code, message, requestId);

/// <summary>TOO_MANY_REQUESTS (42900): the server throttles; retry after a backoff.</summary>
public sealed class TooManyRequestsException(Code code, string message, string? requestId = null)
    : ClientException(code, message, requestId)
{
    /// <inheritdoc />
    public override bool IsRetryable => true;
}

/// <summary>REQUEST_HEADER_FIELDS_TOO_LARGE, MESSAGE_PROPERTIES_TOO_LARGE.</summary>
public sealed class RequestHeaderFieldsTooLargeException(Code code, string message, string? requestId = null)
    : ClientException(code, message, requestId);

/// <summary>INTERNAL_ERROR, INTERNAL_SERVER_ERROR, HA_NOT_AVAILABLE: retryable server failures.</summary>
public sealed class InternalErrorException(Code code, string message, string? requestId = null)
    : ClientException(code, message, requestId)
{
    /// <inheritdoc />
    public override bool IsRetryable => true;
}

/// <summary>PROXY_TIMEOUT and the persistence timeouts (5040x).</summary>
public sealed class ProxyTimeoutException(Code code, string message, string? requestId = null)
    : ClientException(code, message, requestId)
{
    /// <inheritdoc />
    public override bool IsRetryable => true;
}

/// <summary>UNSUPPORTED, VERSION_UNSUPPORTED and every code the client does not recognise (treated as fatal, as the
/// official clients do).</summary>
public sealed class UnsupportedException(Code code, string message, string? requestId = null)
    : ClientException(code, message, requestId);

/// <summary>
/// The call failed below the RocketMQ layer: connection refused or reset, a non-200 HTTP status, a missing or
/// non-zero <c>grpc-status</c>, a malformed frame, or the deadline passed. <see cref="GrpcStatus"/> says which.
/// </summary>
public sealed class TransportException : ClientException
{
    /// <summary>Creates a transport failure.</summary>
    public TransportException(StatusCode grpcStatus, string message, string? requestId = null, Exception? inner = null)
        : base(Code.Unspecified, message, requestId, inner)
    {
        GrpcStatus = grpcStatus;
    }

    /// <summary>The gRPC status of the call (<see cref="StatusCode.Unavailable"/> for connection failures).</summary>
    public StatusCode GrpcStatus { get; }

    /// <inheritdoc />
    public override bool IsRetryable => GrpcStatus is StatusCode.Unavailable or StatusCode.DeadlineExceeded
        or StatusCode.Internal or StatusCode.Unknown or StatusCode.ResourceExhausted or StatusCode.Aborted;
}
