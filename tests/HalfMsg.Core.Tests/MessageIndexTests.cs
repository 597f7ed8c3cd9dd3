using HalfMsg.Broker.Core;
using HalfMsg.Broker.Core.Diagnostics;
using HalfMsg.Broker.Core.Model;

namespace HalfMsg.Core.Tests;

public sealed class MessageIndexTests
{
    private static MessageDraft Draft(string id, params string[] keys) => new() { Topic = "t", MessageId = id, Keys = keys };

    [Fact]
    public void The_oldest_message_is_forgotten_first_with_its_keys()
    {
        var index = new MessageIndex(capacity: 2);
        index.OnStored(Draft("a", "k1"), 0, 0, 1);
        index.OnStored(Draft("b", "k1", "k2"), 0, 1, 2);
        index.OnStored(Draft("c", "k2"), 0, 2, 3);
        Assert.Null(index.Find("a"));
        Assert.Equal(["b"], index.FindByKey("k1").Select(e => e.MessageId));
        Assert.Equal(["b", "c"], index.FindByKey("k2").Select(e => e.MessageId));
        Assert.Equal(2, index.Count);
    }

    [Fact]
    public void A_key_keeps_only_its_newest_ids()
    {
        var index = new MessageIndex();
        for (int i = 0; i < MessageIndex.MaxIdsPerKey + 5; i++) index.OnStored(Draft($"m{i}", "hot"), 0, i, i);
        var ids = index.FindByKey("hot").Select(e => e.MessageId).ToList();
        Assert.Equal(MessageIndex.MaxIdsPerKey, ids.Count);
        Assert.Equal("m5", ids[0]);
        Assert.Equal($"m{MessageIndex.MaxIdsPerKey + 4}", ids[^1]);
    }

    [Fact]
    public void A_decision_records_resolution_source_and_queue_position_on_the_half()
    {
        var index = new MessageIndex();
        index.OnHalf(Draft("tx1", "k"), "producers", 10);
        index.OnDecided("tx1", TransactionResolution.Commit, DecisionSource.CheckBack, 3, 42, 20);
        var e = index.Find("tx1")!;
        Assert.Equal((TransactionResolution?)TransactionResolution.Commit, e.Resolution);
        Assert.Equal((DecisionSource?)DecisionSource.CheckBack, e.DecidedBy);
        Assert.Equal((3, 42L), (e.QueueId, e.QueueOffset));
        Assert.Equal("producers", e.ProducerGroup);
    }
}
