using HalfMsg.Broker.Core;
using HalfMsg.Broker.Core.Model;

namespace HalfMsg.Core.Tests;

/// <summary>The messages a tag filter passes over are finished for the group durably: a crash does not bring them back.</summary>
public class TagFilterRecoveryTests
{
    private static async Task Send(EngineHarness h, string body, string tag)
    {
        var r = await h.Engine.SendAsync(new MessageDraft
        {
            Topic = "t", MessageId = h.NextId(), Body = System.Text.Encoding.UTF8.GetBytes(body), QueueId = 0, Tag = tag,
            BornTimestampMs = h.Clock.GetUtcNow().ToUnixTimeMilliseconds(), BornHost = "test",
        });
        Assert.True(r.Error.IsOk, r.Error.ToString());
    }

    /// <summary>
    /// A tag filter finishes the messages it passes over for the group without a delivery. Until 2026-12-07 no record
    /// named them, and replay finished them only when a later delivery record of the same queue followed: the ones
    /// passed over after the queue's last delivery (or on a queue never delivered from) were not finished after a crash,
    /// the recovered state differed from the live one, and the group was handed them again (here after a subscription
    /// change; live it never would be; found by review).
    /// </summary>
    [Theory]
    [InlineData(true, 1)]
    [InlineData(true, 3)]
    [InlineData(false, 3)]
    public async Task Messages_a_tag_filter_finished_stay_finished_after_a_crash(bool deliverFirst, int passedOver)
    {
        await using var h = await EngineHarness.StartAsync();
        if (deliverFirst) await Send(h, "a0", "A");
        for (int i = 0; i < passedOver; i++) await Send(h, "b" + i, "B");
        var got = await h.ReceiveAsync("g", "t", batch: 10, tags: "A");
        Assert.Equal(deliverFirst ? ["a0"] : [], got.Select(m => m.Text()));
        foreach (var m in got) Assert.True((await h.Engine.AckAsync("g", "t", m.ReceiptHandle)).IsOk);
        string live = h.Engine.DescribeState();
        // A crash: no checkpoint covers the log, recovery replays it.
        await h.Engine.DisposeAsync();
        Directory.Delete(Path.Combine(h.DataDir, "checkpoints"), recursive: true);
        await h.RestartAfterDeletedCheckpointAsync();
        States.AssertSame(live, h.Engine.DescribeState(), "replay");
        var again = await h.ReceiveAsync("g", "t", batch: 10, tags: "*");
        Assert.True(again.Count == 0, $"finished for g live, delivered again after replay: [{string.Join(",", again.Select(m => m.Text()))}]");
    }
}
