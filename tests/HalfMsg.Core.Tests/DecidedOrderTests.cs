using HalfMsg.Broker.Core.Transactions;

namespace HalfMsg.Core.Tests;

/// <summary>The decided ids' expiry order: a queue that copies its newest items for a delta checkpoint.</summary>
public sealed class DecidedOrderTests
{
    [Fact]
    public void The_order_behaves_as_a_queue_and_copies_its_newest_items_across_wrap_and_growth()
    {
        var seed = Environment.TickCount;
        var random = new Random(seed);
        var ring = new DecidedIndex.OrderRing();
        var model = new Queue<(UInt128 Key, long AtMs)>();
        long next = 0;
        for (int step = 0; step < 20_000; step++)
        {
            // Phases that mostly add, then mostly forget, so the ring wraps, grows and empties again.
            bool adding = step / 2_000 % 2 == 0 ? random.Next(4) > 0 : random.Next(4) == 0;
            if (adding)
            {
                var item = ((UInt128)next * 7919, next);
                next++;
                ring.Enqueue(item);
                model.Enqueue(item);
            }
            else
            {
                Assert.Equal(model.TryDequeue(out var expected), ring.TryDequeue(out var got));
                Assert.Equal(expected, got);
            }
            Assert.Equal(model.Count, ring.Count);
            Assert.Equal(model.TryPeek(out var head), ring.TryPeek(out var ringHead));
            Assert.Equal(head, ringHead);
            if (step % 97 == 0)
            {
                int n = random.Next(model.Count + 3);
                Assert.Equal(model.Skip(Math.Max(0, model.Count - n)).ToArray(), ring.CopyNewest(n));
                int start = random.Next(model.Count + 1);
                var part = new (UInt128 Key, long AtMs)[random.Next(model.Count - start + 1)];
                ring.CopyRange(start, part);
                Assert.Equal(model.Skip(start).Take(part.Length).ToArray(), part);
                Assert.Equal(model.ToArray(), ring.Items().ToArray());
            }
        }
        ring.Clear();
        Assert.Equal(0, ring.Count);
        Assert.Empty(ring.CopyNewest(5));
    }

    [Fact]
    public void The_order_is_copied_in_steps_from_a_running_number_skipping_what_was_forgotten()
    {
        var index = new DecidedIndex(retentionMs: 1_000, maxCount: 5);
        for (int i = 0; i < 4; i++) index.Add($"tx-{i}", HalfMsg.Broker.Core.Model.TransactionResolution.Commit, i, atMs: i, topic: "t");
        long before = index.Added;
        for (int i = 4; i < 8; i++) index.Add($"tx-{i}", HalfMsg.Broker.Core.Model.TransactionResolution.Commit, i, atMs: i, topic: "t");
        Assert.Equal(5, index.Count); // the count bound forgot the three oldest

        long[] Copy(long from, long until, int room, out long next)
        {
            var into = new (UInt128, long)[room];
            int n = index.CopyOrder(from, until, into, out next);
            return into.Take(n).Select(e => e.Item2).ToArray();
        }

        Assert.Equal(new long[] { 4, 5, 6, 7 }, Copy(before, index.Added, 10, out long next));
        Assert.Equal(index.Added, next);
        // From before what is still held: the oldest still held first.
        Assert.Equal(new long[] { 3, 4, 5, 6, 7 }, Copy(0, index.Added, 10, out _));
        // In steps, and never past the bound it was given.
        Assert.Equal(new long[] { 3, 4 }, Copy(0, index.Added, 2, out next));
        Assert.Equal(new long[] { 5 }, Copy(next, 6, 2, out next));
        Assert.Equal(6, next);
        Assert.Empty(Copy(next, 6, 2, out _));
        // Added meanwhile: later numbers. Forgotten meanwhile (time bound): skipped.
        index.Add("tx-8", HalfMsg.Broker.Core.Model.TransactionResolution.Rollback, 8, atMs: 8, topic: "t");
        index.Expire(nowMs: 1_007);
        Assert.Equal(new long[] { 7, 8 }, Copy(next, index.Added, 10, out next));
        Assert.Equal(index.Added, next);
        Assert.Empty(Copy(next, long.MaxValue, 10, out _));
    }
}
