using System.Buffers;
using System.Collections.Concurrent;
using System.IO.Pipelines;
using System.Net.Sockets;
using System.Threading.Channels;
using HalfMsg.Protocol.Remoting;

namespace HalfMsg.Fuzz.Capture;

/// <summary>
/// A small Remoting client (requests matched by opaque, broker-initiated requests in <see cref="ServerRequests"/>): what
/// the seed capture and the network fuzzer's well-behaved client drive, the way Java's MQClientAPIImpl does.
/// </summary>
public sealed class MiniRemotingClient : IAsyncDisposable
{
    private static int s_opaque;
    private readonly TcpClient _tcp;
    private readonly NetworkStream _stream;
    private readonly SemaphoreSlim _write = new(1, 1);
    private readonly ConcurrentDictionary<int, TaskCompletionSource<RemotingCommand>> _pending = new();
    private readonly Channel<RemotingCommand> _serverRequests = Channel.CreateUnbounded<RemotingCommand>();
    private readonly Task _reader;

    private MiniRemotingClient(TcpClient tcp)
    {
        _tcp = tcp;
        _stream = tcp.GetStream();
        _reader = Task.Run(ReadLoopAsync);
    }

    public static async Task<MiniRemotingClient> ConnectAsync(int port)
    {
        var tcp = new TcpClient { NoDelay = true };
        await tcp.ConnectAsync("127.0.0.1", port);
        return new MiniRemotingClient(tcp);
    }

    public string ClientId { get; } = "127.0.0.1@fuzz-" + Guid.NewGuid().ToString("N")[..8];

    public ChannelReader<RemotingCommand> ServerRequests => _serverRequests.Reader;

    private async Task ReadLoopAsync()
    {
        var reader = PipeReader.Create(_stream);
        try
        {
            while (true)
            {
                var result = await reader.ReadAsync();
                var buffer = result.Buffer;
                while (RemotingFrame.TryReadFrame(ref buffer, 64 * 1024 * 1024, out var cmd))
                {
                    if (!cmd.IsResponse) _serverRequests.Writer.TryWrite(cmd);
                    else if (_pending.TryRemove(cmd.Opaque, out var tcs)) tcs.TrySetResult(cmd);
                }
                reader.AdvanceTo(buffer.Start, buffer.End);
                if (result.IsCompleted) break;
            }
        }
        catch (Exception)
        {
        }
        finally
        {
            foreach (var p in _pending.Values) p.TrySetException(new IOException("connection closed"));
            _serverRequests.Writer.TryComplete();
        }
    }

    public async Task<RemotingCommand> InvokeAsync(RemotingCommand request, TimeSpan? timeout = null)
    {
        if (request.Opaque == 0) request.Opaque = Interlocked.Increment(ref s_opaque);
        if (request.Version == 0) request.Version = 401; // V4_9_4, a current Java 4.x client
        var tcs = new TaskCompletionSource<RemotingCommand>(TaskCreationOptions.RunContinuationsAsynchronously);
        _pending[request.Opaque] = tcs;
        await SendAsync(RemotingFrame.ToArray(request));
        return await tcs.Task.WaitAsync(timeout ?? TimeSpan.FromSeconds(30));
    }

    public Task<RemotingCommand> InvokeAsync(int code, Dictionary<string, string>? ext = null, byte[]? body = null, SerializeType type = SerializeType.Json)
        => InvokeAsync(new RemotingCommand { Code = code, ExtFields = ext, Body = body ?? ReadOnlyMemory<byte>.Empty, SerializeType = type });

    public async Task OnewayAsync(RemotingCommand request)
    {
        if (request.Opaque == 0) request.Opaque = Interlocked.Increment(ref s_opaque);
        if (request.Version == 0) request.Version = 401;
        request.Flag |= RemotingCommand.OnewayFlag;
        await SendAsync(RemotingFrame.ToArray(request));
    }

    public async Task SendAsync(ReadOnlyMemory<byte> bytes)
    {
        await _write.WaitAsync();
        try
        {
            await _stream.WriteAsync(bytes);
        }
        finally
        {
            _write.Release();
        }
    }

    public async Task<RemotingCommand> NextServerRequestAsync(int code, TimeSpan timeout)
    {
        using var cts = new CancellationTokenSource(timeout);
        while (true)
        {
            var cmd = await _serverRequests.Reader.ReadAsync(cts.Token);
            if (cmd.Code == code) return cmd;
        }
    }

    public async ValueTask DisposeAsync()
    {
        _tcp.Dispose();
        try { await _reader.WaitAsync(TimeSpan.FromSeconds(5)); } catch (TimeoutException) { }
        _write.Dispose();
    }
}
