using HalfMsg.Broker.Core;
using HalfMsg.Broker.Core.Model;
using HalfMsg.Broker.Core.Storage;

namespace HalfMsg.Core.Tests;

/// <summary>
/// Consumer groups' order modes (Apache's consumeMessageOrderly): an orderly group holds each queue while a message of
/// it is in flight, a concurrent group holds nothing, a group not configured holds FIFO message groups (or nothing,
/// with <see cref="DefaultGroupOrder.Concurrent"/>), and the mode is durable.
/// </summary>
public class GroupOrderTests
{
    /// <summary>Sends to queue 0 by name (a RocketMQ 4 producer's MessageQueueSelector: order by queue, no message group).</summary>
    private static Task SendToQueue0(EngineHarness h, string body, string? group = null) => SendToQueue(h, 0, body, group);

    private static async Task SendToQueue(EngineHarness h, int queue, string body, string? group = null)
    {
        var r = await h.Engine.SendAsync(new MessageDraft
        {
            Topic = "t", MessageId = h.NextId(), Body = System.Text.Encoding.UTF8.GetBytes(body), MessageGroup = group, QueueId = queue,
            BornTimestampMs = h.Clock.GetUtcNow().ToUnixTimeMilliseconds(), BornHost = "test",
        });
        Assert.True(r.Error.IsOk, r.Error.ToString());
        Assert.Equal(queue, r.QueueId);
    }

    private static async Task SetOrder(EngineHarness h, string group, GroupOrder order)
    {
        var error = await h.Engine.SetGroupOrderAsync(group, order);
        Assert.True(error.IsOk, error.ToString());
    }

    [Fact]
    public async Task An_orderly_group_holds_a_queue_while_its_first_message_is_in_flight()
    {
        await using var h = await EngineHarness.StartAsync();
        await SetOrder(h, "g", GroupOrder.Orderly);
        await SendToQueue0(h, "m0");
        await SendToQueue0(h, "m1");
        var first = Assert.Single(await h.ReceiveAsync("g", "t", batch: 1));
        Assert.Equal("m0", first.Text());
        // The queue's next message has no message group: only the orderly hold keeps it back.
        Assert.Empty(await h.ReceiveAsync("g", "t", batch: 10));
        Assert.True((await h.Engine.AckAsync("g", "t", first.ReceiptHandle)).IsOk);
        Assert.Equal(new[] { "m1" }, (await h.ReceiveAsync("g", "t", batch: 10)).Select(m => m.Text()));
    }

    [Fact]
    public async Task An_orderly_receive_takes_consecutive_messages_of_a_free_queue_and_the_queue_waits_for_all_of_them()
    {
        await using var h = await EngineHarness.StartAsync();
        await SetOrder(h, "g", GroupOrder.Orderly);
        for (int i = 0; i < 3; i++) await SendToQueue0(h, $"m{i}");
        var batch = await h.ReceiveAsync("g", "t", batch: 2);
        Assert.Equal(new[] { "m0", "m1" }, batch.Select(m => m.Text()));
        Assert.True((await h.Engine.AckAsync("g", "t", batch[0].ReceiptHandle)).IsOk);
        Assert.Empty(await h.ReceiveAsync("g", "t", batch: 10));           // m1 still in flight
        Assert.True((await h.Engine.AckAsync("g", "t", batch[1].ReceiptHandle)).IsOk);
        Assert.Equal(new[] { "m2" }, (await h.ReceiveAsync("g", "t", batch: 10)).Select(m => m.Text()));
    }

    [Fact]
    public async Task An_orderly_groups_expired_leases_come_back_first_in_queue_order()
    {
        await using var h = await EngineHarness.StartAsync();
        await SetOrder(h, "g", GroupOrder.Orderly);
        for (int i = 0; i < 3; i++) await SendToQueue0(h, $"m{i}");
        var batch = await h.ReceiveAsync("g", "t", batch: 3, invisible: TimeSpan.FromSeconds(10));
        Assert.Equal(3, batch.Count);
        // m2's lease ends first, then m1's, then m0's: the line of expired leases is in the other order.
        for (int i = 0; i < 3; i++)
            Assert.True((await h.Engine.ChangeInvisibleDurationAsync("g", "t", batch[i].ReceiptHandle, TimeSpan.FromSeconds(10 - 3 * i))).Error.IsOk);
        await SendToQueue0(h, "m3");
        h.Clock.Advance(TimeSpan.FromSeconds(11));
        h.Engine.RunSweep();
        var again = await h.ReceiveAsync("g", "t", batch: 10);
        Assert.Equal(new[] { "m0", "m1", "m2", "m3" }, again.Select(m => m.Text()));
        Assert.Equal(new[] { 2, 2, 2, 1 }, again.Select(m => m.DeliveryAttempt));
    }

    [Fact]
    public async Task An_orderly_groups_expired_lease_behind_a_live_one_waits_for_it()
    {
        await using var h = await EngineHarness.StartAsync();
        await SetOrder(h, "g", GroupOrder.Orderly);
        await SendToQueue0(h, "m0");
        await SendToQueue0(h, "m1");
        var batch = await h.ReceiveAsync("g", "t", batch: 2, invisible: TimeSpan.FromSeconds(10));
        var longer = await h.Engine.ChangeInvisibleDurationAsync("g", "t", batch[0].ReceiptHandle, TimeSpan.FromSeconds(60));
        Assert.True(longer.Error.IsOk);
        h.Clock.Advance(TimeSpan.FromSeconds(11));
        h.Engine.RunSweep();                                             // m1's lease ended; m0 is still leased
        Assert.Empty(await h.ReceiveAsync("g", "t", batch: 10));
        Assert.True((await h.Engine.AckAsync("g", "t", longer.ReceiptHandle!)).IsOk);
        var m1 = Assert.Single(await h.ReceiveAsync("g", "t", batch: 10));
        Assert.Equal(("m1", 2), (m1.Text(), m1.DeliveryAttempt));
    }

    [Fact]
    public async Task An_orderly_groups_long_poll_is_woken_by_the_ack_that_frees_the_queue()
    {
        await using var h = await EngineHarness.StartAsync();
        await SetOrder(h, "g", GroupOrder.Orderly);
        await SendToQueue0(h, "m0");
        await SendToQueue0(h, "m1");
        var first = Assert.Single(await h.ReceiveAsync("g", "t", batch: 1));
        long looks = h.Engine.Metrics.ReceiveLooks;
        var waiting = h.ReceiveWhenVisibleAsync("g", "t");
        // The long poll has looked (it parks before it looks, so the ack's wake cannot be lost) and found the queue held.
        await Conditions.WaitUntil(() => h.Engine.Metrics.ReceiveLooks > looks);
        Assert.False(waiting.IsCompleted);
        Assert.True((await h.Engine.AckAsync("g", "t", first.ReceiptHandle)).IsOk);
        Assert.Equal(new[] { "m1" }, (await waiting).Select(m => m.Text()));
    }

    [Fact]
    public async Task A_concurrent_group_has_two_messages_of_one_message_group_in_flight_at_once()
    {
        await using var h = await EngineHarness.StartAsync();
        await SetOrder(h, "g", GroupOrder.Concurrent);
        await SendToQueue0(h, "a0", group: "A");
        await SendToQueue0(h, "a1", group: "A");
        Assert.Equal(new[] { "a0", "a1" }, (await h.ReceiveAsync("g", "t", batch: 10)).Select(m => m.Text()));
    }

    [Fact]
    public async Task A_group_set_back_to_default_holds_message_groups_as_before_and_not_queues()
    {
        await using var h = await EngineHarness.StartAsync();
        await SetOrder(h, "g", GroupOrder.Orderly);
        await SetOrder(h, "g", GroupOrder.NotConfigured);
        Assert.Equal(GroupOrder.NotConfigured, h.Engine.GroupOrderOf("g"));
        await SendToQueue0(h, "a0", group: "A");
        await SendToQueue0(h, "a1", group: "A");
        Assert.Equal(new[] { "a0" }, (await h.ReceiveAsync("g", "t", batch: 10)).Select(m => m.Text()));
        await SendToQueue0(h, "n0");
        await SendToQueue0(h, "n1");
        // Only the message group is held: the rest of its queue goes past a1 (passed over since 2026-12-07; the whole
        // queue waited before, MessageGroupPassOverTests), and nothing of another queue is held.
        await SendToQueue(h, 1, "x0");
        await SendToQueue(h, 1, "x1");
        Assert.Equal(new[] { "n0", "n1", "x0", "x1" }, (await h.ReceiveAsync("g", "t", batch: 10)).Select(m => m.Text()).Order());
    }

    [Fact]
    public async Task The_default_group_order_concurrent_applies_to_groups_not_configured_only()
    {
        await using var h = await EngineHarness.StartAsync(o => o with { DefaultGroupOrder = DefaultGroupOrder.Concurrent });
        await SetOrder(h, "orderly", GroupOrder.Orderly);
        await SendToQueue0(h, "a0", group: "A");
        await SendToQueue0(h, "a1", group: "A");
        Assert.Equal(new[] { "a0", "a1" }, (await h.ReceiveAsync("unconfigured", "t", batch: 10)).Select(m => m.Text()));
        Assert.Equal(new[] { "a0" }, (await h.ReceiveAsync("orderly", "t", batch: 1)).Select(m => m.Text()));
        Assert.Empty(await h.ReceiveAsync("orderly", "t", batch: 10));
    }

    [Fact]
    public async Task The_mode_survives_a_restart_by_replay_and_by_checkpoint_and_a_delete_clears_it()
    {
        await using var h = await EngineHarness.StartAsync();
        await SetOrder(h, "o", GroupOrder.Orderly);
        await SetOrder(h, "c", GroupOrder.Concurrent);
        await SetOrder(h, "gone", GroupOrder.Orderly);
        Assert.True((await h.Engine.DeleteGroupAsync("gone")).IsOk);     // known by its settings alone
        await SetOrder(h, "back", GroupOrder.Concurrent);
        await SetOrder(h, "back", GroupOrder.NotConfigured);
        string live = h.Engine.DescribeState();
        Assert.Contains("order o=Orderly", live);

        void AssertModes(string how)
        {
            Assert.Equal(GroupOrder.Orderly, h.Engine.GroupOrderOf("o"));
            Assert.Equal(GroupOrder.Concurrent, h.Engine.GroupOrderOf("c"));
            Assert.Equal(GroupOrder.NotConfigured, h.Engine.GroupOrderOf("gone"));
            Assert.Equal(GroupOrder.NotConfigured, h.Engine.GroupOrderOf("back"));
            States.AssertSame(live, h.Engine.DescribeState(), how);
        }

        // Replay alone: no checkpoint.
        await h.Engine.DisposeAsync();
        Directory.Delete(Path.Combine(h.DataDir, "checkpoints"), recursive: true);
        await h.RestartAfterDeletedCheckpointAsync();
        AssertModes("replay");

        // From a checkpoint that covers every record (the shutdown's), then from a delta on it.
        await h.RestartAsync();
        AssertModes("checkpoint");
        await h.Engine.CheckpointAsync();
        await h.SendNormalAsync("t", "x");
        await h.Engine.CheckpointAsync();
        live = h.Engine.DescribeState();
        await h.RestartAsync();
        AssertModes("delta checkpoint");
    }

    [Fact]
    public async Task The_orderly_hold_survives_a_restart()
    {
        await using var h = await EngineHarness.StartAsync();
        await SetOrder(h, "g", GroupOrder.Orderly);
        await SendToQueue0(h, "m0");
        await SendToQueue0(h, "m1");
        var first = Assert.Single(await h.ReceiveAsync("g", "t", batch: 1));
        await h.RestartAsync();
        Assert.Empty(await h.ReceiveAsync("g", "t", batch: 10));
        Assert.True((await h.Engine.AckAsync("g", "t", first.ReceiptHandle)).IsOk);
        Assert.Equal(new[] { "m1" }, (await h.ReceiveAsync("g", "t", batch: 10)).Select(m => m.Text()));
    }

    [Fact]
    public async Task A_bad_group_name_or_a_re_drive_cursor_cannot_be_configured()
    {
        await using var h = await EngineHarness.StartAsync();
        Assert.Equal(BrokerStatus.IllegalConsumerGroup, (await h.Engine.SetGroupOrderAsync("", GroupOrder.Orderly)).Status);
        Assert.Equal(BrokerStatus.BadRequest, (await h.Engine.SetGroupOrderAsync(BrokerEngine.RedrivePrefix + "g", GroupOrder.Orderly)).Status);
    }

    [Fact]
    public void A_group_configured_record_with_a_setting_this_broker_does_not_know_is_refused()
    {
        var w = new RecordWriter();
        new GroupConfiguredRecord("g", GroupOrder.Orderly, 5).Write(w);
        Assert.True(RecordHeader.TryOpen(w.Seal().ToArray(), out var kind, out var r, out _));
        Assert.Equal(RecordKind.GroupConfigured, kind);
        Assert.Equal(new GroupConfiguredRecord("g", GroupConfiguredRecord.OrderlyFlag, 5), GroupConfiguredRecord.Read(ref r));

        var unknown = new RecordWriter();
        new GroupConfiguredRecord("g", (byte)0x80, 5).Write(unknown);
        Assert.True(RecordHeader.TryOpen(unknown.Seal().ToArray(), out _, out var r2, out _));
        bool refused = false;
        try { GroupConfiguredRecord.Read(ref r2); } catch (InvalidDataException) { refused = true; }
        Assert.True(refused);
    }
}
