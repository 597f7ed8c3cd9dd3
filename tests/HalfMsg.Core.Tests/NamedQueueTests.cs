using HalfMsg.Broker.Core;
using HalfMsg.Broker.Core.Model;

namespace HalfMsg.Core.Tests;

/// <summary>
/// A send that names its queue (RocketMQ 4's MessageQueueSelector, the queueId of a Remoting send) is stored on that
/// queue or refused, as Apache's broker refuses it (AbstractSendMessageProcessor.msgCheck, "request queueId[..] is
/// illegal"). Until 2026-12-06 a queue the topic does not have sent the message round-robin to another queue and the
/// send was answered OK: a selector producer whose route still listed more queues (a topic deleted and made again with
/// fewer; routes refresh every 30 s) lost its per-key order without a word (found by review). A gRPC send names no
/// queue (the front end does not read its queue_id, as the Apache proxy does not).
/// </summary>
public sealed class NamedQueueTests
{
    private static MessageDraft Named(EngineHarness h, string topic, string body, int? queue, long? deliverAt = null)
    {
        var d = h.Draft(topic, body, deliverAt: deliverAt);
        return new MessageDraft
        {
            Topic = d.Topic, MessageId = d.MessageId, Body = d.Body, BornTimestampMs = d.BornTimestampMs, BornHost = d.BornHost,
            DeliveryTimestampMs = d.DeliveryTimestampMs, QueueId = queue,
        };
    }

    private static void AssertNamesQueueAndCount(BrokerError error, int queue, int count)
    {
        Assert.Equal(BrokerStatus.BadRequest, error.Status);
        Assert.Contains($"queue {queue}", error.Message, StringComparison.Ordinal);
        Assert.Contains($"{count} queues", error.Message, StringComparison.Ordinal);
    }

    [Fact]
    public async Task A_send_to_a_queue_the_topic_does_not_have_is_refused_and_nothing_is_stored()
    {
        await using var h = await EngineHarness.StartAsync(o => o with { QueuesPerTopic = 2 });
        Assert.True((await h.Engine.SendAsync(Named(h, "t", "ok", 1))).IsOk);

        var r = await h.Engine.SendAsync(Named(h, "t", "x", 5));

        Assert.False(r.IsOk, $"stored on queue {r.QueueId}");
        AssertNamesQueueAndCount(r.Error, 5, 2);
        Assert.Equal(["ok"], (await h.ReceiveAsync("g", "t")).Select(m => m.Text()));
    }

    [Fact]
    public async Task A_send_to_the_last_queue_is_stored_there_and_a_negative_queue_lets_the_broker_pick()
    {
        await using var h = await EngineHarness.StartAsync(o => o with { QueuesPerTopic = 2 });
        var last = await h.Engine.SendAsync(Named(h, "t", "last", 1));
        var any = await h.Engine.SendAsync(Named(h, "t", "any", -1));

        Assert.True(last.IsOk, last.Error.ToString());
        Assert.Equal(1, last.QueueId);
        // A negative queue id is "any queue", as Apache's broker takes it (SendMessageProcessor picks one at random).
        Assert.True(any.IsOk, any.Error.ToString());
        Assert.InRange(any.QueueId, 0, 1);
    }

    [Fact]
    public async Task A_delayed_send_to_a_queue_the_topic_does_not_have_is_refused_at_the_send()
    {
        await using var h = await EngineHarness.StartAsync(o => o with { QueuesPerTopic = 2 });
        long later = h.Clock.GetUtcNow().AddMinutes(1).ToUnixTimeMilliseconds();

        var r = await h.Engine.SendAsync(Named(h, "t", "later", 2, deliverAt: later));

        Assert.False(r.IsOk, "a delayed message for queue 2 of a 2-queue topic was accepted");
        AssertNamesQueueAndCount(r.Error, 2, 2);
    }

    [Fact]
    public async Task A_batch_whose_queue_the_topic_does_not_have_is_refused_whole()
    {
        await using var h = await EngineHarness.StartAsync(o => o with { QueuesPerTopic = 2 });
        var (error, results) = await h.Engine.SendToOneQueueAsync([Named(h, "t", "b0", 3), Named(h, "t", "b1", 3)]);

        AssertNamesQueueAndCount(error, 3, 2);
        Assert.Empty(results);
        Assert.Empty(await h.ReceiveAsync("g", "t"));
    }

    [Fact]
    public async Task A_half_for_a_queue_the_topic_does_not_have_is_refused_at_the_half_send()
    {
        await using var h = await EngineHarness.StartAsync(o => o with { QueuesPerTopic = 2 });
        Assert.True((await h.Engine.CreateTopicAsync("t")).Error.IsOk);

        var half = await h.Engine.SendHalfAsync(Named(h, "t", "tx", 4), "pg", "p1", null);

        Assert.False(half.IsOk, "a half for queue 4 of a 2-queue topic was accepted");
        AssertNamesQueueAndCount(half.Error, 4, 2);
        Assert.Null(h.Engine.FindTransaction(half.MessageId));
    }

    /// <summary>A half keeps its queue until its commit; a topic deleted and made again with fewer queues in between
    /// no longer has it. The commit was acknowledged to the producer's transaction: it is delivered on a queue the
    /// topic has (the broker's pick), not refused and not lost.</summary>
    [Fact]
    public async Task A_half_whose_queue_went_away_before_its_commit_is_delivered_on_a_queue_the_topic_has()
    {
        await using var h = await EngineHarness.StartAsync(o => o with { QueuesPerTopic = 2 });
        Assert.True((await h.Engine.CreateTopicAsync("t", 4)).Error.IsOk);
        var half = await h.Engine.SendHalfAsync(Named(h, "t", "tx", 3), "pg", "p1", null);
        Assert.True(half.IsOk, half.Error.ToString());
        Assert.True((await h.Engine.DeleteTopicAsync("t")).IsOk);
        Assert.True((await h.Engine.CreateTopicAsync("t", 2)).Error.IsOk);

        var commit = await h.Engine.EndTransactionAsync(half.TransactionId, null, TransactionResolution.Commit, DecisionSource.Client);

        Assert.True(commit.IsOk, commit.Error.ToString());
        var m = Assert.Single(await h.ReceiveWhenVisibleAsync("g", "t"));
        Assert.Equal("tx", m.Text());
        Assert.InRange(m.Message.QueueId, 0, 1);
    }
}
