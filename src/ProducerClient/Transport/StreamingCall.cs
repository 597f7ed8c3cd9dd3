using System.Buffers;
using System.IO.Pipelines;
using Google.Protobuf;
using HalfMsg.Protocol.Grpc;

#if HALFMSG_CONSUMER_CLIENT
namespace HalfMsg.ConsumerClient.Transport;
#else
namespace HalfMsg.ProducerClient.Transport;
#endif

/// <summary>A server-streaming or bidirectional call in progress. Reads are single-consumer; writes (bidi only)
/// are serialized internally. Disposing aborts the call if it has not finished.</summary>
internal sealed class StreamingCall<TResponse> : IAsyncDisposable
    where TResponse : IMessage<TResponse>
{
    private readonly RpcChannel _channel;
    private readonly string _path;
    private readonly MessageParser<TResponse> _parser;
    private readonly HttpRequestMessage _request;
    private readonly RpcChannel.DuplexContent? _duplex;
    private readonly CancellationTokenSource _cts;
    private readonly CancellationToken _callerToken;
    private readonly SemaphoreSlim _writeLock = new(1, 1);
    private Task<HttpResponseMessage>? _send;
    private HttpResponseMessage? _response;
    private PipeReader? _reader;
    private bool _trailersOnly;
    private bool _finished;
    private int _disposed;

    internal StreamingCall(RpcChannel channel, string path, string requestId, MessageParser<TResponse> parser,
        HttpRequestMessage request, RpcChannel.DuplexContent? duplex, CancellationTokenSource cts, CancellationToken callerToken)
    {
        _channel = channel;
        _path = path;
        RequestId = requestId;
        _parser = parser;
        _request = request;
        _duplex = duplex;
        _cts = cts;
        _callerToken = callerToken;
    }

    public string RequestId { get; }

    public TResponse Current { get; private set; } = default!;

    internal void Start(Task<HttpResponseMessage> send) => _send = send;

    internal async Task EnsureResponseAsync()
    {
        if (_response is not null)
        {
            return;
        }

        try
        {
            _response = await _send!.ConfigureAwait(false);
            _trailersOnly = RpcChannel.CheckResponseHeaders(_response, RequestId);
            if (!_trailersOnly)
            {
                Stream body = await _response.Content.ReadAsStreamAsync(_cts.Token).ConfigureAwait(false);
                _reader = PipeReader.Create(body);
            }
        }
        catch (Exception ex) when (RpcChannel.Translate(ex, _callerToken, _path, RequestId) is { } translated)
        {
            throw translated;
        }
    }

    /// <summary>Reads the next response. Returns false when the server finished the call with grpc-status OK;
    /// throws <see cref="TransportException"/> for any other ending.</summary>
    public async Task<bool> MoveNextAsync(CancellationToken ct = default)
    {
        if (_finished)
        {
            return false;
        }

        await EnsureResponseAsync().ConfigureAwait(false);
        if (_trailersOnly)
        {
            _finished = true;
            return false;
        }

        using var linked = ct.CanBeCanceled ? CancellationTokenSource.CreateLinkedTokenSource(ct, _cts.Token) : null;
        CancellationToken token = linked?.Token ?? _cts.Token;
        try
        {
            TResponse? message = await RpcChannel.ReadMessageAsync(_reader!, _parser, RequestId, token).ConfigureAwait(false);
            if (message is not null)
            {
                Current = message;
                return true;
            }

            _finished = true;
            RpcChannel.CheckTrailers(_response!, RequestId);
            return false;
        }
        catch (Exception ex) when (RpcChannel.Translate(ex, ct.IsCancellationRequested ? ct : _callerToken, _path, RequestId) is { } translated)
        {
            throw translated;
        }
    }

    /// <summary>Writes one request message (bidi calls only) and flushes it to the wire.</summary>
    public async Task WriteAsync(IMessage message, CancellationToken ct = default)
    {
        if (_duplex is null)
        {
            throw new InvalidOperationException("Not a bidirectional call.");
        }

        Stream stream = await _duplex.RequestStream.ConfigureAwait(false);
        var writer = new ArrayBufferWriter<byte>(GrpcFrame.HeaderSize + message.CalculateSize());
        GrpcFrame.WriteFrame(writer, message);
        await _writeLock.WaitAsync(ct).ConfigureAwait(false);
        try
        {
            await stream.WriteAsync(writer.WrittenMemory, ct).ConfigureAwait(false);
            await stream.FlushAsync(ct).ConfigureAwait(false);
        }
        catch (Exception ex) when (RpcChannel.Translate(ex, ct, _path, RequestId) is { } translated)
        {
            throw translated;
        }
        finally
        {
            _writeLock.Release();
        }
    }

    /// <summary>Half-closes the request side (bidi calls): the server sees the end of the client stream.</summary>
    public void CompleteRequest() => _duplex?.Complete();

    public async ValueTask DisposeAsync()
    {
        if (Interlocked.Exchange(ref _disposed, 1) != 0)
        {
            return;
        }

        _duplex?.Complete();
        if (!_finished)
        {
            // Abort: resets the HTTP/2 stream so the server stops sending.
            _cts.Cancel();
        }

        if (_reader is not null)
        {
            await _reader.CompleteAsync().ConfigureAwait(false);
        }

        if (_send is not null)
        {
            try
            {
                await _send.ConfigureAwait(false);
            }
            catch (Exception)
            {
                // Already reported to the reader, or the call never started.
            }
        }

        _response?.Dispose();
        _request.Dispose();
        _cts.Dispose();
        _writeLock.Dispose();
        GC.KeepAlive(_channel);
    }
}
