using System.Net;
using System.Net.Sockets;

namespace HalfMsg.Broker.Tests.Infrastructure;

/// <summary>
/// A plain TCP port forward on 127.0.0.1 to a local port: what <c>docker run -p F:P</c>, a Kubernetes Service port or a
/// TCP load balancer is to a client, which reaches the broker on <see cref="Port"/> and cannot know its real port.
/// </summary>
public sealed class TcpForward : IAsyncDisposable
{
    private readonly TcpListener _listener = new(IPAddress.Loopback, 0);
    private readonly CancellationTokenSource _stop = new();
    private readonly Task _accepting;
    private int _connections;

    public TcpForward(int targetPort)
    {
        _listener.Start();
        _accepting = AcceptAsync(targetPort);
    }

    /// <summary>The forwarded port clients connect to.</summary>
    public int Port => ((IPEndPoint)_listener.LocalEndpoint).Port;

    /// <summary>Connections accepted so far (a test checks its client went through the forward).</summary>
    public int Connections => Volatile.Read(ref _connections);

    private async Task AcceptAsync(int targetPort)
    {
        while (!_stop.IsCancellationRequested)
        {
            TcpClient inbound;
            try
            {
                inbound = await _listener.AcceptTcpClientAsync(_stop.Token);
            }
            catch (Exception ex) when (ex is OperationCanceledException or SocketException or ObjectDisposedException)
            {
                return;
            }

            Interlocked.Increment(ref _connections);
            _ = PipeAsync(inbound, targetPort);
        }
    }

    private async Task PipeAsync(TcpClient inbound, int targetPort)
    {
        using (inbound)
        using (var outbound = new TcpClient())
        {
            try
            {
                await outbound.ConnectAsync(IPAddress.Loopback, targetPort, _stop.Token);
                NetworkStream client = inbound.GetStream(), server = outbound.GetStream();
                // Either side closing ends the pair, as a forward drops both halves of a connection.
                await Task.WhenAny(client.CopyToAsync(server, _stop.Token), server.CopyToAsync(client, _stop.Token));
            }
            catch (Exception ex) when (ex is OperationCanceledException or SocketException or IOException or ObjectDisposedException)
            {
                // The forward is stopping or a side went away: the pair ends.
            }
        }
    }

    public async ValueTask DisposeAsync()
    {
        _stop.Cancel();
        _listener.Stop();
        await _accepting;
        _stop.Dispose();
    }
}
