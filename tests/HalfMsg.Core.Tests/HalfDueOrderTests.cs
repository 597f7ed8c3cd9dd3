using HalfMsg.Broker.Core;
using HalfMsg.Broker.Core.Transactions;

namespace HalfMsg.Core.Tests;

/// <summary>
/// The halves' due times: an in-order run plus a heap. A check pass must take exactly the live, unparked halves whose
/// current check time has come, each once, earliest first, whatever order the times were scheduled in.
/// </summary>
public sealed class HalfDueOrderTests
{
    [Fact]
    public void Check_passes_take_what_a_plain_scan_of_the_pending_halves_would_take_earliest_first()
    {
        int seed = Environment.TickCount;
        var random = new Random(seed);
        var index = new HalfIndex(new DecidedIndex(60_000, 1_000));
        var live = new Dictionary<string, HalfState>();
        long now = 1_000;
        int next = 0;
        int taken = 0, outOfOrder = 0;
        for (int step = 0; step < 20_000; step++)
        {
            switch (random.Next(10))
            {
                case < 5: // a new half, due after the usual timeout, or (now and then) a custom check time
                {
                    long at = random.Next(8) == 0 ? now + random.Next(0, 3_000) : now + 2_000;
                    var half = Half("tx" + next++, at, parked: random.Next(20) == 0);
                    index.Add(half);
                    live[half.TransactionId] = half;
                    break;
                }
                case 5 when live.Count > 0: // decided: gone from the index, its entry stale
                {
                    var id = live.Keys.ElementAt(random.Next(live.Count));
                    Assert.True(index.Remove(id, out _));
                    live.Remove(id);
                    break;
                }
                case 6 when live.Count > 0: // rescheduled earlier or later (the old entry goes stale)
                {
                    var half = live.Values.ElementAt(random.Next(live.Count));
                    if (half.Parked) break;
                    long at = now + random.Next(-500, 4_000);
                    if (at < half.NextCheckAtMs) outOfOrder++;
                    half.NextCheckAtMs = at;
                    index.Schedule(half);
                    break;
                }
                default: // time passes; sometimes a check pass runs
                {
                    now += random.Next(0, 200);
                    if (random.Next(3) != 0) break;
                    var expected = live.Values.Where(h => !h.Parked && h.NextCheckAtMs <= now)
                        .OrderBy(h => h.NextCheckAtMs).ToList();
                    var got = index.TakeDue(now);
                    Assert.True(expected.Select(h => h.TransactionId).Order().SequenceEqual(got.Select(h => h.TransactionId).Order()),
                        $"seed {seed}, step {step}: expected [{string.Join(",", expected.Select(h => h.TransactionId))}], got [{string.Join(",", got.Select(h => h.TransactionId))}]");
                    Assert.True(got.Select(h => h.NextCheckAtMs).SequenceEqual(got.Select(h => h.NextCheckAtMs).Order()), $"seed {seed}, step {step}: not earliest first");
                    taken += got.Count;
                    // As the engine does after a check: each taken half is due again later (or it would be taken again).
                    foreach (var half in got)
                    {
                        half.NextCheckAtMs = now + 1_000 + random.Next(0, 1_000);
                        index.Schedule(half);
                    }
                    break;
                }
            }
            Assert.Equal(live.Count, index.Count);
        }

        // The tables hold exactly the live halves.
        Assert.True(live.Keys.Order().SequenceEqual(index.All.Select(h => h.TransactionId).Order()), $"seed {seed}: All differs");
        Assert.True(live.Keys.Order().SequenceEqual(index.Snapshot().Select(h => h.TransactionId).Order()), $"seed {seed}: Snapshot differs");
        Assert.True(taken > 1_000, $"seed {seed}: only {taken} taken");
        Assert.True(outOfOrder > 100, $"seed {seed}: only {outOfOrder} out-of-order schedules");
    }

    [Fact]
    public void A_half_whose_time_moved_is_taken_at_its_new_time_only_once()
    {
        var index = new HalfIndex(new DecidedIndex(60_000, 1_000));
        var a = Half("a", 100, parked: false);
        var b = Half("b", 200, parked: false);
        index.Add(a);
        index.Add(b);
        a.NextCheckAtMs = 300; // later: its in-order entry at 100 is stale
        index.Schedule(a);
        b.NextCheckAtMs = 50; // earlier than the in-order run's tail: goes to the heap
        index.Schedule(b);
        Assert.Equal(["b"], index.TakeDue(150).Select(h => h.TransactionId));
        Assert.Empty(index.TakeDue(250));
        Assert.Equal(["a"], index.TakeDue(300).Select(h => h.TransactionId));
        Assert.Empty(index.TakeDue(10_000));
        Assert.Equal(0, index.DueCount);
    }

    [Fact]
    public void The_pending_halves_fill_their_tables_evenly_and_stay_exact()
    {
        var index = new HalfIndex(new DecidedIndex(60_000, 1_000));
        const int halves = 100_000;
        static string Id(int i) => $"7F000001{i:X8}0000{i % 97:X4}"; // message-id-like, as RocketMQ clients make them
        for (int i = 0; i < halves; i++) index.Add(Half(Id(i), 1_000 + i, parked: false));
        index.Add(Half("replaced", 5, parked: false)); // a replaced half does not count twice
        index.Add(Half("replaced", 6, parked: false));
        Assert.Equal(halves + 1, index.Count);

        // No table holds much more than its share, so none grows (copies everything in it under the lock) large.
        Assert.True(HalfIndex.Shards >= 16, "a sixteenth of a million pending halves or less per table");
        int share = index.Count / HalfIndex.Shards;
        Assert.InRange(index.LargestShard, share, share * 5 / 4);

        for (int i = 0; i < halves; i += 2) Assert.True(index.Remove(Id(i), out _));
        Assert.False(index.Remove(Id(0), out _));
        Assert.Equal(halves / 2 + 1, index.Count);
        Assert.True(index.TryGet(Id(1), out var kept) && kept.NextCheckAtMs == 1_001);
        Assert.False(index.TryGet(Id(0), out _));
        Assert.Equal(index.Count, index.Snapshot().Length);
        Assert.Equal(index.Count, index.All.Count());
        Assert.Equal(halves / 2 + 1, index.TakeDue(long.MaxValue).Count);
        index.Clear();
        Assert.Equal(0, index.Count);
        Assert.Equal(0, index.LargestShard);
        Assert.Empty(index.All);
    }

    private static HalfState Half(string id, long at, bool parked) => new()
    {
        TransactionId = id, MessageId = id, Topic = "t", ProducerGroup = "g", NextCheckAtMs = at, Parked = parked,
    };
}
