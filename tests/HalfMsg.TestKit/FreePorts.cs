using System.Net;
using System.Net.Sockets;

namespace HalfMsg.TestKit;

/// <summary>
/// Free TCP ports on 127.0.0.1, for servers that tests start (a port the OS just handed out and released).
/// Never the same port twice in one test process: Linux may hand a just-released port out again on the next
/// bind to port 0, and a broker given the same port for two listeners refuses to start (a CI failure).
/// </summary>
public static class FreePorts
{
    private static readonly HashSet<int> HandedOut = [];

    /// <summary>A port that was free a moment ago and that this process has not handed out before.</summary>
    public static int Next()
    {
        lock (HandedOut)
        {
            for (int attempt = 0; attempt < 1_000; attempt++)
            {
                using var listener = new TcpListener(IPAddress.Loopback, 0);
                listener.Start();
                int port = ((IPEndPoint)listener.LocalEndpoint).Port;
                if (HandedOut.Add(port))
                {
                    return port;
                }
            }
        }

        throw new InvalidOperationException("No free 127.0.0.1 port that was not handed out before, after 1,000 tries");
    }
}
