using System.Collections.Concurrent;
using System.Net;
using System.Net.Sockets;

namespace HalfMsg.Client.Tests.Infrastructure;

/// <summary>
/// An address that never answers: it accepts TCP connections on 127.0.0.1 and reads whatever comes (a request, an
/// HTTP/2 preface), but never writes a byte, as a hung broker, or a load balancer without a backend, does. Counts the
/// connections it accepted. Disposing it closes them and frees the port (for a real server to take it).
/// </summary>
public sealed class SilentListener : IAsyncDisposable
{
    private readonly TcpListener _listener;
    private readonly CancellationTokenSource _stop = new();
    private readonly ConcurrentBag<TcpClient> _accepted = [];
    private readonly Task _loop;
    private int _connections;
    private int _disposed;

    /// <param name="port">The port to take (a stopped broker's, for a real one to take back); 0 for any.</param>
    public SilentListener(int port = 0)
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
            _accepted.Add(client);
            _ = DrainAsync(client);
        }
    }

    private async Task DrainAsync(TcpClient client)
    {
        byte[] buffer = new byte[4096];
        try
        {
            NetworkStream stream = client.GetStream();
            while (await stream.ReadAsync(buffer, _stop.Token) > 0)
            {
            }
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
        foreach (TcpClient client in _accepted)
        {
            client.Dispose();
        }

        _stop.Dispose();
    }
}
