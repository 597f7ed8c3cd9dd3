using System.Net;
using System.Net.Sockets;
using Apache.Rocketmq.V2;
using HalfMsg.Broker.Hosting;
using HalfMsg.Broker.Tests.Infrastructure;
using HalfMsg.Protocol.Grpc;
using HalfMsg.Protocol.Remoting;
using HalfMsg.TestKit;
using Microsoft.Extensions.Configuration;
using Xunit.Abstractions;

namespace HalfMsg.Broker.Tests.Hosting;

/// <summary>
/// The per-address share of the gRPC and Remoting connection limits (<c>--grpc-max-connections-per-address</c>,
/// <c>--remoting-max-connections-per-address</c>), against a real broker process: one address over its share has its new
/// connection closed at once while its open ones keep being served (they are never closed to make room, unlike the admin
/// port's), another address (127.0.0.2, loopback on Linux) is not affected, and every way a connection ends gives its
/// place back. The default is the whole port, as before.
/// </summary>
public sealed class ConnectionShareTests(ITestOutputHelper output)
{
    private static readonly IPAddress Here = IPAddress.Loopback;
    private static readonly IPAddress Other = IPAddress.Parse("127.0.0.2");
    private static readonly TimeSpan Within = TimeSpan.FromSeconds(30);

    [Fact]
    public async Task A_gRPC_connection_over_its_addresss_share_is_closed_and_the_open_ones_keep_being_served()
    {
        await using BrokerProcess broker = await BrokerProcess.StartAsync("--grpc-max-connections", "10", "--grpc-max-connections-per-address", "3");
        var clients = new List<GrpcTestClient>();
        try
        {
            for (int i = 0; i < 3; i++)
            {
                var client = new GrpcTestClient(broker.Endpoint, local: Here);
                clients.Add(client);
                await QueryRouteAsync(client);
            }

            // The fourth from the same address: closed without a word.
            Assert.True(await GrpcRefusedAsync(broker.GrpcPort, Here), "a fourth gRPC connection from 127.0.0.1 was served");
            await Eventually.TrueAsync(() => broker.Output.Contains("gRPC connection from 127.0.0.1 refused: 3 connections from that address already open (--grpc-max-connections-per-address", StringComparison.Ordinal),
                "the broker logs the refusal naming the port, the peer and the share", Within);

            // The three open ones are kept and answer on the same connections.
            foreach (var client in clients)
            {
                await QueryRouteAsync(client);
                Assert.Equal(1, client.Connects);
            }

            // Another address has its own share.
            using (var other = new GrpcTestClient(broker.Endpoint, local: Other))
                await QueryRouteAsync(other);

            // Once they are gone, as many are served again.
            foreach (var client in clients) client.Dispose();
            clients.Clear();
            await ServedAgainAsync(() => GrpcServedAsync(broker.GrpcPort, Here));
        }
        finally
        {
            foreach (var client in clients) client.Dispose();
        }
    }

    /// <summary>
    /// Every way a connection ends gives its place in the share back: closed by the client after it was served, reset by
    /// the client (RST), and a TLS handshake that fails (the ports' default TLS mode, auto, takes TLS; the share is taken
    /// before it). Done twice over, so that a leak of one place per ending would leave none.
    /// </summary>
    [Theory]
    [InlineData("gRPC")]
    [InlineData("Remoting")]
    public async Task Every_way_a_connection_ends_gives_its_place_in_the_share_back(string protocol)
    {
        bool grpc = protocol == "gRPC";
        await using BrokerProcess broker = await BrokerProcess.StartAsync(grpc ? "--grpc-max-connections" : "--remoting-max-connections", "10",
            grpc ? "--grpc-max-connections-per-address" : "--remoting-max-connections-per-address", "3");
        int port = grpc ? broker.GrpcPort : broker.RemotingPort;
        for (int round = 0; round < 2; round++)
        {
            // Closed: a served connection the client closes. (Tried until served: the connections of the round before
            // were just closed, and the broker may not have seen them end yet.)
            await ServedAgainAsync(async () =>
            {
                if (grpc)
                {
                    await using RawHttp2 closed = await RawHttp2.ConnectAsync(port, Here);
                    return await ServerSpeaksAsync(closed);
                }

                await using var client = await RemotingTestClient.ConnectAsync(port, Here);
                return await RemotingAnswersAsync(client);
            });

            // Reset: a connection the client aborts (linger 0: an RST, no FIN) after its first bytes.
            using (Socket reset = await ConnectAsync(port, Here))
            {
                await reset.SendAsync(grpc ? "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"u8.ToArray() : new byte[] { 0, 0 });
                reset.LingerState = new LingerOption(true, 0);
            }

            // A TLS handshake that fails: a ClientHello record whose body is garbage; the broker closes the connection.
            using (Socket badTls = await ConnectAsync(port, Here))
            {
                byte[] record = [0x16, 0x03, 0x01, 0x00, 0x20, .. Enumerable.Repeat((byte)0xEE, 0x20)];
                await badTls.SendAsync(record);
                await ReadUntilClosedAsync(badTls);
            }

            await ServedAgainAsync(() => grpc ? GrpcServedAsync(port, Here) : RemotingServedAsync(port, Here));
        }
    }

    [Fact]
    public async Task By_default_one_address_may_hold_the_whole_gRPC_port()
    {
        await using BrokerProcess broker = await BrokerProcess.StartAsync("--grpc-max-connections", "6");
        var open = new List<RawHttp2>();
        try
        {
            for (int i = 0; i < 6; i++)
            {
                RawHttp2 h2 = await RawHttp2.ConnectAsync(broker.GrpcPort, Here);
                open.Add(h2);
                Assert.True(await ServerSpeaksAsync(h2), $"connection {i + 1} of 6 from one address was not served");
            }

            // The whole port's limit is unchanged.
            Assert.True(await GrpcRefusedAsync(broker.GrpcPort, Other), "a seventh connection was served");
        }
        finally
        {
            foreach (var h2 in open) await h2.DisposeAsync();
        }
    }

    /// <summary>The Remoting and name-server ports share one count per address, as they share their whole limit.</summary>
    [Fact]
    public async Task A_Remoting_connection_over_its_addresss_share_is_closed_and_the_open_ones_keep_being_served()
    {
        await using BrokerProcess broker = await BrokerProcess.StartAsync("--remoting-max-connections", "10", "--remoting-max-connections-per-address", "3");
        var clients = new List<RemotingTestClient>();
        try
        {
            clients.Add(await RemotingTestClient.ConnectAsync(broker.RemotingPort, Here));
            clients.Add(await RemotingTestClient.ConnectAsync(broker.RemotingPort, Here));
            clients.Add(await RemotingTestClient.ConnectAsync(broker.NameServerPort, Here));
            // A HEART_BEAT on the Remoting connections, a name-server request on the name server's.
            await new RemotingTransactionProducer(clients[0], "share-group").HeartbeatAsync();
            await new RemotingTransactionProducer(clients[1], "share-group").HeartbeatAsync();
            Assert.True(await RemotingAnswersAsync(clients[2]));

            // A fourth from the same address, on either port: closed at once.
            Assert.True(await RemotingRefusedAsync(broker.RemotingPort, Here), "a fourth Remoting connection from 127.0.0.1 was served");
            Assert.True(await RemotingRefusedAsync(broker.NameServerPort, Here), "a fourth name-server connection from 127.0.0.1 was served");
            await Eventually.TrueAsync(() => broker.Output.Contains("connection from 127.0.0.1 refused: 3 connections from that address already open (--remoting-max-connections-per-address", StringComparison.Ordinal),
                "the broker logs the refusal naming the port, the peer and the share", Within);

            // The three open ones are kept and answered.
            foreach (var client in clients) Assert.False(client.Closed.IsCompleted);
            await new RemotingTransactionProducer(clients[0], "share-group").HeartbeatAsync();
            await new RemotingTransactionProducer(clients[1], "share-group").HeartbeatAsync();
            Assert.True(await RemotingAnswersAsync(clients[2]));

            // Another address has its own share.
            await using (var other = await RemotingTestClient.ConnectAsync(broker.RemotingPort, Other))
                await new RemotingTransactionProducer(other, "share-group").HeartbeatAsync();

            // Once they are gone, as many are served again.
            foreach (var client in clients) await client.DisposeAsync();
            clients.Clear();
            await ServedAgainAsync(() => RemotingServedAsync(broker.RemotingPort, Here));
        }
        finally
        {
            foreach (var client in clients) await client.DisposeAsync();
        }
    }

    [Fact]
    public void The_share_defaults_to_the_whole_port_and_may_not_exceed_it()
    {
        BrokerOptions Bind(params string[] args) =>
            BrokerConfiguration.Bind(new ConfigurationBuilder().AddInMemoryCollection(BrokerConfiguration.ParseCommandLine(args)).Build());

        BrokerOptions defaults = Bind();
        Assert.Equal(0, defaults.GrpcMaxConnectionsPerAddress);
        Assert.Equal(0, defaults.RemotingMaxConnectionsPerAddress);
        Assert.Null(AddressShare.For(defaults.GrpcMaxConnectionsPerAddress, defaults.GrpcMaxConnections, "x", Microsoft.Extensions.Logging.Abstractions.NullLogger.Instance));

        BrokerOptions set = Bind("--grpc-max-connections-per-address", "3", "--remoting-max-connections-per-address", "10000");
        Assert.Equal(3, set.GrpcMaxConnectionsPerAddress);
        Assert.Equal(10_000, set.RemotingMaxConnectionsPerAddress);

        var over = Assert.Throws<BrokerConfigurationException>(() => Bind("--grpc-max-connections", "100", "--grpc-max-connections-per-address", "101"));
        Assert.Contains("--grpc-max-connections-per-address must be at most --grpc-max-connections (100)", over.Message);
        over = Assert.Throws<BrokerConfigurationException>(() => Bind("--remoting-max-connections-per-address", "10001"));
        Assert.Contains("--remoting-max-connections-per-address must be at most --remoting-max-connections (10000)", over.Message);
        var negative = Assert.Throws<BrokerConfigurationException>(() => Bind("--grpc-max-connections-per-address", "-1"));
        Assert.Contains("--grpc-max-connections-per-address must be a whole number from 1 to --grpc-max-connections (1000), or 0", negative.Message);
    }

    [Fact]
    public void An_IPv6_peer_counts_by_its_64_as_on_the_admin_port()
    {
        var share = new AddressShare(1, "--x", Microsoft.Extensions.Logging.Abstractions.NullLogger.Instance);
        IPAddress a = AddressShare.PeerOf(new IPEndPoint(IPAddress.Parse("2001:db8:1:2::1"), 1));
        IPAddress b = AddressShare.PeerOf(new IPEndPoint(IPAddress.Parse("2001:db8:1:2:ffff::9"), 2));
        IPAddress c = AddressShare.PeerOf(new IPEndPoint(IPAddress.Parse("2001:db8:1:3::1"), 3));
        Assert.True(share.TryEnter("gRPC", a));
        Assert.False(share.TryEnter("gRPC", b));
        Assert.True(share.TryEnter("gRPC", c));
        share.Leave(a);
        Assert.True(share.TryEnter("gRPC", b));
        share.Leave(b);
        share.Leave(c);
        Assert.Equal(0, share.Addresses);
    }

    private static async Task QueryRouteAsync(GrpcTestClient client)
    {
        var route = await client.UnaryAsync(GrpcMethods.QueryRoute, new QueryRouteRequest { Topic = new Resource { Name = "share-topic" } },
            QueryRouteResponse.Parser, timeout: Within);
        Assert.Equal(0, route.GrpcStatus);
        Assert.Equal(Code.Ok, route.Response!.Status.Code);
    }

    /// <summary>Tries <paramref name="served"/> (as many connections as the share, 3, at once) until all of them are
    /// served: the places of the connections that just ended come back as soon as the broker has seen them end.</summary>
    private async Task ServedAgainAsync(Func<Task<bool>> served)
    {
        var deadline = DateTime.UtcNow + Within;
        for (int attempt = 1; ; attempt++)
        {
            bool all;
            try
            {
                all = await served();
            }
            catch (SocketException)
            {
                all = false; // refused while connecting: reset before the connect completed
            }

            if (all) return;
            Assert.True(DateTime.UtcNow < deadline, "the share's places did not come back after every connection ended");
            if (attempt % 100 == 1) output.WriteLine($"attempt {attempt}: not all served yet");
            await Task.Delay(50);
        }
    }

    /// <summary>Three gRPC connections from <paramref name="local"/> at once: whether each is served (closed after).</summary>
    private static Task<bool> GrpcServedAsync(int port, IPAddress local)
        => ThreeServedAsync(() => RawHttp2.ConnectAsync(port, local), ServerSpeaksAsync);

    /// <summary>Three Remoting connections from <paramref name="local"/> at once: whether each is answered (closed after).</summary>
    private static Task<bool> RemotingServedAsync(int port, IPAddress local)
        => ThreeServedAsync(() => RemotingTestClient.ConnectAsync(port, local), RemotingAnswersAsync);

    private static async Task<bool> ThreeServedAsync<T>(Func<Task<T>> connect, Func<T, Task<bool>> served) where T : IAsyncDisposable
    {
        var open = new List<T>();
        try
        {
            for (int i = 0; i < 3; i++)
            {
                T connection = await connect();
                open.Add(connection);
                if (!await served(connection)) return false;
            }

            return true;
        }
        finally
        {
            foreach (var connection in open) await connection.DisposeAsync();
        }
    }

    private static async Task<bool> RemotingAnswersAsync(RemotingTestClient client)
    {
        Task<RemotingCommand> answer;
        try
        {
            answer = client.InvokeAsync(RequestCode.GetBrokerClusterInfo, timeout: Within);
        }
        catch (IOException) when (client.Closed.IsCompleted)
        {
            return false;
        }

        // Closed before the request was sent leaves it unanswered: the end of the connection decides then.
        await Task.WhenAny(answer, client.Closed).WaitAsync(Within);
        if (!answer.IsCompletedSuccessfully)
        {
            // Closed, or its request could not be written (the broker reset it: IOException), or neither is seen yet.
            bool closed = client.Closed.IsCompleted || answer.Exception?.InnerException is IOException or SocketException;
            Assert.True(closed, $"GET_BROKER_CLUSTER_INFO failed on an open connection: {answer.Exception}");
            return false;
        }

        Assert.Equal(ResponseCode.Success, answer.Result.Code);
        return true;
    }

    /// <summary>True when the server's first frame (its SETTINGS) arrives; false when it closes the connection.</summary>
    private static async Task<bool> ServerSpeaksAsync(RawHttp2 h2)
    {
        using var cts = new CancellationTokenSource(Within);
        RawHttp2.Frame? first = await h2.ReadFrameAsync(cts.Token);
        if (first is null) return false;
        Assert.Equal(RawHttp2.Settings, first.Value.Type);
        return true;
    }

    private static async Task<bool> GrpcRefusedAsync(int port, IPAddress local)
    {
        await using RawHttp2 h2 = await RawHttp2.ConnectAsync(port, local);
        return !await ServerSpeaksAsync(h2);
    }

    /// <summary>A raw connection to a Remoting port, which says nothing first: closed by the broker (its read ends)
    /// within <see cref="Within"/>, or reset while connecting.</summary>
    private static async Task<bool> RemotingRefusedAsync(int port, IPAddress local)
    {
        Socket socket;
        try
        {
            socket = await ConnectAsync(port, local);
        }
        catch (SocketException)
        {
            return true;
        }

        using (socket)
            return await ReadUntilClosedAsync(socket) == 0;
    }

    private static async Task<Socket> ConnectAsync(int port, IPAddress local)
    {
        var socket = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp) { NoDelay = true };
        try
        {
            socket.Bind(new IPEndPoint(local, 0));
            await socket.ConnectAsync(IPAddress.Loopback, port);
            return socket;
        }
        catch
        {
            socket.Dispose();
            throw;
        }
    }

    /// <summary>Reads until the peer closes (0) or resets (0), failing the test if it is still open after
    /// <see cref="Within"/>; returns the bytes read before the end.</summary>
    private static async Task<int> ReadUntilClosedAsync(Socket socket)
    {
        using var cts = new CancellationTokenSource(Within);
        var buffer = new byte[4096];
        int total = 0;
        try
        {
            while (true)
            {
                int n = await socket.ReceiveAsync(buffer, SocketFlags.None, cts.Token);
                if (n == 0) return total;
                total += n;
            }
        }
        catch (SocketException)
        {
            return total;
        }
        catch (OperationCanceledException)
        {
            Assert.Fail($"the broker did not close the connection within {Within.TotalSeconds} s");
            return -1;
        }
    }
}
