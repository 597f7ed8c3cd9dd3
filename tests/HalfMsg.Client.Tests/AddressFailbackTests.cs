using Apache.Rocketmq.V2;
using Grpc.Core;
using HalfMsg.Client.Tests.Infrastructure;
using HalfMsg.ClientCore.Transport;
using Endpoint = HalfMsg.ClientCore.Transport.Endpoint;
using Status = Apache.Rocketmq.V2.Status;

namespace HalfMsg.Client.Tests;

/// <summary>
/// The move back of a multi-address endpoint (<see cref="ClientConfig.FailbackInterval"/>): the addresses before the
/// current one are probed in order, and calls and the Telemetry stream move to the first that answers (the afternoon
/// session of 2026-12-07).
/// </summary>
public sealed class AddressFailbackTests
{
    private const string ProbePath = "/halfmsg.client.v1.AddressProbe/Probe";

    private static AsyncUnaryCall<HeartbeatResponse> Heartbeat(MessagingService.MessagingServiceClient c, CallOptions o) =>
        c.HeartbeatAsync(new HeartbeatRequest(), o);

    /// <summary>A loopback port a server had and freed: connections to it are refused until a test starts one there.</summary>
    private static async Task<int> FreedPortAsync()
    {
        await using var gone = await TestGrpcServer.StartAsync(_ => { });
        return gone.Port;
    }

    private static Task<TestGrpcServer> CountingHeartbeatsAsync(Action counted, int port = 0) =>
        TestGrpcServer.StartAsync(s => s.OnHeartbeat = (_, _) =>
        {
            counted();
            return Task.FromResult(new HeartbeatResponse { Status = new Status { Code = Code.Ok } });
        }, port);

    [Fact]
    public async Task With_three_addresses_a_client_on_the_third_moves_to_the_second_when_it_answers_while_the_first_does_not()
    {
        // Until the afternoon session of 2026-12-07 only the first address was probed: a client on the third whose
        // second came back stayed on the third, though the second is preferred over it.
        int onFirst = 0, onSecond = 0, onThird = 0;
        await using var third = await CountingHeartbeatsAsync(() => Interlocked.Increment(ref onThird));
        int firstPort = await FreedPortAsync(), secondPort = await FreedPortAsync();
        var endpoint = Endpoint.Parse($"127.0.0.1:{firstPort};127.0.0.1:{secondPort};{third.Endpoint}");
        using var channel = new RpcChannel(new ClientConfig(endpoint.ToString(), null, TimeSpan.FromSeconds(20), null, null,
            connectTimeout: TimeSpan.FromMilliseconds(300), failbackInterval: TimeSpan.FromMilliseconds(500)));

        await channel.UnaryAsync(endpoint, Heartbeat, null, default);
        Assert.Equal(2, channel.CurrentIndex(endpoint));

        await using var second = await CountingHeartbeatsAsync(() => Interlocked.Increment(ref onSecond), secondPort);
        await E2E.EventuallyAsync(async () =>
        {
            await channel.UnaryAsync(endpoint, Heartbeat, null, default);
            return Volatile.Read(ref onSecond) > 0;
        }, TimeSpan.FromSeconds(10), $"calls moved from the third address to the second, which answers again (current index: {channel.CurrentIndex(endpoint)})");
        Assert.Equal(1, channel.CurrentIndex(endpoint));
        Assert.Contains(second.Paths, p => p == ProbePath);

        int thirdBefore = Volatile.Read(ref onThird);
        for (int i = 0; i < 5; i++)
        {
            await channel.UnaryAsync(endpoint, Heartbeat, null, default);
        }

        Assert.Equal(thirdBefore, Volatile.Read(ref onThird)); // the second is preferred over the third

        // The first comes back too: preferred over the second.
        await using var first = await CountingHeartbeatsAsync(() => Interlocked.Increment(ref onFirst), firstPort);
        await E2E.EventuallyAsync(async () =>
        {
            await channel.UnaryAsync(endpoint, Heartbeat, null, default);
            return Volatile.Read(ref onFirst) > 0;
        }, TimeSpan.FromSeconds(10), "calls moved from the second address to the first, which answers again");
        Assert.Equal(0, channel.CurrentIndex(endpoint));
    }
}
