using System.Text.Json;
using HalfMsg.Broker.Tests.Infrastructure;
using HalfMsg.Protocol.Remoting;
using static HalfMsg.Broker.Tests.Infrastructure.RemotingBroker;

namespace HalfMsg.Broker.Tests.Remoting;

/// <summary>
/// UPDATE_AND_CREATE_TOPIC (17), as <c>mqadmin updateTopic -r N -w N</c> sends it: a new topic gets the queue count it
/// asks for (the fixture's --queues-per-topic is 4), and an existing topic with fewer queues gets the ones it lacks.
/// Until 2026-12-06 every topic got --queues-per-topic, whatever was asked, and an existing topic's answer was SUCCESS
/// for any count, its queues unchanged (then, until later that day, another count was refused).
/// </summary>
[Collection("remoting")]
public sealed class RemotingCreateTopicTests(RemotingBrokerFixture broker)
{
    private static Task<RemotingCommand> CreateAsync(RemotingTestClient c, string topic, string read, string write)
        => c.InvokeAsync(RequestCode.UpdateAndCreateTopic, new() { ["topic"] = topic, ["readQueueNums"] = read, ["writeQueueNums"] = write, ["perm"] = "6" });

    private async Task<int> RoutedQueuesAsync(RemotingTestClient c, string topic)
    {
        var route = await c.InvokeAsync(RemotingCommand.Request(RequestCode.GetRouteInfoByTopic).Set("topic", topic));
        Assert.Equal(ResponseCode.Success, route.Code);
        using var doc = JsonDocument.Parse(route.Body);
        var q = doc.RootElement.GetProperty("queueDatas")[0];
        Assert.Equal(q.GetProperty("readQueueNums").GetInt32(), q.GetProperty("writeQueueNums").GetInt32());
        return q.GetProperty("readQueueNums").GetInt32();
    }

    [Fact]
    public async Task A_new_topic_gets_the_queue_count_it_asks_for_and_keeps_it_after_a_restart()
    {
        string two = Unique("Two"), sixteen = Unique("Sixteen");
        await using (var c = await broker.ConnectAsync())
        {
            Assert.Equal(ResponseCode.Success, (await CreateAsync(c, two, "2", "2")).Code);
            Assert.Equal(ResponseCode.Success, (await CreateAsync(c, sixteen, "16", "16")).Code);
            Assert.Equal((2, 16), (broker.Host.Engine.QueueCount(two), broker.Host.Engine.QueueCount(sixteen)));
            Assert.Equal(2, await RoutedQueuesAsync(c, two));
            Assert.Equal(16, await RoutedQueuesAsync(c, sixteen));
            // Queue 15 exists, and holds what is sent to it.
            await SendAsync(c, sixteen, "last queue", queueId: 15);
            Assert.Equal(ResponseCode.Success, (await PullAsync(c, "G", sixteen, 15, 0)).Code);
        }
        await broker.RestartAsync();
        Assert.Equal((2, 16), (broker.Host.Engine.QueueCount(two), broker.Host.Engine.QueueCount(sixteen)));
    }

    [Theory]
    [InlineData("0", "0")]
    [InlineData("-1", "-1")]
    [InlineData("1025", "1025")]
    [InlineData("x", "x")]
    [InlineData("8", "4")]
    public async Task A_queue_count_out_of_range_or_read_and_write_counts_that_differ_are_refused_with_a_remark_and_create_nothing(string read, string write)
    {
        await using var c = await broker.ConnectAsync();
        string topic = Unique("Bad");
        var r = await CreateAsync(c, topic, read, write);
        Assert.NotEqual(ResponseCode.Success, r.Code);
        Assert.Contains("QueueNums", r.Remark);
        Assert.DoesNotContain(broker.Host.Engine.ListTopics(), t => t.Name == topic);
    }

    /// <summary>
    /// As Apache's updateTopic, a larger count adds queues to an existing topic: the route names them at once, a send
    /// naming a new queue lands there, and a pull group that consumed before reads the new queues from offset 0. Until
    /// 2026-12-06 any other count was refused. A smaller count stays refused, naming the count (the messages in the
    /// queues dropped would be stranded); the topic keeps its queues.
    /// </summary>
    [Fact]
    public async Task An_existing_topic_is_SUCCESS_for_its_own_count_grows_for_a_larger_one_and_refuses_a_smaller_one_with_its_count()
    {
        await using var c = await broker.ConnectAsync();
        string topic = Unique("Exists");
        Assert.Equal(ResponseCode.Success, (await CreateAsync(c, topic, "3", "3")).Code);
        // Asked again, as mqadmin's retry or a second run of a set-up script does.
        Assert.Equal(ResponseCode.Success, (await CreateAsync(c, topic, "3", "3")).Code);
        await SendAsync(c, topic, "old queue", queueId: 2);
        var before = await PullAsync(c, "PG_Before", topic, 2, 0);
        Assert.Equal(ResponseCode.Success, before.Code);
        Assert.Equal(ResponseCode.Success, (await c.InvokeAsync(RemotingCommand.Request(RequestCode.UpdateConsumerOffset)
            .Set("consumerGroup", "PG_Before").Set("topic", topic).Set("queueId", 2L).Set("commitOffset", 1L))).Code);

        Assert.Equal(ResponseCode.Success, (await CreateAsync(c, topic, "6", "6")).Code);
        Assert.Equal(6, broker.Host.Engine.QueueCount(topic));
        Assert.Equal(6, await RoutedQueuesAsync(c, topic));
        await SendAsync(c, topic, "new queue", queueId: 5);
        // The group from before: its offset on the old queue is kept, and a new queue is read from 0 (no committed offset
        // on a queue that starts at 0 is answered 0, so a Java consumer starts there).
        var q2 = await c.InvokeAsync(RemotingCommand.Request(RequestCode.QueryConsumerOffset).Set("consumerGroup", "PG_Before").Set("topic", topic).Set("queueId", 2L));
        Assert.Equal("1", q2.Get("offset"));
        var q5 = await c.InvokeAsync(RemotingCommand.Request(RequestCode.QueryConsumerOffset).Set("consumerGroup", "PG_Before").Set("topic", topic).Set("queueId", 5L));
        Assert.Equal("0", q5.Get("offset"));
        Assert.Equal(["new queue", "old queue"], (await PullAllAsync(c, "PG_Before", topic, queues: 6)).Select(BodyOf).Order());

        foreach (var count in new[] { "2", "5" }) // shrinking
        {
            var r = await CreateAsync(c, topic, count, count);
            Assert.Equal(ResponseCode.InvalidParameter, r.Code);
            Assert.Contains("has 6 queues", r.Remark);
            Assert.Contains("stranded", r.Remark);
        }
        Assert.Equal(6, broker.Host.Engine.QueueCount(topic));
        // Read and write counts that differ stay refused for an existing topic too.
        Assert.Equal(ResponseCode.InvalidParameter, (await CreateAsync(c, topic, "8", "6")).Code);
        Assert.Equal(6, broker.Host.Engine.QueueCount(topic));

        await broker.RestartAsync();
        Assert.Equal(6, broker.Host.Engine.QueueCount(topic));
    }

    [Fact]
    public async Task Without_queue_counts_a_new_topic_gets_queues_per_topic()
    {
        await using var c = await broker.ConnectAsync();
        string topic = Unique("NoCounts");
        var r = await c.InvokeAsync(RequestCode.UpdateAndCreateTopic, new() { ["topic"] = topic });
        Assert.Equal(ResponseCode.Success, r.Code);
        Assert.Equal(4, broker.Host.Engine.QueueCount(topic));
    }
}
