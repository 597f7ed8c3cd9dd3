using HalfMsg.Broker.Core;
using HalfMsg.Broker.Core.Model;

namespace HalfMsg.Core.Tests;

/// <summary>Found by the review of the orderly/concurrent change (cddab56); the first two failed on it.</summary>
public class GroupOrderReviewTests
{
    /// <summary>A message of topic <c>t</c> (shared with <see cref="FilterChangeFifoTests"/>); its queue.</summary>
    internal static async Task<int> Send(EngineHarness h, string body, int? queue = null, string? tag = null, string? group = null)
    {
        var r = await h.Engine.SendAsync(new MessageDraft
        {
            Topic = "t", MessageId = h.NextId(), Body = System.Text.Encoding.UTF8.GetBytes(body), MessageGroup = group, QueueId = queue, Tag = tag,
            BornTimestampMs = h.Clock.GetUtcNow().ToUnixTimeMilliseconds(), BornHost = "test",
        });
        Assert.True(r.Error.IsOk, r.Error.ToString());
        return r.QueueId;
    }

    private static async Task SetOrder(EngineHarness h, string group, GroupOrder order)
        => Assert.True((await h.Engine.SetGroupOrderAsync(group, order)).IsOk);

    /// <summary>
    /// An expired lease whose tag the group's (new) subscription does not match is never redelivered (so it never
    /// reaches max attempts and the DLQ), and in an orderly group it holds its queue for ever: HasExpired skips the queue.
    /// A concurrent group goes on with the queue's next message.
    /// </summary>
    [Theory]
    [InlineData(GroupOrder.Concurrent)]
    [InlineData(GroupOrder.Orderly)]
    public async Task A_subscription_change_does_not_hold_the_queue_for_ever(GroupOrder order)
    {
        await using var h = await EngineHarness.StartAsync();
        await SetOrder(h, "g", order);
        await Send(h, "a0", queue: 0, tag: "A");
        await Send(h, "b1", queue: 0, tag: "B");
        var first = Assert.Single(await h.ReceiveAsync("g", "t", batch: 1, tags: "A", invisible: TimeSpan.FromSeconds(10)));
        Assert.Equal("a0", first.Text());
        // The consumers are redeployed with the subscription "B"; a0's lease runs out.
        h.Clock.Advance(TimeSpan.FromSeconds(11));
        h.Engine.RunSweep();
        for (int i = 0; i < 3; i++)
        {
            var got = await h.ReceiveAsync("g", "t", batch: 10, tags: "B");
            if (got.Count > 0) { Assert.Equal("b1", Assert.Single(got).Text()); return; }
            h.Clock.Advance(TimeSpan.FromSeconds(60));
            h.Engine.RunSweep();
        }
        Assert.Fail($"{order}: b1 was never delivered; queue 0 is held by a0's expired lease that nobody may take");
    }

    /// <summary>
    /// A topic's growth moves a FIFO message group to another queue (StableHash % queues). A group not configured keeps
    /// the message group's order across the move (BusyMessageGroups); an orderly group no longer looks at message groups,
    /// so the message group's next message is delivered while the previous one is still in flight.
    /// </summary>
    [Theory]
    [InlineData(GroupOrder.NotConfigured)]
    [InlineData(GroupOrder.Orderly)]
    public async Task An_orderly_group_keeps_a_message_groups_order_across_topic_growth(GroupOrder order)
    {
        await using var h = await EngineHarness.StartAsync();
        await SetOrder(h, "g", order);
        // Its queue before the growth is the lower one: the pick walks queues from 0, so a group not configured meets a0 first.
        string mg = Enumerable.Range(0, 100).Select(i => "X" + i).First(n => Hash(n) % 4 < Hash(n) % 8);
        int q0 = await Send(h, "a0", group: mg);
        var grown = await h.Engine.CreateOrGrowTopicAsync("t", 8);
        Assert.True(grown.Error.IsOk, grown.Error.ToString());
        int q1 = await Send(h, "a1", group: mg);
        Assert.NotEqual(q0, q1);
        Assert.Equal("a0", Assert.Single(await h.ReceiveAsync("g", "t", batch: 1)).Text());
        // a0 in flight: its message group's next message waits.
        Assert.Empty(await h.ReceiveAsync("g", "t", batch: 10));
    }

    /// <summary>Sound (passes): a dead letter at max attempts frees the orderly queue.</summary>
    [Fact]
    public async Task A_dead_letter_at_max_attempts_frees_the_orderly_queue()
    {
        await using var h = await EngineHarness.StartAsync(o => o with { MaxDeliveryAttempts = 2 });
        await SetOrder(h, "g", GroupOrder.Orderly);
        await Send(h, "m0", queue: 0);
        await Send(h, "m1", queue: 0);
        Assert.Equal("m0", Assert.Single(await h.ReceiveAsync("g", "t", batch: 1, invisible: TimeSpan.FromSeconds(10))).Text());
        h.Clock.Advance(TimeSpan.FromSeconds(11)); h.Engine.RunSweep();
        Assert.Equal("m0", Assert.Single(await h.ReceiveAsync("g", "t", batch: 1, invisible: TimeSpan.FromSeconds(10))).Text());
        h.Clock.Advance(TimeSpan.FromSeconds(11)); h.Engine.RunSweep();   // attempt 2 = max: dead-lettered
        Assert.Equal("m1", Assert.Single(await h.ReceiveAsync("g", "t", batch: 10)).Text());
    }

    /// <summary>Sound (passes): switched to orderly with two leases live on a queue, the queue waits for both.</summary>
    [Fact]
    public async Task A_switch_to_orderly_holds_the_queue_until_the_leases_in_flight_end()
    {
        await using var h = await EngineHarness.StartAsync();
        await SetOrder(h, "g", GroupOrder.Concurrent);
        for (int i = 0; i < 3; i++) await Send(h, $"m{i}", queue: 0);
        var a = Assert.Single(await h.ReceiveAsync("g", "t", batch: 1));
        var b = Assert.Single(await h.ReceiveAsync("g", "t", batch: 1));
        await SetOrder(h, "g", GroupOrder.Orderly);
        Assert.Empty(await h.ReceiveAsync("g", "t", batch: 10));
        Assert.True((await h.Engine.AckAsync("g", "t", b.ReceiptHandle)).IsOk);
        Assert.Empty(await h.ReceiveAsync("g", "t", batch: 10));
        Assert.True((await h.Engine.AckAsync("g", "t", a.ReceiptHandle)).IsOk);
        Assert.Equal("m2", Assert.Single(await h.ReceiveAsync("g", "t", batch: 10)).Text());
    }

    private static int Hash(string s)
    {
        uint h = 2166136261;
        foreach (var c in s) { h ^= c; h *= 16777619; }
        return (int)(h & 0x7FFFFFFF);
    }
}
