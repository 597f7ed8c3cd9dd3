using System.Buffers;
using System.Collections.Concurrent;
using System.IO.Pipelines;
using System.Net;
using System.Net.Sockets;
using HalfMsg.Protocol.Remoting;

namespace HalfMsg.Bench.Flows;

/// <summary>
/// One RocketMQ 4 Remoting TCP connection for the bench's load driver, built on the frame and header codecs in
/// <c>src/Protocol/Remoting</c>: requests matched to responses by opaque, one-way requests, and a count of the requests
/// the broker starts (CHECK_TRANSACTION_STATE, NOTIFY_CONSUMER_IDS_CHANGED), which the driver does not answer.
/// Frames are written whole under a lock; a single read loop completes the pending requests.
/// </summary>
public sealed class RemotingBenchConnection : IAsyncDisposable
{
    /// <summary>MQVersion ordinal a current Java 4.x client sends (V4_9_4).</summary>
    public const int JavaClientVersion = 401;
    private static int s_opaque;
    private readonly Socket _socket;
    private readonly NetworkStream _stream;
    private readonly SemaphoreSlim _writeLock = new(1, 1);
    private readonly ConcurrentDictionary<int, TaskCompletionSource<RemotingCommand>> _pending = new();
    private readonly Task _reader;
    private long _serverRequests;

    private RemotingBenchConnection(Socket socket)
    {
        _socket = socket;
        _stream = new NetworkStream(socket, ownsSocket: true);
        _reader = Task.Run(ReadLoopAsync);
    }

    public string ClientId { get; } = "127.0.0.1@bench-" + Guid.NewGuid().ToString("N")[..8];

    /// <summary>Requests the broker started on this connection (check-backs, consumer-change notices).</summary>
    public long ServerRequests => Interlocked.Read(ref _serverRequests);

    /// <summary>Connects to 127.0.0.1:<paramref name="port"/> (the bench never talks to any other address).</summary>
    public static async Task<RemotingBenchConnection> ConnectAsync(int port, CancellationToken ct)
    {
        var socket = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp) { NoDelay = true };
        try
        {
            await socket.ConnectAsync(new IPEndPoint(IPAddress.Loopback, port), ct);
        }
        catch
        {
            socket.Dispose();
            throw;
        }
        return new RemotingBenchConnection(socket);
    }

    private async Task ReadLoopAsync()
    {
        var reader = PipeReader.Create(_stream);
        try
        {
            while (true)
            {
                var result = await reader.ReadAsync();
                var buffer = result.Buffer;
                while (RemotingFrame.TryReadFrame(ref buffer, RemotingFrame.DefaultMaxFrameLength * 4, out var cmd))
                {
                    if (!cmd.IsResponse) Interlocked.Increment(ref _serverRequests);
                    else if (_pending.TryRemove(cmd.Opaque, out var tcs)) tcs.TrySetResult(cmd);
                }
                reader.AdvanceTo(buffer.Start, buffer.End);
                if (result.IsCompleted) break;
            }
        }
        catch (Exception)
        {
            // connection closed or a frame we cannot read: fail what is pending
        }
        finally
        {
            foreach (var p in _pending.Values) p.TrySetException(new IOException("remoting connection closed"));
            _pending.Clear();
        }
    }

    public async Task<RemotingCommand> InvokeAsync(RemotingCommand request, TimeSpan timeout, CancellationToken ct)
    {
        request.Opaque = Interlocked.Increment(ref s_opaque);
        if (request.Version == 0) request.Version = JavaClientVersion;
        var tcs = new TaskCompletionSource<RemotingCommand>(TaskCreationOptions.RunContinuationsAsynchronously);
        _pending[request.Opaque] = tcs;
        try
        {
            await WriteAsync(request, ct);
            return await tcs.Task.WaitAsync(timeout, ct);
        }
        finally
        {
            _pending.TryRemove(request.Opaque, out _);
        }
    }

    /// <summary>Writes a one-way request (flag bit 1); returns once the frame is handed to the socket.</summary>
    public Task SendOnewayAsync(RemotingCommand request, CancellationToken ct)
    {
        request.Opaque = Interlocked.Increment(ref s_opaque);
        if (request.Version == 0) request.Version = JavaClientVersion;
        request.Flag |= RemotingCommand.OnewayFlag;
        return WriteAsync(request, ct);
    }

    private async Task WriteAsync(RemotingCommand request, CancellationToken ct)
    {
        var frame = new ArrayBufferWriter<byte>(512 + request.Body.Length);
        RemotingFrame.Write(frame, request);
        await _writeLock.WaitAsync(ct);
        try
        {
            await _stream.WriteAsync(frame.WrittenMemory, ct);
        }
        finally
        {
            _writeLock.Release();
        }
    }

    public async ValueTask DisposeAsync()
    {
        try { _socket.Shutdown(SocketShutdown.Both); } catch (Exception) { /* closed */ }
        await _stream.DisposeAsync();
        try { await _reader.WaitAsync(TimeSpan.FromSeconds(5)); } catch (Exception) { /* closing */ }
        _writeLock.Dispose();
    }
}
