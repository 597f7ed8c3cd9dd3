using System.Runtime.CompilerServices;
using HalfMsg.Broker.Core;
using HalfMsg.Broker.Core.Model;
using HalfMsg.Broker.Core.Transactions;

namespace HalfMsg.Core.Tests;

/// <summary>
/// What grows with the retained log under the engine lock is kept in segments (a queue's entries, the decided ids'
/// expiry order) or split into tables (the decided ids), so that a retention cut or growth never moves or rehashes all
/// of it in one hold.
/// </summary>
public sealed class SegmentedListTests
{
    private const int Segment = SegmentedList<long>.SegmentLength;

    [Fact]
    public void A_segmented_list_behaves_as_a_list_that_grows_at_its_end_and_drops_prefixes()
    {
        int seed = Environment.TickCount;
        var random = new Random(seed);
        var list = new SegmentedList<long>();
        var model = new List<long>();
        long next = 0;
        for (int step = 0; step < 4_000; step++)
        {
            switch (random.Next(10))
            {
                case < 6: // append a run, often across a segment's end
                    for (int n = random.Next(1, Segment / 2); n > 0; n--)
                    {
                        list.Add(next);
                        model.Add(next++);
                    }
                    break;
                case < 8: // drop a prefix: inside the first segment, up to a boundary, across several, or everything
                    int drop = random.Next(4) switch
                    {
                        0 => random.Next(model.Count + 1),
                        1 => Math.Min(model.Count, Segment - 1),
                        2 => Math.Min(model.Count, 2 * Segment + random.Next(3)),
                        _ => random.Next(Math.Min(model.Count, 5) + 1),
                    };
                    list.RemoveFront(drop);
                    model.RemoveRange(0, drop);
                    break;
                case 8: // rewrite an entry in place
                    if (model.Count > 0)
                    {
                        int i = random.Next(model.Count);
                        list[i] = -i;
                        model[i] = -i;
                    }
                    break;
                default:
                    if (random.Next(20) == 0)
                    {
                        list.Clear();
                        model.Clear();
                    }
                    break;
            }

            Assert.True(model.Count == list.Count, $"seed {seed}, step {step}: count {list.Count}, expected {model.Count}");
            if (model.Count > 0)
            {
                Assert.Equal(model[0], list[0]);
                Assert.Equal(model[^1], list[model.Count - 1]);
                int at = random.Next(model.Count);
                Assert.Equal(model[at], list[at]);
            }
            if (step % 50 == 0)
            {
                Assert.True(model.SequenceEqual(list.Items()), $"seed {seed}, step {step}: items differ");
                int start = random.Next(model.Count + 1);
                var part = new long[random.Next(model.Count - start + 1)];
                list.CopyTo(start, part);
                Assert.Equal(model.Skip(start).Take(part.Length), part);
                // Span by span from any index covers the rest exactly, a segment at most at a time.
                var spans = new List<long>();
                for (var span = list.SpanFrom(start); !span.IsEmpty; span = list.SpanFrom(start + spans.Count))
                {
                    Assert.InRange(span.Length, 1, Segment);
                    spans.AddRange(span.ToArray());
                }
                Assert.True(model.Skip(start).SequenceEqual(spans), $"seed {seed}, step {step}: spans from {start} differ");
            }
        }

        Assert.Throws<ArgumentOutOfRangeException>(() => list[list.Count]);
        Assert.Throws<ArgumentOutOfRangeException>(() => list.RemoveFront(list.Count + 1));
    }

    [Fact]
    public void Dropping_a_prefix_releases_its_segments_and_keeps_no_reference_to_what_it_dropped()
    {
        var list = new SegmentedList<object>();
        // Ten segments and a half, then a cut that leaves the last half segment and a few entries before it.
        for (int i = 0; i < 10 * SegmentedList<object>.SegmentLength + SegmentedList<object>.SegmentLength / 2; i++) list.Add(i);
        Assert.Equal(11, list.SegmentCount);
        list.RemoveFront(10 * SegmentedList<object>.SegmentLength - 3);
        Assert.Equal(2, list.SegmentCount);
        Assert.Equal(10 * SegmentedList<object>.SegmentLength - 3, (int)list[0]);

        // An entry dropped from the front of a segment that stays is not kept alive by the list.
        var cut = new SegmentedList<object>();
        WeakReference dropped = AddUnreachable(cut);
        cut.Add("stays");
        cut.RemoveFront(1);
        GC.Collect();
        GC.WaitForPendingFinalizers();
        GC.Collect();
        Assert.False(dropped.IsAlive, "the list kept a dropped entry alive");
        Assert.Equal("stays", cut[0]);
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    private static WeakReference AddUnreachable(SegmentedList<object> list)
    {
        var item = new object();
        list.Add(item);
        return new WeakReference(item);
    }

    [Fact]
    public void A_queue_keeps_its_offsets_across_segments_and_cuts()
    {
        var queue = new QueueState();
        int total = 3 * SegmentedList<QueueEntry>.SegmentLength + 17;
        for (long offset = 0; offset < total; offset++) queue.Set(offset, new QueueEntry { BodyAddress = 1_000 + offset, VisibleAt = offset, Size = 1 });

        queue.RemoveFront(SegmentedList<QueueEntry>.SegmentLength + 5);
        Assert.Equal(SegmentedList<QueueEntry>.SegmentLength + 5, queue.BaseOffset);
        Assert.False(queue.TryGet(SegmentedList<QueueEntry>.SegmentLength + 4, out _));
        for (long offset = queue.BaseOffset; offset < total; offset++)
        {
            Assert.True(queue.TryGet(offset, out var entry));
            Assert.Equal(1_000 + offset, entry.BodyAddress);
        }

        queue.Set(total + 2, new QueueEntry { BodyAddress = 7, VisibleAt = total + 2, Size = 1 });
        Assert.True(queue.TryGet(total, out var hole) && hole.IsHole);
        Assert.Equal(total + 3, queue.NextOffset);
    }

    /// <summary>The source topics kept beside a dead-letter queue's entries go with their entries: at a cut, at a reset,
    /// and never for an offset the queue does not hold.</summary>
    [Fact]
    public void A_queue_keeps_a_source_topic_only_while_it_holds_the_entry()
    {
        var queue = new QueueState();
        for (long offset = 0; offset < 10; offset++) queue.Set(offset, new QueueEntry { BodyAddress = offset, VisibleAt = offset, Size = 1 });
        queue.SetSource(2, "%DLQ%A");
        queue.SetSource(7, "%DLQ%B");
        queue.SetSource(10, "%DLQ%C"); // past the end: no entry holds it
        Assert.Equal(("%DLQ%A", "%DLQ%B", null, null), (queue.SourceOf(2), queue.SourceOf(7), queue.SourceOf(3), queue.SourceOf(10)));

        queue.RemoveFront(5);
        Assert.Null(queue.SourceOf(2));
        Assert.Equal("%DLQ%B", queue.SourceOf(7));
        queue.SetSource(3, "%DLQ%A"); // below the front: cut
        Assert.Null(queue.SourceOf(3));

        queue.Reset(20);
        Assert.Null(queue.SourceOf(7));
    }

    [Fact]
    public void A_short_list_costs_what_it_holds_not_a_segment()
    {
        // A broker holds a queue per topic and queue id; most hold a few entries.
        long before = GC.GetAllocatedBytesForCurrentThread();
        var lists = new SegmentedList<QueueEntry>[100];
        for (int i = 0; i < lists.Length; i++)
        {
            lists[i] = new SegmentedList<QueueEntry>();
            for (int k = 0; k < 3; k++) lists[i].Add(new QueueEntry { BodyAddress = k });
        }
        long allocated = GC.GetAllocatedBytesForCurrentThread() - before;
        Assert.True(allocated < 100 * 2_048, $"100 lists of 3 entries allocated {allocated:N0} bytes");
        Assert.Equal(2, lists[99][2].BodyAddress);
    }

    [Fact]
    public void A_list_cut_as_fast_as_it_grows_reuses_its_segments()
    {
        var list = new SegmentedList<long>();
        for (int i = 0; i < 8 * Segment; i++) list.Add(i);
        list.RemoveFront(4 * Segment + 10);

        long before = GC.GetAllocatedBytesForCurrentThread();
        for (int i = 0; i < 4 * Segment; i++) list.Add(i);
        long allocated = GC.GetAllocatedBytesForCurrentThread() - before;
        Assert.True(allocated < Segment * sizeof(long), $"appending four segments' worth after a cut of four allocated {allocated:N0} bytes");
        Assert.Equal(8 * Segment - 10, list.Count);
        Assert.Equal(4 * Segment + 10, list[0]);
        Assert.Equal(4 * Segment - 1, list[list.Count - 1]);

        // A list that a cut shrank for good keeps no more spare segments than it uses; emptied, none.
        list.RemoveFront(list.Count - 5);
        Assert.InRange(list.SpareCount, 0, list.SegmentCount);
        list.RemoveFront(list.Count);
        Assert.Equal(0, list.SpareCount);
        list.Add(1);
        Assert.Equal(1, list[0]);
    }

    [Fact]
    public void A_queue_finds_every_entry_whose_body_lies_below_a_cut_reading_only_the_blocks_that_can_hold_one()
    {
        int seed = Environment.TickCount;
        var random = new Random(seed);
        var queue = new QueueState();
        const int blocks = 12;
        int total = blocks * Segment;
        // Bodies just before their entries, as a half before its commit; a few late ones far back (a half committed
        // late, a delay released late), and holes.
        for (long offset = 0; offset < total; offset++)
        {
            long body = random.Next(50) == 0 && offset > 3 * Segment ? random.Next((int)offset) * 100L : offset * 100 - 50;
            if (random.Next(97) == 0) queue.Set(offset, new QueueEntry { BodyAddress = QueueEntry.Missing });
            else queue.Set(offset, new QueueEntry { BodyAddress = Math.Max(0, body), VisibleAt = offset * 100, Size = 1 });
        }

        void Check(long boundary, int from)
        {
            var expected = new List<int>();
            for (int i = from; i < queue.Entries.Count; i++)
                if (!queue.Entries[i].IsHole && queue.Entries[i].BodyAddress < boundary) expected.Add(i);
            Assert.True(expected.SequenceEqual(queue.EntriesWithBodyBelow(from, boundary)), $"seed {seed}: boundary {boundary}, from {from}");
        }

        for (int round = 0; round < 40; round++)
        {
            long boundary = random.NextInt64(total * 100L);
            Check(boundary, random.Next(queue.Entries.Count + 1));
            Check(boundary, 0);
        }

        // With few late bodies, a cut a third of the way in reads the blocks before it and those holding a late one.
        queue = new QueueState();
        for (long offset = 0; offset < total; offset++)
            queue.Set(offset, new QueueEntry { BodyAddress = offset == 9 * Segment + 5 ? 7 : offset * 100 + 50, VisibleAt = offset * 100, Size = 1 });
        Assert.Equal(5, queue.BlocksToReadBelow(4L * Segment * 100)); // blocks 0-3 and block 9
        Assert.Equal(new[] { 9 * Segment + 5 }, queue.EntriesWithBodyBelow(4 * Segment, 4L * Segment * 100).ToArray());

        // After a cut the blocks still line up with the offsets.
        queue.RemoveFront(2 * Segment + 100);
        Check(4L * Segment * 100, 0);
        Assert.Equal(3, queue.BlocksToReadBelow(4L * Segment * 100)); // blocks 2 (in part) and 3, and block 9
    }

    [Fact]
    public void The_decided_ids_fill_their_tables_evenly_and_stay_exact()
    {
        const int ids = 100_000;
        var index = new DecidedIndex(retentionMs: long.MaxValue / 4, maxCount: ids - 1_000);
        for (int i = 0; i < ids; i++) index.Add($"tx-{i}", i % 3 == 0 ? TransactionResolution.Rollback : TransactionResolution.Commit, i, atMs: i, topic: "t");

        // The count bound forgot the oldest thousand; the rest answer exactly.
        Assert.Equal(ids - 1_000, index.Count);
        Assert.False(index.Contains("tx-999"));
        Assert.True(index.TryGet("tx-1000", out var resolution, out long address) && address == 1_000);
        Assert.Equal(TransactionResolution.Commit, resolution);
        Assert.True(index.TryGet("tx-99999", out resolution, out _) && resolution == TransactionResolution.Rollback);

        // No table holds much more than its share, so none grows (rehashes everything in it under the lock) large.
        Assert.True(DecidedIndex.Shards >= 16, "a sixteenth of a million ids or less per table");
        int share = index.Count / DecidedIndex.Shards;
        Assert.InRange(index.LargestShard, share, share * 5 / 4);

        // A decision replayed with the same values adds nothing; a newer one for the same id replaces it.
        long added = index.Added;
        index.Add("tx-5000", TransactionResolution.Commit, 5_000, atMs: 5_000, topic: "t");
        Assert.Equal(added, index.Added);
        index.Add("tx-5000", TransactionResolution.Rollback, 123_456, atMs: 200_000, topic: "t");
        Assert.Equal(ids - 1_000, index.Count);
        Assert.True(index.TryGet("tx-5000", out resolution, out address) && address == 123_456 && resolution == TransactionResolution.Rollback);

        index.Expire(nowMs: long.MaxValue / 4 + 50_000);
        Assert.False(index.Contains("tx-49999"));
        Assert.True(index.Contains("tx-50000"));
        Assert.True(index.Contains("tx-5000")); // its newer slot is younger than the horizon
        index.Clear();
        Assert.Equal(0, index.Count);
        Assert.Equal(0, index.LargestShard);
    }
}
