using HalfMsg.Broker.Core;
using HalfMsg.Broker.Core.Model;
using HalfMsg.Broker.Core.Storage;
using HalfMsg.Broker.Core.Transactions;
using Xunit.Abstractions;

namespace HalfMsg.Core.Tests;

/// <summary>Issue 8, defect 8: checkpoints do not stop the world, and a fuzzy checkpoint plus replay is the live state.</summary>
public sealed class CheckpointTests(ITestOutputHelper output)
{
    [Fact]
    public async Task A_checkpoint_taken_under_load_plus_replay_gives_exactly_the_live_state()
    {
        var seed = Environment.TickCount;
        var random = new Random(seed);
        for (int iteration = 0; iteration < 6; iteration++)
        {
            await using var h = await EngineHarness.StartAsync(o => o with { TransactionCheckMax = 3, MaxDeliveryAttempts = 2 });
            var p = new RecordingChannel("p1");
            using var reg = h.Engine.Producers.Register("orders", p);
            for (int i = 0; i < 300; i++) await h.SendHalfAsync("orders", $"seed-{i}");
            for (int i = 0; i < 300; i++) await h.Engine.SendAsync(h.Draft("events", $"e{i}", group: i % 3 == 0 ? $"fifo-{i % 7}" : null));

            using var stop = new CancellationTokenSource();
            var pending = new System.Collections.Concurrent.ConcurrentQueue<string>();
            var load = Enumerable.Range(0, 3).Select(worker => Task.Run(async () =>
            {
                var rnd = new Random(seed + worker);
                while (!stop.IsCancellationRequested)
                {
                    switch (rnd.Next(8))
                    {
                        case 0: pending.Enqueue(await h.SendHalfAsync("orders", "live")); break;
                        case 1:
                            if (pending.TryDequeue(out var tx))
                                await h.Engine.EndTransactionAsync(tx, null, rnd.Next(3) == 0 ? TransactionResolution.Rollback : TransactionResolution.Commit, DecisionSource.Client);
                            break;
                        case 2: await h.Engine.SendAsync(h.Draft("events", "more", deliverAt: rnd.Next(4) == 0 ? h.Clock.GetUtcNow().AddSeconds(5).ToUnixTimeMilliseconds() : null)); break;
                        case 3:
                            foreach (var m in await h.ReceiveAsync($"g{rnd.Next(2)}", "events", batch: 8, invisible: TimeSpan.FromSeconds(10)))
                                if (rnd.Next(3) > 0) await h.Engine.AckAsync($"g{rnd.Next(2)}", "events", m.ReceiptHandle);
                            break;
                        case 4:
                            foreach (var m in await h.ReceiveAsync("orders-consumer", "orders", batch: 4, invisible: TimeSpan.FromSeconds(10)))
                                await h.Engine.ChangeInvisibleDurationAsync("orders-consumer", "orders", m.ReceiptHandle, TimeSpan.FromSeconds(rnd.Next(1, 20)));
                            break;
                        case 5: h.Clock.Advance(TimeSpan.FromSeconds(rnd.Next(1, 8))); h.Engine.RunSweep(); break;
                        case 6: await h.Engine.RunCheckPassAsync(); break;
                        case 7: await Task.Yield(); break;
                    }
                }
            })).ToList();

            // Checkpoints race with the load; the one taken last during the load is what the restart will use: the
            // first is whole, the others deltas on it (or whole again once the deltas outgrow it), so the restart loads a chain.
            for (int i = 0; i < 5; i++)
            {
                await Task.Delay(random.Next(5, 30));
                await h.Engine.CheckpointAsync();
            }
            stop.Cancel();
            await Task.WhenAll(load);
            // The workers may all have been between operations while the last checkpoint ran: one record after it, so
            // the restart always has something to replay over the fuzzy checkpoint.
            await h.Engine.SendAsync(h.Draft("events", "after the last checkpoint"));
            string live = h.Engine.DescribeState();

            await h.Engine.DisposeAsync();
            // Drop the clean shutdown checkpoint: the restart must use the one taken while the load ran.
            File.Delete(Directory.GetFiles(Path.Combine(h.DataDir, "checkpoints"), "checkpoint-*.bin").Order().Last());
            await h.RestartAfterDeletedCheckpointAsync();
            Assert.True(h.Engine.Metrics.ReplayedRecords > 0, "the restart replayed the log after the fuzzy checkpoint");
            States.AssertSame(live, h.Engine.DescribeState(), $"seed {seed} iteration {iteration}");
        }
    }

    [Fact]
    public async Task A_checkpoint_reports_its_longest_wait_for_the_engine_lock()
    {
        await using var h = await EngineHarness.StartAsync();
        var sends = new List<Task>();
        for (int i = 0; i < 20_000; i++)
        {
            sends.Add(h.Engine.SendHalfAsync(h.Draft("orders", "x"), "orders", "p1", null).AsTask());
            if (sends.Count == 1024) { await Task.WhenAll(sends); sends.Clear(); }
        }
        await Task.WhenAll(sends);
        // Another thread holds the engine lock when the checkpoint starts and for 100 ms after, then lets it go for good:
        // the checkpoint's first request for the lock (where it reads the address it covers) waits, whatever the
        // scheduler does between its start and that request, short of 90 ms. (The checkpoint used to time only the
        // steps after that first one; then a holder that let go between two of them, as with holds of 30 ms and gaps
        // of 0.3 ms, was met in a gap at every step now and then on a busy machine, and it reported no wait at all.)
        using var checkpointStarted = new ManualResetEventSlim();
        using var holding = new ManualResetEventSlim();
        var hog = new Thread(() =>
        {
            lock (h.Engine.GateForTests)
            {
                holding.Set();
                checkpointStarted.Wait();
                var held = System.Diagnostics.Stopwatch.StartNew();
                while (held.ElapsedMilliseconds < 100) Thread.SpinWait(100);
            }
        }) { IsBackground = true };
        hog.Start();
        holding.Wait();
        try
        {
            await Task.Run(async () =>
            {
                checkpointStarted.Set();
                await h.Engine.CheckpointAsync();
            });
        }
        finally { hog.Join(); }
        long wait = h.Engine.Metrics.LastCheckpointLockWaitMicros, hold = h.Engine.Metrics.LastCheckpointPauseMicros;
        output.WriteLine($"longest wait {wait} µs, longest hold {hold} µs");
        Assert.True(wait >= 10_000, $"the checkpoint waited behind the other thread ({wait} µs)");
        Assert.True(hold > 0, "and held the lock");
        // That waiting is not counted as holding is LockTimerTests' (here a hold preempted on a busy machine can last
        // as long as a wait).
    }

    [Fact]
    public async Task A_checkpoint_of_a_large_state_holds_the_engine_lock_only_briefly()
    {
        await using var h = await EngineHarness.StartAsync(o => o with { SegmentSizeBits = 26, MemorySizeBits = 25 });
        var sends = new List<Task>();
        for (int i = 0; i < 100_000; i++)
        {
            sends.Add(h.Engine.SendHalfAsync(h.Draft("orders", "x"), "orders", "p1", null).AsTask());
            if (sends.Count == 1024) { await Task.WhenAll(sends); sends.Clear(); }
        }
        await Task.WhenAll(sends);
        var sw = System.Diagnostics.Stopwatch.StartNew();
        await h.Engine.CheckpointAsync();
        long total = Directory.GetFiles(h.DataDir, "checkpoint-*.bin", SearchOption.AllDirectories).Max(f => new FileInfo(f).Length);
        long largest = h.Engine.Metrics.LastCheckpointLargestHoldBytes;
        output.WriteLine($"checkpoint of 100k pending halves: {sw.ElapsedMilliseconds} ms and {total:N0} bytes in all; " +
                         $"the engine lock held at most {h.Engine.Metrics.LastCheckpointPauseMicros} µs and {largest:N0} bytes at a time");
        // Each hold serializes a fixed chunk (1,024 halves), not the state: the largest hold is a small part of the
        // file (the whole-state pause this replaced serialized all of it under the lock and took over a second for a
        // million halves). Bytes, not time, so a busy machine that preempts the holder cannot fail it; the time bound
        // is only a sanity check.
        Assert.InRange(largest, 1, total / 10);
        Assert.InRange(h.Engine.Metrics.LastCheckpointPauseMicros, 0, 2_000_000);
        // The halves are copied out of the state one table at a time: no hold copies more than about a table's share.
        Assert.InRange(h.Engine.Metrics.LastCheckpointLargestSnapshotItems, 1, 100_000 / HalfIndex.Shards * 5 / 4);
        // Every hold is timed by the part of the state it copied: the longest of them is the checkpoint's longest.
        var byPart = h.Engine.Metrics.LastCheckpointHoldMicrosByPart!;
        Assert.Equal(BrokerMetrics.CheckpointHoldParts.Length, byPart.Length);
        Assert.Equal(h.Engine.Metrics.LastCheckpointPauseMicros, byPart.Max());
        Assert.True(byPart[0] > 0, "the pending halves were copied");
        Assert.InRange(h.Engine.Metrics.LastCheckpointHoldGcPauseMicros, 0, h.Engine.Metrics.LastCheckpointPauseMicros);
        await h.RestartAsync();
        Assert.Equal(100_000, h.Engine.PendingCount);
    }
    [Fact]
    public async Task Delayed_messages_are_copied_out_table_by_table_and_all_come_back_after_a_restart()
    {
        await using var h = await EngineHarness.StartAsync();
        long at = h.Clock.GetUtcNow().ToUnixTimeMilliseconds() + 3_600_000;
        var sends = new List<Task<SendResult>>();
        for (int i = 0; i < 6_400; i++) sends.Add(h.Engine.SendAsync(h.Draft("later", $"d{i}", deliverAt: at + i)).AsTask());
        Assert.All(await Task.WhenAll(sends), r => Assert.True(r.IsOk, r.Error.ToString()));

        await h.Engine.CheckpointAsync();
        // 64 tables of about 100 each: no hold copies all 6,400.
        Assert.InRange(h.Engine.Metrics.LastCheckpointLargestSnapshotItems, 1, 200);
        // One record after it, so the shutdown checkpoint is another file.
        await h.SendNormalAsync("events", "after the checkpoint");
        string live = h.Engine.DescribeState();
        await h.Engine.DisposeAsync();
        // Drop the shutdown checkpoint: the restart starts from the one above and replays only what came after it.
        File.Delete(Directory.GetFiles(Path.Combine(h.DataDir, "checkpoints"), "checkpoint-*.bin").Order().Last());
        await h.RestartAfterDeletedCheckpointAsync();
        States.AssertSame(live, h.Engine.DescribeState(), "6,400 delayed messages through a checkpoint");
    }

    [Fact]
    public async Task A_checkpoint_walks_many_decided_ids_in_steps_while_decisions_and_forgetting_race_it()
    {
        // More decided ids than one hold of the checkpoint takes (4,096), a count bound that forgets the oldest as new
        // ones come, and a time bound the load moves the clock past: the walk's steps race additions at the end and
        // forgetting at the front of the expiry order. The checkpoint plus replay must still be the live state.
        var seed = Environment.TickCount;
        await using var h = await EngineHarness.StartAsync(o => o with { MaxRememberedDecisions = 45_000, DecisionRetention = TimeSpan.FromSeconds(40) });

        async Task DecideBatchAsync(int n, Random rnd)
        {
            var drafts = Enumerable.Range(0, n).Select(_ => new HalfDraft(h.Draft("orders", "x"), "orders", "p1", null)).ToList();
            var sent = await h.Engine.SendHalvesAsync(drafts);
            Assert.All(sent, r => Assert.True(r.IsOk, r.Error.ToString()));
            var decided = await h.Engine.EndTransactionsAsync(sent.Select(r => new DecisionRequest(r.TransactionId, null,
                rnd.Next(4) == 0 ? TransactionResolution.Rollback : TransactionResolution.Commit, DecisionSource.Client)).ToList());
            Assert.All(decided, r => Assert.Equal(BrokerStatus.Ok, r.Error.Status));
        }

        var random = new Random(seed);
        for (int i = 0; i < 60; i++)
        {
            await DecideBatchAsync(1_000, random);
            if (i % 10 == 9) h.Clock.Advance(TimeSpan.FromSeconds(1));
        }
        Assert.Equal(45_000, h.Engine.IndexSizes()["decisions_remembered"]);

        using var stop = new CancellationTokenSource();
        var load = Task.Run(async () =>
        {
            var rnd = new Random(seed + 1);
            while (!stop.IsCancellationRequested)
            {
                await DecideBatchAsync(rnd.Next(1, 300), rnd);
                if (rnd.Next(20) == 0) { h.Clock.Advance(TimeSpan.FromSeconds(rnd.Next(1, 3))); h.Engine.RunSweep(); }
            }
        });
        // The first checkpoint after a start is whole (the walk from the oldest id), the later ones deltas.
        for (int i = 0; i < 3; i++) await h.Engine.CheckpointAsync();
        stop.Cancel();
        await load;
        await h.Engine.SendAsync(h.Draft("events", "after the last checkpoint"));
        string live = h.Engine.DescribeState();
        long remembered = h.Engine.IndexSizes()["decisions_remembered"];
        Assert.True(remembered > 4 * 4_096, $"{remembered} decided ids: several steps of the walk");

        await h.Engine.DisposeAsync();
        File.Delete(Directory.GetFiles(Path.Combine(h.DataDir, "checkpoints"), "checkpoint-*.bin").Order().Last());
        await h.RestartAfterDeletedCheckpointAsync();
        Assert.True(h.Engine.Metrics.ReplayedRecords > 0, "the restart replayed the log after the checkpoint");
        States.AssertSame(live, h.Engine.DescribeState(), $"seed {seed}");
    }

    /// <summary>
    /// A group on a topic created while a checkpoint's capture ran, after it copied the topics and before the groups: the
    /// file names a group on a topic it does not hold. Until 2026-12-05 that made the whole file unusable, so a restart
    /// fell back to an older checkpoint (and a retention cut could have cut the log behind the only usable one); now
    /// the group's record is passed over and replay rebuilds it (found by review; this test failed).
    /// </summary>
    [Fact]
    public async Task A_group_on_a_topic_created_during_the_capture_leaves_the_checkpoint_loadable()
    {
        await using var h = await EngineHarness.StartAsync();
        await h.SendNormalAsync("events", "e1");
        await h.Engine.CheckpointAsync();                       // an older one to fall back on
        long older = h.Engine.LastCheckpointAddress;
        await h.SendNormalAsync("events", "e2");

        var checkpointer = h.Engine.CheckpointerForTests;
        checkpointer.BeforePartForTests = async part =>
        {
            if (part != 3) return;                              // after the topics were captured, before the groups
            checkpointer.BeforePartForTests = null;
            await h.SendNormalAsync("fresh", "new topic");      // auto-created after the topics snapshot
            var got = await h.ReceiveWhenVisibleAsync("g2", "fresh");
            Assert.Single(got);                                 // the group exists before the groups snapshot
        };
        await h.Engine.CheckpointAsync();
        long ours = h.Engine.LastCheckpointAddress;
        Assert.True(ours > older);

        await h.Engine.DisposeAsync();
        var dir = Path.Combine(h.DataDir, "checkpoints");
        foreach (var f in Directory.GetFiles(dir, "checkpoint-*.bin").Where(f => CheckpointStoreNames.Covered(f) > ours)) File.Delete(f);
        await h.RestartAfterDeletedCheckpointAsync();
        Assert.Equal(ours, h.Engine.LastCheckpointAddress);     // before the fix: unusable (KeyNotFound 'fresh'), the older one loaded
        // And the group's progress on the new topic is there (replayed): e1, e2 and "new topic" are not delivered to it again.
        Assert.Empty(await h.ReceiveAsync("g2", "fresh", invisible: TimeSpan.FromSeconds(30)));
    }
}
