using System.Net;
using System.Net.Sockets;
using System.Text;
using HalfMsg.Broker.Hosting;
using HalfMsg.TestKit;

namespace HalfMsg.Broker.Tests.Admin;

/// <summary>
/// The admin port's connection limit in a real broker host (in this process, so that the test reads the limit the host
/// built): the request tracking is wired around the admin endpoints, so a connection whose request is in progress is
/// never closed to make room, whatever <c>PeerConnectionLimitKestrelTests</c> proves of the limit in a bare Kestrel.
/// </summary>
public sealed class AdminConnectionLimitHostTests
{
    private const int Pipelined = 300;

    /// <summary>
    /// With a share of one connection per address, a client pipelines hundreds of GET /metrics on one connection and
    /// does not read: the broker's answer blocks in the middle of a request (its output is full). A second connection
    /// from the same address finds nothing idle and is closed at once; the first then reads every one of its answers,
    /// uncut. Once it is idle, a third connection makes room by closing it and is answered. Over TLS too (--admin-tls
    /// auto, the default, serves both on the port): the TLS layer sits between the limit and the HTTP pipeline.
    /// </summary>
    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public async Task A_connection_blocked_writing_an_admin_answer_is_never_closed_to_make_room_and_is_closed_once_idle(bool tls)
    {
        string dataDir = Path.Combine(Path.GetTempPath(), "halfmsg-admin-limit-host-" + Guid.NewGuid().ToString("N")[..12]);
        int http = FreePorts.Next();
        using var deleted = new DeletedAtEnd(dataDir); // declared first: deleted after the host has stopped
        await using BrokerHost host = await BrokerHost.StartAsync(["--data-dir", dataDir, "--grpc-port", FreePorts.Next().ToString(),
            "--http-port", http.ToString(), "--remoting-port", "0", "--namesrv-port", "0", "--admin-max-connections-per-address", "1"]);
        var limit = (PeerConnectionLimit)host.Services.GetService(typeof(PeerConnectionLimit))!;
        var sockets = new List<Socket>();
        try
        {
            // A small receive window, so that the broker's output fills after a few answers.
            var busy = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp) { ReceiveBufferSize = 4096 };
            sockets.Add(busy);
            await busy.ConnectAsync(IPAddress.Loopback, http);
            Stream stream = new NetworkStream(busy, ownsSocket: false);
            if (tls)
            {
                var ssl = new System.Net.Security.SslStream(stream, leaveInnerStreamOpen: false, (_, _, _, _) => true);
                await ssl.AuthenticateAsClientAsync("localhost");
                stream = ssl;
            }

            await using var _ = stream;
            var requests = new StringBuilder();
            for (int i = 0; i < Pipelined; i++) requests.Append($"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1:{http}\r\n\r\n");
            await stream.WriteAsync(Encoding.ASCII.GetBytes(requests.ToString()));
            await stream.FlushAsync();
            await WaitUntilStuckAsync(busy);
            Assert.Equal(1, limit.Busy);

            Socket over = await ConnectAsync(http);
            sockets.Add(over);
            string? overAnswer = await GetHealthAsync(over, http);
            Assert.True(overAnswer is null, "a connection over the share was answered: it closed the one whose answer was in progress");
            Assert.Equal(0, limit.Evicted);

            Assert.Equal(Pipelined, await CountAnswersAsync(stream));

            Socket next = await ConnectAsync(http);
            sockets.Add(next);
            string? answer = await GetHealthAsync(next, http);
            Assert.True(answer is not null, "a connection over the share was closed though the other one was idle");
            Assert.StartsWith("HTTP/1.1 200", answer);
            Assert.Equal(1, limit.Evicted);
        }
        finally
        {
            foreach (Socket s in sockets) s.Dispose();
        }
    }

    /// <summary>
    /// Every way a connection ends leaves nothing counted: a failed TLS handshake, a TLS connection closed after its
    /// handshake, a client reset in the middle of a request, a plain close after an answer, a connection closed to make
    /// room, and one refused. The count returns to zero, so the limit's records cannot grow with connections seen.
    /// </summary>
    [Fact]
    public async Task Every_way_an_admin_connection_ends_leaves_nothing_counted()
    {
        string dataDir = Path.Combine(Path.GetTempPath(), "halfmsg-admin-limit-host-" + Guid.NewGuid().ToString("N")[..12]);
        int http = FreePorts.Next();
        using var deleted = new DeletedAtEnd(dataDir); // declared first: deleted after the host has stopped
        await using BrokerHost host = await BrokerHost.StartAsync(["--data-dir", dataDir, "--grpc-port", FreePorts.Next().ToString(),
            "--http-port", http.ToString(), "--remoting-port", "0", "--namesrv-port", "0", "--admin-max-connections-per-address", "2"]);
        var limit = (PeerConnectionLimit)host.Services.GetService(typeof(PeerConnectionLimit))!;
        // A TLS hello that is not one: the handshake fails.
        using (Socket bad = await ConnectAsync(http))
        {
            await bad.SendAsync(new byte[] { 0x16, 0x03, 0x01, 0x00, 0x05, 0xff, 0xff, 0xff, 0xff, 0xff });
            while (await ReadOrEndAsync(bad) is not null)
            {
                // a TLS alert, then the close
            }
        }

        // A TLS connection that completes its handshake and closes.
        using (Socket s = await ConnectAsync(http))
        using (var ssl = new System.Net.Security.SslStream(new NetworkStream(s), leaveInnerStreamOpen: false, (_, _, _, _) => true))
            await ssl.AuthenticateAsClientAsync("localhost");

        // A reset in the middle of a request's headers.
        using (Socket reset = await ConnectAsync(http))
        {
            await reset.SendAsync(Encoding.ASCII.GetBytes($"GET /health HTTP/1.1\r\nHost: 127.0.0.1:{http}\r\n"));
            reset.LingerState = new LingerOption(true, 0);
        }

        // An answer, then a plain close.
        using (Socket plain = await ConnectAsync(http))
            Assert.StartsWith("HTTP/1.1 200", await GetHealthAsync(plain, http));

        // Two idle from 127.0.0.2, a third closes the first to make room; then all three close.
        var held = new List<Socket>();
        for (int i = 0; i < 3; i++)
        {
            var s = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
            s.Bind(new IPEndPoint(IPAddress.Parse("127.0.0.2"), 0));
            await s.ConnectAsync(IPAddress.Loopback, http);
            held.Add(s);
            Assert.StartsWith("HTTP/1.1 200", await GetHealthAsync(s, http));
        }

        foreach (Socket s in held) s.Dispose();
        var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(30);
        while (limit.Open != 0)
        {
            Assert.True(DateTime.UtcNow < deadline, $"{limit.Open} connections still counted after every one ended");
            await Task.Delay(50); // polling the broker's own count
        }

        Assert.True(limit.Evicted >= 1);
    }

    /// <summary>Deletes a broker's data directory when disposed (after the host that wrote it).</summary>
    private sealed class DeletedAtEnd(string path) : IDisposable
    {
        public void Dispose()
        {
            try { Directory.Delete(path, true); } catch (IOException) { }
        }
    }

    /// <summary>What the server sends next, or null when it closes or resets (fails the test after 30 s of neither).</summary>
    private static async Task<string?> ReadOrEndAsync(Socket socket)
    {
        var buffer = new byte[4096];
        using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(30));
        try
        {
            int n = await socket.ReceiveAsync(buffer, SocketFlags.None, cts.Token);
            return n == 0 ? null : Encoding.ASCII.GetString(buffer, 0, n);
        }
        catch (SocketException)
        {
            return null;
        }
    }

    private static async Task<Socket> ConnectAsync(int port)
    {
        var socket = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        await socket.ConnectAsync(IPAddress.Loopback, port);
        return socket;
    }

    private static async Task<string?> GetHealthAsync(Socket socket, int port)
    {
        try
        {
            await socket.SendAsync(Encoding.ASCII.GetBytes($"GET /health HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n"));
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

    /// <summary>Waits until the broker is blocked writing an answer on <paramref name="socket"/>: what has arrived is
    /// unchanged across a few polls.</summary>
    private static async Task WaitUntilStuckAsync(Socket socket)
    {
        var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(30);
        int seen = -1, steady = 0;
        while (steady < 5)
        {
            Assert.True(DateTime.UtcNow < deadline, "the broker never blocked writing its answers");
            await Task.Delay(100); // polling the answers' arrival
            int now = socket.Available;
            steady = now == seen && now > 0 ? steady + 1 : 0;
            seen = now;
        }
    }

    /// <summary>Reads until <see cref="Pipelined"/> answers have arrived or the server closes; how many arrived.</summary>
    private static async Task<int> CountAnswersAsync(Stream stream)
    {
        byte[] marker = Encoding.ASCII.GetBytes("HTTP/1.1 200 OK");
        var buffer = new byte[64 * 1024];
        var tail = new List<byte>();
        int answers = 0;
        using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(60));
        while (answers < Pipelined)
        {
            int n;
            try
            {
                n = await stream.ReadAsync(buffer, cts.Token);
            }
            catch (IOException)
            {
                return answers; // reset: cut by the server
            }

            if (n == 0) return answers;
            tail.AddRange(buffer.AsSpan(0, n).ToArray());
            // Count the status lines seen so far; keep what could be the start of one cut by the read.
            byte[] text = [.. tail];
            int from = 0;
            for (int i; (i = text.AsSpan(from).IndexOf(marker)) >= 0; from += i + marker.Length) answers++;
            tail = [.. text[Math.Max(from, text.Length - marker.Length + 1)..]];
        }

        return answers;
    }
}
