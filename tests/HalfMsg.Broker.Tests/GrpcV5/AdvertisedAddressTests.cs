using System.Globalization;
using Apache.Rocketmq.V2;
using HalfMsg.Broker.Hosting;
using HalfMsg.Broker.Tests.Infrastructure;
using HalfMsg.Protocol.Grpc;
using HalfMsg.TestKit;
using Microsoft.Extensions.Configuration;

namespace HalfMsg.Broker.Tests.GrpcV5;

/// <summary>
/// <c>--advertised-host</c> and <c>--advertised-grpc-port</c>: an operator who sets either pins the gRPC routes' address,
/// whatever the request's endpoints say (the address the client reached is answered only when neither is set; see
/// <see cref="HandlerTests"/>). Each test starts its own broker.
/// </summary>
public sealed class AdvertisedAddressTests
{
    private static string P(int port) => port.ToString(CultureInfo.InvariantCulture);

    private static async Task<(Endpoints Route, Endpoints Assignment)> RoutedAsync(params string[] flags)
    {
        string dataDir = Path.Combine(Path.GetTempPath(), "halfmsg-advertised-" + Guid.NewGuid().ToString("N"));
        int grpcPort = FreePorts.Next();
        try
        {
            await using var host = await BrokerHost.StartAsync(["--data-dir", dataDir, "--grpc-port", P(grpcPort), "--http-port", P(FreePorts.Next()),
                "--remoting-port", "0", "--namesrv-port", "0", .. flags]);
            using var client = new GrpcTestClient($"127.0.0.1:{grpcPort}");
            // What a client behind a forward names: the forward's address, which the pinned settings must override.
            var reached = new Endpoints { Scheme = AddressScheme.Ipv4, Addresses = { new Address { Host = "127.0.0.1", Port = 18081 } } };
            var route = await client.UnaryAsync(GrpcMethods.QueryRoute,
                new QueryRouteRequest { Topic = new Resource { Name = "advertised" }, Endpoints = reached }, QueryRouteResponse.Parser);
            var assignment = await client.UnaryAsync(GrpcMethods.QueryAssignment,
                new QueryAssignmentRequest { Topic = new Resource { Name = "advertised" }, Group = new Resource { Name = "g" }, Endpoints = reached },
                QueryAssignmentResponse.Parser);
            Assert.Equal(Code.Ok, route.Response!.Status.Code);
            Assert.Equal(Code.Ok, assignment.Response!.Status.Code);
            Assert.Single(route.Response.MessageQueues.Select(q => q.Broker.Endpoints).Distinct());
            return (route.Response.MessageQueues[0].Broker.Endpoints, assignment.Response.Assignments.Single().MessageQueue.Broker.Endpoints);
        }
        finally
        {
            try { Directory.Delete(dataDir, recursive: true); } catch (IOException) { }
        }
    }

    private static Endpoints Ends(AddressScheme scheme, string host, int port)
        => new() { Scheme = scheme, Addresses = { new Address { Host = host, Port = port } } };

    [Fact]
    public async Task Advertised_host_and_grpc_port_pin_the_route_and_assignment_over_the_requested_endpoints()
    {
        var (route, assignment) = await RoutedAsync("--advertised-host", "mq.example.com", "--advertised-grpc-port", "443");

        Assert.Equal(Ends(AddressScheme.DomainName, "mq.example.com", 443), route);
        Assert.Equal(route, assignment);
    }

    [Fact]
    public async Task Advertised_grpc_port_alone_pins_the_port_with_the_connection_address()
    {
        var (route, assignment) = await RoutedAsync("--advertised-grpc-port", "30081");

        Assert.Equal(Ends(AddressScheme.Ipv4, "127.0.0.1", 30081), route);
        Assert.Equal(route, assignment);
    }

    [Theory]
    [InlineData("-1")]
    [InlineData("65536")]
    [InlineData("http")]
    public void An_advertised_grpc_port_out_of_range_is_refused_naming_the_flag(string port)
    {
        var ex = Assert.Throws<BrokerConfigurationException>(() => BrokerConfiguration.Bind(
            new ConfigurationBuilder().AddInMemoryCollection(
                BrokerConfiguration.ParseCommandLine(["--advertised-grpc-port", port])).Build()));
        Assert.Contains("--advertised-grpc-port", ex.Message, StringComparison.Ordinal);
    }
}
