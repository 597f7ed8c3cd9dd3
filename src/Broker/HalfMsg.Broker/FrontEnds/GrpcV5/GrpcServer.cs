using System.Collections.Frozen;
using System.Globalization;
using Google.Protobuf;
using Microsoft.AspNetCore.Connections;
using HalfMsg.Protocol.Grpc;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Http.Features;
using Microsoft.AspNetCore.Server.Kestrel.Core.Features;
using Microsoft.Extensions.Logging;

namespace HalfMsg.Broker.FrontEnds.GrpcV5;

internal enum GrpcMethodKind
{
    Unary,
    ServerStreaming,
    DuplexStreaming,
}

/// <summary>One entry of the dispatch table: an HTTP/2 <c>:path</c> and the code that serves it.</summary>
internal sealed class GrpcMethod
{
    private GrpcMethod(string path, GrpcMethodKind kind, Func<GrpcCall, Task> handler)
    {
        Path = path;
        Kind = kind;
        Handler = handler;
    }

    public string Path { get; }
    public GrpcMethodKind Kind { get; }
    public Func<GrpcCall, Task> Handler { get; }

    /// <summary>One request message, one response message.</summary>
    public static GrpcMethod Unary<TRequest, TResponse>(string path, MessageParser<TRequest> parser,
        Func<TRequest, GrpcCall, ValueTask<TResponse>> handler)
        where TRequest : class, IMessage<TRequest>
        where TResponse : IMessage
        => new(path, GrpcMethodKind.Unary, async call =>
        {
            TRequest request = await ReadSingleAsync(call, parser).ConfigureAwait(false);
            TResponse response = await handler(request, call).ConfigureAwait(false);
            await call.WriteMessageAsync(response).ConfigureAwait(false);
        });

    /// <summary>One request message; the handler writes any number of responses through the call.</summary>
    public static GrpcMethod ServerStreaming<TRequest>(string path, MessageParser<TRequest> parser,
        Func<TRequest, GrpcCall, Task> handler)
        where TRequest : class, IMessage<TRequest>
        => new(path, GrpcMethodKind.ServerStreaming, async call =>
        {
            TRequest request = await ReadSingleAsync(call, parser).ConfigureAwait(false);
            await handler(request, call).ConfigureAwait(false);
        });

    /// <summary>The handler reads and writes the streams itself.</summary>
    public static GrpcMethod DuplexStreaming(string path, Func<GrpcCall, Task> handler)
        => new(path, GrpcMethodKind.DuplexStreaming, handler);

    private static async ValueTask<TRequest> ReadSingleAsync<TRequest>(GrpcCall call, MessageParser<TRequest> parser)
        where TRequest : class, IMessage<TRequest>
    {
        TRequest? request = await call.ReadMessageAsync(parser).ConfigureAwait(false);
        if (request is null)
        {
            GrpcCallException.Throw(GrpcStatusCode.Internal, "Incomplete request: no request message was sent");
        }

        return request;
    }
}

/// <summary>
/// A small gRPC-over-Kestrel server: HTTP/2 POST with <c>application/grpc</c>, a path → method table, length-prefixed
/// framing straight on the request/response pipes, <c>grpc-timeout</c> deadlines, and <c>grpc-status</c> trailers on
/// every call (Trailers-Only when nothing was written). Terminal middleware: it never calls a next delegate.
/// </summary>
internal sealed partial class GrpcServer
{
    private readonly FrozenDictionary<string, GrpcMethod> _methods;
    private readonly int _maxReceiveMessageSize;
    private readonly TimeProvider _time;
    private readonly ILogger _logger;

    public GrpcServer(IEnumerable<GrpcMethod> methods, int maxReceiveMessageSize, ILogger logger, TimeProvider? time = null)
    {
        _methods = methods.ToFrozenDictionary(m => m.Path, StringComparer.Ordinal);
        _maxReceiveMessageSize = maxReceiveMessageSize;
        _logger = logger;
        _time = time ?? TimeProvider.System;
    }

    public async Task HandleAsync(HttpContext context)
    {
        HttpRequest request = context.Request;
        HttpResponse response = context.Response;

        // gRPC needs HTTP/2 (trailers, full duplex). These answers are plain HTTP: a gRPC client maps them to a status.
        if (!HttpProtocol.IsHttp2(request.Protocol))
        {
            response.StatusCode = StatusCodes.Status426UpgradeRequired;
            response.Headers.Upgrade = "h2c";
            return;
        }

        if (!HttpMethods.IsPost(request.Method))
        {
            response.StatusCode = StatusCodes.Status405MethodNotAllowed;
            response.Headers.Allow = "POST";
            return;
        }

        if (!GrpcHeaders.IsGrpcContentType(request.ContentType))
        {
            response.StatusCode = StatusCodes.Status415UnsupportedMediaType;
            return;
        }

        response.StatusCode = StatusCodes.Status200OK;
        response.ContentType = GrpcHeaders.ContentTypeValue;

        string path = request.Path.Value ?? string.Empty;
        if (!_methods.TryGetValue(path, out GrpcMethod? method))
        {
            LogUnknownMethod(path);
            WriteStatus(response, GrpcStatusCode.Unimplemented, $"Method {path} is unimplemented");
            return;
        }

        // The per-message limit is ours (checked from each length prefix); Kestrel's whole-body limit and minimum data
        // rate would otherwise cut long-lived streams such as Telemetry.
        if (method.Kind != GrpcMethodKind.Unary)
        {
            if (context.Features.Get<IHttpMaxRequestBodySizeFeature>() is { IsReadOnly: false } maxBody)
            {
                maxBody.MaxRequestBodySize = null;
            }

            if (context.Features.Get<IHttpMinRequestBodyDataRateFeature>() is { } minRate)
            {
                minRate.MinDataRate = null;
            }
        }

        DateTimeOffset? deadline = null;
        string? timeoutHeader = request.Headers[GrpcHeaders.Timeout];
        using var deadlineCts = CancellationTokenSource.CreateLinkedTokenSource(context.RequestAborted);
        if (timeoutHeader is not null)
        {
            if (GrpcTimeout.TryParse(timeoutHeader, out TimeSpan timeout))
            {
                deadline = _time.GetUtcNow() + timeout;
                deadlineCts.CancelAfter(timeout);
            }
            else
            {
                LogBadTimeout(path, timeoutHeader);
            }
        }

        var call = new GrpcCall(context, _maxReceiveMessageSize, deadlineCts.Token, deadline);
        GrpcStatusCode status = GrpcStatusCode.OK;
        string? message = null;
        try
        {
            await method.Handler(call).ConfigureAwait(false);
        }
        catch (GrpcCallException ex)
        {
            // Malformed, oversized or truncated input: the client's fault; Debug so a bad client cannot flood the log.
            LogCallFailed(path, ex.Status, ex.Message);
            status = ex.Status;
            message = ex.Message;
        }
        catch (OperationCanceledException) when (context.RequestAborted.IsCancellationRequested)
        {
            // The client reset the stream or dropped the connection: nobody is left to read a status.
            LogClientGone(path);
            return;
        }
        catch (OperationCanceledException) when (deadlineCts.IsCancellationRequested)
        {
            status = GrpcStatusCode.DeadlineExceeded;
            message = "Deadline exceeded";
        }
        catch (Exception ex) when (context.RequestAborted.IsCancellationRequested && ex is IOException or ConnectionAbortedException)
        {
            LogClientGone(path);
            return;
        }
        catch (Exception ex)
        {
            LogHandlerFailed(ex, path);
            status = GrpcStatusCode.Internal;
            message = "Internal server error";
        }

        WriteStatus(response, status, message);
    }

    /// <summary>
    /// Sends <c>grpc-status</c>/<c>grpc-message</c>: as trailers when the response has started, otherwise as headers
    /// of a Trailers-Only response (a single HEADERS frame with END_STREAM, as grpc-dotnet does).
    /// </summary>
    internal static void WriteStatus(HttpResponse response, GrpcStatusCode status, string? message)
    {
        string code = ((int)status).ToString(CultureInfo.InvariantCulture);
        string? encoded = string.IsNullOrEmpty(message) ? null : GrpcMessageEncoding.Encode(message);
        if (!response.HasStarted)
        {
            response.Headers[GrpcHeaders.Status] = code;
            if (encoded is not null)
            {
                response.Headers[GrpcHeaders.Message] = encoded;
            }

            return;
        }

        if (!response.SupportsTrailers())
        {
            return;
        }

        response.AppendTrailer(GrpcHeaders.Status, code);
        if (encoded is not null)
        {
            response.AppendTrailer(GrpcHeaders.Message, encoded);
        }
    }

    [LoggerMessage(Level = LogLevel.Debug, Message = "gRPC call to unknown method {Path}")]
    private partial void LogUnknownMethod(string path);

    [LoggerMessage(Level = LogLevel.Debug, Message = "gRPC call {Path}: ignoring unparsable grpc-timeout '{Value}'")]
    private partial void LogBadTimeout(string path, string value);

    [LoggerMessage(Level = LogLevel.Debug, Message = "gRPC call {Path} ended with {Status}: {Detail}")]
    private partial void LogCallFailed(string path, GrpcStatusCode status, string detail);

    [LoggerMessage(Level = LogLevel.Debug, Message = "gRPC call {Path}: client went away")]
    private partial void LogClientGone(string path);

    [LoggerMessage(Level = LogLevel.Error, Message = "gRPC call {Path} failed")]
    private partial void LogHandlerFailed(Exception exception, string path);
}
