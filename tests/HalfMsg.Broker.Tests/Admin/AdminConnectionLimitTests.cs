using System.Net;
using System.Net.Sockets;
using System.Text;
using HalfMsg.Broker.Hosting;
using HalfMsg.TestKit;

namespace HalfMsg.Broker.Tests.Admin;

/// <summary>The admin port counts its own connections: one over the limit is closed at once, and a freed slot serves again.</summary>
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

    private static async Task<Socket> ConnectAsync(int port)
    {
        var socket = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        await socket.ConnectAsync(IPAddress.Loopback, port);
        return socket;
    }

    [Fact]
    public async Task A_connection_over_the_admin_ports_limit_is_closed_at_once_and_a_freed_slot_serves_again()
    {
        await using BrokerProcess broker = await BrokerProcess.StartAsync();
        var open = new List<Socket>();
        try
        {
            // The test kit's own health polling may hold a connection or two: open until one is refused.
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

            Assert.InRange(refusedAt, AdminEndpoint.MaxConnections - 4, AdminEndpoint.MaxConnections);
            using (Socket over = await ConnectAsync(broker.HttpPort))
            {
                Assert.Null(await GetHealthAsync(over, broker.HttpPort)); // still over: closed at once
            }

            open[0].Dispose();
            open.RemoveAt(0);
            var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(60);
            while (true)
            {
                Socket again = await ConnectAsync(broker.HttpPort);
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
