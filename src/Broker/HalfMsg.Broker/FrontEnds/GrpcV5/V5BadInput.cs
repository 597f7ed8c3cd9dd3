using Google.Protobuf;
using Grpc.AspNetCore.Server;
using Grpc.Core;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.Logging;

namespace HalfMsg.Broker.FrontEnds.GrpcV5;

/// <summary>
/// A request that is not valid protobuf, reported in our own log category at Debug (grpc-dotnet reports it in its
/// call-handler category, which the broker silences) and rate-limited like failed signatures, and answered with a
/// clear INVALID_ARGUMENT instead of grpc-dotnet's "UNKNOWN: Exception was thrown by handler". The call ends; the
/// connection and the broker carry on. A caller without valid credentials whose body passes
/// <see cref="GrpcV5Options.MaxUnauthenticatedRequestSize"/> is answered UNAUTHENTICATED the same way.
/// <para>grpc-dotnet deserializes a unary or server-streaming request before any interceptor runs, so those are
/// recognised after the call in <see cref="GrpcV5Extensions.MapGrpcV5"/>'s middleware (the exception is the call
/// status's debug exception, and the trailers-only answer is not sent yet); a bidi stream (Telemetry) reads its
/// messages inside the handler, where <see cref="V5CallInterceptor"/> catches the exception.</para>
/// </summary>
internal sealed partial class V5BadInput
{
    private readonly ILogger _logger;
    private readonly LogRateLimiter _limit;
    private readonly int _maxUnauthenticated;

    public V5BadInput(GrpcV5Options options, ILogger<V5BadInput> logger, TimeProvider? time = null)
    {
        _logger = logger;
        _limit = new LogRateLimiter(options.BadInputLogsPerMinute, time ?? TimeProvider.System);
        _maxUnauthenticated = options.MaxUnauthenticatedRequestSize;
    }

    /// <summary>The status a malformed request is answered with.</summary>
    public static Status InvalidMessage(string method) =>
        new(StatusCode.InvalidArgument, $"the request to {method} is not a valid protobuf message");

    /// <summary>
    /// A request message grpc-dotnet could not read from its frame: a compressed flag other than 0 or 1
    /// (<see cref="InvalidDataException"/> from grpc-dotnet's reader), a declared length of 2^31 or more
    /// (<see cref="IOException"/> "Message too large" from the same reader), or a gzip-compressed message that does not
    /// inflate (<see cref="InvalidDataException"/> from System.IO.Compression). Told apart by the assembly that threw,
    /// not by type alone: the engine's own InvalidDataException (a damaged record) and a connection's IOException stay
    /// what they were. (A message cut short or longer than the limit grpc-dotnet answers itself, with a status.) Until
    /// the night session of 2026-12-06 a Telemetry stream with such a frame was logged at Error as a handler failure and
    /// answered INTERNAL, and a unary call UNKNOWN (found by the network fuzz test, which failed a run on it now and then).
    /// </summary>
    public static bool IsBadFrame(Exception ex) => ex switch
    {
        InvalidDataException { Source: "Grpc.AspNetCore.Server" or "System.IO.Compression" } => true,
        IOException { Source: "Grpc.AspNetCore.Server" } => true,
        _ => false,
    };

    /// <summary>The status a request with bad gRPC framing is answered with.</summary>
    public static Status InvalidFrame(string method, string reason) =>
        new(StatusCode.InvalidArgument, $"the request to {method} is not a valid gRPC message frame: {reason}");

    /// <summary>After the call: if it failed on a malformed request, or on the body cap for a caller that failed
    /// authentication (<paramref name="unauthenticated"/>), log it and make the answer say so.</summary>
    public void AfterCall(HttpContext context, bool unauthenticated)
    {
        if (context.Features.Get<IServerCallContextFeature>()?.ServerCallContext is not { } call)
        {
            return;
        }

        string method = context.Request.Path.Value ?? "";
        Status status;
        switch (call.Status.DebugException)
        {
            case InvalidProtocolBufferException malformed:
                Log(method, malformed);
                status = InvalidMessage(method);
                break;
            case Exception badFrame when IsBadFrame(badFrame):
                Log(method, badFrame);
                status = InvalidFrame(method, badFrame.Message);
                break;
            case BadHttpRequestException { StatusCode: StatusCodes.Status413PayloadTooLarge } when unauthenticated:
                // Kestrel stopped reading at MaxUnauthenticatedRequestSize (grpc-dotnet would say UNKNOWN).
                if (_logger.IsEnabled(LogLevel.Debug) && _limit.TryEnter(out long suppressed))
                {
                    LogCutOff(method, _maxUnauthenticated, suppressed);
                }

                status = new Status(StatusCode.Unauthenticated,
                    $"a request without valid credentials may carry at most {_maxUnauthenticated} bytes");
                break;
            default:
                return;
        }

        if (!context.Response.HasStarted)
        {
            // Trailers-only response: the status is still in the headers, not yet written.
            context.Response.Headers["grpc-status"] = ((int)status.StatusCode).ToString(System.Globalization.CultureInfo.InvariantCulture);
            context.Response.Headers["grpc-message"] = Uri.EscapeDataString(status.Detail).Replace("%20", " ", StringComparison.Ordinal);
        }
    }

    public void Log(string method, Exception malformed)
    {
        if (_logger.IsEnabled(LogLevel.Debug) && _limit.TryEnter(out long suppressed))
        {
            LogMalformed(method, malformed.Message, suppressed);
        }
    }

    [LoggerMessage(Level = LogLevel.Debug,
        Message = "Malformed gRPC request to {Method} answered INVALID_ARGUMENT: {Reason} ({Suppressed} more not logged since the last line)")]
    private partial void LogMalformed(string method, string reason, long suppressed);

    [LoggerMessage(Level = LogLevel.Debug,
        Message = "Cut off an unauthenticated request to {Method} after {Limit} bytes; answered UNAUTHENTICATED ({Suppressed} more bad requests not logged since the last line)")]
    private partial void LogCutOff(string method, int limit, long suppressed);
}
