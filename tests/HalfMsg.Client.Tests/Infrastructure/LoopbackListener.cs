using System.Collections.Concurrent;
using System.Net;
using System.Net.Sockets;

namespace HalfMsg.Client.Tests.Infrastructure;

/// <summary>
/// A TCP listener on 127.0.0.1 that accepts connections and hands each to <see cref="HandleAsync"/>; counts them, and
/// on disposal stops accepting, closes every connection it tracks and frees the port.
/// </summary>
public abstract class LoopbackListener : IAsyncDisposable
{
    private readonly TcpListener _listener;
    private readonly CancellationTokenSource _stop = new();
    private readonly ConcurrentBag<IDisposable> _open = [];
    private readonly Task _loop;
    private int _connections;
    private int _disposed;

    /// <param name="port">The port to take (a stopped broker's, for a real one to take back); 0 for any.</param>
    protected LoopbackListener(int port)
    {
        _listener = new TcpListener(IPAddress.Loopback, port);
        _listener.Start();
        Port = ((IPEndPoint)_listener.LocalEndpoint).Port;
        _loop = Task.Run(AcceptAsync);
    }

    public int Port { get; }

    public string Endpoint => $"127.0.0.1:{Port}";

    /// <summary>Connections accepted so far.</summary>
    public int Connections => Volatile.Read(ref _connections);

    /// <summary>Serves one accepted connection until <paramref name="stop"/>; an I/O failure ends it quietly.</summary>
    protected abstract Task HandleAsync(TcpClient client, CancellationToken stop);

    /// <summary>Closed when the listener is disposed.</summary>
    protected void Track(IDisposable open) => _open.Add(open);

    private async Task AcceptAsync()
    {
        while (!_stop.IsCancellationRequested)
        {
            TcpClient client;
            try
            {
                client = await _listener.AcceptTcpClientAsync(_stop.Token);
            }
            catch (Exception ex) when (ex is OperationCanceledException or SocketException or ObjectDisposedException)
            {
                return;
            }

            Interlocked.Increment(ref _connections);
            Track(client);
            _ = ServeAsync(client);
        }
    }

    private async Task ServeAsync(TcpClient client)
    {
        try
        {
            await HandleAsync(client, _stop.Token);
        }
        catch (Exception ex) when (ex is OperationCanceledException or IOException or ObjectDisposedException or SocketException)
        {
            client.Dispose();
        }
    }

    public async ValueTask DisposeAsync()
    {
        if (Interlocked.Exchange(ref _disposed, 1) != 0)
        {
            return;
        }

        await _stop.CancelAsync();
        _listener.Stop();
        await _loop;
        foreach (IDisposable open in _open)
        {
            open.Dispose();
        }

        _stop.Dispose();
    }
}
