using HalfMsg.Broker.Core;
using HalfMsg.Broker.Core.Model;

namespace HalfMsg.Core.Tests;

public sealed class DeliveryTests
{
    private static async Task<SendResult> Send(EngineHarness h, string topic, string body = "b", string? tag = null, string? group = null, long? at = null)
    {
        var r = await h.Engine.SendAsync(h.Draft(topic, body, tag, group, at));
        Assert.True(r.IsOk, r.Error.ToString());
        return r;
    }

    [Fact]
    public async Task Committed_offsets_increase_monotonically_per_queue()
    {
        await using var h = await EngineHarness.StartAsync(o => o with { QueuesPerTopic = 2 });
        var offsets = new List<(int, long)>();
        for (int i = 0; i < 10; i++) { var r = await Send(h, "t"); offsets.Add((r.QueueId, r.QueueOffset)); }
        foreach (var q in offsets.GroupBy(o => o.Item1))
            Assert.Equal(Enumerable.Range(0, q.Count()).Select(i => (long)i), q.Select(o => o.Item2));
    }

    [Fact]
    public async Task Every_group_sees_every_message_but_inside_a_group_a_message_is_leased_to_one_consumer()
    {
        await using var h = await EngineHarness.StartAsync();
        for (int i = 0; i < 5; i++) await Send(h, "t", $"m{i}");
        var a1 = await h.ReceiveAsync("A", "t", batch: 3);
        var a2 = await h.ReceiveAsync("A", "t", batch: 10);
        var b = await h.ReceiveAsync("B", "t", batch: 10);
        Assert.Equal(3, a1.Count);
        Assert.Equal(2, a2.Count);
        Assert.Empty(a1.Select(m => m.Message.MessageId).Intersect(a2.Select(m => m.Message.MessageId)));
        Assert.Equal(5, b.Count);
    }

    [Fact]
    public async Task Ack_finishes_a_message_and_a_second_ack_with_the_same_handle_is_stale()
    {
        await using var h = await EngineHarness.StartAsync();
        await Send(h, "t");
        var m = Assert.Single(await h.ReceiveAsync("g", "t"));
        Assert.True((await h.Engine.AckAsync("g", "t", m.ReceiptHandle)).IsOk);
        Assert.Equal(BrokerStatus.InvalidReceiptHandle, (await h.Engine.AckAsync("g", "t", m.ReceiptHandle)).Status);
        h.Clock.Advance(TimeSpan.FromMinutes(5));
        h.Engine.RunSweep();
        Assert.Empty(await h.ReceiveAsync("g", "t"));
    }

    [Fact]
    public async Task An_unacked_message_comes_back_after_its_invisibility_with_attempt_plus_one_and_the_old_handle_is_stale()
    {
        await using var h = await EngineHarness.StartAsync();
        await Send(h, "t");
        var first = Assert.Single(await h.ReceiveAsync("g", "t", invisible: TimeSpan.FromSeconds(10)));
        h.Clock.Advance(TimeSpan.FromSeconds(9));
        h.Engine.RunSweep();
        Assert.Empty(await h.ReceiveAsync("g", "t"));
        h.Clock.Advance(TimeSpan.FromSeconds(2));
        // Ack after the invisibility expired: INVALID_RECEIPT_HANDLE, as RocketMQ's SimpleParamTest expects.
        Assert.Equal(BrokerStatus.InvalidReceiptHandle, (await h.Engine.AckAsync("g", "t", first.ReceiptHandle)).Status);
        h.Engine.RunSweep();
        var second = Assert.Single(await h.ReceiveAsync("g", "t"));
        Assert.Equal(first.Message.MessageId, second.Message.MessageId);
        Assert.Equal(2, second.DeliveryAttempt);
        Assert.NotEqual(first.ReceiptHandle, second.ReceiptHandle);
        Assert.True((await h.Engine.AckAsync("g", "t", second.ReceiptHandle)).IsOk);
    }

    [Fact]
    public async Task Change_invisible_duration_returns_a_new_handle_extends_the_lease_and_zero_redelivers_now()
    {
        await using var h = await EngineHarness.StartAsync();
        await Send(h, "t");
        var m = Assert.Single(await h.ReceiveAsync("g", "t", invisible: TimeSpan.FromSeconds(10)));
        var ext = await h.Engine.ChangeInvisibleDurationAsync("g", "t", m.ReceiptHandle, TimeSpan.FromSeconds(60));
        Assert.True(ext.IsOk);
        Assert.NotEqual(m.ReceiptHandle, ext.ReceiptHandle);
        Assert.Equal(BrokerStatus.InvalidReceiptHandle, (await h.Engine.AckAsync("g", "t", m.ReceiptHandle)).Status);
        h.Clock.Advance(TimeSpan.FromSeconds(30));
        h.Engine.RunSweep();
        Assert.Empty(await h.ReceiveAsync("g", "t"));

        var nack = await h.Engine.ChangeInvisibleDurationAsync("g", "t", ext.ReceiptHandle!, TimeSpan.Zero);
        Assert.True(nack.IsOk);
        var again = Assert.Single(await h.ReceiveAsync("g", "t"));
        Assert.Equal(2, again.DeliveryAttempt);
        var bad = await h.Engine.ChangeInvisibleDurationAsync("g", "t", again.ReceiptHandle, TimeSpan.FromSeconds(-1));
        Assert.Equal(BrokerStatus.IllegalInvisibleTime, bad.Error.Status);
    }

    [Fact]
    public async Task After_the_maximum_attempts_a_message_goes_to_the_groups_dead_letter_topic()
    {
        await using var h = await EngineHarness.StartAsync(o => o with { MaxDeliveryAttempts = 3 });
        await Send(h, "t", "poison");
        for (int attempt = 1; attempt <= 3; attempt++)
        {
            var m = Assert.Single(await h.ReceiveAsync("g", "t", invisible: TimeSpan.FromSeconds(1)));
            Assert.Equal(attempt, m.DeliveryAttempt);
            h.Clock.Advance(TimeSpan.FromSeconds(2));
            h.Engine.RunSweep();
        }
        Assert.Empty(await h.ReceiveAsync("g", "t"));
        // The dead-letter record rides the next commit: long-poll until it is visible.
        var dead = Assert.Single(await h.ReceiveWhenVisibleAsync("ops", "%DLQ%g"));
        Assert.Equal("poison", dead.Text());
        Assert.Equal("%DLQ%g", dead.Message.Topic);
        Assert.Equal("t", dead.Message.OriginalTopic);
        Assert.Equal(1, h.Engine.FindGroup("g")!.DeadLettered);
        // Another group is unaffected.
        Assert.Single(await h.ReceiveAsync("other", "t"));
    }

    [Fact]
    public async Task Forward_to_dead_letter_on_request_moves_the_message_at_once()
    {
        await using var h = await EngineHarness.StartAsync();
        await Send(h, "t");
        var m = Assert.Single(await h.ReceiveAsync("g", "t"));
        Assert.True((await h.Engine.ForwardToDeadLetterAsync("g", "t", m.ReceiptHandle)).IsOk);
        Assert.Single(await h.ReceiveAsync("ops", "%DLQ%g"));
        h.Clock.Advance(TimeSpan.FromMinutes(1));
        h.Engine.RunSweep();
        Assert.Empty(await h.ReceiveAsync("g", "t"));
    }

    [Theory]
    [InlineData("*", new[] { "A", "B", "C", "" })]
    [InlineData("A", new[] { "A" })]
    [InlineData("A || C", new[] { "A", "C" })]
    [InlineData(" B ||C ", new[] { "B", "C" })]
    public async Task Tag_expressions_filter_what_a_group_receives(string expression, string[] expected)
    {
        await using var h = await EngineHarness.StartAsync(o => o with { QueuesPerTopic = 1 });
        foreach (var tag in new[] { "A", "B", "C" }) await Send(h, "t", tag, tag);
        await Send(h, "t", "", null);
        var got = await h.ReceiveAsync("g", "t", tags: expression);
        Assert.Equal(expected, got.Select(m => m.Text()).ToArray());
    }

    [Fact]
    public async Task A_malformed_tag_expression_is_rejected_clearly()
    {
        await using var h = await EngineHarness.StartAsync();
        var r = await h.Engine.ReceiveAsync(new ReceiveRequest { ConsumerGroup = "g", Topic = "t", TagExpression = "A || || B" });
        Assert.Equal(BrokerStatus.BadRequest, r.Error.Status);
    }

    [Fact]
    public async Task Fifo_messages_of_one_group_are_delivered_in_order_one_at_a_time()
    {
        await using var h = await EngineHarness.StartAsync();
        for (int i = 0; i < 3; i++) await Send(h, "t", $"a{i}", group: "order-A");
        for (int i = 0; i < 3; i++) await Send(h, "t", $"b{i}", group: "order-B");
        var seen = new List<string>();
        for (int round = 0; round < 3; round++)
        {
            var batch = await h.ReceiveAsync("g", "t", batch: 10);
            Assert.Equal(2, batch.Count);                       // one per message group
            foreach (var m in batch) { seen.Add(m.Text()); await h.Engine.AckAsync("g", "t", m.ReceiptHandle); }
        }
        Assert.Equal(new[] { "a0", "a1", "a2" }, seen.Where(s => s[0] == 'a'));
        Assert.Equal(new[] { "b0", "b1", "b2" }, seen.Where(s => s[0] == 'b'));
    }

    [Fact]
    public async Task A_delay_message_arrives_no_earlier_than_its_time()
    {
        await using var h = await EngineHarness.StartAsync();
        var at = h.Clock.GetUtcNow().AddSeconds(10).ToUnixTimeMilliseconds();
        var r = await Send(h, "t", "later", at: at);
        Assert.Equal(-1, r.QueueOffset);
        h.Clock.Advance(TimeSpan.FromSeconds(9));
        h.Engine.RunSweep();
        Assert.Empty(await h.ReceiveAsync("g", "t"));
        await h.RestartAsync();                                 // the delay index is durable
        h.Clock.Advance(TimeSpan.FromSeconds(2));
        h.Engine.RunSweep();
        var m = Assert.Single(await h.ReceiveWhenVisibleAsync("g", "t"));
        Assert.Equal(MessageKind.Delay, m.Message.Kind);
    }

    [Fact]
    public async Task A_delay_too_far_in_the_future_is_rejected()
    {
        await using var h = await EngineHarness.StartAsync();
        var r = await h.Engine.SendAsync(h.Draft("t", deliverAt: h.Clock.GetUtcNow().AddDays(30).ToUnixTimeMilliseconds()));
        Assert.Equal(BrokerStatus.IllegalDeliveryTime, r.Error.Status);
    }

    [Fact]
    public async Task Malformed_or_foreign_receipt_handles_are_invalid()
    {
        await using var h = await EngineHarness.StartAsync();
        await Send(h, "t");
        var m = Assert.Single(await h.ReceiveAsync("g", "t"));
        foreach (var handle in new[] { "", "garbage", "v1.0.0", "v1.99.0.00000000000000ff", "v1.-1.0.1" })
            Assert.Equal(BrokerStatus.InvalidReceiptHandle, (await h.Engine.AckAsync("g", "t", handle)).Status);
        Assert.Equal(BrokerStatus.InvalidReceiptHandle, (await h.Engine.AckAsync("other-group", "t", m.ReceiptHandle)).Status);
    }

    [Fact]
    public async Task Long_polling_wakes_as_soon_as_a_message_is_committed()
    {
        var options = new CoreOptions { DataDir = Path.Combine(Path.GetTempPath(), "halfmsg-lp-" + Guid.NewGuid().ToString("N")), SegmentSizeBits = 22, MemorySizeBits = 23 };
        await using var engine = await BrokerEngine.OpenAsync(options);
        try
        {
            var half = await engine.SendHalfAsync(new MessageDraft { Topic = "t", MessageId = "tx-lp", Body = new byte[] { 1 } }, "t", "p", null);
            long looks = Interlocked.Read(ref engine.Metrics.ReceiveLooks), delivered = Interlocked.Read(ref engine.Metrics.Delivered);
            var sw = System.Diagnostics.Stopwatch.StartNew();
            var receive = engine.ReceiveAsync(new ReceiveRequest { ConsumerGroup = "g", Topic = "t", LongPollTimeout = TimeSpan.FromSeconds(20) }).AsTask();
            // Nothing is receivable until the commit: the poll must still be waiting. Not a pause: the receive has taken
            // its look (counted in the hold of the engine lock in which it would lease; FindTransaction takes that lock
            // after it), leased nothing, and so parked.
            await Conditions.WaitUntil(() => Interlocked.Read(ref engine.Metrics.ReceiveLooks) > looks, () => "the receive's look");
            Assert.NotNull(engine.FindTransaction(half.TransactionId));
            Assert.Equal(delivered, Interlocked.Read(ref engine.Metrics.Delivered));
            Assert.False(receive.IsCompleted);
            await engine.EndTransactionAsync(half.TransactionId, null, TransactionResolution.Commit, DecisionSource.Client);
            var result = await receive.WaitAsync(TimeSpan.FromSeconds(10));
            Assert.Single(result.Messages);
            Assert.True(sw.Elapsed < TimeSpan.FromSeconds(10));
        }
        finally
        {
            await engine.DisposeAsync();
            Directory.Delete(options.DataDir, true);
        }
    }

    [Fact]
    public async Task An_empty_long_poll_returns_message_not_found_at_its_timeout()
    {
        var options = new CoreOptions { DataDir = Path.Combine(Path.GetTempPath(), "halfmsg-lp-" + Guid.NewGuid().ToString("N")), SegmentSizeBits = 22, MemorySizeBits = 23 };
        var engine = await BrokerEngine.OpenAsync(options);
        try
        {
            var r = await engine.ReceiveAsync(new ReceiveRequest { ConsumerGroup = "g", Topic = "t", LongPollTimeout = TimeSpan.FromMilliseconds(300) });
            Assert.Equal(BrokerStatus.MessageNotFound, r.Error.Status);
        }
        finally
        {
            await engine.DisposeAsync();
            Directory.Delete(options.DataDir, true);
        }
    }
}
