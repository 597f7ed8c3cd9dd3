using System.Buffers;
using System.IO.Pipelines;
using System.Net;
using System.Net.Http.Headers;
using Google.Protobuf;
using HalfMsg.Protocol.Grpc;

#if HALFMSG_CONSUMER_CLIENT
namespace HalfMsg.ConsumerClient.Transport;
#else
namespace HalfMsg.ProducerClient.Transport;
#endif

/// <summary>
/// Minimal gRPC client over <see cref="SocketsHttpHandler"/>: cleartext HTTP/2 with prior knowledge (h2c),
/// uncompressed length-prefixed messages, RocketMQ metadata on every call, <c>grpc-status</c> read from the
/// trailers (or from the headers of a Trailers-Only response). One instance per client; it pools HTTP/2
/// connections per endpoint, so all calls to one broker share a connection like grpc-dotnet does.
/// </summary>
internal sealed class RpcChannel : IDisposable
{
    /// <summary>Largest response message accepted. The official clients cap at 4 MiB per message; we allow some
    /// headroom because a 4 MiB body plus properties exceeds 4 MiB.</summary>
    public const int MaxReceiveMessageSize = 16 * 1024 * 1024;

    private static readonly MediaTypeHeaderValue GrpcContentType = new(GrpcHeaders.ContentTypeValue);
    private readonly HttpMessageInvoker _invoker;
    private readonly ClientConfig _config;

    public RpcChannel(ClientConfig config, HttpMessageHandler? handler = null)
    {
        _config = config;
        handler ??= new SocketsHttpHandler
        {
            EnableMultipleHttp2Connections = true,
            ConnectTimeout = TimeSpan.FromSeconds(5),
            PooledConnectionIdleTimeout = TimeSpan.FromMinutes(5),
            // Detect a silently dead broker on long-lived Telemetry streams.
            KeepAlivePingDelay = TimeSpan.FromSeconds(30),
            KeepAlivePingTimeout = TimeSpan.FromSeconds(10),
            KeepAlivePingPolicy = HttpKeepAlivePingPolicy.WithActiveRequests,
            AutomaticDecompression = DecompressionMethods.None,
            UseProxy = false,
        };
        _invoker = new HttpMessageInvoker(handler, disposeHandler: true);
    }

    public ClientConfig Config => _config;

    /// <summary>Unary call. Throws <see cref="TransportException"/> for transport/gRPC failures; the body
    /// <c>Status</c> is left to the caller (it knows which codes mean success for its RPC).</summary>
    public async Task<TResponse> UnaryAsync<TResponse>(Endpoint endpoint, string path, IMessage request,
        MessageParser<TResponse> parser, TimeSpan? timeout, CancellationToken ct)
        where TResponse : IMessage<TResponse>
    {
        TimeSpan deadline = timeout ?? _config.RequestTimeout;
        using var cts = CancellationTokenSource.CreateLinkedTokenSource(ct);
        cts.CancelAfter(deadline);
        using HttpRequestMessage httpRequest = CreateRequest(endpoint, path, deadline, out string requestId);
        httpRequest.Content = CreateUnaryContent(request);
        try
        {
            using HttpResponseMessage response = await _invoker.SendAsync(httpRequest, cts.Token).ConfigureAwait(false);
            if (CheckResponseHeaders(response, requestId))
            {
                throw new TransportException(GrpcStatusCode.Internal, $"{path}: Trailers-Only OK response without a message", requestId);
            }

            Stream body = await response.Content.ReadAsStreamAsync(cts.Token).ConfigureAwait(false);
            var reader = PipeReader.Create(body);
            TResponse? result = default;
            bool any = false;
            try
            {
                while (await ReadMessageAsync(reader, parser, requestId, cts.Token).ConfigureAwait(false) is { } message)
                {
                    if (any)
                    {
                        throw new TransportException(GrpcStatusCode.Internal, $"{path}: more than one response message on a unary call", requestId);
                    }

                    result = message;
                    any = true;
                }
            }
            finally
            {
                await reader.CompleteAsync().ConfigureAwait(false);
            }

            CheckTrailers(response, requestId);
            if (!any)
            {
                throw new TransportException(GrpcStatusCode.Internal, $"{path}: the call ended with OK but no response message", requestId);
            }

            return result!;
        }
        catch (Exception ex) when (Translate(ex, ct, path, requestId) is { } translated)
        {
            throw translated;
        }
    }

    /// <summary>Starts a server-streaming call: one request, then read responses with
    /// <see cref="StreamingCall{TResponse}.MoveNextAsync"/>.</summary>
    public async Task<StreamingCall<TResponse>> ServerStreamingAsync<TResponse>(Endpoint endpoint, string path, IMessage request,
        MessageParser<TResponse> parser, TimeSpan timeout, CancellationToken ct)
        where TResponse : IMessage<TResponse>
    {
        var cts = CancellationTokenSource.CreateLinkedTokenSource(ct);
        cts.CancelAfter(timeout);
        HttpRequestMessage httpRequest = CreateRequest(endpoint, path, timeout, out string requestId);
        httpRequest.Content = CreateUnaryContent(request);
        var call = new StreamingCall<TResponse>(this, path, requestId, parser, httpRequest, duplex: null, cts, ct);
        call.Start(_invoker.SendAsync(httpRequest, cts.Token));
        try
        {
            await call.EnsureResponseAsync().ConfigureAwait(false);
        }
        catch
        {
            await call.DisposeAsync().ConfigureAwait(false);
            throw;
        }

        return call;
    }

    /// <summary>Starts a bidirectional call (no deadline, as the official clients do for Telemetry). The request
    /// stream is open as soon as this returns; response headers are awaited by the first read.</summary>
    public async Task<StreamingCall<TResponse>> DuplexAsync<TResponse>(Endpoint endpoint, string path,
        MessageParser<TResponse> parser, CancellationToken ct)
        where TResponse : IMessage<TResponse>
    {
        var cts = CancellationTokenSource.CreateLinkedTokenSource(ct);
        HttpRequestMessage httpRequest = CreateRequest(endpoint, path, timeout: null, out string requestId);
        var content = new DuplexContent();
        httpRequest.Content = content;
        var call = new StreamingCall<TResponse>(this, path, requestId, parser, httpRequest, content, cts, ct);
        Task<HttpResponseMessage> send = _invoker.SendAsync(httpRequest, cts.Token);
        call.Start(send);
        try
        {
            // SocketsHttpHandler hands us the request stream once the HEADERS frame is out; if the connection
            // fails first, the send task faults instead.
            await Task.WhenAny(content.RequestStream, send).WaitAsync(ct).ConfigureAwait(false);
            if (!content.RequestStream.IsCompleted)
            {
                await call.EnsureResponseAsync().ConfigureAwait(false);
                throw new TransportException(GrpcStatusCode.Unavailable, $"{path}: the request stream was not opened", requestId);
            }
        }
        catch
        {
            await call.DisposeAsync().ConfigureAwait(false);
            throw;
        }

        return call;
    }

    internal static ByteArrayContent CreateUnaryContent(IMessage request)
    {
        var writer = new ArrayBufferWriter<byte>(GrpcFrame.HeaderSize + request.CalculateSize());
        GrpcFrame.WriteFrame(writer, request);
        var content = new ByteArrayContent(writer.WrittenMemory.ToArray());
        content.Headers.ContentType = GrpcContentType;
        return content;
    }

    private HttpRequestMessage CreateRequest(Endpoint endpoint, string path, TimeSpan? timeout, out string requestId)
    {
        requestId = Guid.NewGuid().ToString();
        var request = new HttpRequestMessage(HttpMethod.Post, new Uri(endpoint.BaseUri, path))
        {
            Version = HttpVersion.Version20,
            VersionPolicy = HttpVersionPolicy.RequestVersionExact,
        };
        HttpRequestHeaders h = request.Headers;
        h.TE.Add(new TransferCodingWithQualityHeaderValue(GrpcHeaders.TEValue));
        h.TryAddWithoutValidation(GrpcHeaders.AcceptEncoding, "identity");
        h.UserAgent.Add(new ProductInfoHeaderValue("halfmsg-dotnet", ClientConfig.Version));
        if (timeout is { } t)
        {
            h.TryAddWithoutValidation(GrpcHeaders.Timeout, GrpcTimeout.Format(t));
        }

        string dateTime = MqSignature.FormatDateTime(DateTimeOffset.UtcNow);
        h.TryAddWithoutValidation(RocketMqHeaders.ClientId, _config.ClientId);
        h.TryAddWithoutValidation(RocketMqHeaders.Language, "DOTNET");
        h.TryAddWithoutValidation(RocketMqHeaders.Protocol, RocketMqHeaders.ProtocolValue);
        h.TryAddWithoutValidation(RocketMqHeaders.ClientVersion, ClientConfig.Version);
        h.TryAddWithoutValidation(RocketMqHeaders.DateTime, dateTime);
        h.TryAddWithoutValidation(RocketMqHeaders.RequestId, requestId);
        if (_config.Namespace is { } ns)
        {
            h.TryAddWithoutValidation(RocketMqHeaders.Namespace, ns);
        }

        if (_config.Credentials is { } c)
        {
            h.TryAddWithoutValidation(RocketMqHeaders.Authorization, MqSignature.Sign(c.AccessKey, c.AccessSecret, dateTime));
        }

        return request;
    }

    /// <summary>Validates the response headers. Returns true for a Trailers-Only OK response (no body follows);
    /// throws for a non-200 status or a Trailers-Only error.</summary>
    internal static bool CheckResponseHeaders(HttpResponseMessage response, string requestId)
    {
        if (response.StatusCode != HttpStatusCode.OK)
        {
            // Same mapping as grpc (doc/http-grpc-status-mapping.md).
            GrpcStatusCode code = (int)response.StatusCode switch
            {
                400 => GrpcStatusCode.Internal,
                401 => GrpcStatusCode.Unauthenticated,
                403 => GrpcStatusCode.PermissionDenied,
                404 => GrpcStatusCode.Unimplemented,
                429 or 502 or 503 or 504 => GrpcStatusCode.Unavailable,
                _ => GrpcStatusCode.Unknown,
            };
            throw new TransportException(code, $"HTTP status {(int)response.StatusCode}", requestId);
        }

        if (TryGetStatus(response.Headers, out GrpcStatusCode status, out string? message))
        {
            if (status != GrpcStatusCode.OK)
            {
                throw new TransportException(status, $"grpc-status {(int)status} ({status}): {message}", requestId);
            }

            return true;
        }

        string? contentType = response.Content.Headers.ContentType?.MediaType;
        if (!GrpcHeaders.IsGrpcContentType(contentType))
        {
            throw new TransportException(GrpcStatusCode.Internal, $"unexpected content-type '{contentType}'", requestId);
        }

        return false;
    }

    internal static void CheckTrailers(HttpResponseMessage response, string requestId)
    {
        if (!TryGetStatus(response.TrailingHeaders, out GrpcStatusCode status, out string? message))
        {
            throw new TransportException(GrpcStatusCode.Internal, "the call ended without a grpc-status trailer", requestId);
        }

        if (status != GrpcStatusCode.OK)
        {
            throw new TransportException(status, $"grpc-status {(int)status} ({status}): {message}", requestId);
        }
    }

    private static bool TryGetStatus(HttpHeaders headers, out GrpcStatusCode status, out string? message)
    {
        status = GrpcStatusCode.Unknown;
        message = null;
        if (!headers.TryGetValues(GrpcHeaders.Status, out IEnumerable<string>? values))
        {
            return false;
        }

        status = int.TryParse(values.FirstOrDefault(), System.Globalization.NumberStyles.None,
            System.Globalization.CultureInfo.InvariantCulture, out int n) ? (GrpcStatusCode)n : GrpcStatusCode.Unknown;
        if (headers.TryGetValues(GrpcHeaders.Message, out IEnumerable<string>? m))
        {
            message = GrpcMessageEncoding.Decode(m.First());
        }

        return true;
    }

    /// <summary>Reads one message, or null at the end of the body. The same loop shape as the broker's reader:
    /// TryReadFrame, then AdvanceTo(consumed, examined).</summary>
    internal static async ValueTask<T?> ReadMessageAsync<T>(PipeReader reader, MessageParser<T> parser, string requestId, CancellationToken ct)
        where T : IMessage<T>
    {
        while (true)
        {
            ReadResult read = await reader.ReadAsync(ct).ConfigureAwait(false);
            ReadOnlySequence<byte> buffer = read.Buffer;
            GrpcFrameStatus status = GrpcFrame.TryReadFrame(ref buffer, MaxReceiveMessageSize, out ReadOnlySequence<byte> payload);
            switch (status)
            {
                case GrpcFrameStatus.Complete:
                    T message;
                    try
                    {
                        message = GrpcFrame.Parse(parser, payload);
                    }
                    catch (InvalidProtocolBufferException ex)
                    {
                        throw new TransportException(GrpcStatusCode.Internal, "malformed response message: " + ex.Message, requestId, ex);
                    }
                    finally
                    {
                        reader.AdvanceTo(buffer.Start, buffer.Start);
                    }

                    return message;
                case GrpcFrameStatus.Incomplete:
                    reader.AdvanceTo(buffer.Start, buffer.End);
                    if (read.IsCompleted)
                    {
                        if (!buffer.IsEmpty)
                        {
                            throw new TransportException(GrpcStatusCode.Internal, "the response ended inside a message", requestId);
                        }

                        return default;
                    }

                    break;
                case GrpcFrameStatus.TooLarge:
                    reader.AdvanceTo(buffer.Start, buffer.End);
                    throw new TransportException(GrpcStatusCode.ResourceExhausted, $"response message larger than {MaxReceiveMessageSize} bytes", requestId);
                default:
                    reader.AdvanceTo(buffer.Start, buffer.End);
                    throw new TransportException(GrpcStatusCode.Internal, $"unsupported response frame ({status})", requestId);
            }
        }
    }

    /// <summary>Turns low-level failures into <see cref="TransportException"/>; returns null to rethrow unchanged
    /// (client exceptions, or cancellation requested by the caller).</summary>
    internal static Exception? Translate(Exception ex, CancellationToken callerToken, string path, string requestId)
    {
        switch (ex)
        {
            case ClientException:
                return null;
            case OperationCanceledException when callerToken.IsCancellationRequested:
                return null;
            case OperationCanceledException:
                return new TransportException(GrpcStatusCode.DeadlineExceeded, $"{path}: deadline exceeded", requestId, ex);
            case HttpRequestException or IOException or ObjectDisposedException:
                return new TransportException(GrpcStatusCode.Unavailable, $"{path}: {ex.Message}", requestId, ex);
            default:
                return null;
        }
    }

    public void Dispose() => _invoker.Dispose();

    /// <summary>Request body of a bidi call: hands the live request stream to the caller and keeps it open until
    /// <see cref="Complete"/> (half-close: the handler then sends END_STREAM).</summary>
    internal sealed class DuplexContent : HttpContent
    {
        private readonly TaskCompletionSource<Stream> _stream = new(TaskCreationOptions.RunContinuationsAsynchronously);
        private readonly TaskCompletionSource _done = new(TaskCreationOptions.RunContinuationsAsynchronously);

        public DuplexContent() => Headers.ContentType = GrpcContentType;

        public Task<Stream> RequestStream => _stream.Task;

        public void Complete() => _done.TrySetResult();

        protected override Task SerializeToStreamAsync(Stream stream, TransportContext? context) =>
            SerializeToStreamAsync(stream, context, CancellationToken.None);

        protected override async Task SerializeToStreamAsync(Stream stream, TransportContext? context, CancellationToken cancellationToken)
        {
            _stream.TrySetResult(stream);
            try
            {
                await _done.Task.WaitAsync(cancellationToken).ConfigureAwait(false);
            }
            catch (OperationCanceledException)
            {
                // The call was aborted; the handler resets the stream.
            }
        }

        protected override bool TryComputeLength(out long length)
        {
            length = -1;
            return false;
        }

        protected override void Dispose(bool disposing)
        {
            _done.TrySetResult();
            base.Dispose(disposing);
        }
    }
}
