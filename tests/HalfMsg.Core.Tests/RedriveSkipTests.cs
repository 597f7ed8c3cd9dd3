using HalfMsg.Broker.Core;
using HalfMsg.Broker.Core.Delivery;
using HalfMsg.Broker.Core.Model;

namespace HalfMsg.Core.Tests;

/// <summary>
/// A re-drive goes past a dead letter it cannot put back (its topic deleted with auto-creation off, its body too large
/// for the retry topic now): the letter stays in <c>%DLQ%&lt;group&gt;</c>, unacknowledged on the re-drive's cursor, is
/// counted with its reason in the answer, and the rest are put back. Until 2026-12-06 the first such letter stopped the
/// re-drive, and every later re-drive stopped at it again: one deleted topic held back every dead letter behind it.
/// </summary>
public sealed class RedriveSkipTests
{
    private static async Task Expire(EngineHarness h, TimeSpan by)
    {
        h.Clock.Advance(by);
        h.Engine.RunSweep();
        await Task.Yield();
    }

    /// <summary>
    /// Group A dead-letters one message of t1 first, then <paramref name="others"/> of t2, so the t1 letter is the oldest
    /// in <c>%DLQ%A</c> (the first a re-drive meets). Returns the t1 letter's message id.
    /// </summary>
    private static async Task<string> OneOnT1ThenOthersOnT2Async(EngineHarness h, int others)
    {
        string bad = (await h.Engine.SendAsync(h.Draft("t1", "bad"))).MessageId;
        Assert.Single(await h.ReceiveAsync("A", "t1", invisible: TimeSpan.FromSeconds(1)));
        await Expire(h, TimeSpan.FromSeconds(2));
        Assert.Single(await h.ReceiveWhenVisibleAsync("ops", "%DLQ%A"));
        for (int i = 0; i < others; i++) Assert.True((await h.Engine.SendAsync(h.Draft("t2", "ok" + i))).IsOk);
        Assert.Equal(others, (await h.ReceiveAsync("A", "t2", batch: 100, invisible: TimeSpan.FromSeconds(1))).Count);
        await Expire(h, TimeSpan.FromSeconds(2));
        Assert.Equal(others, (await h.ReceiveWhenVisibleAsync("ops", "%DLQ%A", batch: 100)).Count);
        return bad;
    }

    /// <summary>Everything A receives on a topic now (acknowledged), by body.</summary>
    private static async Task<List<string>> ReceiveAllAsync(EngineHarness h, string topic)
    {
        var all = new List<string>();
        while (await h.ReceiveAsync("A", topic, batch: 100) is { Count: > 0 } got)
        {
            all.AddRange(got.Select(m => m.Text()));
            foreach (var m in got) Assert.True((await h.Engine.AckAsync("A", topic, m.ReceiptHandle)).IsOk);
        }
        return all;
    }

    /// <summary>
    /// Ten dead letters, the oldest from a topic deleted since (auto-creation off): the re-drive puts back the nine,
    /// answers OK with 1 not re-driven and why, and the tenth stays in the dead-letter topic. A second re-drive meets it
    /// again (it was not acknowledged on the cursor) and leaves it again; once the topic exists again the next re-drive
    /// puts it back. Every message reaches A once. With a restart between the re-drives too (replayed from the log).
    /// </summary>
    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public async Task A_redrive_goes_past_a_dead_letter_whose_topic_is_gone_and_a_later_one_puts_it_back(bool restartBetween)
    {
        await using var h = await EngineHarness.StartAsync(o => o with { MaxDeliveryAttempts = 1, AutoCreateTopics = true });
        string bad = await OneOnT1ThenOthersOnT2Async(h, others: 9);
        Assert.True((await h.Engine.DeleteTopicAsync("t1")).IsOk);
        await h.RestartAsync(o => o with { AutoCreateTopics = false });

        var first = await h.Engine.RedriveDeadLettersAsync("A", null, 1000);
        Assert.True(first.Error.IsOk, first.Error.ToString());
        Assert.Equal((9, 0, 1), (first.Redriven, first.Skipped, first.NotRedriven));
        var why = Assert.Single(first.NotRedrivenLetters);
        Assert.Equal((bad, "t1", BrokerStatus.TopicNotFound), (why.MessageId, why.Target, why.Status));
        Assert.Contains("'t1' does not exist", why.Reason);
        // Still in the dead-letter topic, at its place.
        Assert.Equal("bad", (await h.Engine.ReadMessageAsync("%DLQ%A", 0, why.DeadLetterOffset))?.Body is { } body ? System.Text.Encoding.UTF8.GetString(body.Span) : null);

        if (restartBetween)
        {
            await h.RestartAsync(o => o with { AutoCreateTopics = false });
            await Expire(h, TimeSpan.Zero); // the sweep the sweeper loop runs on start
        }
        // The clock stands still: the letter is offered again at once, not after the cursor's lease.
        var second = await h.Engine.RedriveDeadLettersAsync("A", null, 1000);
        Assert.True(second.Error.IsOk, second.Error.ToString());
        Assert.Equal((0, 1), (second.Redriven, second.NotRedriven));

        Assert.True((await h.Engine.CreateTopicAsync("t1")).Error.IsOk);
        var third = await h.Engine.RedriveDeadLettersAsync("A", null, 1000);
        Assert.True(third.Error.IsOk, third.Error.ToString());
        Assert.Equal((1, 0), (third.Redriven, third.NotRedriven));
        Assert.Equal([bad], third.MessageIds);
        Assert.Empty(third.NotRedrivenLetters);

        Assert.Equal(Enumerable.Range(0, 9).Select(i => "ok" + i).Order(), (await ReceiveAllAsync(h, "t2")).Order());
        Assert.Equal(["bad"], await ReceiveAllAsync(h, "t1"));
        Assert.Equal(0, (await h.Engine.RedriveDeadLettersAsync("A", null, 1000)).Redriven);
        Assert.Equal(0, h.Engine.QueueCount("%DLQ%%REDRIVE%A"));
    }

    /// <summary>
    /// A filtered re-drive (--topic t1) leaves the letter on its own cursor the same way, and an unfiltered one after the
    /// topic is back puts it back once (the sibling cursor learns nothing from a letter left).
    /// </summary>
    [Fact]
    public async Task A_filtered_redrive_leaves_the_letter_for_an_unfiltered_one()
    {
        await using var h = await EngineHarness.StartAsync(o => o with { MaxDeliveryAttempts = 1, AutoCreateTopics = true });
        string bad = await OneOnT1ThenOthersOnT2Async(h, others: 2);
        Assert.True((await h.Engine.DeleteTopicAsync("t1")).IsOk);
        await h.RestartAsync(o => o with { AutoCreateTopics = false });

        var filtered = await h.Engine.RedriveDeadLettersAsync("A", "t1", 1000);
        Assert.True(filtered.Error.IsOk, filtered.Error.ToString());
        Assert.Equal((0, 2, 1), (filtered.Redriven, filtered.Skipped, filtered.NotRedriven));
        Assert.True((await h.Engine.CreateTopicAsync("t1")).Error.IsOk);
        var all = await h.Engine.RedriveDeadLettersAsync("A", null, 1000);
        Assert.True(all.Error.IsOk, all.Error.ToString());
        Assert.Equal((3, 0), (all.Redriven, all.NotRedriven));
        Assert.Contains(bad, all.MessageIds);
        Assert.Equal(0, (await h.Engine.RedriveDeadLettersAsync("A", "t1", 1000)).Redriven);
        Assert.Equal(["bad"], await ReceiveAllAsync(h, "t1"));
    }

    /// <summary>
    /// A Remoting consumer's dead letter goes into <c>%RETRY%G</c> as a new message, which the size limit now in force
    /// refuses (the broker restarted with a smaller <c>MaxMessageSize</c>): it is left with MessageTooLarge and the next
    /// one is put back; with the limit raised again, a later re-drive puts it back.
    /// </summary>
    [Fact]
    public async Task A_dead_letter_too_large_for_the_retry_topic_is_left_and_the_rest_put_back()
    {
        await using var h = await EngineHarness.StartAsync(o => o with { MaxDeliveryAttempts = 1 });
        Assert.True((await h.Engine.SendAsync(h.Draft("T", new string('x', 2000)).WithQueue(0))).IsOk);
        Assert.True((await h.Engine.SendAsync(h.Draft("T", "small").WithQueue(0))).IsOk);
        var pulled = (await h.Engine.PullAsync("T", 0, 0, 32, TagFilter.All, TimeSpan.Zero)).Messages;
        Assert.Equal(2, pulled.Count);
        foreach (var p in pulled)
            Assert.True((await h.Engine.SendBackAsync("G", p.PhysicalOffset, 0, maxReconsumeTimes: 0, "T")).DeadLettered);
        int limit = h.Options.MaxMessageSize;
        await h.RestartAsync(o => o with { MaxMessageSize = 1000 });

        var first = await h.Engine.RedriveDeadLettersAsync("G", null, 100);
        Assert.True(first.Error.IsOk, first.Error.ToString());
        Assert.Equal((1, 1), (first.Redriven, first.NotRedriven));
        var why = Assert.Single(first.NotRedrivenLetters);
        Assert.Equal(("%RETRY%G", BrokerStatus.MessageTooLarge), (why.Target, why.Status));
        Assert.Equal(pulled[0].Message.MessageId, why.MessageId);

        await h.RestartAsync(o => o with { MaxMessageSize = limit });
        await Expire(h, TimeSpan.Zero); // the sweep the sweeper loop runs on start
        var second = await h.Engine.RedriveDeadLettersAsync("G", null, 100);
        Assert.True(second.Error.IsOk, second.Error.ToString());
        Assert.Equal((1, 0), (second.Redriven, second.NotRedriven));
        var retried = (await h.Engine.PullAsync("%RETRY%G", 0, 0, 32, TagFilter.All, TimeSpan.Zero)).Messages;
        Assert.Equal(2, retried.Count);
        Assert.Equal(pulled.Select(p => p.Message.MessageId).Order(), retried.Select(p => p.Message.MessageId).Order());
    }

    /// <summary>
    /// A dead letter whose stored record cannot be read (its body damaged on disk below the checkpoint, so replay did not
    /// see it): the re-drive's receive could not hand it over, so it stayed leased on the cursor, out of the answer and
    /// out of the next re-drives for the lease's minute. Now it is counted as not re-driven with why, released when
    /// the call ends, and offered to the next re-drive again (never acknowledged: a repaired copy could still go back).
    /// </summary>
    [Fact]
    public async Task A_dead_letter_whose_record_cannot_be_read_is_counted_and_left_for_the_next_redrive()
    {
        await using var h = await EngineHarness.StartAsync(o => o with { MaxDeliveryAttempts = 1 });
        Assert.True((await h.Engine.CreateTopicAsync("t1")).Error.IsOk); // so the next record is the message's
        long damaged = h.Engine.LogTailAddress;
        Assert.True((await h.Engine.SendAsync(h.Draft("t1", "bad"))).IsOk);
        Assert.Single(await h.ReceiveAsync("A", "t1", invisible: TimeSpan.FromSeconds(1)));
        await Expire(h, TimeSpan.FromSeconds(2));
        Assert.Single(await h.ReceiveWhenVisibleAsync("ops", "%DLQ%A"));
        for (int i = 0; i < 2; i++) Assert.True((await h.Engine.SendAsync(h.Draft("t2", "ok" + i))).IsOk);
        Assert.Equal(2, (await h.ReceiveAsync("A", "t2", invisible: TimeSpan.FromSeconds(1))).Count);
        await Expire(h, TimeSpan.FromSeconds(2));
        Assert.Equal(2, (await h.ReceiveCountWhenVisibleAsync("ops", "%DLQ%A", 2)).Count);
        await h.RestartAsync();                                    // a checkpoint covers them: replay does not read the body
        await h.Engine.DisposeAsync();
        DamageTests.FlipPayloadByte(h, damaged);
        await h.RestartAfterDeletedCheckpointAsync();

        var first = await h.Engine.RedriveDeadLettersAsync("A", null, 100);
        Assert.True(first.Error.IsOk, first.Error.ToString());
        Assert.Equal((2, 1), (first.Redriven, first.NotRedriven));
        var why = Assert.Single(first.NotRedrivenLetters);
        Assert.Equal((0L, BrokerStatus.StorageFailure), (why.DeadLetterOffset, why.Status));
        Assert.Contains("could not be read", why.Reason);
        // The clock stands still: released, it is offered to the next re-drive at once, and left again.
        var second = await h.Engine.RedriveDeadLettersAsync("A", null, 100);
        Assert.True(second.Error.IsOk, second.Error.ToString());
        Assert.Equal((0, 1), (second.Redriven, second.NotRedriven));
        Assert.Equal(["ok0", "ok1"], (await ReceiveAllAsync(h, "t2")).Order());
    }
    /// <summary>Reports on the re-drive's own thread, as it puts each dead letter back.</summary>
    private sealed class OnEachPutBack(Action<int> report) : IProgress<int>
    {
        public void Report(int value) => report(value);
    }

    /// <summary>
    /// A re-drive that runs longer than its cursor's lease (a minute): the letter it left is offered to it again, tried
    /// again and left again, counted once, and the re-drive still ends once the rest are back.
    /// </summary>
    [Fact]
    public async Task A_letter_left_whose_lease_runs_out_during_the_redrive_is_counted_once()
    {
        await using var h = await EngineHarness.StartAsync(o => o with { MaxDeliveryAttempts = 1, AutoCreateTopics = true });
        await OneOnT1ThenOthersOnT2Async(h, others: 40); // more than one batch (32) behind it
        Assert.True((await h.Engine.DeleteTopicAsync("t1")).IsOk);
        await h.RestartAsync(o => o with { AutoCreateTopics = false });

        int expiredAt = 0;
        var r = await h.Engine.RedriveDeadLettersAsync("A", null, 1000, new OnEachPutBack(n =>
        {
            if (n != 5) return;
            // The leases this re-drive holds (the letter left among them) run out in the middle of it.
            h.Clock.Advance(TimeSpan.FromMinutes(2));
            h.Engine.RunSweep();
            expiredAt = n;
        }));
        Assert.Equal(5, expiredAt);
        Assert.True(r.Error.IsOk, r.Error.ToString());
        Assert.Equal((40, 1), (r.Redriven, r.NotRedriven));
        Assert.Single(r.NotRedrivenLetters);
        var back = await ReceiveAllAsync(h, "t2");
        Assert.Equal((40, 40), (back.Count, back.Distinct().Count())); // each once
    }

    /// <summary>
    /// Group A dead-letters <paramref name="stuck"/> messages of t1, then <paramref name="others"/> of t2, deletes t1 and
    /// restarts with auto-creation off: a re-drive cannot put the t1 letters back (the oldest, met first) and can put
    /// the t2 ones back.
    /// </summary>
    private static async Task StuckThenOthersAsync(EngineHarness h, int stuck, int others)
    {
        foreach (var (topic, n) in new[] { ("t1", stuck), ("t2", others) })
        {
            for (int i = 0; i < n; i++) Assert.True((await h.Engine.SendAsync(h.Draft(topic, topic + "-" + i))).IsOk);
            int leased = 0;
            while (leased < n) leased += (await h.ReceiveAsync("A", topic, batch: 1000, invisible: TimeSpan.FromSeconds(1))).Count;
            await Expire(h, TimeSpan.FromSeconds(2));
        }
        Assert.True(h.Engine.TryGetQueueOffsets("%DLQ%A", 0, out _, out long dead) && dead == stuck + others);
        if (stuck > 0) Assert.True((await h.Engine.DeleteTopicAsync("t1")).IsOk);
        await h.RestartAsync(o => o with { AutoCreateTopics = false });
        await Expire(h, TimeSpan.Zero); // the sweep the sweeper loop runs on start
    }

    /// <summary>
    /// A re-drive that runs past its cursor's lease (a minute; simulated: the clock moves 2 minutes at the first
    /// put-back) while it has left 63 letters: their leases run out and the next receive is offered only them. Until
    /// 2026-12-06 such a batch ended the re-drive ("nothing new behind them") with OK, and the 10 letters behind were
    /// never visited by it nor by any later re-drive that took as long (found by review). It ends only when the receive
    /// finds nothing.
    /// </summary>
    [Fact]
    public async Task A_redrive_longer_than_the_lease_visits_every_letter_behind_the_ones_it_left()
    {
        await using var h = await EngineHarness.StartAsync(o => o with { MaxDeliveryAttempts = 1, AutoCreateTopics = true });
        await StuckThenOthersAsync(h, stuck: 63, others: 11); // batch 1: 32 stuck; batch 2: 31 stuck and the first other

        bool expired = false;
        var r = await h.Engine.RedriveDeadLettersAsync("A", null, 1000, new OnEachPutBack(_ =>
        {
            if (expired) return;
            expired = true;
            h.Clock.Advance(TimeSpan.FromMinutes(2));
            h.Engine.RunSweep();
        }));
        Assert.True(expired);
        Assert.True(r.Error.IsOk, r.Error.ToString());
        Assert.Equal((11, 63), (r.Redriven, r.NotRedriven));
        Assert.Equal(11, (await ReceiveAllAsync(h, "t2")).Distinct().Count());
    }

    /// <summary>
    /// One call leaves at most max(1,000, 10 x max) letters it cannot put back: a call for one letter behind 1,500
    /// stuck ones stops at 1,000 instead of leasing, trying, logging and holding every one of them. Until 2026-12-06 its
    /// work and memory grew with the stuck backlog, not with max (found by review).
    /// </summary>
    [Fact]
    public async Task One_redrive_call_leaves_at_most_its_limit_of_letters()
    {
        await using var h = await EngineHarness.StartAsync(o => o with { MaxDeliveryAttempts = 1, AutoCreateTopics = true });
        await StuckThenOthersAsync(h, stuck: 1500, others: 1);

        var r = await h.Engine.RedriveDeadLettersAsync("A", null, 1);
        Assert.True(r.Error.IsOk, r.Error.ToString());
        Assert.Equal((0, 1000), (r.Redriven, r.NotRedriven));
        Assert.Equal(BrokerEngine.MaxNotRedrivenListed, r.NotRedrivenLetters.Count);
        // Nothing acknowledged: once t1 exists again, a re-drive puts every one back.
        Assert.True((await h.Engine.CreateTopicAsync("t1")).Error.IsOk);
        var all = await h.Engine.RedriveDeadLettersAsync("A", null, 2000);
        Assert.Equal((1501, 0), (all.Redriven, all.NotRedriven));
    }

    /// <summary>
    /// Right after a call that left 700 letters, the next is offered all 700 again: the call makes every lease it
    /// leaves offerable before it answers (in bounded holds of the lock). Until 2026-12-06 only 256 were, the sweeper
    /// loop did the rest later, and a re-drive in between (the CLI's next chunk) counted 256 (found by review).
    /// </summary>
    [Fact]
    public async Task A_redrive_right_after_one_that_left_many_is_offered_them_all()
    {
        await using var h = await EngineHarness.StartAsync(o => o with { MaxDeliveryAttempts = 1, AutoCreateTopics = true });
        await StuckThenOthersAsync(h, stuck: 700, others: 0);

        // No sweep between the two (the harness has no sweeper loop): the clock stands still.
        for (int round = 0; round < 2; round++)
        {
            var r = await h.Engine.RedriveDeadLettersAsync("A", null, 1000);
            Assert.True(r.Error.IsOk, r.Error.ToString());
            Assert.Equal((0, 700), (r.Redriven, r.NotRedriven));
        }
    }

    /// <summary>
    /// The CLI's pattern: calls for 100 until one moves fewer and does not answer More, each after the first with the
    /// continuation the first answered. 2,000 letters that cannot go back, then 500 that can: each stuck letter is
    /// walked by one call only (the first stops at its limit, 1,000), all 500 move, and the counts add up to 2,000. The stuck letters stay: a later re-drive without the continuation is offered them first.
    /// </summary>
    [Fact]
    public async Task Calls_with_the_continuation_walk_each_stuck_letter_once_and_leave_them_for_a_later_redrive()
    {
        await using var h = await EngineHarness.StartAsync(o => o with { MaxDeliveryAttempts = 1, AutoCreateTopics = true });
        await StuckThenOthersAsync(h, stuck: 2000, others: 500);

        long offeredAgain = Volatile.Read(ref h.Engine.Metrics.Redelivered);
        long? continuation = null;
        int moved = 0, notRedriven = 0, calls = 0;
        var stops = new List<bool>();
        while (true)
        {
            var r = await h.Engine.RedriveDeadLettersAsync("A", null, 100, continuation: continuation);
            Assert.True(r.Error.IsOk, r.Error.ToString());
            Assert.True(r.Continuation is not null && (continuation is null || r.Continuation == continuation));
            continuation = r.Continuation;
            calls++;
            moved += r.Redriven;
            notRedriven += r.NotRedriven;
            stops.Add(r.More);
            if (r.Redriven < 100 && !r.More) break;
        }
        Assert.Equal((500, 2000), (moved, notRedriven));
        // The first stops at its limit (1,024 left: a call stops between batches of 32); the second leaves the other 976
        // and moves 100; four more move 100 each; the last finds nothing.
        Assert.Equal([true, false, false, false, false, false, false], stops);
        Assert.Equal(0, Volatile.Read(ref h.Engine.Metrics.Redelivered) - offeredAgain); // no stuck letter offered twice

        // Without the continuation, the stuck letters are offered again (first, the oldest unfinished) and stay.
        var later = await h.Engine.RedriveDeadLettersAsync("A", null, 100);
        Assert.Equal((0, 1024, true), (later.Redriven, later.NotRedriven, later.More));
        Assert.True((await h.Engine.CreateTopicAsync("t1")).Error.IsOk);
        var back = await h.Engine.RedriveDeadLettersAsync("A", null, 5000);
        Assert.Equal((2000, 0, false), (back.Redriven, back.NotRedriven, back.More));
        Assert.Equal(2000, (await ReceiveAllAsync(h, "t1")).Distinct().Count());
        Assert.Equal(500, (await ReceiveAllAsync(h, "t2")).Distinct().Count());
    }

    /// <summary>
    /// The CLI's pattern when the run's 2^32nd lease falls in the first call: the continuation (an id taken before it)
    /// still orders the leases taken after it, so each stuck letter is walked once. Until 2026-12-07 the lease count
    /// wrapped to 0 there: the next call no longer counted the continuation as this run's, started afresh and was
    /// offered the 1,024 letters the first had left again (found by review).
    /// </summary>
    [Fact]
    public async Task Calls_with_the_continuation_walk_each_stuck_letter_once_across_the_2_pow_32nd_lease()
    {
        await using var h = await EngineHarness.StartAsync(o => o with { MaxDeliveryAttempts = 1, AutoCreateTopics = true });
        await StuckThenOthersAsync(h, stuck: 2000, others: 500);
        h.Engine.LeasesTakenForTests = (1L << 32) - 100;

        long offeredAgain = Volatile.Read(ref h.Engine.Metrics.Redelivered);
        long? continuation = null;
        int moved = 0, notRedriven = 0, calls = 0;
        var answers = new List<(int, int, bool)>();
        while (calls < 20)
        {
            var r = await h.Engine.RedriveDeadLettersAsync("A", null, 100, continuation: continuation);
            Assert.True(r.Error.IsOk, r.Error.ToString());
            continuation = r.Continuation;
            calls++;
            moved += r.Redriven;
            notRedriven += r.NotRedriven;
            answers.Add((r.Redriven, r.NotRedriven, r.More));
            if (r.Redriven < 100 && !r.More) break;
        }
        Assert.True((500, 2000) == (moved, notRedriven), $"moved {moved}, not re-driven {notRedriven}: " + string.Join(" ", answers));
        Assert.Equal(0, Volatile.Read(ref h.Engine.Metrics.Redelivered) - offeredAgain); // no stuck letter offered twice
    }

    /// <summary>
    /// A call with the continuation whose lease on a letter runs out before it puts it back (a slow disk; simulated:
    /// the clock moves 2 minutes at its first put-back) is not offered that letter again (it stops at leases its
    /// re-drive took): it counts it as not re-driven with why, and a re-drive without the continuation puts it back.
    /// </summary>
    [Fact]
    public async Task A_continuation_counts_a_letter_whose_lease_ran_out_and_a_later_redrive_puts_it_back()
    {
        await using var h = await EngineHarness.StartAsync(o => o with { MaxDeliveryAttempts = 1, AutoCreateTopics = true });
        await StuckThenOthersAsync(h, stuck: 0, others: 3);

        var first = await h.Engine.RedriveDeadLettersAsync("A", null, 1);
        Assert.Equal((1, 0), (first.Redriven, first.NotRedriven));
        bool expired = false;
        var second = await h.Engine.RedriveDeadLettersAsync("A", null, 100, new OnEachPutBack(_ =>
        {
            if (expired) return;
            expired = true;
            h.Clock.Advance(TimeSpan.FromMinutes(2));
            h.Engine.RunSweep();
        }), continuation: first.Continuation);
        Assert.True(second.Error.IsOk, second.Error.ToString());
        Assert.Equal((1, 1, false), (second.Redriven, second.NotRedriven, second.More));
        var why = Assert.Single(second.NotRedrivenLetters);
        Assert.Equal((2L, BrokerStatus.InvalidReceiptHandle), (why.DeadLetterOffset, why.Status));
        Assert.Contains("ran out", why.Reason);

        var later = await h.Engine.RedriveDeadLettersAsync("A", null, 100);
        Assert.Equal((1, 0), (later.Redriven, later.NotRedriven));
        var back = await ReceiveAllAsync(h, "t2");
        Assert.Equal((3, 3), (back.Count, back.Distinct().Count())); // each once
    }

    // Lease ids are (a random per-process incarnation << 32) + a counter: set the incarnation so the test is deterministic.
    private static void SetIncarnation(BrokerEngine engine, int incarnation)
    {
        var groups = typeof(BrokerEngine).GetField("_groups", System.Reflection.BindingFlags.NonPublic | System.Reflection.BindingFlags.Instance)!.GetValue(engine)!;
        groups.GetType().GetField("_incarnation", System.Reflection.BindingFlags.NonPublic | System.Reflection.BindingFlags.Instance)!.SetValue(groups, incarnation);
    }

    /// <summary>
    /// A caller that re-drives in calls passing each answer's continuation across a broker restart (a new random
    /// incarnation, here smaller than the old one, so the new leases' ids all sort below the old continuation): the
    /// calls end and count each stuck letter once. Until the review of the continuation (2026-12-06) every call after
    /// the restart was offered the same letters again, hit its limit, answered More, and never ended.
    /// </summary>
    [Fact]
    public async Task A_continuation_from_before_a_restart_starts_afresh_and_the_calls_end()
    {
        await using var h = await EngineHarness.StartAsync(o => o with { MaxDeliveryAttempts = 1, AutoCreateTopics = true });
        async Task DeadLetterAsync(string topic, int n)
        {
            for (int i = 0; i < n; i++) Assert.True((await h.Engine.SendAsync(h.Draft(topic, topic + "-" + i))).IsOk);
            int leased = 0;
            while (leased < n) leased += (await h.ReceiveAsync("A", topic, batch: 1000, invisible: TimeSpan.FromSeconds(1))).Count;
            await Expire(h, TimeSpan.FromSeconds(2));
        }
        await DeadLetterAsync("t2", 100);   // can go back
        await DeadLetterAsync("t1", 1100);  // cannot: t1 deleted below
        Assert.True((await h.Engine.DeleteTopicAsync("t1")).IsOk);
        await h.RestartAsync(o => o with { AutoCreateTopics = false });
        await Expire(h, TimeSpan.Zero);
        SetIncarnation(h.Engine, 1_000_000);

        var first = await h.Engine.RedriveDeadLettersAsync("A", null, 100);
        Assert.Equal((100, 0, false), (first.Redriven, first.NotRedriven, first.More));
        long? continuation = first.Continuation;

        await h.RestartAsync(o => o with { AutoCreateTopics = false });
        await Expire(h, TimeSpan.Zero);
        SetIncarnation(h.Engine, 5);

        int notRedriven = 0, calls = 0;
        var answers = new List<(int, int, bool)>();
        while (calls < 6)
        {
            var r = await h.Engine.RedriveDeadLettersAsync("A", null, 100, continuation: continuation);
            Assert.True(r.Error.IsOk, r.Error.ToString());
            calls++;
            notRedriven += r.NotRedriven;
            answers.Add((r.Redriven, r.NotRedriven, r.More));
            continuation = r.Continuation;
            if (!r.More) break;
        }
        Assert.True(calls < 6, "never ended: " + string.Join(" ", answers));
        Assert.Equal(1100, notRedriven);
    }
}
