using System.Buffers.Text;
using System.Globalization;
using System.Text;
using HalfMsg.Broker.Hosting;
using HalfMsg.Broker.Tests.GrpcV5;
using HalfMsg.Broker.Tests.Infrastructure;
using HalfMsg.Protocol.Remoting;
using HalfMsg.TestKit;
using Microsoft.Extensions.Configuration;
using Code = Apache.Rocketmq.V2.Code;
using static HalfMsg.Broker.Tests.Infrastructure.RemotingBroker;

namespace HalfMsg.Broker.Tests.Remoting;

/// <summary><c>--broker-name</c>: one name in the routes of both protocols and in the recall handles of both.</summary>
public sealed class BrokerNameTests
{
    private static string P(int port) => port.ToString(CultureInfo.InvariantCulture);

    private static string BrokerOf(string handle) => Encoding.UTF8.GetString(Base64Url.DecodeFromChars(handle.TrimEnd('='))).Split(' ')[2];

    [Fact]
    public async Task A_configured_broker_name_is_the_one_in_both_protocols_routes_and_recall_handles_and_old_handles_still_recall()
    {
        string dataDir = Path.Combine(Path.GetTempPath(), "halfmsg-brokername-" + Guid.NewGuid().ToString("N"));
        int grpcPort = FreePorts.Next(), remotingPort = FreePorts.Next();
        await using (var host = await BrokerHost.StartAsync(["--data-dir", dataDir, "--grpc-port", P(grpcPort), "--http-port", P(FreePorts.Next()),
                         "--remoting-port", P(remotingPort), "--namesrv-port", "0", "--broker-name", "east-1.b_2"]))
        {
            await using var c = await RemotingTestClient.ConnectAsync(remotingPort);
            using var grpc = new GrpcTestClient($"127.0.0.1:{grpcPort}");
            string topic = Unique("Named");
            var due = DateTimeOffset.UtcNow.AddMinutes(10);
            var sent = await SendAsync(c, topic, "over Remoting", more: (MessageConst.TimerDeliverMs, due.ToUnixTimeMilliseconds().ToString(CultureInfo.InvariantCulture)));
            string fromRemoting = sent.Get("recallHandle")!;
            string fromGrpc = (await RecallTests.SendAsync(grpc, RecallTests.NewMessage(topic, "over gRPC", due))).RecallHandle;

            var (remotingRoute, grpcRoute) = await RemotingRecallTests.RouteBrokerNamesAsync(c, grpc, topic);
            Assert.Equal(["east-1.b_2"], remotingRoute.Distinct());
            Assert.Equal(["east-1.b_2"], grpcRoute.Distinct());
            Assert.Equal(("east-1.b_2", "east-1.b_2"), (BrokerOf(fromRemoting), BrokerOf(fromGrpc)));

            // A handle issued before the upgrade names halfmsg-broker; one naming the default name is another broker's here.
            string[] parts = Encoding.UTF8.GetString(Base64Url.DecodeFromChars(fromRemoting.TrimEnd('='))).Split(' ');
            parts[2] = "broker-a";
            string other = Base64Url.EncodeToString(Encoding.UTF8.GetBytes(string.Join(' ', parts)));
            var refused = await c.InvokeAsync(RequestCode.RecallMessage, new() { ["producerGroup"] = "PG", ["topic"] = topic, ["recallHandle"] = other });
            Assert.Equal(ResponseCode.IllegalOperation, refused.Code);
            parts[2] = "halfmsg-broker";
            string old = Base64Url.EncodeToString(Encoding.UTF8.GetBytes(string.Join(' ', parts)));
            Assert.Equal(Code.Ok, (await RecallTests.RecallAsync(grpc, topic, old)).Status.Code);
            Assert.Equal(1, host.Engine.Metrics.RecalledByTopic.GetValueOrDefault(topic)); // recalled, not only answered OK
        }
        try { Directory.Delete(dataDir, recursive: true); } catch (IOException) { }
    }

    [Theory]
    [InlineData("broker a")]
    [InlineData("broker/a")]
    [InlineData("brøker")]
    public void A_broker_name_a_recall_handle_or_a_route_cannot_carry_is_refused_naming_the_flag(string name)
    {
        var config = new ConfigurationBuilder().AddInMemoryCollection(BrokerConfiguration.ParseCommandLine(["--broker-name", name])).Build();
        var ex = Assert.Throws<BrokerConfigurationException>(() => BrokerConfiguration.Bind(config));
        Assert.Contains("--broker-name must be 1 to 127 letters, digits", ex.Message);
    }

    [Fact]
    public void The_broker_name_defaults_to_broker_a()
    {
        var config = new ConfigurationBuilder().AddInMemoryCollection(BrokerConfiguration.ParseCommandLine([])).Build();
        Assert.Equal("broker-a", BrokerConfiguration.Bind(config).BrokerName);
    }
}
