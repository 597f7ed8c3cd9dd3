using System.Globalization;
using Google.Protobuf;
using Grpc.Core;
using Grpc.Net.Client;
using HalfMsg.Protocol.Grpc;


namespace HalfMsg.Broker.Tests.Infrastructure;

/// <summary>The outcome of a unary call: the response message (null when none came) and the gRPC status.</summary>
public sealed record GrpcUnaryResult<TResponse>(TResponse? Response, int GrpcStatus, string? GrpcMessage)
    where TResponse : class, IMessage<TResponse>;

/// <summary>The outcome of a streaming call: every response message, in order, and the gRPC status.</summary>
public sealed record GrpcStreamResult<TResponse>(IReadOnlyList<TResponse> Responses, int GrpcStatus, string? GrpcMessage)
    where TResponse : class, IMessage<TResponse>;

/// <summary>
/// A test caller on grpc-dotnet (<see cref="GrpcChannel"/>) that calls any method by its path with any message type,
/// so tests can also send what the generated stubs would not (wrong types, raw bytes). Adds the RocketMQ metadata a
/// real client sends (<c>x-mq-client-id</c>, date-time, ...). A non-OK gRPC status is returned, not thrown.
/// </summary>
public sealed class GrpcTestClient : IDisposable
{
    private readonly GrpcChannel _channel;

    /// <param name="tls">Null: cleartext HTTP/2. Otherwise TLS, the server's certificate accepted when this says so
    /// (the official C# client accepts any).</param>
    /// <param name="clientCertificate">With <paramref name="tls"/>: the certificate presented when the broker asks
    /// for one (<c>--tls-client-auth</c>).</param>
    /// <param name="local">The address its connections come from (another loopback address, 127.0.0.2, is another peer
    /// to the broker), and then <see cref="Connects"/> counts them; null: the system's choice.</param>
    public GrpcTestClient(string endpoint, string? clientId = null, System.Net.Security.RemoteCertificateValidationCallback? tls = null,
        System.Security.Cryptography.X509Certificates.X509Certificate2? clientCertificate = null, System.Net.IPAddress? local = null)
    {
        ClientId = clientId ?? "test-host@" + Environment.ProcessId.ToString(CultureInfo.InvariantCulture) + "@0@" + Guid.NewGuid().ToString("N")[..8];
        var handler = new SocketsHttpHandler { EnableMultipleHttp2Connections = true };
        if (local is not null)
        {
            handler.ConnectCallback = async (context, ct) =>
            {
                var socket = new System.Net.Sockets.Socket(System.Net.Sockets.AddressFamily.InterNetwork, System.Net.Sockets.SocketType.Stream,
                    System.Net.Sockets.ProtocolType.Tcp) { NoDelay = true };
                try
                {
                    socket.Bind(new System.Net.IPEndPoint(local, 0));
                    await socket.ConnectAsync(context.DnsEndPoint, ct);
                    Interlocked.Increment(ref _connects);
                    return new System.Net.Sockets.NetworkStream(socket, ownsSocket: true);
                }
                catch
                {
                    socket.Dispose();
                    throw;
                }
            };
        }
        if (tls is not null) handler.SslOptions.RemoteCertificateValidationCallback = tls;
        if (clientCertificate is not null) handler.SslOptions.LocalCertificateSelectionCallback = (_, _, _, _, _) => clientCertificate;
        _channel = GrpcChannel.ForAddress((tls is null ? "http://" : "https://") + endpoint, new GrpcChannelOptions
        {
            HttpHandler = handler,
            // With a local address the test counts connections, so Dispose closes them (grpc-dotnet leaves a given handler open).
            DisposeHttpClient = local is not null,
            MaxReceiveMessageSize = null,
        });
    }

    public string ClientId { get; }

    private int _connects;

    /// <summary>Connections opened so far, when made with a local address.</summary>
    public int Connects => Volatile.Read(ref _connects);

    /// <summary>Extra headers added to every call (e.g. <c>authorization</c>); a per-call header of the same name wins.</summary>
    public Dictionary<string, string> DefaultHeaders { get; } = new(StringComparer.OrdinalIgnoreCase);

    public async Task<GrpcUnaryResult<TResponse>> UnaryAsync<TRequest, TResponse>(string path, TRequest request,
        MessageParser<TResponse> parser, IReadOnlyDictionary<string, string>? headers = null, CancellationToken ct = default,
        TimeSpan? timeout = null)
        where TRequest : class, IMessage<TRequest>
        where TResponse : class, IMessage<TResponse>
    {
        var method = Method<TRequest, TResponse>(MethodType.Unary, path, parser);
        try
        {
            TResponse response = await _channel.CreateCallInvoker().AsyncUnaryCall(method, null, Options(headers, ct, timeout), request);
            return new GrpcUnaryResult<TResponse>(response, 0, null);
        }
        catch (RpcException ex)
        {
            return new GrpcUnaryResult<TResponse>(null, (int)ex.StatusCode, ex.Status.Detail);
        }
    }

    /// <summary>A unary call whose request is <paramref name="payload"/> as is (e.g. bytes that are not protobuf).</summary>
    public async Task<(int GrpcStatus, string? GrpcMessage)> RawUnaryAsync(string path, byte[] payload,
        IReadOnlyDictionary<string, string>? headers = null)
    {
        int slash = path.LastIndexOf('/');
        var method = new Method<byte[], byte[]>(MethodType.Unary, path[1..slash], path[(slash + 1)..],
            Marshallers.Create<byte[]>(b => b, b => b), Marshallers.Create<byte[]>(b => b, b => b));
        try
        {
            await _channel.CreateCallInvoker().AsyncUnaryCall(method, null, Options(headers, default), payload);
            return (0, null);
        }
        catch (RpcException ex)
        {
            return ((int)ex.StatusCode, ex.Status.Detail);
        }
    }

    /// <summary>A bidi call whose first request message is <paramref name="payload"/> as is; half-closes and reads to the end.</summary>
    public async Task<(int GrpcStatus, string? GrpcMessage)> RawDuplexAsync(string path, byte[] payload,
        IReadOnlyDictionary<string, string>? headers = null)
    {
        int slash = path.LastIndexOf('/');
        var method = new Method<byte[], byte[]>(MethodType.DuplexStreaming, path[1..slash], path[(slash + 1)..],
            Marshallers.Create<byte[]>(b => b, b => b), Marshallers.Create<byte[]>(b => b, b => b));
        using var call = _channel.CreateCallInvoker().AsyncDuplexStreamingCall(method, null, Options(headers, default));
        try
        {
            await call.RequestStream.WriteAsync(payload);
            await call.RequestStream.CompleteAsync();
            while (await call.ResponseStream.MoveNext(default))
            {
            }

            return (0, null);
        }
        catch (RpcException ex)
        {
            return ((int)ex.StatusCode, ex.Status.Detail);
        }
    }

    /// <summary>Sends one request message, half-closes, and reads every response (server-streaming or bidi method).</summary>
    public async Task<GrpcStreamResult<TResponse>> ServerStreamAsync<TRequest, TResponse>(string path, TRequest request,
        MessageParser<TResponse> parser, IReadOnlyDictionary<string, string>? headers = null, CancellationToken ct = default,
        TimeSpan? timeout = null)
        where TRequest : class, IMessage<TRequest>
        where TResponse : class, IMessage<TResponse>
    {
        var method = Method<TRequest, TResponse>(MethodType.DuplexStreaming, path, parser);
        var responses = new List<TResponse>();
        using var call = _channel.CreateCallInvoker().AsyncDuplexStreamingCall(method, null, Options(headers, ct, timeout));
        try
        {
            await call.RequestStream.WriteAsync(request, ct);
            await call.RequestStream.CompleteAsync();
            while (await call.ResponseStream.MoveNext(ct))
            {
                responses.Add(call.ResponseStream.Current);
            }

            return new GrpcStreamResult<TResponse>(responses, 0, null);
        }
        catch (RpcException ex)
        {
            return new GrpcStreamResult<TResponse>(responses, (int)ex.StatusCode, ex.Status.Detail);
        }
    }

    /// <summary>Opens a bidi call (e.g. Telemetry) with this client's metadata; the caller drives it.</summary>
    /// <param name="timeout">The call's deadline from now (30 s when null); <see cref="Timeout.InfiniteTimeSpan"/> for
    /// none, as the official clients open their Telemetry streams.</param>
    public AsyncDuplexStreamingCall<TRequest, TResponse> Duplex<TRequest, TResponse>(string path, MessageParser<TResponse> parser,
        IReadOnlyDictionary<string, string>? headers = null, CancellationToken ct = default, TimeSpan? timeout = null)
        where TRequest : class, IMessage<TRequest>
        where TResponse : class, IMessage<TResponse>
        => _channel.CreateCallInvoker().AsyncDuplexStreamingCall(Method<TRequest, TResponse>(MethodType.DuplexStreaming, path, parser), null,
            Options(headers, ct, timeout));

    private static Method<TRequest, TResponse> Method<TRequest, TResponse>(MethodType type, string path, MessageParser<TResponse> parser)
        where TRequest : class, IMessage<TRequest>
        where TResponse : class, IMessage<TResponse>
    {
        int slash = path.LastIndexOf('/');
        return new Method<TRequest, TResponse>(type, path[1..slash], path[(slash + 1)..],
            Marshallers.Create<TRequest>(r => r.ToByteArray(), _ => throw new NotSupportedException()),
            Marshallers.Create<TResponse>(r => r.ToByteArray(), parser.ParseFrom));
    }

    private CallOptions Options(IReadOnlyDictionary<string, string>? headers, CancellationToken ct, TimeSpan? timeout = null)
    {
        var all = new Dictionary<string, string>(StringComparer.OrdinalIgnoreCase)
        {
            [RocketMqHeaders.Protocol] = RocketMqHeaders.ProtocolValue,
            [RocketMqHeaders.ClientId] = ClientId,
            [RocketMqHeaders.DateTime] = MqSignature.FormatDateTime(DateTimeOffset.UtcNow),
            [RocketMqHeaders.RequestId] = Guid.NewGuid().ToString(),
            [RocketMqHeaders.Language] = "DOTNET",
            [RocketMqHeaders.ClientVersion] = "test",
        };
        foreach (var (k, v) in DefaultHeaders)
        {
            all[k] = v;
        }

        if (headers is not null)
        {
            foreach (var (k, v) in headers)
            {
                all[k] = v;
            }
        }

        var metadata = new Metadata();
        foreach (var (k, v) in all)
        {
            metadata.Add(k, v);
        }

        DateTime? deadline = timeout == Timeout.InfiniteTimeSpan ? null : DateTime.UtcNow + (timeout ?? TimeSpan.FromSeconds(30));
        return new CallOptions(metadata, deadline: deadline, cancellationToken: ct);
    }

    public void Dispose() => _channel.Dispose();
}
