using System.Collections.Concurrent;
using System.Net;
using System.Net.Sockets;

namespace HalfMsg.Client.Tests.Infrastructure;

/// <summary>
/// An address that is alive but slow to answer a new connection: it accepts TCP connections on 127.0.0.1 and, only
/// after <c>delay</c>, connects to the real server at <c>upstreamPort</c> and passes bytes both ways (what the client
/// wrote meanwhile waits in the socket), as a broker over a slow link, a busy one, or a load balancer that opens its
/// backend connection on demand does. Counts the connections it accepted.
/// </summary>
public sealed class SlowToAnswerListener : IAsyncDisposable
{
    private readonly TcpListener _listener;
    private readonly CancellationTokenSource _stop = new();
    private readonly ConcurrentBag<IDisposable> _open = [];
    private readonly Task _loop;
    private readonly int _upstreamPort;
    private readonly TimeSpan _delay;
    private int _connections;
    private int _disposed;

    public SlowToAnswerListener(int upstreamPort, TimeSpan delay)
    {
        _upstreamPort = upstreamPort;
        _delay = delay;
        _listener = new TcpListener(IPAddress.Loopback, 0);
        _listener.Start();
        Port = ((IPEndPoint)_listener.LocalEndpoint).Port;
        _loop = Task.Run(AcceptAsync);
    }

    public int Port { get; }

    public string Endpoint => $"127.0.0.1:{Port}";

    /// <summary>Connections accepted so far.</summary>
    public int Connections => Volatile.Read(ref _connections);

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
            _open.Add(client);
            _ = RelayAsync(client);
        }
    }

    private async Task RelayAsync(TcpClient client)
    {
        try
        {
            await Task.Delay(_delay, _stop.Token);
            var upstream = new TcpClient();
            _open.Add(upstream);
            await upstream.ConnectAsync(IPAddress.Loopback, _upstreamPort, _stop.Token);
            NetworkStream down = client.GetStream(), up = upstream.GetStream();
            await Task.WhenAny(CopyAsync(down, up), CopyAsync(up, down));
            client.Dispose();
            upstream.Dispose();
        }
        catch (Exception ex) when (ex is OperationCanceledException or IOException or ObjectDisposedException or SocketException)
        {
            client.Dispose();
        }
    }

    private async Task CopyAsync(NetworkStream from, NetworkStream to)
    {
        try
        {
            await from.CopyToAsync(to, _stop.Token);
        }
        catch (Exception ex) when (ex is OperationCanceledException or IOException or ObjectDisposedException or SocketException)
        {
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
