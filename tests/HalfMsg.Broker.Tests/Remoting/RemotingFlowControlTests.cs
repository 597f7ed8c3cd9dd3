using System.Globalization;
using System.Text.Json;
using HalfMsg.Broker.Tests.Infrastructure;
using HalfMsg.Protocol.Remoting;
using static HalfMsg.Broker.Tests.Infrastructure.RemotingBroker;

namespace HalfMsg.Broker.Tests.Remoting;

/// <summary>Per-connection flow control over a real socket: what a connection's parked pulls may hold up.</summary>
[Collection("remoting")]
public sealed class RemotingFlowControlTests(RemotingBrokerFixture broker)
{
    /// <summary>
    /// A Java client instance has one connection per broker for all its consumers and producers: 16 groups x (8 queues
    /// + 8 retry queues) is 256 long polls parked at once. They must not take the request slots its heartbeats and
    /// sends need (until 2026-12-05 the 257th request on the connection was answered SYSTEM_BUSY).
    /// </summary>
    [Fact]
    public async Task Parked_pulls_do_not_take_the_slots_of_heartbeats_and_sends()
    {
        await using var c = await broker.ConnectAsync();
        string topic = Unique("Parked");
        await SendAsync(c, topic, "first", queueId: 0);

        var pulls = new List<Task<RemotingCommand>>();
        for (int i = 0; i < 256; i++)
        {
            int queue = i % 4;
            pulls.Add(PullAsync(c, $"ParkedGroup{i / 16}", topic, queue, queue == 0 ? 1 : 0, suspendMs: 20_000));
        }

        var heartbeat = await c.InvokeAsync(RequestCode.HeartBeat, body: JsonSerializer.SerializeToUtf8Bytes(new
        {
            clientID = c.ClientId,
            producerDataSet = new[] { new { groupName = "PG" } },
            consumerDataSet = new[] { new { groupName = "ParkedGroup0", messageModel = "CLUSTERING", subscriptionDataSet = new[] { new { topic, subString = "*" } } } },
        }));
        Assert.True(heartbeat.Code == ResponseCode.Success, $"heartbeat: {heartbeat.Code} {heartbeat.Remark}");
        var send = await c.InvokeAsync(RequestCode.SendMessageV2, SendHeader("PG", topic, Props(), 0, 1), "second"u8.ToArray());
        Assert.True(send.Code == ResponseCode.Success, $"send: {send.Code} {send.Remark}");

        // The send woke the pulls of queue 1 (they find the message); the others are still parked, none was refused.
        Assert.DoesNotContain(pulls, p => p.IsCompleted && p.Result.Code == ResponseCode.SystemBusy);
        var woken = await Task.WhenAll(pulls.Where((_, i) => i % 4 == 1));
        Assert.All(woken, r => Assert.Equal(ResponseCode.Success, r.Code));
    }
}
