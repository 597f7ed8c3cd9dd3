using HalfMsg.Broker.Core;
using HalfMsg.Broker.Core.Model;

namespace HalfMsg.Core.Tests;

/// <summary>
/// Review delivery #1: any client could create consumer groups (a receive naming a new group, a Remoting offset commit
/// naming one) and topics (a send or receive naming a new one) without limit; each stays until an operator deletes it,
/// survives restarts, is written by every checkpoint, and a topic's groups are walked by every commit on it.
/// </summary>
public sealed class ResourceLimitTests
{
    private static async Task<ReceiveResult> ReceiveAsync(EngineHarness h, string group, string topic)
        => await h.Engine.ReceiveAsync(new ReceiveRequest { ConsumerGroup = group, Topic = topic, BatchSize = 8, InvisibleDuration = TimeSpan.FromSeconds(30) });

    [Fact]
    public async Task Consumer_groups_beyond_the_limit_are_refused_with_the_setting_named_until_one_is_deleted()
    {
        await using var h = await EngineHarness.StartAsync(o => o with { MaxConsumerGroups = 3 });
        await h.SendNormalAsync("events", "m");
        foreach (var g in new[] { "g1", "g2" }) Assert.Single((await ReceiveAsync(h, g, "events")).Messages);
        Assert.Equal(BrokerError.None, await h.Engine.CommitConsumerOffsetAsync("pull1", "events", 0, 1));   // a pull group counts too

        var refused = await ReceiveAsync(h, "g4", "events");
        Assert.Equal(BrokerStatus.TooManyConsumerGroups, refused.Error.Status);
        Assert.Contains("MaxConsumerGroups", refused.Error.Message);
        var refusedPull = await h.Engine.CommitConsumerOffsetAsync("pull2", "events", 0, 1);
        Assert.Equal(BrokerStatus.TooManyConsumerGroups, refusedPull.Status);
        Assert.Null(h.Engine.QueryConsumerOffset("pull2", "events", 0));

        // Known groups go on: a receive, another queue's offset of a known pull group.
        await h.SendNormalAsync("events", "m2");
        Assert.Single((await ReceiveAsync(h, "g1", "events")).Messages);
        Assert.Equal(BrokerError.None, await h.Engine.CommitConsumerOffsetAsync("pull1", "events", 1, 0));

        // The limit holds after a restart (the groups were made durable), and deleting a group makes room.
        await h.RestartAsync();
        Assert.Equal(BrokerStatus.TooManyConsumerGroups, (await ReceiveAsync(h, "g4", "events")).Error.Status);
        Assert.Equal(BrokerError.None, await h.Engine.DeleteGroupAsync("pull1"));
        Assert.Null(h.Engine.QueryConsumerOffset("pull1", "events", 0));
        Assert.Equal(2, (await ReceiveAsync(h, "g4", "events")).Messages.Count);
        Assert.Equal(BrokerStatus.TooManyConsumerGroups, (await ReceiveAsync(h, "g5", "events")).Error.Status);
    }

    /// <summary>
    /// Review of the gRPC pull, F3: at the limit a lease group on a topic was let pull it (PullGroupRefusal) but its
    /// offset commit there was refused (over gRPC UpdateOffset and Remoting UPDATE_CONSUMER_OFFSET alike), so its
    /// progress was never kept. Both now follow one rule: a group known on the topic goes on, another is refused.
    /// </summary>
    [Fact]
    public async Task At_the_limit_a_group_known_on_a_topic_may_both_pull_it_and_commit_its_offset_there()
    {
        await using var h = await EngineHarness.StartAsync(o => o with { MaxConsumerGroups = 1 });
        await h.SendNormalAsync("events", "m");
        Assert.Single((await ReceiveAsync(h, "g1", "events")).Messages);

        Assert.Null(h.Engine.PullGroupRefusal("g1", "events"));
        Assert.Equal(BrokerError.None, await h.Engine.CommitConsumerOffsetAsync("g1", "events", 0, 1));
        Assert.Equal(1, h.Engine.QueryConsumerOffset("g1", "events", 0));

        Assert.Equal(BrokerStatus.TooManyConsumerGroups, h.Engine.PullGroupRefusal("g2", "events")?.Status);
        Assert.Equal(BrokerStatus.TooManyConsumerGroups, (await h.Engine.CommitConsumerOffsetAsync("g2", "events", 0, 1)).Status);
    }

    [Fact]
    public async Task Topics_beyond_the_limit_are_not_created_on_first_use_but_an_operator_may_create_one()
    {
        await using var h = await EngineHarness.StartAsync(o => o with { MaxTopics = 3 });
        foreach (var t in new[] { "t1", "t2", "t3" }) Assert.True((await h.Engine.SendAsync(h.Draft(t, "m"))).IsOk);

        var sent = await h.Engine.SendAsync(h.Draft("t4", "m"));
        Assert.Equal(BrokerStatus.TopicNotFound, sent.Error.Status);
        Assert.Contains("MaxTopics", sent.Error.Message);
        var received = await ReceiveAsync(h, "g", "%DLQ%nobody");                  // a system topic is not created by a receive either
        Assert.Equal(BrokerStatus.TopicNotFound, received.Error.Status);
        Assert.True((await h.Engine.SendAsync(h.Draft("t1", "again"))).IsOk);     // known topics go on

        Assert.Equal(BrokerError.None, (await h.Engine.CreateTopicAsync("t4")).Error);                 // the operator's explicit creation is not limited
        Assert.True((await h.Engine.SendAsync(h.Draft("t4", "m"))).IsOk);
        await h.RestartAsync();
        Assert.Equal(BrokerStatus.TopicNotFound, (await h.Engine.SendAsync(h.Draft("t5", "m"))).Error.Status);
    }
}
