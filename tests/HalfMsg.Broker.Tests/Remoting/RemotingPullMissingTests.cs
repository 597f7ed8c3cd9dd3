using HalfMsg.Broker.Tests.Infrastructure;
using HalfMsg.Protocol.Remoting;
using static HalfMsg.Broker.Tests.Infrastructure.RemotingBroker;

namespace HalfMsg.Broker.Tests.Remoting;

/// <summary>
/// A pull of a topic or queue that does not exist is answered as Java's PullMessageProcessor answers it: TOPIC_NOT_EXIST
/// (the Java client backs off 3 s) and SYSTEM_ERROR for a queue id out of range, never PULL_NOT_FOUND at once, which
/// sent a push consumer of a deleted topic into a tight re-pull loop.
/// </summary>
[Collection("remoting")]
public sealed class RemotingPullMissingTests(RemotingBrokerFixture broker)
{
    [Fact]
    public async Task Suspended_pull_of_a_missing_topic_is_TOPIC_NOT_EXIST()
    {
        await using var c = await broker.ConnectAsync();
        string topic = Unique("Missing");
        var r = await PullAsync(c, "G", topic, 0, 0, suspendMs: 15_000);
        Assert.True(r.Code == ResponseCode.TopicNotExist, $"{r.Code} {r.Remark}");
        Assert.Contains(topic, r.Remark);
    }

    [Fact]
    public async Task Suspended_pull_of_a_deleted_topic_is_TOPIC_NOT_EXIST()
    {
        await using var c = await broker.ConnectAsync();
        string topic = Unique("Deleted");
        await SendAsync(c, topic, "x", queueId: 0);
        Assert.True((await broker.Host.Engine.DeleteTopicAsync(topic)).IsOk);
        var r = await PullAsync(c, "G", topic, 0, 1, suspendMs: 15_000);
        Assert.True(r.Code == ResponseCode.TopicNotExist, $"{r.Code} {r.Remark}");
    }

    [Fact]
    public async Task Pull_of_a_queue_id_out_of_range_is_SYSTEM_ERROR_naming_the_queue()
    {
        await using var c = await broker.ConnectAsync();
        string topic = Unique("Range");
        await SendAsync(c, topic, "x", queueId: 0);
        var r = await PullAsync(c, "G", topic, 9, 0, suspendMs: 15_000);
        Assert.True(r.Code == ResponseCode.SystemError, $"{r.Code} {r.Remark}");
        Assert.Contains("queueId[9] is illegal", r.Remark);
    }
}
