using HalfMsg.Broker.Core;
using HalfMsg.Broker.Core.Model;

namespace HalfMsg.Core.Tests;

/// <summary>
/// A group's subscription changes while one of its leases runs: the expired lease its new filter does not take is
/// finished for the group (filtered out), in every order mode, live and after a crash alike.
/// </summary>
public class FilterChangeFifoTests
{
    private static Task<int> Send(EngineHarness h, string body, int? queue = null, string? tag = null, string? group = null)
        => GroupOrderReviewTests.Send(h, body, queue, tag, group);

    /// <summary>
    /// A FIFO message's lease expires after the group's subscription changed (A to B). Until 2026-12-07 the expired lease
    /// was put back in line "for another filter" for ever (never leased again, never dead-lettered) and its in-flight
    /// entry kept message group G busy, so for a group nobody configured (message-group holds) G's next message and
    /// the rest of its queue were never delivered; a concurrent group kept the lease in flight for ever (found by review).
    /// Now it is finished as filtered out, by a record: after a crash (replay, no checkpoint) or a clean restart the
    /// recovered state is the live one, and the message is not delivered again.
    /// </summary>
    [Theory]
    [InlineData(GroupOrder.NotConfigured, "none")]
    [InlineData(GroupOrder.NotConfigured, "crash")]
    [InlineData(GroupOrder.NotConfigured, "restart")]
    [InlineData(GroupOrder.Concurrent, "none")]
    [InlineData(GroupOrder.Concurrent, "crash")]
    [InlineData(GroupOrder.Orderly, "none")]
    [InlineData(GroupOrder.Orderly, "crash")]
    public async Task A_subscription_change_does_not_hold_a_fifo_message_group_for_ever(GroupOrder order, string restart)
    {
        await using var h = await EngineHarness.StartAsync();
        if (order != GroupOrder.NotConfigured) Assert.True((await h.Engine.SetGroupOrderAsync("g", order)).IsOk);
        int q = await Send(h, "a0", tag: "A", group: "G");
        await Send(h, "b1", tag: "B", group: "G");
        await Send(h, "c2", queue: q, tag: "B"); // no message group, same queue
        var first = Assert.Single(await h.ReceiveAsync("g", "t", batch: 1, tags: "A", invisible: TimeSpan.FromSeconds(10)));
        Assert.Equal("a0", first.Text());
        // The consumers are redeployed with the subscription "B"; a0's lease runs out.
        h.Clock.Advance(TimeSpan.FromSeconds(11));
        h.Engine.RunSweep();
        var got = new List<string>();
        for (int i = 0; i < 10 && got.Count < 2; i++)
        {
            foreach (var m in await h.ReceiveAsync("g", "t", batch: 10, tags: "B"))
            {
                got.Add(m.Text());
                Assert.True((await h.Engine.AckAsync("g", "t", m.ReceiptHandle)).IsOk);
            }
            if (got.Count < 2)
            {
                h.Clock.Advance(TimeSpan.FromSeconds(60));
                h.Engine.RunSweep();
            }
        }
        Assert.True(got.Count == 2 && got[0] == "b1", $"b1 then c2 expected, got [{string.Join(",", got)}]: queue {q} is held by a0's expired lease "
            + $"of message group G, which the group's subscription no longer takes (dead-lettered: {h.Engine.Metrics.DeadLettered})");
        Assert.Equal(0, h.Engine.Metrics.DeadLettered);
        string live = h.Engine.DescribeState();
        // Finished for the group: nothing of queue q in flight, every offset done.
        Assert.Contains($"group g/t/{q} next=3 doneBelow=3 done=[] inflight=[]\n", live);

        if (restart == "crash")
        {
            await h.Engine.DisposeAsync();
            Directory.Delete(Path.Combine(h.DataDir, "checkpoints"), recursive: true);
            await h.RestartAfterDeletedCheckpointAsync();
        }
        else if (restart == "restart") await h.RestartAsync();
        if (restart != "none") States.AssertSame(live, h.Engine.DescribeState(), restart);
        // Not delivered again, whatever the subscription (it is finished, not waiting for a filter that takes it).
        h.Clock.Advance(TimeSpan.FromMinutes(5));
        h.Engine.RunSweep();
        Assert.Empty(await h.ReceiveAsync("g", "t", batch: 10, tags: "*"));
    }
}
