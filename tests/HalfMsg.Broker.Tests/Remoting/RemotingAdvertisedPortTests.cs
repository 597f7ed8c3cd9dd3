using System.Globalization;
using System.Text;
using System.Text.Json;
using HalfMsg.Broker.Hosting;
using HalfMsg.Broker.Tests.Infrastructure;
using HalfMsg.Protocol.Remoting;
using HalfMsg.TestKit;
using Microsoft.Extensions.Configuration;
using static HalfMsg.Broker.Tests.Infrastructure.RemotingBroker;

namespace HalfMsg.Broker.Tests.Remoting;

/// <summary>
/// <c>--advertised-remoting-port</c>: a Remoting client that reaches the broker through a port forward (docker -p
/// F:10911) is routed to the forwarded port. Remoting requests carry no address the client reached, so the routes named
/// the listen port, which the client cannot reach behind the forward; until 2026-12-06 there was no setting for it
/// (the flag was refused as unknown).
/// </summary>
public sealed class RemotingAdvertisedPortTests
{
    private static string P(int port) => port.ToString(CultureInfo.InvariantCulture);

    private static string OnlyBrokerAddress(JsonElement brokerData) => brokerData.GetProperty("brokerAddrs").GetProperty("0").GetString()!;

    [Fact]
    public async Task Routes_name_the_advertised_remoting_port_and_a_client_following_them_through_the_forward_sends_and_pulls()
    {
        string dataDir = Path.Combine(Path.GetTempPath(), "halfmsg-advertised-remoting-" + Guid.NewGuid().ToString("N"));
        int remotingPort = FreePorts.Next(), nameServerPort = FreePorts.Next();
        await using var forward = new TcpForward(remotingPort);
        try
        {
            await using var host = await BrokerHost.StartAsync(["--data-dir", dataDir, "--grpc-port", P(FreePorts.Next()), "--http-port", P(FreePorts.Next()),
                "--remoting-port", P(remotingPort), "--namesrv-port", P(nameServerPort), "--advertised-remoting-port", P(forward.Port)]);
            string topic = Unique("Forwarded");

            // The name server's answers, as a Java client's MQClientInstance asks them.
            string routed, clustered;
            await using (var nameServer = await RemotingTestClient.ConnectAsync(nameServerPort))
            {
                var route = await nameServer.InvokeAsync(RequestCode.GetRouteInfoByTopic, new() { ["topic"] = topic });
                Assert.Equal(ResponseCode.Success, route.Code);
                using var routeJson = JsonDocument.Parse(route.Body);
                routed = OnlyBrokerAddress(Assert.Single(routeJson.RootElement.GetProperty("brokerDatas").EnumerateArray()));
                var cluster = await nameServer.InvokeAsync(RequestCode.GetBrokerClusterInfo);
                Assert.Equal(ResponseCode.Success, cluster.Code);
                using var clusterJson = JsonDocument.Parse(cluster.Body);
                clustered = OnlyBrokerAddress(clusterJson.RootElement.GetProperty("brokerAddrTable").EnumerateObject().Single().Value);
            }
            Assert.Equal($"127.0.0.1:{forward.Port}", routed);
            Assert.Equal(routed, clustered);

            // The client goes where the route says: through the forward, and its send and pull work there.
            int routedPort = int.Parse(routed[(routed.LastIndexOf(':') + 1)..], CultureInfo.InvariantCulture);
            await using var c = await RemotingTestClient.ConnectAsync(routedPort);
            var sent = await SendAsync(c, topic, "through the forward", queueId: 0);
            Assert.True(forward.Connections >= 1, "the client did not go through the forward");
            // The offset message id names the store host (4 bytes of IPv4 address, then the port): the advertised port, so
            // a viewMessage by it, which connects to that address, reaches the broker too.
            string offsetMsgId = sent.Get("msgId")!;
            Assert.Equal(forward.Port, int.Parse(offsetMsgId.AsSpan(8, 8), NumberStyles.HexNumber, CultureInfo.InvariantCulture));
            var pulled = await PullAllAsync(c, "g", topic, queues: 1);
            Assert.Equal(["through the forward"], pulled.Select(m => Encoding.UTF8.GetString(m.Body)));
        }
        finally
        {
            try { Directory.Delete(dataDir, recursive: true); } catch (IOException) { }
        }
    }

    [Theory]
    [InlineData("-1")]
    [InlineData("65536")]
    [InlineData("10911x")]
    public void An_advertised_remoting_port_out_of_range_is_refused_naming_the_flag(string port)
    {
        var ex = Assert.Throws<BrokerConfigurationException>(() => BrokerConfiguration.Bind(
            new ConfigurationBuilder().AddInMemoryCollection(
                BrokerConfiguration.ParseCommandLine(["--advertised-remoting-port", port])).Build()));
        Assert.Equal($"--advertised-remoting-port must be a whole number in [0, 65535], not '{port}'", ex.Message);
    }
}
