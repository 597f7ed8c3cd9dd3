using System.Net;
using System.Net.Sockets;

namespace HalfMsg.TestKit;

/// <summary>Free TCP ports on 127.0.0.1, for servers that tests start (a port the OS just handed out and released).</summary>
public static class FreePorts
{
    /// <summary>A port that was free a moment ago.</summary>
    public static int Next()
    {
        using var listener = new TcpListener(IPAddress.Loopback, 0);
        listener.Start();
        return ((IPEndPoint)listener.LocalEndpoint).Port;
    }
}
