using HalfMsg.Broker.Tests.Infrastructure;
using HalfMsg.Protocol.Remoting;
using HalfMsg.TestKit;

namespace HalfMsg.Broker.Tests.Remoting;

/// <summary>The Remoting limits' flags reach the running broker.</summary>
public sealed class RemotingLimitFlagsTests
{
    [Fact]
    public async Task A_Remoting_connection_over_the_flags_limit_is_closed_and_the_first_keeps_being_served()
    {
        await using BrokerProcess broker = await BrokerProcess.StartAsync("--remoting-max-connections", "1");
        await using var first = await RemotingTestClient.ConnectAsync(broker.RemotingPort);
        Assert.Equal(ResponseCode.Success, (await first.InvokeAsync(RequestCode.GetBrokerClusterInfo, timeout: TimeSpan.FromSeconds(20))).Code);

        // Closed at once: reset while connecting, or closed right after.
        try
        {
            await using var second = await RemotingTestClient.ConnectAsync(broker.RemotingPort);
            Task closed = second.Closed;
            Assert.Same(closed, await Task.WhenAny(closed, Task.Delay(TimeSpan.FromSeconds(30))));
        }
        catch (System.Net.Sockets.SocketException)
        {
        }

        Assert.Equal(ResponseCode.Success, (await first.InvokeAsync(RequestCode.GetBrokerClusterInfo, timeout: TimeSpan.FromSeconds(20))).Code);

        // The front-ends' own counters are in /api/stats beside the engine's.
        using var http = new HttpClient();
        using var stats = System.Text.Json.JsonDocument.Parse(await http.GetStringAsync($"http://127.0.0.1:{broker.HttpPort}/api/stats"));
        Assert.Equal(0, stats.RootElement.GetProperty("remotingDroppedOnewayRequests").GetInt64());
        Assert.Equal(0, stats.RootElement.GetProperty("remotingAnswersThatWaitedForRoom").GetInt64());
        Assert.Equal(0, stats.RootElement.GetProperty("grpcUnsentAnswerBytes").GetInt64());
    }
}
