using System.Collections.Concurrent;
using Apache.Rocketmq.V2;
using Grpc.Core;
using Grpc.Core.Interceptors;
using Grpc.Net.Client;
using HalfMsg.Protocol.Grpc;

namespace HalfMsg.ClientCore.Transport;

/// <summary>
/// The client's gRPC transport: one <see cref="GrpcChannel"/> per broker endpoint (cleartext HTTP/2, h2c), the
/// generated <see cref="MessagingService.MessagingServiceClient"/> on it, and <see cref="SigningInterceptor"/> adding
/// the RocketMQ metadata and signature to every call. Failures below the RocketMQ layer become
/// <see cref="TransportException"/>; the body <c>Status</c> is left to the caller (it knows which codes mean success).
/// </summary>
internal sealed class RpcChannel : IDisposable
{
    /// <summary>
    /// Largest body this client can receive: the largest a HalfMsgBroker may store (its <c>--max-message-size</c> is
    /// at most 64 MiB, <c>RecordLimits.MaxMessageSizeLimit</c>). The producer refuses a larger body even when a broker
    /// would take it, since no client of ours could then receive it (or its check-back).
    /// </summary>
    public const int MaxBodySize = 64 * 1024 * 1024;

    /// <summary>
    /// Largest response message accepted: <see cref="MaxBodySize"/> plus 1 MiB for everything else a message carries
    /// (keys, properties and names are bounded by the broker to well under that), as the broker's own receive limit is
    /// <c>--max-message-size</c> + 1 MiB. The broker bounds what it sends; this only has to admit the largest message
    /// it may store. Until 2026-12-05 this was 16 MiB for a broker that stores up to 64 MiB: a message over 16 MiB was
    /// stored and never received (ResourceExhausted on every receive, each one a delivery attempt, then the DLQ), and
    /// its half's check-back ended the producer's Telemetry stream on every pass (found by review).
    /// </summary>
    public const int MaxReceiveMessageSize = MaxBodySize + 1024 * 1024;

    /// <summary>
    /// HTTP/2 PING on every connection after this much silence, and give up on it when the answer takes longer than
    /// <see cref="KeepAlivePingTimeout"/>: a broker whose connection died without a reset is noticed in about 10 s
    /// (the long-lived Telemetry stream would otherwise wait for TCP to time out), and the Telemetry session reconnects.
    /// </summary>
    public static readonly TimeSpan KeepAlivePingDelay = TimeSpan.FromSeconds(5);
    public static readonly TimeSpan KeepAlivePingTimeout = TimeSpan.FromSeconds(5);

    private readonly ConcurrentDictionary<Endpoint, (GrpcChannel Channel, MessagingService.MessagingServiceClient Client,
        HalfMsg.Protocol.V1.TransactionService.TransactionServiceClient Transactions)> _channels = new();
    private readonly ClientConfig _config;
    private readonly HttpMessageHandler? _handler;
    private readonly SigningInterceptor _signing;
    private int _disposed;

    /// <param name="config">The client's identity, credentials and timeouts.</param>
    /// <param name="handler">For tests: the HTTP handler every channel uses (not disposed here).</param>
    public RpcChannel(ClientConfig config, HttpMessageHandler? handler = null)
    {
        _config = config;
        _handler = handler;
        _signing = new SigningInterceptor(config);
    }

    public ClientConfig Config => _config;

    /// <summary>The generated client for <paramref name="endpoint"/>, on its one channel.</summary>
    public MessagingService.MessagingServiceClient Client(Endpoint endpoint)
    {
        ObjectDisposedException.ThrowIf(_disposed != 0, this);
        return _channels.GetOrAdd(endpoint, static (ep, self) => self.Open(ep), this).Client;
    }

    /// <summary>HalfMsgBroker's own TransactionService client for <paramref name="endpoint"/>, on the same channel.</summary>
    public HalfMsg.Protocol.V1.TransactionService.TransactionServiceClient Transactions(Endpoint endpoint)
    {
        ObjectDisposedException.ThrowIf(_disposed != 0, this);
        return _channels.GetOrAdd(endpoint, static (ep, self) => self.Open(ep), this).Transactions;
    }

    private (GrpcChannel, MessagingService.MessagingServiceClient, HalfMsg.Protocol.V1.TransactionService.TransactionServiceClient) Open(Endpoint endpoint)
    {
        HttpMessageHandler handler = _handler ?? new SocketsHttpHandler
        {
            EnableMultipleHttp2Connections = true,
            ConnectTimeout = TimeSpan.FromSeconds(5),
            PooledConnectionIdleTimeout = TimeSpan.FromMinutes(5),
            KeepAlivePingDelay = KeepAlivePingDelay,
            KeepAlivePingTimeout = KeepAlivePingTimeout,
            KeepAlivePingPolicy = HttpKeepAlivePingPolicy.WithActiveRequests,
            UseProxy = false,
        };
        var channel = GrpcChannel.ForAddress(endpoint.BaseUri, new GrpcChannelOptions
        {
            HttpHandler = handler,
            DisposeHttpClient = _handler is null,
            MaxReceiveMessageSize = MaxReceiveMessageSize,
            MaxSendMessageSize = null,
        });
        CallInvoker signed = channel.Intercept(_signing);
        return (channel, new MessagingService.MessagingServiceClient(signed), new HalfMsg.Protocol.V1.TransactionService.TransactionServiceClient(signed));
    }

    /// <summary>Call options with a deadline of <paramref name="timeout"/> (the request timeout when null).</summary>
    public CallOptions Options(TimeSpan? timeout, CancellationToken ct)
        => new(deadline: DateTime.UtcNow + (timeout ?? _config.RequestTimeout), cancellationToken: ct);

    /// <summary>A unary call: <c>(client, options) =&gt; client.SendMessageAsync(request, options)</c>.</summary>
    public Task<TResponse> UnaryAsync<TResponse>(Endpoint endpoint,
        Func<MessagingService.MessagingServiceClient, CallOptions, AsyncUnaryCall<TResponse>> call, TimeSpan? timeout, CancellationToken ct)
        => UnaryAsync(call(Client(endpoint), Options(timeout, ct)), ct);

    /// <summary>A unary call of HalfMsgBroker's own TransactionService (see <c>halfmsg/v1/transactions.proto</c>).</summary>
    public Task<TResponse> TransactionsUnaryAsync<TResponse>(Endpoint endpoint,
        Func<HalfMsg.Protocol.V1.TransactionService.TransactionServiceClient, CallOptions, AsyncUnaryCall<TResponse>> call, TimeSpan? timeout, CancellationToken ct)
        => UnaryAsync(call(Transactions(endpoint), Options(timeout, ct)), ct);

    private static async Task<TResponse> UnaryAsync<TResponse>(AsyncUnaryCall<TResponse> started, CancellationToken ct)
    {
        using AsyncUnaryCall<TResponse> pending = started;
        try
        {
            return await pending.ResponseAsync.ConfigureAwait(false);
        }
        catch (Exception ex) when (Translate(ex, ct) is { } translated)
        {
            throw translated;
        }
    }

    /// <summary>A server-streaming call with a deadline of <paramref name="timeout"/>.</summary>
    public StreamingCall<TResponse> ServerStreaming<TResponse>(Endpoint endpoint,
        Func<MessagingService.MessagingServiceClient, CallOptions, AsyncServerStreamingCall<TResponse>> call, TimeSpan timeout, CancellationToken ct)
        => new(call(Client(endpoint), Options(timeout, ct)), ct);

    /// <summary>The Telemetry stream to <paramref name="endpoint"/>: no deadline, as the official clients do.</summary>
    public StreamingCall<TelemetryCommand> Telemetry(Endpoint endpoint, CancellationToken ct)
        => new(Client(endpoint).Telemetry(new CallOptions(cancellationToken: ct)), ct);

    /// <summary>Turns gRPC failures into <see cref="TransportException"/>; null to rethrow unchanged (client
    /// exceptions, or cancellation requested by the caller).</summary>
    internal static Exception? Translate(Exception ex, CancellationToken callerToken) => ex switch
    {
        ClientException => null,
        OperationCanceledException when callerToken.IsCancellationRequested => null,
        RpcException { StatusCode: StatusCode.Cancelled } when callerToken.IsCancellationRequested => new OperationCanceledException(callerToken),
        RpcException rpc => new TransportException(rpc.StatusCode, $"grpc-status {(int)rpc.StatusCode} ({rpc.StatusCode}): {rpc.Status.Detail}",
            rpc.Trailers.GetValue(RocketMqHeaders.RequestId), rpc),
        HttpRequestException or IOException or ObjectDisposedException => new TransportException(StatusCode.Unavailable, ex.Message, null, ex),
        _ => null,
    };

    public void Dispose()
    {
        if (Interlocked.Exchange(ref _disposed, 1) != 0)
        {
            return;
        }

        foreach ((GrpcChannel channel, _, _) in _channels.Values)
        {
            channel.Dispose();
        }

        _channels.Clear();
    }
}

/// <summary>
/// Adds what every RocketMQ 5 call carries (<c>x-mq-client-id</c>, language, protocol, version, request id, namespace)
/// and, with credentials, the MQv2-HMAC-SHA1 signature over a fresh <c>x-mq-date-time</c>: in one place, for every
/// kind of call.
/// </summary>
internal sealed class SigningInterceptor(ClientConfig config) : Interceptor
{
    public override AsyncUnaryCall<TResponse> AsyncUnaryCall<TRequest, TResponse>(TRequest request,
        ClientInterceptorContext<TRequest, TResponse> context, AsyncUnaryCallContinuation<TRequest, TResponse> continuation)
        => continuation(request, Signed(context));

    public override AsyncServerStreamingCall<TResponse> AsyncServerStreamingCall<TRequest, TResponse>(TRequest request,
        ClientInterceptorContext<TRequest, TResponse> context, AsyncServerStreamingCallContinuation<TRequest, TResponse> continuation)
        => continuation(request, Signed(context));

    public override AsyncDuplexStreamingCall<TRequest, TResponse> AsyncDuplexStreamingCall<TRequest, TResponse>(
        ClientInterceptorContext<TRequest, TResponse> context, AsyncDuplexStreamingCallContinuation<TRequest, TResponse> continuation)
        => continuation(Signed(context));

    private ClientInterceptorContext<TRequest, TResponse> Signed<TRequest, TResponse>(ClientInterceptorContext<TRequest, TResponse> context)
        where TRequest : class
        where TResponse : class
    {
        var headers = new Metadata();
        if (context.Options.Headers is { } existing)
        {
            foreach (Metadata.Entry entry in existing)
            {
                headers.Add(entry);
            }
        }

        // x-mq-date-time has a resolution of one second and the signature covers only it: both are computed once a
        // second, not per call (an HMAC-SHA1 and two string formats per RPC on the hot path before).
        Stamp stamp = CurrentStamp();
        headers.Add(RocketMqHeaders.ClientId, config.ClientId);
        headers.Add(RocketMqHeaders.Language, "DOTNET");
        headers.Add(RocketMqHeaders.AcceptDigest, RocketMqHeaders.DigestCrc32);
        headers.Add(RocketMqHeaders.Protocol, RocketMqHeaders.ProtocolValue);
        headers.Add(RocketMqHeaders.ClientVersion, ClientConfig.Version);
        headers.Add(RocketMqHeaders.DateTime, stamp.DateTime);
        headers.Add(RocketMqHeaders.RequestId, Guid.NewGuid().ToString());
        if (config.Namespace is { } ns)
        {
            headers.Add(RocketMqHeaders.Namespace, ns);
        }

        if (stamp.Authorization is { } authorization)
        {
            headers.Add(RocketMqHeaders.Authorization, authorization);
        }

        return new ClientInterceptorContext<TRequest, TResponse>(context.Method, context.Host, context.Options.WithHeaders(headers));
    }

    private sealed record Stamp(long Second, string DateTime, string? Authorization);

    private Stamp? _stamp;

    private Stamp CurrentStamp()
    {
        DateTimeOffset now = DateTimeOffset.UtcNow;
        long second = now.ToUnixTimeSeconds();
        Stamp? stamp = Volatile.Read(ref _stamp);
        if (stamp is not null && stamp.Second == second)
        {
            return stamp;
        }

        string dateTime = MqSignature.FormatDateTime(now);
        stamp = new Stamp(second, dateTime, config.Credentials is { } c ? MqSignature.Sign(c.AccessKey, c.AccessSecret, dateTime) : null);
        Volatile.Write(ref _stamp, stamp);
        return stamp;
    }
}
