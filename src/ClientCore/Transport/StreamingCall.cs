using Apache.Rocketmq.V2;
using Grpc.Core;

namespace HalfMsg.ClientCore.Transport;

/// <summary>A server-streaming or Telemetry call in progress, with failures translated to the client exception
/// family. Reads are single-consumer; writes (Telemetry only) are serialized here, since grpc-dotnet allows one
/// pending write at a time. Disposing cancels the call if it has not finished.</summary>
internal sealed class StreamingCall<TResponse> : IAsyncDisposable
{
    private readonly IAsyncStreamReader<TResponse> _responses;
    private readonly IClientStreamWriter<TelemetryCommand>? _requests;
    private readonly IDisposable _call;
    private readonly CancellationToken _callerToken;
    private readonly Action<Exception>? _onFailure;
    private readonly ClientTls? _tls;
    private readonly SemaphoreSlim _writeLock = new(1, 1);
    private int _disposed;

    // onFailure: told of every translated failure (the channel moves a multi-address endpoint on); tls: the channel's, for
    // what a failed connection says.
    internal StreamingCall(AsyncServerStreamingCall<TResponse> call, CancellationToken callerToken, Action<Exception>? onFailure = null, ClientTls? tls = null)
    {
        _responses = call.ResponseStream;
        _call = call;
        _callerToken = callerToken;
        _onFailure = onFailure;
        _tls = tls;
    }

    internal StreamingCall(AsyncDuplexStreamingCall<TelemetryCommand, TResponse> call, CancellationToken callerToken, Action<Exception>? onFailure = null, ClientTls? tls = null)
    {
        _responses = call.ResponseStream;
        _requests = call.RequestStream;
        _call = call;
        _callerToken = callerToken;
        _onFailure = onFailure;
        _tls = tls;
    }

    private Exception Failed(Exception translated)
    {
        _onFailure?.Invoke(translated);
        return translated;
    }

    public TResponse Current => _responses.Current;

    /// <summary>Reads the next response. Returns false when the server finished the call with grpc-status OK;
    /// throws <see cref="TransportException"/> for any other ending.</summary>
    public async Task<bool> MoveNextAsync(CancellationToken ct = default)
    {
        try
        {
            return await _responses.MoveNext(ct).ConfigureAwait(false);
        }
        catch (Exception ex) when (RpcChannel.Translate(ex, ct.IsCancellationRequested ? ct : _callerToken, _tls) is { } translated)
        {
            throw Failed(translated);
        }
    }

    /// <summary>Writes one request message (Telemetry only).</summary>
    public async Task WriteAsync(TelemetryCommand message, CancellationToken ct = default)
    {
        if (_requests is null)
        {
            throw new InvalidOperationException("Not a bidirectional call.");
        }

        await _writeLock.WaitAsync(ct).ConfigureAwait(false);
        try
        {
            await _requests.WriteAsync(message, ct).ConfigureAwait(false);
        }
        catch (Exception ex) when (RpcChannel.Translate(ex, ct, _tls) is { } translated)
        {
            throw Failed(translated);
        }
        finally
        {
            _writeLock.Release();
        }
    }

    /// <summary>Half-closes the request side (Telemetry): the server then ends the call with OK. Gives up (leaving the
    /// call to be cancelled by its owner) when a pending write holds the stream longer than <paramref name="timeout"/>
    /// (null: no bound).</summary>
    public async Task CompleteRequestAsync(TimeSpan? timeout = null)
    {
        if (_requests is null)
        {
            return;
        }

        if (!await _writeLock.WaitAsync(timeout ?? Timeout.InfiniteTimeSpan).ConfigureAwait(false))
        {
            return;
        }

        try
        {
            await _requests.CompleteAsync().ConfigureAwait(false);
        }
        catch (Exception ex) when (ex is RpcException or InvalidOperationException or IOException or OperationCanceledException)
        {
            // Already ended.
        }
        finally
        {
            _writeLock.Release();
        }
    }

    public ValueTask DisposeAsync()
    {
        if (Interlocked.Exchange(ref _disposed, 1) == 0)
        {
            _call.Dispose();
        }

        return ValueTask.CompletedTask;
    }
}
