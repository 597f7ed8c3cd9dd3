using System.Text;
using HalfMsg.Broker.Core;
using HalfMsg.Broker.Core.Delivery;
using HalfMsg.Broker.Core.Model;

namespace HalfMsg.Core.Tests;

/// <summary>The pull (offset) model of Remoting consumers: reads by offset, committed offsets, the retry ladder.</summary>
public sealed class PullTests
{
    private static string Text(PulledMessage m) => Encoding.UTF8.GetString(m.Message.Body.Span);

    [Fact]
    public async Task Pull_reads_a_queue_by_offset_with_min_max_and_reports_a_bad_offset_as_moved()
    {
        await using var h = await EngineHarness.StartAsync();
        for (int i = 0; i < 3; i++) await h.Engine.SendAsync(h.Draft("T", $"m{i}").WithQueue(0));
        var r = await h.Engine.PullAsync("T", 0, 1, 32, TagFilter.All, TimeSpan.Zero);
        Assert.Equal(PullStatus.Found, r.Status);
        Assert.Equal(["m1", "m2"], r.Messages.Select(Text));
        Assert.Equal((3L, 0L, 3L), (r.NextBeginOffset, r.MinOffset, r.MaxOffset));
        Assert.Equal([1L, 2L], r.Messages.Select(m => m.Message.QueueOffset));

        var caughtUp = await h.Engine.PullAsync("T", 0, 3, 32, TagFilter.All, TimeSpan.Zero);
        Assert.Equal((PullStatus.NoNewMessage, 3L), (caughtUp.Status, caughtUp.NextBeginOffset));
        var moved = await h.Engine.PullAsync("T", 0, 7, 32, TagFilter.All, TimeSpan.Zero);
        Assert.Equal((PullStatus.OffsetMoved, 3L), (moved.Status, moved.NextBeginOffset));
        Assert.Equal(PullStatus.NoSuchQueue, (await h.Engine.PullAsync("T", 9, 0, 32, TagFilter.All, TimeSpan.Zero)).Status);
        Assert.Equal(PullStatus.NoSuchTopic, (await h.Engine.PullAsync("Nope", 0, 0, 32, TagFilter.All, TimeSpan.FromSeconds(30))).Status);
    }

    /// <summary>
    /// A pull holds its bodies in memory and answers them in one Remoting frame, and the Java 4 client drops a
    /// connection whose frame exceeds 16 MiB (then pulls the same offset again, for ever). So a pull stops at the same
    /// byte budget as a receive, always with at least one message, and the next pull starts where it stopped.
    /// </summary>
    /// <summary>Room of a fixed size; counts what it holds (a pull's answer room, as a Remoting connection's budget).</summary>
    private sealed class Room(long limit) : IDeliveryAllowance
    {
        public long Held;
        public int Asked;

        public bool TryTake(long bytes)
        {
            Asked++;
            if (Held + bytes > limit) return false;
            Held += bytes;
            return true;
        }

        public void Return(long bytes) => Held -= bytes;
    }

    /// <summary>
    /// A pull's room for its answer is taken before each body is read (a Remoting connection's in-flight budget): the
    /// pull stops at the first message without room and the next starts there; with no room for the first it answers
    /// NoRoom at once, even with a long poll; room taken for a message its SQL filter rejects goes back.
    /// </summary>
    [Fact]
    public async Task A_pull_takes_room_for_each_message_before_reading_it_and_stops_at_the_first_without_room()
    {
        await using var h = await EngineHarness.StartAsync();
        for (int i = 0; i < 6; i++)
            await h.Engine.SendAsync(new MessageDraft { Topic = "big", MessageId = h.NextId(), Body = new byte[4000], QueueId = 0, Properties = new Dictionary<string, string> { ["n"] = $"{i}" } });
        var room = new Room(10_000);
        var first = await h.Engine.PullAsync("big", 0, 0, 32, TagFilter.All, TimeSpan.Zero, allowance: room);
        Assert.Equal(PullStatus.Found, first.Status);
        Assert.Equal(2, first.Messages.Count); // 2 x ~4 KB fit 10 KB, the third does not
        Assert.Equal(2L, first.NextBeginOffset);
        Assert.InRange(room.Held, 8000, 10_000);

        var full = await h.Engine.PullAsync("big", 0, 2, 32, TagFilter.All, TimeSpan.FromMinutes(5), allowance: room).AsTask().WaitAsync(TimeSpan.FromSeconds(30));
        Assert.Equal((PullStatus.NoRoom, 2L), (full.Status, full.NextBeginOffset));
        Assert.Empty(full.Messages);

        // The filter rejects offsets 2 and 3 after they are read: their room goes back, and 4 and 5 fit.
        var filtered = new Room(10_000);
        var matched = await h.Engine.PullAsync("big", 0, 2, 32, TagFilter.All, TimeSpan.Zero, sql: SqlFilter.Parse("n IN ('4', '5')"), allowance: filtered);
        Assert.Equal([4L, 5L], matched.Messages.Select(m => m.Message.QueueOffset));
        Assert.Equal(6L, matched.NextBeginOffset);
        Assert.InRange(filtered.Held, 8000, 10_000); // the room of 4 and 5 only
    }

    [Fact]
    public async Task A_pull_stops_at_the_byte_budget_but_always_returns_one_message()
    {
        await using var h = await EngineHarness.StartAsync(o => o with { ReceiveByteBudget = 10_000 });
        for (int i = 0; i < 10; i++) await h.Engine.SendAsync(new MessageDraft { Topic = "big", MessageId = h.NextId(), Body = new byte[4000], QueueId = 0 });
        var first = await h.Engine.PullAsync("big", 0, 0, 32, TagFilter.All, TimeSpan.Zero);
        Assert.InRange(first.Messages.Count, 1, 3);                // 3 × ~4 KB reaches the 10 KB budget
        Assert.Equal(first.Messages.Count, first.NextBeginOffset);
        long offset = first.NextBeginOffset;
        while (offset < 10)
        {
            var next = await h.Engine.PullAsync("big", 0, offset, 32, TagFilter.All, TimeSpan.Zero);
            Assert.InRange(next.Messages.Count, 1, 3);
            Assert.Equal(offset, next.Messages[0].Message.QueueOffset);
            offset = next.NextBeginOffset;
        }

        await using var h2 = await EngineHarness.StartAsync(o => o with { ReceiveByteBudget = 100 });
        for (int i = 0; i < 2; i++) await h2.Engine.SendAsync(new MessageDraft { Topic = "big", MessageId = h2.NextId(), Body = new byte[4000], QueueId = 0 });
        var one = await h2.Engine.PullAsync("big", 0, 0, 32, TagFilter.All, TimeSpan.Zero);
        Assert.Single(one.Messages);
        Assert.Equal(1L, one.NextBeginOffset);
    }

    /// <summary>
    /// A filtered pull scans a bounded number of entries per request. When the bound stops it with nothing matching
    /// and more entries behind, it answers at once with where it stopped (the client pulls again from there), instead of
    /// waiting out its long poll: a filtered consumer behind a million non-matching messages moved about 8,000 entries
    /// per 15-30 s poll.
    /// </summary>
    [Fact]
    public async Task A_filtered_pull_stopped_by_its_scan_bound_answers_at_once_with_where_it_stopped()
    {
        await using var h = await EngineHarness.StartAsync();
        const int skipped = 4200;
        for (int i = 0; i < skipped; i += 200)
            await Task.WhenAll(Enumerable.Range(i, 200).Select(n => h.Engine.SendAsync(h.Draft("T", $"b{n}", tag: "B").WithQueue(0)).AsTask()));
        await h.Engine.SendAsync(h.Draft("T", "wanted", tag: "A").WithQueue(0));
        Assert.True(TagFilter.TryParse("A", out var onlyA, out _));

        using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(60)); // the fake clock never ends a long poll
        long offset = 0;
        var pulls = 0;
        PullResult r;
        do
        {
            r = await h.Engine.PullAsync("T", 0, offset, 32, onlyA, TimeSpan.FromHours(1), cts.Token);
            Assert.True(r.NextBeginOffset > offset || r.Status == PullStatus.Found, $"no progress at {offset}");
            offset = r.NextBeginOffset;
            pulls++;
        }
        while (r.Status != PullStatus.Found);
        Assert.Equal("wanted", Text(Assert.Single(r.Messages)));
        Assert.InRange(pulls, 2, 3);
    }

    /// <summary>
    /// The retry topic <c>%RETRY%&lt;group&gt;</c> is the broker's, as the dead-letter topic is: it exists whether or
    /// not producers may create topics. With <c>--auto-create-topics false</c> a send-back (and the Java client's own
    /// fallback, a send to the retry topic) failed with TopicNotFound, so a failing message was retried in the client for
    /// ever and never reached the dead-letter topic.
    /// </summary>
    [Fact]
    public async Task Send_back_works_when_producers_may_not_create_topics()
    {
        await using var h = await EngineHarness.StartAsync(o => o with { AutoCreateTopics = false });
        Assert.Equal(BrokerStatus.TopicNotFound, (await h.Engine.SendAsync(h.Draft("T", "before"))).Error.Status);
        // An operator's explicit creation works whatever the setting (it was refused too: no topic could exist).
        Assert.True((await h.Engine.CreateTopicAsync("T")).Error.IsOk);
        Assert.True((await h.Engine.SendAsync(h.Draft("T", "fail").WithQueue(0))).IsOk);
        var first = Assert.Single((await h.Engine.PullAsync("T", 0, 0, 32, TagFilter.All, TimeSpan.Zero)).Messages);
        var back = await h.Engine.SendBackAsync("G", first.PhysicalOffset, 0, maxReconsumeTimes: 2, "T");
        Assert.True(back.Error.IsOk, back.Error.ToString());
        Assert.Equal("%RETRY%G", back.Topic);
        Assert.True((await h.Engine.SendAsync(h.Draft("%RETRY%G", "fallback"))).IsOk);
        Assert.Equal(BrokerStatus.TopicNotFound, (await h.Engine.SendAsync(h.Draft("Other", "x"))).Error.Status);
    }

    [Fact]
    public async Task A_half_message_is_not_pullable_until_committed()
    {
        await using var h = await EngineHarness.StartAsync();
        string tx = await h.SendHalfAsync("T", "half");
        foreach (int q in Enumerable.Range(0, 4))
            Assert.Empty((await h.Engine.PullAsync("T", q, 0, 32, TagFilter.All, TimeSpan.Zero)).Messages);
        await h.Engine.EndTransactionAsync(tx, null, Broker.Core.Model.TransactionResolution.Commit, Broker.Core.Model.DecisionSource.Client);
        var all = new List<PulledMessage>();
        foreach (int q in Enumerable.Range(0, 4)) all.AddRange((await h.Engine.PullAsync("T", q, 0, 32, TagFilter.All, TimeSpan.Zero)).Messages);
        Assert.Equal("half", Text(Assert.Single(all)));
    }

    [Fact]
    public async Task A_parked_pull_is_woken_when_a_message_becomes_visible()
    {
        await using var h = await EngineHarness.StartAsync();
        await h.Engine.SendAsync(h.Draft("T", "first").WithQueue(1));
        var parked = h.Engine.PullAsync("T", 1, 1, 32, TagFilter.All, TimeSpan.FromMinutes(5)).AsTask();
        Assert.False(parked.IsCompleted);
        await h.Engine.SendAsync(h.Draft("T", "second").WithQueue(1));
        var r = await parked.WaitAsync(TimeSpan.FromSeconds(10));
        Assert.Equal("second", Text(Assert.Single(r.Messages)));
    }

    [Fact]
    public async Task Send_back_waits_RocketMQs_delay_ladder_then_dead_letters_after_the_maximum()
    {
        await using var h = await EngineHarness.StartAsync();
        await h.Engine.SendAsync(h.Draft("T", "fail").WithQueue(0));
        var first = Assert.Single((await h.Engine.PullAsync("T", 0, 0, 32, TagFilter.All, TimeSpan.Zero)).Messages);

        // First failure: level 3 + 0 = 10 s.
        var back = await h.Engine.SendBackAsync("G", first.PhysicalOffset, 0, maxReconsumeTimes: 2, "T");
        Assert.True(back.Error.IsOk, back.Error.ToString());
        Assert.Equal(("%RETRY%G", false), (back.Topic, back.DeadLettered));
        h.Clock.Advance(TimeSpan.FromSeconds(9.9));
        h.Engine.RunSweep();
        Assert.Equal(0, Indexed(h, "%RETRY%G"));
        h.Clock.Advance(TimeSpan.FromSeconds(0.2));
        h.Engine.RunSweep();
        var retried = await Eventually(() => PullAll(h, "%RETRY%G"), 1);
        Assert.Equal(1, retried[0].ReconsumeTimes);
        Assert.Equal("T", retried[0].Message.Properties["RETRY_TOPIC"]);

        // Second failure: level 3 + 1 = 30 s.
        await h.Engine.SendBackAsync("G", retried[0].PhysicalOffset, 0, 2, "T");
        h.Clock.Advance(TimeSpan.FromSeconds(29.9));
        h.Engine.RunSweep();
        Assert.Equal(1, Indexed(h, "%RETRY%G"));
        h.Clock.Advance(TimeSpan.FromSeconds(0.2));
        h.Engine.RunSweep();
        var twice = await Eventually(() => PullAll(h, "%RETRY%G"), 2);
        Assert.Equal(2, twice[1].ReconsumeTimes);

        // Third failure: reconsumeTimes 2 reached the maximum 2 → %DLQ%G at once.
        var dead = await h.Engine.SendBackAsync("G", twice[1].PhysicalOffset, 0, 2, "T");
        Assert.True(dead.DeadLettered);
        Assert.Equal("fail", Text(Assert.Single(await PullAll(h, "%DLQ%G"))));
    }

    [Fact]
    public async Task Committed_offsets_survive_a_restart_from_the_log_and_from_a_checkpoint()
    {
        await using var h = await EngineHarness.StartAsync();
        await h.Engine.SendAsync(h.Draft("T", "x").WithQueue(2));
        Assert.True((await h.Engine.CommitConsumerOffsetAsync("G", "T", 2, 1)).IsOk);
        Assert.False((await h.Engine.CommitConsumerOffsetAsync("G", "Nope", 0, 1)).IsOk);
        await h.RestartAsync();                                  // clean: from the checkpoint
        Assert.Equal(1L, h.Engine.QueryConsumerOffset("G", "T", 2));
        Assert.True((await h.Engine.CommitConsumerOffsetAsync("G", "T", 2, 0)).IsOk);
        await h.Engine.DisposeAsync();
        Directory.Delete(Path.Combine(h.DataDir, "checkpoints"), recursive: true);
        await h.RestartAfterDeletedCheckpointAsync();            // replay of the whole log
        Assert.Equal(0L, h.Engine.QueryConsumerOffset("G", "T", 2));
        Assert.Null(h.Engine.QueryConsumerOffset("Other", "T", 2));
    }

    /// <summary>Entries indexed into the topic's queues, visible or not yet (a premature release would show here at once).</summary>
    private static long Indexed(EngineHarness h, string topic)
    {
        long n = 0;
        for (int q = 0; q < h.Engine.QueueCount(topic); q++)
            if (h.Engine.TryGetQueueOffsets(topic, q, out long min, out long max)) n += max - min;
        return n;
    }

    private static async Task<List<PulledMessage>> PullAll(EngineHarness h, string topic)
    {
        var all = new List<PulledMessage>();
        for (int q = 0; q < Math.Max(1, h.Engine.QueueCount(topic)); q++)
            all.AddRange((await h.Engine.PullAsync(topic, q, 0, 32, TagFilter.All, TimeSpan.Zero)).Messages);
        return all;
    }

    /// <summary>Released entries become visible once the log commit covers them (its own loop); wait for that.</summary>
    private static async Task<List<PulledMessage>> Eventually(Func<Task<List<PulledMessage>>> probe, int count)
    {
        var deadline = DateTime.UtcNow.AddSeconds(10);
        var last = await probe();
        while (last.Count < count && DateTime.UtcNow < deadline)
        {
            await Task.Delay(20);
            last = await probe();
        }
        Assert.Equal(count, last.Count);
        return last;
    }

    /// <summary>
    /// A half's body cannot be sent back (or viewed) by its log address unless its transaction committed. Until
    /// 2026-12-05 a CONSUMER_SEND_MSG_BACK of a pending or rolled-back half's address copied it into the group's retry
    /// or dead-letter topic, where anyone could pull it and a re-drive put it on its topic (found by review; failed).
    /// </summary>
    [Fact]
    public async Task A_half_is_sent_back_or_viewed_by_offset_only_once_committed()
    {
        await using var h = await EngineHarness.StartAsync();
        string pending = await h.SendHalfAsync("T", "pending-half");
        string rolledBack = await h.SendHalfAsync("T", "rolled-back-half");
        string committed = await h.SendHalfAsync("T", "committed-half");
        var addresses = new[] { pending, rolledBack, committed }.Select(tx => h.Engine.FindTransaction(tx)!.LogAddress).ToArray();
        Assert.True((await h.Engine.EndTransactionAsync(rolledBack, null, TransactionResolution.Rollback, DecisionSource.Client)).IsOk);
        Assert.True((await h.Engine.EndTransactionAsync(committed, null, TransactionResolution.Commit, DecisionSource.Client)).IsOk);

        foreach (long address in addresses[..2])
        {
            Assert.Null(await h.Engine.ReadMessageAtAsync(address));
            var back = await h.Engine.SendBackAsync("G", address, -1, 16, null);
            Assert.Equal(BrokerStatus.BadRequest, back.Error.Status);
        }
        Assert.Equal("committed-half", Encoding.UTF8.GetString((await h.Engine.ReadMessageAtAsync(addresses[2]))!.Body.Span));
        Assert.True((await h.Engine.SendBackAsync("G", addresses[2], -1, 16, null)).Error.IsOk);
        Assert.True(h.Engine.TryGetQueueOffsets("%DLQ%G", 0, out _, out long max));
        Assert.Equal(1, max); // only the committed one reached the dead-letter topic
    }

    /// <summary>
    /// A delay message waiting for its time, or recalled, cannot be sent back by its log address: no consumer received
    /// it. Until late on 2026-12-06 a CONSUMER_SEND_MSG_BACK of its address copied it into the group's retry topic, where
    /// it was delivered at the retry's time, before its own, and whether recalled or not (found by review). Once it is
    /// delivered, a send-back works as for any message.
    /// </summary>
    [Fact]
    public async Task A_delay_message_not_yet_delivered_cannot_be_sent_back_by_offset()
    {
        await using var h = await EngineHarness.StartAsync(o => o with { QueuesPerTopic = 1 });
        long due = h.Clock.GetUtcNow().AddMinutes(10).ToUnixTimeMilliseconds();
        var waiting = await h.Engine.SendAsync(h.Draft("timers", "waiting", deliverAt: due));
        var recalled = await h.Engine.SendAsync(h.Draft("timers", "recalled", deliverAt: due));
        Assert.True(waiting.IsOk && recalled.IsOk);
        var (error, outcome) = await h.Engine.RecallDelayedAsync("timers", recalled.LogAddress, due, recalled.MessageId);
        Assert.True(error.IsOk, error.ToString());
        Assert.Equal(RecallOutcome.Recalled, outcome);

        foreach (long address in new[] { waiting.LogAddress, recalled.LogAddress })
        {
            var back = await h.Engine.SendBackAsync("G", address, 1, 16, null);
            Assert.Equal(BrokerStatus.BadRequest, back.Error.Status);
            // The recalled one is no message at all by offset since 2026-12-07 (RecalledSendBackTests), as a rolled-back half's body.
            Assert.Contains(address == waiting.LogAddress ? "not delivered yet" : "recalled delay message", back.Error.Message);
        }
        Assert.False(h.Engine.TryGetQueueOffsets("%RETRY%G", 0, out _, out long retries) && retries > 0, "nothing reached the retry topic");

        // At its time it is delivered; then a consumer that failed it sends it back.
        h.Clock.Advance(TimeSpan.FromMinutes(10));
        h.Engine.RunSweep();
        var pulled = (await h.Engine.PullAsync("timers", 0, 0, 32, TagFilter.All, TimeSpan.FromSeconds(30))).Messages;
        Assert.Equal(["waiting"], pulled.Select(m => Encoding.UTF8.GetString(m.Message.Body.Span)));
        Assert.True((await h.Engine.SendBackAsync("G", waiting.LogAddress, 1, 16, null)).Error.IsOk);
    }

    /// <summary>
    /// A retry message whose body retention moved to the tail (every pending delayed message's is moved by a cut) can be
    /// sent back again: a pull hands out the moved record's address, which until 2026-12-05 a send-back refused as "no
    /// message at commit log offset" (found by review; this test failed).
    /// </summary>
    [Fact]
    public async Task A_message_whose_body_retention_moved_can_be_sent_back()
    {
        await using var h = await EngineHarness.StartAsync();
        long at = h.Clock.GetUtcNow().AddHours(1).ToUnixTimeMilliseconds();
        Assert.True((await h.Engine.SendAsync(h.Draft("T", "delayed", deliverAt: at))).IsOk);
        await h.SendNormalAsync("filler", "f");
        Assert.True(await h.Engine.TruncateBeforeAsync(h.Engine.LogTailAddress) >= 1);
        h.Clock.Advance(TimeSpan.FromHours(1));
        h.Engine.RunSweep();
        var all = new List<PulledMessage>();
        await Conditions.WaitUntil(() =>
        {
            all.Clear();
            foreach (int q in Enumerable.Range(0, h.Engine.QueueCount("T")))
                all.AddRange(h.Engine.PullAsync("T", q, 0, 32, TagFilter.All, TimeSpan.Zero).AsTask().Result.Messages);
            return all.Count == 1;
        }, () => $"{all.Count} pulled");
        var read = await h.Engine.ReadMessageAtAsync(all[0].PhysicalOffset);
        Assert.Equal("delayed", read is null ? null : Encoding.UTF8.GetString(read.Body.Span));
        var back = await h.Engine.SendBackAsync("G", all[0].PhysicalOffset, 0, maxReconsumeTimes: 2, "T");
        Assert.True(back.Error.IsOk, back.Error.ToString());
    }

}

internal static class DraftExtensions
{
    public static Broker.Core.Model.MessageDraft WithQueue(this Broker.Core.Model.MessageDraft d, int queue) => new()
    {
        Topic = d.Topic, MessageId = d.MessageId, Tag = d.Tag, Keys = d.Keys, Properties = d.Properties, Body = d.Body,
        BornTimestampMs = d.BornTimestampMs, MessageGroup = d.MessageGroup, DeliveryTimestampMs = d.DeliveryTimestampMs, QueueId = queue,
    };
}

public sealed class TopicDeletionTests
{
    [Fact]
    public async Task A_deleted_topic_loses_its_queues_offsets_and_groups_and_stays_deleted_after_a_full_replay()
    {
        await using var h = await EngineHarness.StartAsync();
        await h.Engine.SendAsync(h.Draft("Del", "x").WithQueue(0));
        await h.Engine.CommitConsumerOffsetAsync("G", "Del", 0, 1);
        await h.ReceiveAsync("LeaseGroup", "Del");
        Assert.True((await h.Engine.DeleteTopicAsync("Del")).IsOk);
        Assert.Equal(Broker.Core.BrokerStatus.TopicNotFound, (await h.Engine.DeleteTopicAsync("Del")).Status);
        Assert.Equal(Broker.Core.BrokerStatus.IllegalTopic, (await h.Engine.DeleteTopicAsync("%DLQ%G")).Status);
        Assert.Equal(0, h.Engine.QueueCount("Del"));
        Assert.Null(h.Engine.QueryConsumerOffset("G", "Del", 0));
        Assert.Null(h.Engine.FindGroup("LeaseGroup"));

        await h.Engine.DisposeAsync();
        Directory.Delete(Path.Combine(h.DataDir, "checkpoints"), recursive: true);
        await h.RestartAfterDeletedCheckpointAsync();
        Assert.Equal(0, h.Engine.QueueCount("Del"));
        Assert.Null(h.Engine.QueryConsumerOffset("G", "Del", 0));
    }
}

/// <summary>Retention racing a pull: a normal event with a lagging consumer, not damage.</summary>
public sealed class PullRetentionRaceTests
{
    [Fact]
    public async Task Entries_a_cut_expires_between_the_pick_and_the_read_are_skipped_without_reporting_damage()
    {
        await using var h = await EngineHarness.StartAsync();
        await h.Engine.SendAsync(h.Draft("events", "m0").WithQueue(0));
        await h.Engine.SendAsync(h.Draft("events", "m1").WithQueue(0));
        long boundary = h.Engine.LogTailAddress;
        await h.Engine.SendAsync(h.Draft("events", "m2").WithQueue(0));
        int cuts = 0;
        h.Engine.BetweenReadLockHoldsForTests = async () =>
        {
            if (Interlocked.Increment(ref cuts) == 1) await h.Engine.TruncateBeforeAsync(boundary);
        };

        var r = await h.Engine.PullAsync("events", 0, 0, 32, TagFilter.All, TimeSpan.Zero);
        Assert.Equal(1, cuts);
        Assert.True(h.Engine.Health.Status == HalfMsg.Broker.Core.Diagnostics.HealthStatus.Healthy, string.Join("; ", h.Engine.Health.Reasons));
        Assert.Equal(["m2"], r.Messages.Select(m => Encoding.UTF8.GetString(m.Message.Body.Span)));
        Assert.Equal((PullStatus.Found, 3L), (r.Status, r.NextBeginOffset));
    }

    [Fact]
    public async Task A_pull_whose_every_picked_entry_expired_goes_on_from_the_new_front()
    {
        await using var h = await EngineHarness.StartAsync();
        await h.Engine.SendAsync(h.Draft("events", "m0").WithQueue(0));
        await h.Engine.SendAsync(h.Draft("events", "m1").WithQueue(0));
        long boundary = h.Engine.LogTailAddress;
        int cuts = 0;
        h.Engine.BetweenReadLockHoldsForTests = async () =>
        {
            if (Interlocked.Increment(ref cuts) == 1) await h.Engine.TruncateBeforeAsync(boundary);
        };

        var r = await h.Engine.PullAsync("events", 0, 0, 32, TagFilter.All, TimeSpan.Zero);
        Assert.True(h.Engine.Health.Status == HalfMsg.Broker.Core.Diagnostics.HealthStatus.Healthy, string.Join("; ", h.Engine.Health.Reasons));
        // Caught up at the new front: the next pull starts there.
        Assert.Equal((PullStatus.NoNewMessage, 2L, 2L, 2L), (r.Status, r.NextBeginOffset, r.MinOffset, r.MaxOffset));
    }
}

public sealed class ConsumerProgressTests
{
    [Fact]
    public async Task A_groups_progress_lists_its_committed_offsets_by_topic_and_queue_with_each_queues_max_offset()
    {
        await using var h = await EngineHarness.StartAsync();
        foreach (var topic in new[] { "b", "a", "gone" })
            for (int q = 0; q < 2; q++) Assert.True((await h.Engine.SendAsync(h.Draft(topic, "x").WithQueue(q))).IsOk);
        await h.Engine.SendAsync(h.Draft("a", "y").WithQueue(1));
        await h.Engine.CommitConsumerOffsetAsync("G", "b", 0, 1);
        await h.Engine.CommitConsumerOffsetAsync("G", "a", 1, 1);
        await h.Engine.CommitConsumerOffsetAsync("G", "a", 0, 1);
        await h.Engine.CommitConsumerOffsetAsync("G", "gone", 0, 1);
        await h.Engine.CommitConsumerOffsetAsync("Other", "a", 0, 1);
        Assert.True((await h.Engine.DeleteTopicAsync("gone")).IsOk);

        Assert.Equal([("a", 0, 1L, 1L), ("a", 1, 1L, 2L), ("b", 0, 1L, 1L)], h.Engine.ConsumerProgressOf("G"));
        Assert.Empty(h.Engine.ConsumerProgressOf("Nobody"));
    }
}
