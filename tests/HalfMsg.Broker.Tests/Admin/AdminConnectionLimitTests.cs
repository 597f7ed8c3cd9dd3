using System.Net;
using System.Net.Sockets;
using System.Text;
using HalfMsg.Broker.Hosting;
using HalfMsg.TestKit;

namespace HalfMsg.Broker.Tests.Admin;

/// <summary>
/// The admin port counts its own connections, in all and per peer address: one over either limit is closed at once,
/// and a freed slot serves again.
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

    /// <summary>
    /// One address opens idle keep-alive connections (each served one /health) until the broker refuses one; a probe
    /// from another address must still be answered. Until 2026-12-06 the first address took all 256 connections of the
    /// admin port and the probe's connection was closed at once: a liveness probe failed while the broker was fine.
    /// </summary>
    [Fact]
    public async Task One_address_holding_idle_connections_cannot_keep_a_health_probe_from_another_address_out()
    {
        await using BrokerProcess broker = await BrokerProcess.StartAsync();
        var open = new List<Socket>();
        try
        {
            int refusedAt = -1;
            for (int i = 0; i < AdminEndpoint.MaxConnections + 8; i++)
            {
                Socket s = await ConnectAsync(broker.HttpPort);
                string? answer = await GetHealthAsync(s, broker.HttpPort);
                if (answer is null)
                {
                    s.Dispose();
                    refusedAt = i;
                    break;
                }

                open.Add(s);
                Assert.StartsWith("HTTP/1.1 200", answer);
            }

            Assert.InRange(refusedAt, AdminEndpoint.DefaultMaxConnectionsPerAddress - 4, AdminEndpoint.DefaultMaxConnectionsPerAddress);
            using HttpClient probe = ClientFrom(IPAddress.Parse("127.0.0.2"), TimeSpan.FromSeconds(5));
            using HttpResponseMessage health = await probe.GetAsync($"http://127.0.0.1:{broker.HttpPort}/health");
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

    /// <summary>The connections of this test come from 127.0.0.10 on, 32 from each, below the share of one address.</summary>
    private static IPAddress Spread(int i) => IPAddress.Parse($"127.0.0.{10 + (i / 32)}");

    [Fact]
    public async Task A_connection_over_the_admin_ports_limit_is_closed_at_once_and_a_freed_slot_serves_again()
    {
        await using BrokerProcess broker = await BrokerProcess.StartAsync();
        var open = new List<Socket>();
        IPAddress fresh = IPAddress.Parse("127.0.0.200"); // no connection of its own: only the total can refuse it
        try
        {
            // The test kit's own health polling may hold a connection or two: open until one is refused.
            int refusedAt = -1;
            for (int i = 0; i < AdminEndpoint.MaxConnections + 8; i++)
            {
                Socket s = await ConnectAsync(broker.HttpPort, Spread(i));
                string? answer = await GetHealthAsync(s, broker.HttpPort);
                if (answer is null)
                {
                    s.Dispose();
                    refusedAt = i;
                    break;
                }

                open.Add(s);
                Assert.StartsWith("HTTP/1.1 200", answer);
            }

            Assert.InRange(refusedAt, AdminEndpoint.MaxConnections - 4, AdminEndpoint.MaxConnections);
            using (Socket over = await ConnectAsync(broker.HttpPort, fresh))
            {
                Assert.Null(await GetHealthAsync(over, broker.HttpPort)); // still over: closed at once
            }

            open[0].Dispose();
            open.RemoveAt(0);
            var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(60);
            while (true)
            {
                Socket again = await ConnectAsync(broker.HttpPort, fresh);
                string? answer = await GetHealthAsync(again, broker.HttpPort);
                if (answer is not null)
                {
                    open.Add(again);
                    Assert.StartsWith("HTTP/1.1 200", answer);
                    break;
                }

                again.Dispose();
                Assert.True(DateTime.UtcNow < deadline, "a freed admin connection slot was never served again");
                await Task.Delay(100); // polling for the server to notice the closed socket
            }
        }
        finally
        {
            foreach (Socket s in open) s.Dispose();
        }
    }
}
