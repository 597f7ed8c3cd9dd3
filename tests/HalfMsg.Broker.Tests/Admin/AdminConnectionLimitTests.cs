using System.Net;
using System.Net.Sockets;
using System.Text;
using HalfMsg.Broker.Hosting;
using HalfMsg.TestKit;

namespace HalfMsg.Broker.Tests.Admin;

/// <summary>
/// The admin port counts its own connections, in all and per peer address: one over either limit closes an idle
/// connection (its own address's, or the largest holder's), so a probe gets in while other peers hold the port, and the
/// total stays bounded. (A connection refused because every one has a request in progress:
/// <c>PeerConnectionLimitKestrelTests</c>.)
/// </summary>
public sealed class AdminConnectionLimitTests
{
    private static async Task<string?> GetHealthAsync(Socket socket, int port)
    {
        byte[] request = Encoding.ASCII.GetBytes($"GET /health HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n");
        try
        {
            await socket.SendAsync(request);
            var buffer = new byte[4096];
            using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(30));
            int n = await socket.ReceiveAsync(buffer, SocketFlags.None, cts.Token);
            return n == 0 ? null : Encoding.ASCII.GetString(buffer, 0, n);
        }
        catch (SocketException)
        {
            return null; // reset: closed by the server
        }
    }

    /// <summary>A connection to the broker's 127.0.0.1 from <paramref name="from"/> (default 127.0.0.1): on Linux all of
    /// 127.0.0.0/8 is loopback, so a socket bound to 127.0.0.2 reaches 127.0.0.1 and the broker sees a second address.</summary>
    private static async Task<Socket> ConnectAsync(int port, IPAddress? from = null)
    {
        var socket = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        if (from is not null) socket.Bind(new IPEndPoint(from, 0));
        await socket.ConnectAsync(IPAddress.Loopback, port);
        return socket;
    }

    /// <summary>An HTTP client whose connections come from <paramref name="from"/>, with a probe's short timeout.</summary>
    private static HttpClient ClientFrom(IPAddress from, TimeSpan timeout) => new(new SocketsHttpHandler
    {
        ConnectCallback = async (context, token) =>
        {
            var socket = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp) { NoDelay = true };
            try
            {
                socket.Bind(new IPEndPoint(from, 0));
                await socket.ConnectAsync(context.DnsEndPoint, token);
                return new NetworkStream(socket, ownsSocket: true);
            }
            catch
            {
                socket.Dispose();
                throw;
            }
        },
    })
    { Timeout = timeout };

    /// <summary>True when the server has closed <paramref name="socket"/> (its end of file or reset has arrived).</summary>
    private static bool ClosedByServer(Socket socket)
    {
        try
        {
            // Readable with nothing to read is the end of the stream; what is left of an answer (a body sent in a segment
            // of its own) is read first, or it would keep the socket looking open.
            var rest = new byte[4096];
            while (socket.Poll(0, SelectMode.SelectRead))
            {
                if (socket.Available == 0) return true;
                socket.Receive(rest, Math.Min(rest.Length, socket.Available), SocketFlags.None);
            }

            return false;
        }
        catch (SocketException)
        {
            return true;
        }
    }

    /// <summary>Waits until at most <paramref name="max"/> of <paramref name="sockets"/> are still open on the server's
    /// side; the count it settled at.</summary>
    private static async Task<int> OpenSettlesAtMostAsync(List<Socket> sockets, int max)
    {
        var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(20);
        while (true)
        {
            int open = sockets.Count(s => !ClosedByServer(s));
            if (open <= max || DateTime.UtcNow > deadline) return open;
            await Task.Delay(50); // polling for the broker's closes to arrive
        }
    }

    /// <summary>
    /// One address opens more idle keep-alive connections than its share, each serving one /health: every one is
    /// answered, the broker closes that address's longest idle ones so that it never holds more than its share, and a
    /// probe from that same address and from another is answered. Until 2026-12-06 the first address took all 256
    /// connections of the admin port; until the evening session of 2026-12-07 the connection over the share was closed
    /// at once, so a prober on the hoarder's address (the container's own check on 127.0.0.1) failed.
    /// </summary>
    [Fact]
    public async Task One_address_over_its_share_closes_its_own_longest_idle_connections_and_probes_from_any_address_get_in()
    {
        await using BrokerProcess broker = await BrokerProcess.StartAsync();
        var open = new List<Socket>();
        try
        {
            for (int i = 0; i < AdminEndpoint.DefaultMaxConnectionsPerAddress + 8; i++)
            {
                Socket s = await ConnectAsync(broker.HttpPort);
                open.Add(s);
                string? answer = await GetHealthAsync(s, broker.HttpPort);
                Assert.True(answer is not null, $"connection {i} from 127.0.0.1 was closed unanswered");
                Assert.StartsWith("HTTP/1.1 200", answer);
            }

            Assert.InRange(await OpenSettlesAtMostAsync(open, AdminEndpoint.DefaultMaxConnectionsPerAddress),
                AdminEndpoint.DefaultMaxConnectionsPerAddress - 4, AdminEndpoint.DefaultMaxConnectionsPerAddress);
            Assert.True(ClosedByServer(open[0]), "the longest idle connection of 127.0.0.1 was not the one closed");
            Assert.False(ClosedByServer(open[^1]), "the newest connection of 127.0.0.1 was closed");

            using HttpClient sameAddress = ClientFrom(IPAddress.Loopback, TimeSpan.FromSeconds(5));
            using (HttpResponseMessage health = await sameAddress.GetAsync($"http://127.0.0.1:{broker.HttpPort}/health"))
                Assert.Equal(HttpStatusCode.OK, health.StatusCode);
            using HttpClient other = ClientFrom(IPAddress.Parse("127.0.0.2"), TimeSpan.FromSeconds(5));
            using (HttpResponseMessage health = await other.GetAsync($"http://127.0.0.1:{broker.HttpPort}/health"))
                Assert.Equal(HttpStatusCode.OK, health.StatusCode);
        }
        finally
        {
            foreach (Socket s in open) s.Dispose();
        }
    }

    /// <summary>
    /// With credentials configured, the port's worth of unsigned requests from one address, each left open by the
    /// client: every 401 closes its connection, so a probe from that same address still gets /health. Until 2026-12-06
    /// each 401 kept its connection alive and the probe's connection was closed at once.
    /// </summary>
    [Fact]
    public async Task Unsigned_requests_hold_no_admin_connection_so_health_still_answers_on_the_same_address()
    {
        await using BrokerProcess broker = await BrokerProcess.StartWithEnvironmentAsync(
            new Dictionary<string, string> { ["Broker__Credentials__ops"] = "pw-123456" });
        byte[] unsigned = Encoding.ASCII.GetBytes($"GET /api/stats HTTP/1.1\r\nHost: 127.0.0.1:{broker.HttpPort}\r\n\r\n");
        var open = new List<Socket>();
        try
        {
            for (int i = 0; i < AdminEndpoint.MaxConnections; i++)
            {
                Socket s = await ConnectAsync(broker.HttpPort);
                open.Add(s); // never closed by this side: only the broker can free its slot
                try
                {
                    await s.SendAsync(unsigned);
                    var buffer = new byte[4096];
                    using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(30));
                    int n = await s.ReceiveAsync(buffer, SocketFlags.None, cts.Token);
                    if (n > 0) Assert.StartsWith("HTTP/1.1 401", Encoding.ASCII.GetString(buffer, 0, n));
                }
                catch (SocketException)
                {
                    // closed at once over a limit; the probe below is the verdict
                }
            }

            using var probe = new HttpClient { Timeout = TimeSpan.FromSeconds(5) };
            using HttpResponseMessage health = await probe.GetAsync($"http://127.0.0.1:{broker.HttpPort}/health");
            Assert.Equal(HttpStatusCode.OK, health.StatusCode);
        }
        finally
        {
            foreach (Socket s in open) s.Dispose();
        }
    }

    /// <summary>The connections of this test come from 127.0.0.10 to 127.0.0.13, a full share from each: four addresses
    /// hold the whole port.</summary>
    private static IPAddress Spread(int i) => IPAddress.Parse($"127.0.0.{10 + (i / AdminEndpoint.DefaultMaxConnectionsPerAddress)}");

    /// <summary>
    /// Four addresses fill the admin port with idle keep-alive connections; a /health probe from a fifth address is
    /// answered within a probe's timeout, the broker closes the longest idle connection of a largest holder to make room,
    /// counts it in /api/stats, and never holds more than 256. Until the evening session of 2026-12-07 the probe's
    /// connection was closed at once: a liveness probe failed while the broker was fine.
    /// </summary>
    [Fact]
    public async Task Idle_connections_from_four_addresses_filling_the_port_make_room_for_a_health_probe_and_the_total_stays_bounded()
    {
        await using BrokerProcess broker = await BrokerProcess.StartAsync();
        var open = new List<Socket>();
        try
        {
            int answered = 0;
            for (int i = 0; i < AdminEndpoint.MaxConnections; i++)
            {
                Socket s = await ConnectAsync(broker.HttpPort, Spread(i));
                open.Add(s);
                string? answer = await GetHealthAsync(s, broker.HttpPort);
                if (answer is null) continue; // the test kit's own health polling may hold a connection or two
                Assert.StartsWith("HTTP/1.1 200", answer);
                answered++;
            }

            Assert.InRange(answered, AdminEndpoint.MaxConnections - 4, AdminEndpoint.MaxConnections);
            using HttpClient probe = ClientFrom(IPAddress.Parse("127.0.0.200"), TimeSpan.FromSeconds(5));
            using (HttpResponseMessage health = await probe.GetAsync($"http://127.0.0.1:{broker.HttpPort}/health"))
                Assert.Equal(HttpStatusCode.OK, health.StatusCode);
            using (HttpResponseMessage stats = await probe.GetAsync($"http://127.0.0.1:{broker.HttpPort}/api/stats"))
            {
                Assert.Equal(HttpStatusCode.OK, stats.StatusCode);
                using var json = System.Text.Json.JsonDocument.Parse(await stats.Content.ReadAsStringAsync());
                Assert.True(json.RootElement.GetProperty("adminConnectionsEvicted").GetInt64() >= 1);
            }

            // The probe holds one connection (pooled): the rest is what these four addresses may keep.
            int stillOpen = await OpenSettlesAtMostAsync(open, AdminEndpoint.MaxConnections - 1);
            Assert.InRange(stillOpen, AdminEndpoint.MaxConnections - 8, AdminEndpoint.MaxConnections - 1);
            Assert.True(ClosedByServer(open[0]), "the longest idle connection of a largest holder (127.0.0.10) was not closed");
        }
        finally
        {
            foreach (Socket s in open) s.Dispose();
        }
    }

    /// <summary>
    /// The limit sits before TLS (--admin-tls auto, the default): connections that finished their TLS handshake and sent
    /// no request, and one that sent nothing at all, are idle, so an https probe from the same address closes the longest
    /// idle of them and is answered. Until the evening session of 2026-12-07 it was closed at once.
    /// </summary>
    [Fact]
    public async Task Idle_tls_connections_over_the_share_make_room_for_an_https_probe_from_the_same_address()
    {
        const int share = 4;
        await using BrokerProcess broker = await BrokerProcess.StartAsync("--admin-max-connections-per-address", share.ToString(System.Globalization.CultureInfo.InvariantCulture));
        var sockets = new List<Socket>();
        var tls = new List<System.Net.Security.SslStream>();
        try
        {
            sockets.Add(await ConnectAsync(broker.HttpPort)); // silent: not even a TLS hello
            for (int i = 1; i < share; i++)
            {
                Socket s = await ConnectAsync(broker.HttpPort);
                sockets.Add(s);
                var stream = new System.Net.Security.SslStream(new NetworkStream(s), leaveInnerStreamOpen: true, (_, _, _, _) => true);
                tls.Add(stream);
                try
                {
                    await stream.AuthenticateAsClientAsync("localhost");
                }
                catch (IOException)
                {
                    // closed at once over the share (the test kit's polling connection may hold one): the probe is the verdict
                }
            }

            using var probe = new HttpClient(new SocketsHttpHandler { SslOptions = { RemoteCertificateValidationCallback = (_, _, _, _) => true } })
            {
                Timeout = TimeSpan.FromSeconds(5),
            };
            using (HttpResponseMessage health = await probe.GetAsync($"https://127.0.0.1:{broker.HttpPort}/health"))
                Assert.Equal(HttpStatusCode.OK, health.StatusCode);
            // The test kit's own polling connection from 127.0.0.1, if still open, was idle longest; then the silent one.
            Assert.InRange(await OpenSettlesAtMostAsync(sockets, share - 1), share - 2, share - 1);
        }
        finally
        {
            foreach (var stream in tls) stream.Dispose();
            foreach (Socket s in sockets) s.Dispose();
        }
    }
}
