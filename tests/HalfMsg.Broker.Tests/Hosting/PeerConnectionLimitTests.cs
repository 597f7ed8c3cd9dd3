using System.Net;
using HalfMsg.Broker.Hosting;
using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.Logging.Abstractions;

namespace HalfMsg.Broker.Tests.Hosting;

/// <summary>The admin port's count of connections, in all and per peer address, without a broker.</summary>
public sealed class PeerConnectionLimitTests
{
    private static IPAddress Peer(string address) => PeerConnectionLimit.PeerOf(new IPEndPoint(IPAddress.Parse(address), 40000));

    [Fact]
    public void One_address_gets_its_share_others_get_the_rest_and_the_total_stays_bounded()
    {
        var limit = new PeerConnectionLimit("test", max: 5, maxPerAddress: 2, NullLogger.Instance);
        IPAddress a = Peer("10.0.0.1"), b = Peer("10.0.0.2"), c = Peer("10.0.0.3");
        Assert.True(limit.TryEnter(a, out _));
        Assert.True(limit.TryEnter(a, out _));
        Assert.False(limit.TryEnter(a, out bool perAddress));
        Assert.True(perAddress);
        Assert.True(limit.TryEnter(b, out _));
        Assert.True(limit.TryEnter(b, out _));
        Assert.True(limit.TryEnter(c, out _));
        Assert.False(limit.TryEnter(c, out perAddress)); // c has one of its two, but the port has all five
        Assert.False(perAddress);

        limit.Leave(a);
        Assert.True(limit.TryEnter(c, out _)); // a freed slot serves any address under its share
        Assert.False(limit.TryEnter(a, out perAddress));
        Assert.False(perAddress);
        limit.Leave(b);
        Assert.True(limit.TryEnter(a, out _));
    }

    [Fact]
    public void A_share_above_the_total_is_the_total()
    {
        var limit = new PeerConnectionLimit("test", max: 3, maxPerAddress: 10, NullLogger.Instance);
        IPAddress a = Peer("10.0.0.1");
        for (int i = 0; i < 3; i++) Assert.True(limit.TryEnter(a, out _));
        Assert.False(limit.TryEnter(a, out bool perAddress));
        Assert.True(perAddress);
    }

    [Fact]
    public void An_IPv6_peer_counts_by_its_64_and_an_IPv4_mapped_peer_as_IPv4()
    {
        Assert.Equal(Peer("2001:db8:1:2::1"), Peer("2001:db8:1:2:ffff:1:2:3"));
        Assert.NotEqual(Peer("2001:db8:1:2::1"), Peer("2001:db8:1:3::1"));
        Assert.Equal(Peer("fe80::1%2"), Peer("fe80::2%3"));
        Assert.Equal(IPAddress.Parse("192.0.2.7"), Peer("::ffff:192.0.2.7"));
        Assert.Equal(IPAddress.Parse("192.0.2.7"), Peer("192.0.2.7"));
        Assert.NotEqual(Peer("127.0.0.1"), Peer("127.0.0.2"));
        Assert.Equal(IPAddress.None, PeerConnectionLimit.PeerOf(null));
    }

    [Fact]
    public void The_share_per_address_has_a_flag_bounded_by_the_ports_limit()
    {
        static BrokerOptions Bind(params string[] args)
            => BrokerConfiguration.Bind(new ConfigurationBuilder().AddInMemoryCollection(BrokerConfiguration.ParseCommandLine(args)).Build());

        Assert.Equal(AdminEndpoint.DefaultMaxConnectionsPerAddress, Bind().AdminMaxConnectionsPerAddress);
        Assert.Equal(AdminEndpoint.DefaultMaxConnectionsPerAddress, new BrokerOptions().AdminMaxConnectionsPerAddress);
        Assert.Equal(8, Bind("--admin-max-connections-per-address", "8").AdminMaxConnectionsPerAddress);
        Assert.Equal(AdminEndpoint.MaxConnections, Bind("--admin-max-connections-per-address", "256").AdminMaxConnectionsPerAddress);
        var ex = Assert.Throws<BrokerConfigurationException>(() => Bind("--admin-max-connections-per-address", "0"));
        Assert.Contains("--admin-max-connections-per-address must be a whole number in [1, 256]", ex.Message);
        Assert.Throws<BrokerConfigurationException>(() => Bind("--admin-max-connections-per-address", "257"));
    }
}
