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
                Assert.Equal(model.ToArray(), ring.Items().ToArray());
            }
        }
        ring.Clear();
        Assert.Equal(0, ring.Count);
        Assert.Empty(ring.CopyNewest(5));
    }

    [Fact]
    public void A_delta_takes_only_the_decisions_added_since_the_count_it_was_given()
    {
        var index = new DecidedIndex(retentionMs: 1_000, maxCount: 5);
        for (int i = 0; i < 4; i++) index.Add($"tx-{i}", HalfMsg.Broker.Core.Model.TransactionResolution.Commit, i, atMs: i);
        long before = index.Added;
        for (int i = 4; i < 8; i++) index.Add($"tx-{i}", HalfMsg.Broker.Core.Model.TransactionResolution.Commit, i, atMs: i);
        Assert.Equal(5, index.Count); // the count bound forgot the three oldest
        Assert.Equal(new long[] { 4, 5, 6, 7 }, index.OrderSnapshotSince(before).Select(e => e.AtMs));
        Assert.Equal(new long[] { 3, 4, 5, 6, 7 }, index.OrderSnapshot().Select(e => e.AtMs));
        // More added since than the order still holds: all of it is new.
        Assert.Equal(new long[] { 3, 4, 5, 6, 7 }, index.OrderSnapshotSince(0).Select(e => e.AtMs));
        index.Expire(nowMs: 1_006);
        Assert.Equal(new long[] { 6, 7 }, index.OrderSnapshotSince(before).Select(e => e.AtMs));
    }
}
