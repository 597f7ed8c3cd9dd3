using HalfMsg.Broker.Core;
using HalfMsg.Broker.Core.Model;
using HalfMsg.Broker.Core.Storage;
using Xunit.Abstractions;

namespace HalfMsg.Core.Tests;

public sealed class BackpressureTests(ITestOutputHelper output)
{
    /// <summary>
    /// The page geometry <see cref="RecordLog.WaitForRoomAsync"/> relies on: however small the buffer asked for, four
    /// pages; writers may run at most the memory less three pages ahead of the committed address (so an append that
    /// opens a page finds the page it replaces written, unless writers that passed the check together added more than
    /// two pages), and half the memory once that is less.
    /// </summary>
    [Theory]
    [InlineData(20, 4, 1)] // far below a page: four pages
    [InlineData(23, 4, 1)] // one page: four
    [InlineData(26, 8, 4)] // the broker's default, 64 MiB
    public async Task The_log_keeps_four_pages_in_memory_and_writers_three_pages_short_of_full(int memoryBits, int pages, int roomPages)
    {
        string dir = Path.Combine(Path.GetTempPath(), "halfmsg-bpg-" + Guid.NewGuid().ToString("N")[..12]);
        try
        {
            await using var log = new RecordLog(dir, FlushMode.Sync, TimeSpan.FromMilliseconds(100), segmentSizeBits: 24, memorySizeBits: memoryBits);
            long page = 1L << log.PageSizeBits;
            Assert.Equal(8L << 20, page); // the default maximum message size's page
            Assert.Equal(pages * page, log.MemoryBytes);
            Assert.Equal(roomPages * page, log.RoomBytes);
        }
        finally
        {
            try { Directory.Delete(dir, true); } catch (IOException) { }
        }
    }

    /// <summary>
    /// Regression: with async flush, many concurrent writers filled FasterLog's in-memory buffer; the writer holding the
    /// engine lock blocked in Enqueue while the commit loop (the only thing that frees the buffer) waited for that lock.
    /// Writers now wait for room before they take the lock, and the commit loop never takes it; and since the log keeps
    /// at least four pages in memory, no append here waits for a page write inside the lock at all (64 writers of
    /// 1 KiB add far less than the two pages the room leaves them). (A liveness check with a generous bound, not a
    /// speed goal.)
    /// </summary>
    [Fact]
    public async Task Many_concurrent_async_writers_larger_than_the_log_buffer_do_not_deadlock()
    {
        await WithEngine(async engine =>
        {
            await RunWriters(engine);
            Assert.Equal(0, engine.LogForTests.AppendsThatWaited);
        });
    }

    /// <summary>
    /// Regression for the CI hang of 2026-12-04: when appends do wait for a page write under the engine lock (here the
    /// room is the whole buffer, so they must), that write runs on the thread pool, whose threads all block on the
    /// lock behind the spinning append while it and the commit loop's spin keep both cores busy, and the busy pool
    /// added threads too slowly to reach the write: the same writers made no end for minutes (reproduced here on two
    /// cores, with a stack of one append spinning in <c>FasterLog.Enqueue</c>, the commit loop in <c>CommitInternal</c>
    /// and every other writer in <c>Monitor.Enter</c>). The waiting append now gives the pool headroom
    /// (<see cref="PoolHeadroom"/>).
    /// </summary>
    [Fact]
    public async Task Appends_that_wait_for_a_page_write_under_the_engine_lock_still_finish()
    {
        FaultInjectionDevice? device = null;
        await WithEngine(async engine =>
        {
            engine.LogForTests.RoomBytesForTests = engine.LogForTests.MemoryBytes;
            long raisesBefore = PoolHeadroom.Raises;
            // The device holds page writes until an append has waited for one and raised the pool's minimum, so the slow
            // path is taken however the disk keeps pace with the writers. (Without the hold, on a machine whose cores
            // were busy with other work, five rounds of writers once never filled the buffer.) A thread of its own
            // releases them: the pool may be the thing that is wedged.
            device!.Fault = DeviceFault.HoldWrites;
            var released = new ManualResetEventSlim(false);
            var releaser = new Thread(() =>
            {
                var until = Environment.TickCount64 + 60_000;
                while ((engine.LogForTests.AppendsThatWaited == 0 || PoolHeadroom.Raises == raisesBefore)
                       && Environment.TickCount64 < until && !released.IsSet)
                    Thread.Sleep(1);
                device.ReleaseHeldWrites();
                released.Set();
            }) { IsBackground = true, Name = "page write releaser" };
            releaser.Start();
            var watch = System.Diagnostics.Stopwatch.StartNew();
            try { await RunWriters(engine); }
            finally { released.Set(); releaser.Join(); }
            output.WriteLine($"{watch.ElapsedMilliseconds} ms; appends that waited {engine.LogForTests.AppendsThatWaited}; pool minimum raised {PoolHeadroom.Raises - raisesBefore} times; pool threads {ThreadPool.ThreadCount}; writes held {device.FaultedWrites}");
            Assert.True(device.FaultedWrites > 0, "no page write was held");
            Assert.True(engine.LogForTests.AppendsThatWaited > 0, "no append waited for a page write: the test did not test the slow path");
            Assert.True(PoolHeadroom.Raises > raisesBefore, "the waiting appends never raised the pool's minimum");
        }, d => device = new FaultInjectionDevice(d));
    }

    /// <summary>
    /// The headroom window gives the pool's minimum back when it ends, but only the minimum it set itself: a minimum
    /// other code set during the window (an operator's, a host's) stays. It used to be overwritten with the one saved
    /// when the window began.
    /// </summary>
    [Fact]
    public async Task A_minimum_set_by_other_code_during_a_headroom_window_stays_when_the_window_ends()
    {
        ThreadPool.GetMinThreads(out int originalWorkers, out int originalIo);
        try
        {
            // Keep the queue busy so the window has something to raise the minimum for.
            using var stop = new CancellationTokenSource();
            var busy = Enumerable.Range(0, 4).Select(_ => Task.Run(async () =>
            {
                while (!stop.IsCancellationRequested) await Task.Yield();
            })).ToArray();
            int theirs;
            using (PoolHeadroom.Enter())
            {
                PoolHeadroom.Raise();
                ThreadPool.GetMinThreads(out int raised, out _);
                theirs = Math.Max(raised, originalWorkers) + 7; // what other code sets meanwhile
                Assert.True(ThreadPool.SetMinThreads(theirs, originalIo));
                PoolHeadroom.Raise(); // may raise again above theirs
            }
            stop.Cancel();
            await Task.WhenAll(busy);
            // Another test's append may hold a window too; the minimum is given back when the last one ends.
            var watch = System.Diagnostics.Stopwatch.StartNew();
            while (PoolHeadroom.Holders > 0 && watch.Elapsed < TimeSpan.FromSeconds(60)) await Task.Delay(10);
            ThreadPool.GetMinThreads(out int after, out _);
            Assert.Equal(theirs, after);
        }
        finally
        {
            ThreadPool.SetMinThreads(originalWorkers, originalIo);
        }
    }

    /// <summary>
    /// Writers of large bodies that pass the room check together add more than the slack the buffer keeps beyond the
    /// room (here 512 writers of batches of eight 64 KiB halves, half a MiB per call, against a room of one 8 MiB page
    /// and a slack of two): before <see cref="RecordLog.ReserveRoomAsync"/>, appends then waited for page writes under
    /// the engine lock. Now each call reserves its bodies' bytes before the lock and waits outside it; refused halves
    /// give their share back with the rest of the call's.
    /// </summary>
    [Fact]
    public async Task Writers_of_large_bodies_wait_for_room_outside_the_engine_lock()
    {
        await WithEngine(async engine =>
        {
            var body = new byte[64 * 1024];
            int next = 0, refused = 0;
            const int calls = 1_024, perCall = 8;
            var writers = Enumerable.Range(0, 512).Select(_ => Task.Run(async () =>
            {
                int c;
                while ((c = Interlocked.Increment(ref next)) <= calls)
                {
                    var halves = Enumerable.Range(0, perCall).Select(k => new HalfDraft(
                        new MessageDraft { Topic = "t", MessageId = $"big-{c}-{k}", Body = body, Tag = k == 0 && c % 4 == 0 ? new string('x', 300) : null },
                        "t", "p", null)).ToArray();
                    var results = await engine.SendHalvesAsync(halves);
                    for (int k = 0; k < perCall; k++)
                    {
                        if (k == 0 && c % 4 == 0) // refused under the lock, after the call's reservation
                        {
                            Assert.False(results[k].Error.IsOk);
                            Interlocked.Increment(ref refused);
                            continue;
                        }
                        Assert.True(results[k].Error.IsOk);
                        await engine.EndTransactionAsync(results[k].TransactionId, null, TransactionResolution.Commit, DecisionSource.Client);
                    }
                }
            }));
            await Task.WhenAll(writers).WaitAsync(TimeSpan.FromSeconds(120));
            var log = engine.LogForTests;
            output.WriteLine($"appends that waited {log.AppendsThatWaited}; reservations that waited {log.ReservationsThatWaited}; refused {refused}");
            Assert.Equal(0, log.AppendsThatWaited);
            Assert.True(log.ReservationsThatWaited > 0, "no reservation waited: the writers never filled the room");
            Assert.Equal(0, log.ReservedBytes);
            Assert.Equal(calls / 4, refused);
            Assert.Equal(calls * perCall - calls / 4, engine.ListTopics().Single(t => t.Name == "t").Queues.Sum(q => q.MaxOffset));
        });
    }

    /// <summary>What a reservation holds and when it waits: within the room at once; beyond it until a release (or a
    /// commit); alone, whatever its size; cancelled, it holds nothing.</summary>
    [Fact]
    public async Task A_reservation_waits_while_the_room_is_reserved_and_gives_it_back()
    {
        string dir = Path.Combine(Path.GetTempPath(), "halfmsg-bpr-" + Guid.NewGuid().ToString("N")[..12]);
        try
        {
            await using var log = new RecordLog(dir, FlushMode.Sync, TimeSpan.FromMilliseconds(100), segmentSizeBits: 24, memorySizeBits: 23);
            const long MiB = 1 << 20;
            Assert.Equal(8 * MiB, log.RoomBytes);
            Assert.Equal(16 * MiB, log.MaxReservationBytes);

            var first = await log.ReserveRoomAsync(6 * MiB);
            var second = log.ReserveRoomAsync(4 * MiB).AsTask();
            Assert.False(second.IsCompleted); // 6 + 4 MiB > the room
            first.Dispose();
            using (var got = await second.WaitAsync(TimeSpan.FromSeconds(30)))
                Assert.Equal(4 * MiB, log.ReservedBytes);
            Assert.Equal(0, log.ReservedBytes);

            // Alone, a reservation larger than the room passes (it would otherwise wait for ever), clamped to the slack.
            using (var alone = await log.ReserveRoomAsync(40 * MiB).AsTask().WaitAsync(TimeSpan.FromSeconds(30)))
                Assert.Equal(16 * MiB, alone.Bytes);

            var held = await log.ReserveRoomAsync(8 * MiB);
            using var cts = new CancellationTokenSource();
            var waiting = log.ReserveRoomAsync(1 * MiB, cts.Token).AsTask();
            Assert.False(waiting.IsCompleted);
            cts.Cancel();
            await Assert.ThrowsAnyAsync<OperationCanceledException>(() => waiting.WaitAsync(TimeSpan.FromSeconds(30)));
            Assert.Equal(8 * MiB, log.ReservedBytes);
            held.Dispose();
            Assert.Equal(0, log.ReservedBytes);
            Assert.True(log.ReservationsThatWaited >= 2);
        }
        finally
        {
            try { Directory.Delete(dir, true); } catch (IOException) { }
        }
    }

    private static async Task WithEngine(Func<BrokerEngine, Task> test, Func<FASTER.core.IDevice, FASTER.core.IDevice>? wrapDevice = null)
    {
        var options = new CoreOptions
        {
            WrapLogDevice = wrapDevice,
            DataDir = Path.Combine(Path.GetTempPath(), "halfmsg-bp-" + Guid.NewGuid().ToString("N")[..12]),
            Flush = FlushMode.Async, MemorySizeBits = 23, SegmentSizeBits = 24, // the smallest buffer (four 8 MiB pages), written more than twice over
        };
        try
        {
            await using var engine = await BrokerEngine.OpenAsync(options, startBackgroundLoops: false);
            await test(engine);
        }
        finally
        {
            try { Directory.Delete(options.DataDir, true); } catch (IOException) { }
        }
    }

    /// <summary>64 writers, 64,000 transactions of 1 KiB (half, then commit); fails with the log's and the pool's state if
    /// they make no end within 120 s (they take about a second).</summary>
    private static async Task RunWriters(BrokerEngine engine, int round = 1)
    {
        var body = new byte[1024];
        int next = 0;
        var writers = Enumerable.Range(0, 64).Select(_ => Task.Run(async () =>
        {
            int i;
            while ((i = Interlocked.Increment(ref next)) <= 64_000)
            {
                var half = await engine.SendHalfAsync(new MessageDraft { Topic = "t", MessageId = $"bp-{round}-{i}", Body = body }, "t", "p", null);
                Assert.True(half.IsOk);
                await engine.EndTransactionAsync(half.TransactionId, null, TransactionResolution.Commit, DecisionSource.Client);
            }
        }));
        var all = Task.WhenAll(writers);
        // The watchdog is a thread of its own: a timer needs the pool, and a wedged pool never runs it (the hang this
        // file guards against wedged it). On timeout it notes the state, then lets the pool grow so the test can fail.
        string? stuck = null;
        ThreadPool.GetMinThreads(out int minWorkers, out int minIo);
        var watchdog = new Thread(() =>
        {
            if (((IAsyncResult)all).AsyncWaitHandle.WaitOne(TimeSpan.FromSeconds(120))) return;
            stuck = $"the writers made no end within 120 s: {Volatile.Read(ref next)} taken, log {engine.LogForTests.DebugState}, "
                + $"fault {engine.LogForTests.Fault?.Message ?? "none"}, appends that waited {engine.LogForTests.AppendsThatWaited}, "
                + $"pool threads {ThreadPool.ThreadCount}, queued items {ThreadPool.PendingWorkItemCount}";
            ThreadPool.SetMinThreads(ThreadPool.ThreadCount + 256, minIo);
        }) { IsBackground = true, Name = "backpressure watchdog" };
        watchdog.Start();
        try { await all; }
        finally { watchdog.Join(); }
        if (stuck is not null)
        {
            ThreadPool.SetMinThreads(minWorkers, minIo);
            Assert.Fail(stuck);
        }
        Assert.Equal(0, engine.PendingCount);
        Assert.Equal(64_000L * round, engine.ListTopics().Single(t => t.Name == "t").Queues.Sum(q => q.MaxOffset));
    }
}
