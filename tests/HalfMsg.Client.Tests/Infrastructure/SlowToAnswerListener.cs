using System.Net;
using System.Net.Sockets;

namespace HalfMsg.Client.Tests.Infrastructure;

/// <summary>
/// An address that is alive but slow to answer a new connection: it accepts TCP connections on 127.0.0.1 and, only
/// after <c>delay</c>, connects to the real server at <c>upstreamPort</c> and passes bytes both ways (what the client
/// wrote meanwhile waits in the socket), as a broker over a slow link, a busy one, or a load balancer that opens its
/// backend connection on demand does. Counts the connections it accepted.
/// </summary>
public sealed class SlowToAnswerListener(int upstreamPort, TimeSpan delay) : LoopbackListener(0)
{
    protected override async Task HandleAsync(TcpClient client, CancellationToken stop)
    {
        await Task.Delay(delay, stop);
        var upstream = new TcpClient();
        Track(upstream);
        await upstream.ConnectAsync(IPAddress.Loopback, upstreamPort, stop);
        NetworkStream down = client.GetStream(), up = upstream.GetStream();
        await Task.WhenAny(CopyAsync(down, up, stop), CopyAsync(up, down, stop));
        client.Dispose();
        upstream.Dispose();
    }

    private static async Task CopyAsync(NetworkStream from, NetworkStream to, CancellationToken stop)
    {
        try
        {
            await from.CopyToAsync(to, stop);
        }
        catch (Exception ex) when (ex is OperationCanceledException or IOException or ObjectDisposedException or SocketException)
        {
        }
    }
}
