using System.Net.Sockets;

namespace HalfMsg.Client.Tests.Infrastructure;

/// <summary>
/// An address that never answers: it accepts TCP connections on 127.0.0.1 and reads whatever comes (a request, an
/// HTTP/2 preface), but never writes a byte, as a hung broker, or a load balancer without a backend, does. Counts the
/// connections it accepted. Disposing it closes them and frees the port (for a real server to take it).
/// </summary>
public sealed class SilentListener(int port = 0) : LoopbackListener(port)
{
    protected override async Task HandleAsync(TcpClient client, CancellationToken stop)
    {
        byte[] buffer = new byte[4096];
        NetworkStream stream = client.GetStream();
        while (await stream.ReadAsync(buffer, stop) > 0)
        {
        }
    }
}
