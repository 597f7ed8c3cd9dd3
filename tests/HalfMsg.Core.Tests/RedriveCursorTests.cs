using HalfMsg.Broker.Core;
using HalfMsg.Broker.Core.Model;

namespace HalfMsg.Core.Tests;

/// <summary>
/// The internal cursors a re-drive reads <c>%DLQ%&lt;group&gt;</c> with (<c>%REDRIVE%&lt;group&gt;</c> and
/// <c>%REDRIVE%&lt;group&gt;|&lt;topic&gt;</c>): a failed re-drive must not strand or dead-letter the dead letters, and
/// two re-drives of one group at once must not put the same dead letter back twice (review 2026-12-05, redelivery).
/// </summary>
public sealed class RedriveCursorTests
{
    private static async Task Expire(EngineHarness h, TimeSpan by)
    {
        h.Clock.Advance(by);
        h.Engine.RunSweep();
        await Task.Yield();
    }

    /// <summary>Group A lets one message of t1 and one of t2 run out of attempts into <c>%DLQ%A</c>.</summary>
    private static async Task TwoDeadLettersForAAsync(EngineHarness h)
    {
        Assert.True((await h.Engine.SendAsync(h.Draft("t1", "m1"))).IsOk);
        Assert.True((await h.Engine.SendAsync(h.Draft("t2", "m2"))).IsOk);
        for (int i = 0; i < 3; i++)
        {
            Assert.NotEmpty(await h.ReceiveAsync("A", "t1", invisible: TimeSpan.FromSeconds(1)));
            Assert.NotEmpty(await h.ReceiveAsync("A", "t2", invisible: TimeSpan.FromSeconds(1)));
            await Expire(h, TimeSpan.FromSeconds(2));
        }
        Assert.Equal(2, (await h.ReceiveCountWhenVisibleAsync("ops", "%DLQ%A", 2)).Count);
    }

    /// <summary>
    /// Finding 1: a dead letter whose put-back keeps failing (its topic was deleted and auto-creation is off) cost the
    /// re-drive cursor one delivery attempt per call; so did the other dead letters of its batch, left leased. After
    /// MaxDeliveryAttempts calls the cursor's own lease expiry dead-lettered them into %DLQ%%REDRIVE%A: an unfiltered
    /// re-drive never offered them again, even once the topic existed again.
    /// </summary>
    [Fact]
    public async Task A_dead_letter_that_failed_to_redrive_repeatedly_is_not_moved_out_of_reach_of_later_redrives()
    {
        await using var h = await EngineHarness.StartAsync(o => o with { MaxDeliveryAttempts = 3, AutoCreateTopics = true });
        await TwoDeadLettersForAAsync(h);

        // t1 is deleted; with auto-creation off, putting m1 back fails.
        Assert.True((await h.Engine.DeleteTopicAsync("t1")).IsOk);
        await h.RestartAsync(o => o with { AutoCreateTopics = false });
        int moved = 0;
        for (int call = 0; call < 3; call++)
        {
            var r = await h.Engine.RedriveDeadLettersAsync("A", null, 100);
            moved += r.Redriven;
            Assert.True(r.Error.IsOk, r.Error.ToString()); // m1 is left (since 2026-12-06 the re-drive goes on past it)
            Assert.Equal(1, r.NotRedriven);
            await Expire(h, TimeSpan.FromMinutes(2)); // the cursor's leases (1 min) end
        }
        // The topic is back: an operator re-drives again.
        Assert.True((await h.Engine.CreateTopicAsync("t1")).Error.IsOk);
        var last = await h.Engine.RedriveDeadLettersAsync("A", null, 100);
        Assert.True(last.Error.IsOk, last.Error.ToString());
        Assert.True(h.Engine.QueueCount("%DLQ%%REDRIVE%A") == 0, "the cursor dead-lettered them into %DLQ%%REDRIVE%A");
        Assert.Equal(2, moved + last.Redriven);
    }

    /// <summary>
    /// Finding 1, the batch: a re-drive that meets a dead letter it cannot put back releases what it still held of its
    /// batch at once, so a later re-drive is offered all of them without waiting for the cursor's lease to end; after a
    /// replay of the log too (the sweep a start runs, no time passed). Until 2026-12-06 the re-drive stopped there with
    /// the error; now it leaves that letter (counted, with why) and goes on, and releases the letter too.
    /// </summary>
    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public async Task A_failed_redrive_leaves_no_other_dead_letter_of_its_batch_leased(bool restartBetween)
    {
        await using var h = await EngineHarness.StartAsync(o => o with { MaxDeliveryAttempts = 3, AutoCreateTopics = true });
        await TwoDeadLettersForAAsync(h);
        Assert.True((await h.Engine.DeleteTopicAsync("t1")).IsOk);
        await h.RestartAsync(o => o with { AutoCreateTopics = false });

        int moved = 0;
        for (int call = 0; call < 2; call++) // the clock stands still: nothing may wait for a lease to end
        {
            var r = await h.Engine.RedriveDeadLettersAsync("A", null, 100);
            moved += r.Redriven;
            Assert.True(r.Error.IsOk, r.Error.ToString());
            var why = Assert.Single(r.NotRedrivenLetters);
            Assert.Equal((BrokerStatus.TopicNotFound, "t1"), (why.Status, why.Target));
            if (restartBetween)
            {
                await h.RestartAsync(o => o with { AutoCreateTopics = false });
                await Expire(h, TimeSpan.Zero); // the sweep the sweeper loop runs on start
            }
        }
        Assert.True((await h.Engine.CreateTopicAsync("t1")).Error.IsOk);
        var last = await h.Engine.RedriveDeadLettersAsync("A", null, 100);
        Assert.True(last.Error.IsOk, last.Error.ToString());
        Assert.Equal(2, moved + last.Redriven); // m2 by whichever call met it before m1, m1 by the last
        Assert.Equal(0, h.Engine.QueueCount("%DLQ%%REDRIVE%A"));
    }

    /// <summary>Finding 2: two re-drives of one group at once, one filtered by the origin topic and one not: each took
    /// the same dead letter on its own cursor, and each put it back; the slower reported 0 re-driven.</summary>
    [Fact]
    public async Task Concurrent_filtered_and_unfiltered_redrives_put_a_dead_letter_back_once()
    {
        await using var h = await EngineHarness.StartAsync(o => o with { MaxDeliveryAttempts = 1 });
        for (int i = 0; i < 20; i++) Assert.True((await h.Engine.SendAsync(h.Draft("t", "m" + i))).IsOk);
        Assert.Equal(20, (await h.ReceiveAsync("A", "t", invisible: TimeSpan.FromSeconds(1))).Count);
        await Expire(h, TimeSpan.FromSeconds(2));
        Assert.NotEmpty(await h.ReceiveWhenVisibleAsync("ops", "%DLQ%A"));
        var both = await Task.WhenAll(
            Task.Run(async () => await h.Engine.RedriveDeadLettersAsync("A", "t", 100)),
            Task.Run(async () => await h.Engine.RedriveDeadLettersAsync("A", null, 100)));
        var again = new List<DeliveredMessage>();
        for (int i = 0; i < 5; i++) again.AddRange(await h.ReceiveAsync("A", "t", batch: 100));
        Assert.True(20 == again.Count, $"A receives {again.Count} re-driven messages for 20 dead letters ({both[0].Redriven} + {both[1].Redriven} counted; errors {both[0].Error} / {both[1].Error})");
        Assert.True(both[0].Error.IsOk, both[0].Error.ToString());
        Assert.True(both[1].Error.IsOk, both[1].Error.ToString());
        Assert.Equal(20, both[0].Redriven + both[1].Redriven);
        Assert.Equal(20, again.Select(m => m.Message.MessageId).Distinct().Count());
    }

    /// <summary>
    /// A cursor's name can be the same for two groups once names carry '|' (which RocketMQ names allow, and gRPC
    /// namespaces too since 2026-12-06, as in <c>MQ_INST_1|tenant</c>): the unfiltered cursor of group
    /// <c>MQ_INST_1|tenant%g</c> and the filtered cursor of group <c>MQ_INST_1</c> for topic <c>tenant%g</c> are both
    /// <c>%REDRIVE%MQ_INST_1|tenant%g</c>. A cursor only ever reads its own group's dead-letter topic, and its progress is
    /// kept per (cursor, topic), so the two share nothing: each re-drive puts back its own group's dead letter, once.
    /// </summary>
    [Fact]
    public async Task Redrive_cursors_whose_names_meet_across_groups_with_a_bar_keep_apart()
    {
        const string nsGroup = "MQ_INST_1|tenant%g", nsTopic = "MQ_INST_1|tenant%t";
        const string plainGroup = "MQ_INST_1", plainTopic = "tenant%g";
        Assert.Equal(BrokerEngine.RedrivePrefix + nsGroup, BrokerEngine.RedrivePrefix + plainGroup + "|" + plainTopic);
        await using var h = await EngineHarness.StartAsync(o => o with { MaxDeliveryAttempts = 1 });
        Assert.True((await h.Engine.SendAsync(h.Draft(nsTopic, "ns-dead"))).IsOk);
        Assert.True((await h.Engine.SendAsync(h.Draft(plainTopic, "plain-dead"))).IsOk);
        Assert.Single(await h.ReceiveAsync(nsGroup, nsTopic, invisible: TimeSpan.FromSeconds(1)));
        Assert.Single(await h.ReceiveAsync(plainGroup, plainTopic, invisible: TimeSpan.FromSeconds(1)));
        await Expire(h, TimeSpan.FromSeconds(2));
        Assert.Single(await h.ReceiveWhenVisibleAsync("ops", "%DLQ%" + nsGroup));
        Assert.Single(await h.ReceiveWhenVisibleAsync("ops", "%DLQ%" + plainGroup));

        var ns = await h.Engine.RedriveDeadLettersAsync(nsGroup, null, 100);
        Assert.True(ns.Error.IsOk, ns.Error.ToString());
        Assert.Equal((1, 0), (ns.Redriven, ns.Skipped));
        var plain = await h.Engine.RedriveDeadLettersAsync(plainGroup, plainTopic, 100);
        Assert.True(plain.Error.IsOk, plain.Error.ToString());
        Assert.Equal((1, 0), (plain.Redriven, plain.Skipped));
        // Each put-back was also recorded for its sibling cursor: nothing is put back a second time.
        Assert.Equal((0, 0), ((await h.Engine.RedriveDeadLettersAsync(nsGroup, nsTopic, 100)).Redriven, (await h.Engine.RedriveDeadLettersAsync(plainGroup, null, 100)).Redriven));

        Assert.Equal(["ns-dead"], (await h.ReceiveAsync(nsGroup, nsTopic)).Select(m => m.Text()));
        Assert.Equal(["plain-dead"], (await h.ReceiveAsync(plainGroup, plainTopic)).Select(m => m.Text()));
    }
}
