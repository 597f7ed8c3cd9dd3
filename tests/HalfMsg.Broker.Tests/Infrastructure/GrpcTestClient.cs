using System.Buffers;
using System.Globalization;
using System.Net;
using System.Net.Http.Headers;
using Google.Protobuf;
using HalfMsg.Protocol.Grpc;

namespace HalfMsg.Broker.Tests.Infrastructure;

/// <summary>The outcome of a unary call: the response message (null when none came) and the gRPC status.</summary>
public sealed record GrpcUnaryResult<TResponse>(TResponse? Response, int GrpcStatus, string? GrpcMessage)
    where TResponse : class, IMessage<TResponse>;

/// <summary>The outcome of a server-streaming call: every response message, in order, and the gRPC status.</summary>
public sealed record GrpcStreamResult<TResponse>(IReadOnlyList<TResponse> Responses, int GrpcStatus, string? GrpcMessage)
    where TResponse : class, IMessage<TResponse>;

/// <summary>
/// A tiny test-only gRPC caller: cleartext HTTP/2 with prior knowledge (h2c) over <see cref="HttpClient"/>, one
/// request message, the whole response buffered. The status comes from the trailers, or from the headers of a
/// Trailers-Only response. Adds the RocketMQ metadata a real client sends (<c>x-mq-client-id</c>, date-time, ...).
/// </summary>
public sealed class GrpcTestClient : IDisposable
{
    /// <summary>The status reported when the response carried no <c>grpc-status</c> at all.</summary>
    public const int MissingStatus = -1;

    private readonly HttpClient _http;
    private readonly Uri _base;

    public GrpcTestClient(string endpoint, string? clientId = null)
    {
        _base = new Uri("http://" + endpoint);
        ClientId = clientId ?? "test-host@" + Environment.ProcessId.ToString(CultureInfo.InvariantCulture) + "@0@" + Guid.NewGuid().ToString("N")[..8];
        _http = new HttpClient(new SocketsHttpHandler { EnableMultipleHttp2Connections = true })
        {
            DefaultRequestVersion = HttpVersion.Version20,
            DefaultVersionPolicy = HttpVersionPolicy.RequestVersionExact,
            Timeout = TimeSpan.FromSeconds(30),
        };
    }

    public string ClientId { get; }

    /// <summary>Extra headers added to every call (e.g. <c>authorization</c>); a per-call header of the same name wins.</summary>
    public Dictionary<string, string> DefaultHeaders { get; } = new(StringComparer.OrdinalIgnoreCase);

    public async Task<GrpcUnaryResult<TResponse>> UnaryAsync<TRequest, TResponse>(string path, TRequest request,
        MessageParser<TResponse> parser, IReadOnlyDictionary<string, string>? headers = null, CancellationToken ct = default)
        where TRequest : IMessage<TRequest>
        where TResponse : class, IMessage<TResponse>
    {
        var (messages, status, message) = await CallAsync(path, request, parser, headers, ct);
        return new GrpcUnaryResult<TResponse>(messages.Count > 0 ? messages[0] : null, status, message);
    }

    public async Task<GrpcStreamResult<TResponse>> ServerStreamAsync<TRequest, TResponse>(string path, TRequest request,
        MessageParser<TResponse> parser, IReadOnlyDictionary<string, string>? headers = null, CancellationToken ct = default)
        where TRequest : IMessage<TRequest>
        where TResponse : class, IMessage<TResponse>
    {
        var (messages, status, message) = await CallAsync(path, request, parser, headers, ct);
        return new GrpcStreamResult<TResponse>(messages, status, message);
    }

    private async Task<(List<TResponse> Messages, int Status, string? Message)> CallAsync<TRequest, TResponse>(string path,
        TRequest request, MessageParser<TResponse> parser, IReadOnlyDictionary<string, string>? headers, CancellationToken ct)
        where TRequest : IMessage<TRequest>
        where TResponse : class, IMessage<TResponse>
    {
        var body = new ArrayBufferWriter<byte>();
        GrpcFrame.WriteFrame(body, request);
        var content = new ByteArrayContent(body.WrittenSpan.ToArray());
        content.Headers.ContentType = new MediaTypeHeaderValue(GrpcHeaders.ContentTypeValue);

        // DefaultRequestVersion only applies to the HttpClient helpers, not to a hand-built request: h2c with prior
        // knowledge needs both on the message.
        using var message = new HttpRequestMessage(HttpMethod.Post, new Uri(_base, path))
        {
            Content = content,
            Version = HttpVersion.Version20,
            VersionPolicy = HttpVersionPolicy.RequestVersionExact,
        };
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

        message.Headers.TE.Add(new TransferCodingWithQualityHeaderValue(GrpcHeaders.TEValue));
        foreach (var (k, v) in all)
        {
            message.Headers.TryAddWithoutValidation(k, v);
        }

        using HttpResponseMessage response = await _http.SendAsync(message, HttpCompletionOption.ResponseHeadersRead, ct);
        if (response.StatusCode != HttpStatusCode.OK)
        {
            string text = await response.Content.ReadAsStringAsync(ct);
            throw new HttpRequestException(
                $"gRPC call {path} answered HTTP {(int)response.StatusCode} {response.Version} {response.Headers} {text}", null, response.StatusCode);
        }

        byte[] bytes = await response.Content.ReadAsByteArrayAsync(ct);
        var messages = new List<TResponse>();
        var buffer = new ReadOnlySequence<byte>(bytes);
        while (!buffer.IsEmpty)
        {
            GrpcFrameStatus frame = GrpcFrame.TryReadFrame(ref buffer, int.MaxValue, out ReadOnlySequence<byte> payload);
            if (frame != GrpcFrameStatus.Complete)
            {
                throw new InvalidDataException($"gRPC call {path}: bad response frame ({frame}, {buffer.Length} bytes left)");
            }

            messages.Add(GrpcFrame.Parse(parser, payload));
        }

        // Trailers after a body; the headers themselves for a Trailers-Only response.
        string? status = Header(response.TrailingHeaders, GrpcHeaders.Status) ?? Header(response.Headers, GrpcHeaders.Status);
        string? grpcMessage = Header(response.TrailingHeaders, GrpcHeaders.Message) ?? Header(response.Headers, GrpcHeaders.Message);
        int code = status is null ? MissingStatus : int.Parse(status, NumberStyles.None, CultureInfo.InvariantCulture);
        return (messages, code, grpcMessage is null ? null : GrpcMessageEncoding.Decode(grpcMessage));
    }

    private static string? Header(HttpHeaders headers, string name)
        => headers.TryGetValues(name, out IEnumerable<string>? values) ? values.FirstOrDefault() : null;

    public void Dispose() => _http.Dispose();
}
