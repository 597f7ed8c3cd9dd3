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
