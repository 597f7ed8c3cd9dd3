using HalfMsg.Broker.Core;
using HalfMsg.Broker.Core.Delivery;

namespace HalfMsg.Core.Tests;

/// <summary>
/// The delayed messages are kept so that nothing grows by copying all of them under the engine lock: split into tables
/// by address, their due times in a heap of segments (<see cref="SegmentedHeap{T}"/>, on
/// <see cref="SegmentedList{T}.RemoveLast"/>). These check that the pieces answer exactly as the one table and the
/// <see cref="PriorityQueue{TElement, TPriority}"/> they replace.
/// </summary>
public sealed class DelayedMessagesIndexTests
{
    private const int Segment = SegmentedList<long>.SegmentLength;

    [Fact]
    public void Removing_the_last_item_keeps_a_segmented_list_exact_and_gives_back_emptied_segments()
    {
        int seed = Environment.TickCount;
        var random = new Random(seed);
        var list = new SegmentedList<string>();
        var model = new List<string>();
        int next = 0;
        for (int step = 0; step < 3_000; step++)
        {
            switch (random.Next(10))
            {
                case < 5:
                    for (int n = random.Next(1, Segment); n > 0; n--)
                    {
                        list.Add($"s{next}");
                        model.Add($"s{next++}");
                    }
                    break;
                case < 9:
                    for (int n = Math.Min(model.Count, random.Next(1, Segment + 2)); n > 0; n--)
                    {
                        list.RemoveLast();
                        model.RemoveAt(model.Count - 1);
                    }
                    break;
                default:
                    int drop = random.Next(model.Count + 1);
                    list.RemoveFront(drop);
                    model.RemoveRange(0, drop);
                    break;
            }
            Assert.True(model.Count == list.Count, $"seed {seed}, step {step}");
            if (model.Count > 0)
            {
                Assert.True(model[^1] == list[list.Count - 1], $"seed {seed}, step {step}: last");
                Assert.True(model[0] == list[0], $"seed {seed}, step {step}: first");
            }
            // The segments follow the count: none is kept past the last item (the first may start mid-segment).
            Assert.True(list.SegmentCount <= model.Count / Segment + 2, $"seed {seed}, step {step}: {list.SegmentCount} segments for {model.Count}");
        }
        Assert.Equal(model, list.Items());
        while (list.Count > 0) list.RemoveLast();
        Assert.Equal(0, list.SegmentCount);
        Assert.Throws<InvalidOperationException>(() => list.RemoveLast());
    }

    [Fact]
    public void A_segmented_heap_gives_items_in_priority_order_as_a_priority_queue_does()
    {
        int seed = Environment.TickCount;
        var random = new Random(seed);
        var heap = new SegmentedHeap<long>();
        var model = new PriorityQueue<long, long>();
        for (int step = 0; step < 2_000; step++)
        {
            if (random.Next(3) < 2)
            {
                // Runs of adds, often in time order (a delay level) or with equal times, sometimes anywhere.
                long at = random.Next(1_000_000);
                for (int n = random.Next(1, 3 * Segment); n > 0; n--)
                {
                    long priority = random.Next(4) switch { 0 => random.Next(1_000_000), 1 => at, _ => at += random.Next(3) };
                    heap.Enqueue(priority, priority); // the item is its priority, so equal ones are interchangeable
                    model.Enqueue(priority, priority);
                }
            }
            else
            {
                for (int n = Math.Min(model.Count, random.Next(1, 3 * Segment)); n > 0; n--)
                {
                    Assert.True(heap.TryPeek(out long peeked, out long peekedAt), $"seed {seed}, step {step}");
                    long expected = model.Dequeue();
                    Assert.True(expected == peekedAt && peeked == peekedAt, $"seed {seed}, step {step}: peek");
                    Assert.Equal(expected, heap.Dequeue());
                }
            }
            Assert.True(model.Count == heap.Count, $"seed {seed}, step {step}");
        }
        while (model.Count > 0) Assert.Equal(model.Dequeue(), heap.Dequeue());
        Assert.False(heap.TryPeek(out _, out _));
        Assert.Equal(0, heap.SegmentCount);
        Assert.Throws<InvalidOperationException>(() => heap.Dequeue());
    }

    [Fact]
    public void The_delayed_messages_fill_the_tables_evenly_and_stay_exact_under_every_change()
    {
        var index = new DelayIndex();
        const int messages = 100_000;
        static long Address(int i) => 4_096 + i * 1_088L; // 1 KiB bodies, one after another in the log
        for (int i = 0; i < messages; i++) index.Add(Entry(Address(i), deliverAt: 10_000 + (i % 1_000) * 7));
        index.Add(Entry(Address(5), deliverAt: 1)); // replaced under the same address: counted once, due at its new time
        Assert.Equal(messages, index.Count);

        // No table holds much more than its share, so none grows (copies everything in it under the lock) large.
        Assert.True(DelayIndex.Shards >= 16, "a sixteenth of a million delayed messages or less per table");
        int share = index.Count / DelayIndex.Shards;
        Assert.InRange(index.LargestShard, share, share * 5 / 4);

        for (int i = 0; i < messages; i += 2) Assert.True(index.Remove(Address(i), out _));
        Assert.False(index.Remove(Address(0), out _));
        Assert.Equal(messages / 2, index.Count);
        index.Move(Address(1), 1L << 40, 2_000); // a retention cut moved a body
        Assert.False(index.Contains(Address(1)));
        Assert.True(index.Contains(1L << 40));
        Assert.Equal(index.Count, index.Snapshot().Length);
        Assert.Equal(index.All.Select(e => e.BodyAddress).Order(), index.Snapshot().Select(e => e.BodyAddress).Order());

        // Due in time order; the replaced entry's old time and the removed ones are skipped; the moved one is due as before.
        Assert.Equal(Address(5), Assert.Single(index.TakeDue(1)).BodyAddress);
        var due = index.TakeDue(10_000 + 999 * 7);
        Assert.Equal(messages / 2 - 1, due.Count);
        Assert.Contains(due, e => e.BodyAddress == 1L << 40 && e.Size == 2_000);
        Assert.True(due.Zip(due.Skip(1)).All(p => p.First.DeliverAtMs <= p.Second.DeliverAtMs), "in time order");
        Assert.Equal(0, index.DueCount);

        index.Add(Entry(7, deliverAt: 1));
        index.Clear();
        Assert.Equal(0, index.Count);
        Assert.Equal(0, index.LargestShard);
        Assert.Equal(0, index.DueCount);
        Assert.Empty(index.TakeDue(long.MaxValue));
    }

    [Fact]
    public void Removing_items_from_a_segmented_heap_keeps_the_rest_in_priority_order()
    {
        int seed = Environment.TickCount;
        var random = new Random(seed);
        var heap = new SegmentedHeap<long>();
        var kept = new List<long>();
        for (int i = 0; i < 5 * Segment + 17; i++)
        {
            long priority = random.Next(4) == 0 ? 42 : random.Next(1_000_000);
            heap.Enqueue(priority, priority);
            if (priority % 3 != 0) kept.Add(priority);
        }
        int removed = heap.RemoveWhere((item, priority) => item == priority && priority % 3 == 0);
        Assert.Equal(5 * Segment + 17 - kept.Count, removed);
        Assert.Equal(kept.Count, heap.Count);
        foreach (long expected in kept.Order()) Assert.True(expected == heap.Dequeue(), $"seed {seed}");
        Assert.Equal(0, heap.Count);
        Assert.Equal(0, heap.RemoveWhere((_, _) => true));
    }

    /// <summary>
    /// Removed delayed messages (a topic's delete drops all of its) left their entries in the due-time heap until their
    /// delivery time, up to 3 days ahead, each keeping its entry alive (review 2026-12-06): the stale ones go once they
    /// are most of the heap, as the pending halves' do, and the live ones still come due in order.
    /// </summary>
    [Fact]
    public void Removed_delayed_messages_do_not_stay_in_the_due_time_heap_until_their_time()
    {
        var index = new DelayIndex();
        const int messages = 50_000;
        for (int i = 0; i < messages; i++) index.Add(Entry(4_096 + i * 64L, deliverAt: 1_000_000 - i));
        for (int i = 0; i < messages; i++)
        {
            if (i % 100 == 0) continue; // a five-hundredth stays
            Assert.True(index.Remove(4_096 + i * 64L, out _));
            Assert.True(index.DueCount <= 2 * index.Count + SegmentedHeap.StaleSlack + 1, $"{index.DueCount} heap entries for {index.Count} delayed messages");
        }
        Assert.True(index.StaleDrops > 0);
        var due = index.TakeDue(long.MaxValue);
        Assert.Equal(messages / 100, due.Count);
        Assert.True(due.Zip(due.Skip(1)).All(p => p.First.DeliverAtMs <= p.Second.DeliverAtMs), "in time order");
        Assert.True(due.All(e => (e.BodyAddress - 4_096) / 64 % 100 == 0));
    }

    /// <summary>
    /// A topic's delete removes its delayed messages through the topic's own list (review 2026-12-06, delay 3: it looked
    /// at every delayed message of every topic, in one hold of the engine lock). The lists stay exact under adds,
    /// replacements, removals and moves, and removing one topic leaves every other entry.
    /// </summary>
    [Fact]
    public void Each_topics_delayed_messages_are_listed_apart_and_removed_with_the_topic_alone()
    {
        int seed = Environment.TickCount;
        var random = new Random(seed);
        var index = new DelayIndex();
        var model = new Dictionary<long, string>();
        string[] topics = ["a", "b", "c", "d"];
        long next = 4_096;
        for (int step = 0; step < 20_000; step++)
        {
            switch (random.Next(10))
            {
                case < 5:
                {
                    long address = next += 64;
                    string topic = topics[random.Next(topics.Length)];
                    index.Add(Entry(address, deliverAt: random.Next(1_000_000), topic));
                    model[address] = topic;
                    break;
                }
                case 5 when model.Count > 0:
                {
                    // Replaced under the same address (a replay over a checkpoint that has it), maybe by another topic's.
                    long address = model.Keys.ElementAt(random.Next(model.Count));
                    string topic = topics[random.Next(topics.Length)];
                    index.Add(Entry(address, deliverAt: random.Next(1_000_000), topic));
                    model[address] = topic;
                    break;
                }
                case 6 when model.Count > 0:
                {
                    long address = model.Keys.ElementAt(random.Next(model.Count));
                    index.Move(address, next += 64, 1_024);
                    model[next] = model[address];
                    model.Remove(address);
                    break;
                }
                case < 9 when model.Count > 0:
                {
                    long address = model.Keys.ElementAt(random.Next(model.Count));
                    Assert.True(index.Remove(address, out var removed), $"seed {seed}, step {step}");
                    Assert.Equal(model[address], removed.Topic);
                    model.Remove(address);
                    break;
                }
            }
            if (step % 1_000 == 0)
                foreach (string topic in topics) Assert.True(model.Values.Count(t => t == topic) == index.CountOfTopic(topic), $"seed {seed}, step {step}, topic {topic}");
        }
        int ofB = model.Values.Count(t => t == "b");
        Assert.Equal(ofB, index.RemoveTopic("b"));
        Assert.Equal(0, index.CountOfTopic("b"));
        Assert.Equal(0, index.RemoveTopic("b"));
        Assert.Equal(model.Count - ofB, index.Count);
        Assert.True(model.Where(p => p.Value != "b").All(p => index.Contains(p.Key)), $"seed {seed}");
        foreach (string topic in new[] { "a", "c", "d" }) Assert.Equal(model.Values.Count(t => t == topic), index.CountOfTopic(topic));
    }

    /// <summary>The delayed messages of one topic, time and id hash are listed apart (a recall looks among them alone,
    /// and among those of its topic and time whose id is not known, for the copies of its message), and stay so through
    /// replacement, moves, removals, an id learnt, a topic's delete and a clear.</summary>
    [Fact]
    public void The_messages_of_one_topic_time_and_id_hash_are_listed_apart_and_a_recall_finds_the_copies_among_them()
    {
        var index = new DelayIndex();
        DelayedEntry Sent(long address, long deliverAt, string topic, string id)
        {
            var e = Entry(address, deliverAt, topic);
            e.SentAt = address;
            e.IdHash = DelayedEntry.HashOfId(id);
            index.Add(e);
            return e;
        }
        DelayedEntry FromOlderCheckpoint(long address, long deliverAt) // no id hash known: the recall reads its body
        {
            var e = Entry(address, deliverAt, "t");
            e.SentAt = address;
            index.Add(e);
            return e;
        }
        int Listed(string topic, long deliverAt, string? id) =>
            index.CountOfCopyKey(topic, deliverAt, id is null ? DelayedEntry.UnknownIdHash : DelayedEntry.HashOfId(id));
        Sent(4_096, 500, "t", "A");
        Sent(8_192, 500, "t", "A"); // the retried send
        Sent(12_288, 500, "t", "B"); // another message at the same time
        Sent(16_384, 500, "u", "A"); // the same id in another topic
        Sent(20_480, 501, "t", "A"); // the same id at another time
        FromOlderCheckpoint(24_576, 500);
        index.Add(Entry(28_672, 500, "t")); // a committed delayed transaction message: no recall names it, not listed
        Assert.Equal(2, Listed("t", 500, "A"));
        Assert.Equal(1, Listed("t", 500, "B"));
        Assert.Equal(1, Listed("u", 500, "A"));
        Assert.Equal(1, Listed("t", 501, "A"));
        Assert.Equal(1, Listed("t", 500, null));

        List<long> CopiesOf4096()
        {
            var found = new List<long>();
            index.CopiesDueAt("t", 500, exceptSentAt: 4_096, "A", found);
            return found;
        }
        Assert.Equal([8_192L, 24_576L], CopiesOf4096().Order());

        index.Move(8_192, 1L << 40, 2_000); // retention moved the copy: still found, by the address it was sent at
        Assert.Equal([8_192L, 24_576L], CopiesOf4096().Order());
        Assert.True(index.Remove(1L << 40, out _));
        Assert.Equal(1, Listed("t", 500, "A"));
        Sent(24_576, 900, "t", "A"); // replaced under the same address, due at another time: off the lists of 500
        Assert.Empty(CopiesOf4096());
        Assert.Equal(0, Listed("t", 500, null));
        Assert.Equal(1, Listed("t", 900, "A"));

        // A recall read the body of one whose id was not known: it is listed under its id's hash from then on.
        FromOlderCheckpoint(32_768, 500);
        Assert.Equal([32_768L], CopiesOf4096());
        index.NoteIdOf(32_768, "B");
        Assert.Empty(CopiesOf4096());
        Assert.Equal(0, Listed("t", 500, null));
        Assert.Equal(2, Listed("t", 500, "B"));
        index.NoteIdOf(32_768, "A"); // its hash is known now: not changed
        Assert.Equal(2, Listed("t", 500, "B"));

        Assert.Equal(1, index.RemoveTopic("u"));
        Assert.Equal(0, Listed("u", 500, "A"));
        index.Clear();
        Assert.Equal(0, Listed("t", 500, "A"));
        Sent(4_096, 500, "t", "A");
        Assert.Equal(1, Listed("t", 500, "A"));
    }

    /// <summary>The id hash is kept in checkpoints, so it must be the same in every process: string.GetHashCode, used
    /// until 2026-12-06, differs from one run to the next (a test run in one process would not see it). FNV-1a's values
    /// for ASCII ids, pinned.</summary>
    [Fact]
    public void An_ids_hash_is_the_same_in_every_process()
    {
        Assert.Equal(unchecked((int)0x1A47E90B), DelayedEntry.HashOfId("abc"));
        Assert.Equal(unchecked((int)0x811C9DC5), DelayedEntry.HashOfId(""));
        Assert.NotEqual(DelayedEntry.UnknownIdHash, DelayedEntry.HashOfId("7F0000010F2718B4AAC2612A0B1C0000"));
    }

    /// <summary>
    /// 200,000 delay messages due at one instant (a campaign scheduled for midnight), in two topics. Until 2026-12-06 a
    /// recall of any one of them walked every message due at that millisecond, every topic's, in one hold of the engine
    /// lock, to find its copies: with 1,000,000 it held the lock 177 ms (found by review, on the 2-core test machine).
    /// The walk now visits the message's own copies, and those whose id is not known, of its topic and time.
    /// </summary>
    [Fact]
    public void A_recall_among_many_messages_due_at_its_time_visits_only_its_own_copies()
    {
        var index = new DelayIndex();
        const int messages = 200_000;
        for (int i = 0; i < messages; i++)
        {
            long address = 4_096 + i * 64L;
            index.Add(new DelayedEntry { BodyAddress = address, SentAt = address, Size = 1_024, Topic = i % 2 == 0 ? "t" : "other", DeliverAtMs = 500,
                IdHash = DelayedEntry.HashOfId("id" + i) });
        }
        long retried = 4_096 + messages * 64L;
        index.Add(new DelayedEntry { BodyAddress = retried, SentAt = retried, Size = 1_024, Topic = "t", DeliverAtMs = 500, IdHash = DelayedEntry.HashOfId("id0") });
        var unknown = Entry(retried + 64, 500, "other"); // from an older checkpoint, in another topic: not looked at
        unknown.SentAt = unknown.BodyAddress;
        index.Add(unknown);

        var found = new List<long>();
        index.CopiesDueAt("t", 500, exceptSentAt: 4_096, "id0", found);
        Assert.Equal([retried], found);
        Assert.InRange(index.CopiesVisited, 1, 4); // the copy, and the handle's own message (same key)
        found.Clear();
        index.CopiesDueAt("other", 500, exceptSentAt: 4_096 + 64, "id1", found);
        Assert.Equal([unknown.SentAt], found); // its id is not known: the recall reads its body
        Assert.InRange(index.CopiesVisited, 1, 4);
    }

    [Fact]
    public void Removing_a_topic_ends_also_when_a_move_took_the_address_of_one_of_its_entries()
    {
        // Not reachable today (retention moves a body to the log's tail, where nothing lies yet): a removal by topic
        // must still end, and leave the entry that took the address.
        var index = new DelayIndex();
        index.Add(Entry(4_096, deliverAt: 10, "x"));
        index.Add(Entry(8_192, deliverAt: 20, "y"));
        index.Move(8_192, 4_096, 1_024);
        Assert.Equal(1, index.RemoveTopic("x"));
        Assert.True(index.Contains(4_096));
        Assert.Equal("y", Assert.Single(index.TakeDue(long.MaxValue)).Topic);
    }

    /// <summary>The same through the engine: a topic filled with two-day delays and deleted, again and again (review
    /// 2026-12-06, delay 3; it held 20,000 heap entries for no delayed message).</summary>
    [Fact]
    public async Task Delayed_messages_of_deleted_topics_do_not_pile_up_in_the_due_time_heap()
    {
        await using var h = await EngineHarness.StartAsync();
        long due = h.Clock.GetUtcNow().AddDays(2).ToUnixTimeMilliseconds();
        for (int round = 0; round < 5; round++)
        {
            var drafts = Enumerable.Range(0, 4_000).Select(i => h.Draft("scratch", "later", deliverAt: due)).ToList();
            foreach (var r in await h.Engine.SendBatchAsync(drafts)) Assert.True(r.IsOk, r.Error.ToString());
            Assert.True((await h.Engine.DeleteTopicAsync("scratch")).IsOk);
        }
        var index = (DelayIndex)typeof(BrokerEngine)
            .GetField("_delayed", System.Reflection.BindingFlags.NonPublic | System.Reflection.BindingFlags.Instance)!.GetValue(h.Engine)!;
        lock (h.Engine.GateForTests)
        {
            Assert.Equal(0, index.Count);
            Assert.True(index.DueCount <= SegmentedHeap.StaleSlack, $"{index.DueCount} heap entries (each a DelayedEntry kept alive) for {index.Count} delayed messages");
        }
    }

    private static DelayedEntry Entry(long address, long deliverAt, string topic = "t") => new()
    {
        BodyAddress = address, Size = 1_024, Topic = topic, DeliverAtMs = deliverAt,
    };
}
