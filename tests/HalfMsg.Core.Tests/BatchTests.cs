using HalfMsg.Broker.Core;
using HalfMsg.Broker.Core.Model;

namespace HalfMsg.Core.Tests;

/// <summary>Issue 8 structure: batch entry points append under one lock hold and wait once.</summary>
public sealed class BatchTests
{
    [Fact]
    public async Task A_batch_of_acks_costs_one_group_commit_and_each_handle_gets_its_own_answer()
    {
        await using var h = await EngineHarness.StartAsync();
        for (int i = 0; i < 32; i++) await h.Engine.SendAsync(h.Draft("events", $"m{i}"));
        var got = await h.ReceiveAsync("g", "events", batch: 32);
        Assert.Equal(32, got.Count);
        var handles = got.Select(m => m.ReceiptHandle).ToList();
        handles.Insert(5, "v1.0.0.1");                           // a stale handle in the middle
        long before = h.Engine.LogCommits;
        var results = await h.Engine.AckBatchAsync("g", "events", handles);
        long commits = h.Engine.LogCommits - before;
        Assert.InRange(commits, 1, 8);                            // one wait for the batch (a background commit may land beside it); 32 one at a time take 32
        Assert.Equal(BrokerStatus.InvalidReceiptHandle, results[5].Status);
        Assert.Equal(32, results.Count(r => r.IsOk));
        await h.RestartAsync();
        h.Clock.Advance(TimeSpan.FromMinutes(5));
        h.Engine.RunSweep();
        Assert.Empty(await h.ReceiveAsync("g", "events"));         // every acked message stays acked after a restart
    }

    [Fact]
    public async Task A_batch_of_sends_costs_one_group_commit_and_a_bad_message_fails_alone()
    {
        await using var h = await EngineHarness.StartAsync();
        await h.Engine.SendAsync(h.Draft("events", "warm-up"));
        var drafts = Enumerable.Range(0, 16).Select(i => h.Draft("events", $"b{i}")).ToList();
        drafts[3] = new MessageDraft { Topic = "bad topic!", MessageId = h.NextId(), Body = new byte[1] };
        long before = h.Engine.LogCommits;
        var results = await h.Engine.SendBatchAsync(drafts);
        Assert.InRange(h.Engine.LogCommits - before, 1, 8);      // one wait for the batch; a background commit may land beside it
        Assert.Equal(BrokerStatus.IllegalTopic, results[3].Error.Status);
        Assert.Equal(15, results.Count(r => r.IsOk));
        Assert.Equal(16, (await h.ReceiveAsync("g", "events")).Count);  // warm-up + 15
    }

    [Fact]
    public async Task A_one_queue_batch_is_refused_whole_for_one_bad_message_and_otherwise_lands_in_order_on_one_queue()
    {
        await using var h = await EngineHarness.StartAsync();
        await h.Engine.SendAsync(h.Draft("events", "warm-up"));
        var drafts = Enumerable.Range(0, 12).Select(i => h.Draft("events", $"q{i}")).ToList();
        var bad = drafts.ToList();
        bad[7] = new MessageDraft { Topic = "events", MessageId = h.NextId(), Body = new byte[h.Engine.Options.MaxMessageSize + 1] };
        var (error, refused) = await h.Engine.SendToOneQueueAsync(bad);
        Assert.Equal(BrokerStatus.MessageTooLarge, error.Status);
        Assert.Empty(refused);
        Assert.Single(await h.ReceiveAsync("g", "events", batch: 64));     // nothing of the refused batch was stored

        long before = h.Engine.LogCommits;
        var (ok, results) = await h.Engine.SendToOneQueueAsync(drafts);
        Assert.True(ok.IsOk);
        Assert.InRange(h.Engine.LogCommits - before, 1, 8);                 // one wait for the whole batch (not 12)
        Assert.All(results, r => Assert.Equal(results[0].QueueId, r.QueueId));
        Assert.Equal(Enumerable.Range(0, 12).Select(i => results[0].QueueOffset + i), results.Select(r => r.QueueOffset));
        await h.RestartAsync();
        var got = await h.ReceiveAsync("g2", "events", batch: 64);
        Assert.Equal(13, got.Count);
        var batchIds = drafts.Select(d => d.MessageId).ToHashSet();
        var stored = got.Where(m => batchIds.Contains(m.Message.MessageId)).OrderBy(m => m.Message.QueueOffset).ToList();
        Assert.All(stored, m => Assert.Equal(results[0].QueueId, m.Message.QueueId));
        Assert.Equal(drafts.Select(d => d.MessageId), stored.Select(m => m.Message.MessageId));
    }

    /// <summary>Review of batch sends (2026-12-06), F2: a topic deleted between two holds of a one-queue batch. The next hold
    /// made the topic again (auto-creation) and stored on the first hold's queue id: with fewer queues an
    /// IndexOutOfRangeException escaped (SYSTEM_ERROR), with enough (made again by an operator) the batch was answered OK
    /// though its first part had gone with the deleted topic. It is refused now, and nothing of it is in the topic.</summary>
    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public async Task A_one_queue_batch_whose_topic_is_deleted_between_lock_holds_is_refused_and_none_of_it_is_in_the_topic(bool madeAgain)
    {
        await using var h = await EngineHarness.StartAsync();     // QueuesPerTopic 4
        Assert.True((await h.Engine.CreateTopicAsync("events", 8)).Error.IsOk);
        int between = 0;
        h.Engine.BetweenLockHoldsForTests = () =>
        {
            if (Interlocked.Increment(ref between) > 1) return;
            Assert.True(h.Engine.DeleteTopicAsync("events").AsTask().GetAwaiter().GetResult().IsOk);
            if (madeAgain) Assert.True(h.Engine.CreateTopicAsync("events", 8).AsTask().GetAwaiter().GetResult().Error.IsOk);
        };
        static MessageDraft OnQueue(MessageDraft d, int queueId) => new() { Topic = d.Topic, MessageId = d.MessageId, Body = d.Body, QueueId = queueId };
        var drafts = Enumerable.Range(0, BrokerEngine.MaxEntriesPerLockHold + 10).Select(i => OnQueue(h.Draft("events", $"d{i}"), 7)).ToList();
        var (error, results) = await h.Engine.SendToOneQueueAsync(drafts);
        h.Engine.BetweenLockHoldsForTests = null;
        Assert.Equal(1, between);
        Assert.Equal(BrokerStatus.TopicNotFound, error.Status);
        Assert.Contains("deleted while the batch was being stored", error.Message);
        Assert.Empty(results);

        // The first part went with the deleted topic and the rest was not stored: a retry of the batch duplicates nothing.
        var batchIds = drafts.Select(d => d.MessageId).ToHashSet();
        Assert.DoesNotContain(await h.ReceiveAsync("g", "events", batch: 1024), m => batchIds.Contains(m.Message.MessageId));
        await h.RestartAsync();
        Assert.DoesNotContain(await h.ReceiveAsync("g2", "events", batch: 1024), m => batchIds.Contains(m.Message.MessageId));
        var (again, stored) = await h.Engine.SendToOneQueueAsync(drafts.Select(d => OnQueue(d, 3)).ToList());
        Assert.True(again.IsOk, again.ToString());
        Assert.Equal(drafts.Count, stored.Length);
    }

    [Fact]
    public async Task A_batch_of_halves_costs_one_group_commit_and_each_is_its_own_transaction()
    {
        await using var h = await EngineHarness.StartAsync();
        await h.Engine.SendAsync(h.Draft("events", "warm-up"));
        var drafts = Enumerable.Range(0, 16).Select(i => new HalfDraft(h.Draft("events", $"h{i}"), "events", "c1", null)).ToList();
        drafts[4] = drafts[4] with { Message = new MessageDraft { Topic = "bad topic!", MessageId = h.NextId(), Body = new byte[1] } };
        drafts[9] = drafts[9] with { ProducerGroup = "bad group!" };
        long before = h.Engine.LogCommits;
        var stored = await h.Engine.SendHalvesAsync(drafts);
        Assert.InRange(h.Engine.LogCommits - before, 1, 8);       // one wait for the batch (16 one at a time take 16)
        Assert.Equal(BrokerStatus.IllegalTopic, stored[4].Error.Status);
        Assert.Equal(BrokerStatus.BadRequest, stored[9].Error.Status);
        Assert.Equal(14, stored.Count(r => r.IsOk));
        Assert.All(stored.Where(r => r.IsOk), r => Assert.Equal(r.MessageId, r.TransactionId));
        Assert.Equal(14, h.Engine.PendingCount);
        Assert.Single(await h.ReceiveAsync("g", "events"));        // halves are invisible: only the warm-up message

        // The same id again, in a batch or alone, is refused: each half is its own transaction.
        var again = await h.Engine.SendHalvesAsync([drafts[0], new HalfDraft(h.Draft("events", "new"), "events", "c1", null)]);
        Assert.Equal(BrokerStatus.BadRequest, again[0].Error.Status);
        Assert.True(again[1].IsOk);
        await h.RestartAsync();
        Assert.Equal(15, h.Engine.PendingCount);        // every acknowledged half is still pending after a restart
    }

    /// <summary>Review edges #8: a request may carry thousands of messages; storing them all under one hold of the engine
    /// lock stopped every other send, ack, receive and checkpoint for that long. A batch now takes the lock a bounded
    /// number of entries at a time, and still waits once.</summary>
    [Theory]
    [InlineData("sends")]
    [InlineData("one queue")]
    [InlineData("halves")]
    [InlineData("acks")]
    [InlineData("decisions")]
    public async Task A_large_batch_takes_the_engine_lock_a_bounded_number_of_entries_at_a_time(string kind)
    {
        await using var h = await EngineHarness.StartAsync();
        const int count = 3 * BrokerEngine.MaxEntriesPerLockHold + 5;
        List<string>? handles = null;
        List<DecisionRequest>? decisions = null;
        if (kind == "decisions")
        {
            var halves = await h.Engine.SendHalvesAsync(Enumerable.Range(0, count).Select(i => new HalfDraft(h.Draft("events", $"d{i}"), "events", "c1", null)).ToList());
            decisions = halves.Select(r => new DecisionRequest(r.TransactionId, r.MessageId, TransactionResolution.Commit, DecisionSource.Client)).ToList();
        }
        if (kind == "acks")
        {
            await h.Engine.SendBatchAsync(Enumerable.Range(0, count).Select(i => h.Draft("events", $"a{i}")).ToList());
            handles = [];
            while (handles.Count < count) handles.AddRange((await h.ReceiveAsync("g", "events", batch: 1024)).Select(m => m.ReceiptHandle));
        }

        int between = 0, takenByOthers = 0;
        h.Engine.BetweenLockHoldsForTests = () =>
        {
            between++;
            Assert.False(Monitor.IsEntered(h.Engine.GateForTests));
            // Another thread gets the lock between two holds of the batch.
            if (Task.Run(() => { lock (h.Engine.GateForTests) Interlocked.Increment(ref takenByOthers); }).Wait(TimeSpan.FromSeconds(30))) return;
            Assert.Fail("the engine lock was not free between two holds of a batch");
        };
        long before = h.Engine.LogCommits;
        int ok;
        switch (kind)
        {
            case "sends":
                ok = (await h.Engine.SendBatchAsync(Enumerable.Range(0, count).Select(i => h.Draft("events", $"s{i}")).ToList())).Count(r => r.IsOk);
                break;
            case "one queue":
                var (error, results) = await h.Engine.SendToOneQueueAsync(Enumerable.Range(0, count).Select(i => h.Draft("events", $"o{i}")).ToList());
                Assert.True(error.IsOk, error.Message);
                Assert.All(results, r => Assert.Equal(results[0].QueueId, r.QueueId));
                Assert.Equal(results.Select(r => r.QueueOffset).Order(), results.Select(r => r.QueueOffset)); // in order on one queue
                ok = results.Length;
                break;
            case "halves":
                ok = (await h.Engine.SendHalvesAsync(Enumerable.Range(0, count).Select(i => new HalfDraft(h.Draft("events", $"h{i}"), "events", "c1", null)).ToList())).Count(r => r.IsOk);
                break;
            case "decisions":
                ok = (await h.Engine.EndTransactionsAsync(decisions!)).Count(r => r.Error.IsOk);
                break;
            default:
                ok = (await h.Engine.AckBatchAsync("g", "events", handles!)).Count(r => r.IsOk);
                break;
        }

        h.Engine.BetweenLockHoldsForTests = null;
        Assert.Equal(count, ok);
        Assert.Equal(3, between);                                   // four holds: 3 × the bound, then 5
        Assert.Equal(3, takenByOthers);
        Assert.InRange(h.Engine.LogCommits - before, 1, 12);       // still one durable wait for the whole batch
        await h.RestartAsync();
        if (kind == "halves") Assert.Equal(count, h.Engine.PendingCount);
        else if (kind == "decisions")
        {
            Assert.Equal(0, h.Engine.PendingCount);
            int received = 0;
            while ((await h.ReceiveAsync("g2", "events", batch: 1024)) is { Count: > 0 } got) received += got.Count;
            Assert.Equal(count, received);
        }
        else if (kind == "acks")
        {
            h.Clock.Advance(TimeSpan.FromMinutes(5));
            h.Engine.RunSweep();
            Assert.Empty(await h.ReceiveAsync("g", "events"));
        }
        else
        {
            int received = 0;
            while ((await h.ReceiveAsync("g2", "events", batch: 1024)) is { Count: > 0 } got) received += got.Count;
            Assert.Equal(count, received);
        }
    }

    [Fact]
    public async Task A_batch_of_decisions_costs_one_group_commit_and_each_gets_what_it_would_get_alone()
    {
        await using var h = await EngineHarness.StartAsync();
        var halves = new List<string>();
        for (int i = 0; i < 6; i++)
        {
            var half = await h.Engine.SendHalfAsync(h.Draft("events", $"d{i}"), "events", "c1", null);
            halves.Add(half.TransactionId);
        }

        await h.Engine.EndTransactionAsync(halves[5], null, TransactionResolution.Commit, DecisionSource.Client);
        var decisions = new List<DecisionRequest>
        {
            new(halves[0], null, TransactionResolution.Commit, DecisionSource.Client),
            new(halves[1], null, TransactionResolution.Rollback, DecisionSource.Client),
            new("no-such-transaction", null, TransactionResolution.Commit, DecisionSource.Client),
            new(halves[2], "another-message", TransactionResolution.Commit, DecisionSource.Client),
            new(halves[3], null, TransactionResolution.Unknown, DecisionSource.CheckBack),
            new(halves[0], null, TransactionResolution.Commit, DecisionSource.Client),   // the same decision again, same batch
            new(halves[1], null, TransactionResolution.Commit, DecisionSource.Client),   // conflicts with the rollback above
            new(halves[5], null, TransactionResolution.Rollback, DecisionSource.Client), // conflicts with the earlier commit
            new(halves[4], null, TransactionResolution.Commit, DecisionSource.Client),
        };
        long before = h.Engine.LogCommits;
        var results = await h.Engine.EndTransactionsAsync(decisions);
        Assert.InRange(h.Engine.LogCommits - before, 1, 8);
        Assert.True(results[0].IsOk);
        Assert.Equal(TransactionResolution.Commit, results[0].Outcome);
        Assert.True(results[1].IsOk);
        Assert.Equal(TransactionResolution.Rollback, results[1].Outcome);
        Assert.Equal(BrokerStatus.TransactionNotFound, results[2].Error.Status);
        Assert.Equal(BrokerStatus.InvalidTransactionId, results[3].Error.Status);
        Assert.True(results[4].IsOk);
        Assert.Equal(TransactionResolution.Unknown, results[4].Outcome);
        Assert.True(results[5].IsOk);
        Assert.True(results[5].WasDuplicate);
        Assert.Equal(BrokerStatus.TransactionConflict, results[6].Error.Status);
        Assert.Equal(BrokerStatus.TransactionConflict, results[7].Error.Status);
        Assert.True(results[8].IsOk);

        await h.RestartAsync();
        var delivered = await h.ReceiveAsync("g", "events");
        Assert.Equal(new[] { "d0", "d4", "d5" }.Order(), delivered.Select(m => System.Text.Encoding.UTF8.GetString(m.Message.Body.Span)).Order());
        Assert.Equal(2, h.Engine.PendingCount);         // d2 (wrong message id) and d3 (unknown) are still pending
    }
}
