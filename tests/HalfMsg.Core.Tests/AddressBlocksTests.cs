using HalfMsg.Broker.Core;
using HalfMsg.Broker.Core.Delivery;
using HalfMsg.Broker.Core.Retention;
using HalfMsg.Broker.Core.Storage;
using HalfMsg.Broker.Core.Transactions;

namespace HalfMsg.Core.Tests;

/// <summary>
/// A retention cut finds the pending halves and delayed messages whose body lies below it through their log blocks.
/// It must find exactly what a scan of all of them finds, whatever happened to them before (added, replaced, decided,
/// moved by a replay or an earlier cut, released, cleared), and look at no more than those in the blocks below the cut.
/// </summary>
public sealed class AddressBlocksTests
{
    private const long Block = AddressBlocks<object>.BlockBytes;

    [Fact]
    public void A_cut_finds_what_a_scan_of_every_half_and_delayed_message_finds_after_any_history()
    {
        int seed = Environment.TickCount;
        var random = new Random(seed);
        var (halves, delayed, planner) = NewState();
        var liveHalves = new Dictionary<string, HalfState>();
        var liveDelayed = new Dictionary<long, DelayedEntry>();
        long Anywhere() => random.NextInt64(64, 40 * Block);
        int next = 0;
        for (int step = 0; step < 20_000; step++)
        {
            if (step % 5_000 == 4_999) // another checkpoint tried at recovery: everything cleared
            {
                halves.Clear();
                delayed.Clear();
                liveHalves.Clear();
                liveDelayed.Clear();
                continue;
            }
            switch (random.Next(20))
            {
                case < 5: // a new half
                {
                    var half = Half("tx" + next++, Anywhere());
                    halves.Add(half);
                    liveHalves[half.TransactionId] = half;
                    break;
                }
                case 5 when liveHalves.Count > 0: // the same id stored again elsewhere (the index takes the newer)
                {
                    var id = liveHalves.Keys.ElementAt(random.Next(liveHalves.Count));
                    var half = Half(id, Anywhere());
                    halves.Add(half);
                    liveHalves[id] = half;
                    break;
                }
                case 6 or 7 when liveHalves.Count > 0: // decided
                {
                    var id = liveHalves.Keys.ElementAt(random.Next(liveHalves.Count));
                    Assert.True(halves.Remove(id, out _));
                    liveHalves.Remove(id);
                    break;
                }
                case 8 when liveHalves.Count > 0: // moved (a replay over a checkpoint, a retention move)
                {
                    var half = liveHalves.Values.ElementAt(random.Next(liveHalves.Count));
                    halves.MoveBody(half, Anywhere(), 100);
                    break;
                }
                case 9: // a half no longer in the index is moved: the index must not take it back
                {
                    var gone = Half("gone" + next++, Anywhere());
                    halves.MoveBody(gone, Anywhere(), 100);
                    break;
                }
                case 10 or 11: // a delayed message (now and then at the address of one already there: the newer wins)
                {
                    long address = random.Next(5) == 0 && liveDelayed.Count > 0 ? liveDelayed.Keys.ElementAt(random.Next(liveDelayed.Count)) : Anywhere();
                    var entry = new DelayedEntry { BodyAddress = address, Size = 100, Topic = "t", DeliverAtMs = 1 };
                    delayed.Add(entry);
                    liveDelayed[address] = entry;
                    break;
                }
                case 12 when liveDelayed.Count > 0: // released
                {
                    long address = liveDelayed.Keys.ElementAt(random.Next(liveDelayed.Count));
                    Assert.True(delayed.Remove(address, out _));
                    liveDelayed.Remove(address);
                    break;
                }
                case 13 when liveDelayed.Count > 0: // moved by a cut
                {
                    long from = liveDelayed.Keys.ElementAt(random.Next(liveDelayed.Count));
                    long to = Anywhere();
                    if (liveDelayed.ContainsKey(to)) break;
                    delayed.Move(from, to, 100);
                    liveDelayed[to] = liveDelayed[from];
                    liveDelayed.Remove(from);
                    break;
                }
                default: // a cut is planned
                {
                    long boundary = random.NextInt64(0, 41 * Block);
                    var live = planner.CollectLiveBelow(boundary);
                    var expected = liveHalves.Values.Where(h => h.Address < boundary).Select(h => (h.Address, $"half {h.TransactionId}"))
                        .Concat(liveDelayed.Values.Where(d => d.BodyAddress < boundary).Select(d => (d.BodyAddress, "delayed")))
                        .Order().ToList();
                    var got = live.SelectMany(p => p.Value.Select(r => (p.Key, r.HalfTransactionId is { } tx ? $"half {tx}" : "delayed"))).Order().ToList();
                    Assert.True(expected.SequenceEqual(got), $"seed {seed}, step {step}, boundary {boundary}: expected {expected.Count} references, got {got.Count}");
                    long blocksEnd = (boundary + Block - 1) / Block * Block;
                    int mayVisit = liveHalves.Values.Count(h => h.Address < blocksEnd) + liveDelayed.Keys.Count(a => a < blocksEnd);
                    Assert.True(planner.LastHalvesAndDelayedVisited <= mayVisit,
                        $"seed {seed}, step {step}: looked at {planner.LastHalvesAndDelayedVisited}, only {mayVisit} lie in the blocks below {boundary}");
                    break;
                }
            }
        }
        Assert.Equal(liveHalves.Count, halves.Count);
        Assert.Equal(liveDelayed.Count, delayed.Count);
    }

    [Fact]
    public void A_cut_near_the_head_looks_only_at_the_halves_and_delayed_messages_in_the_blocks_below_it()
    {
        var (halves, delayed, planner) = NewState();
        // 100 blocks of log, 100 halves and 10 delayed messages in each, in log order as a running broker adds them.
        for (int block = 0; block < 100; block++)
        {
            for (int i = 0; i < 100; i++) halves.Add(Half($"tx-{block}-{i}", block * Block + 64 + i * 1_000));
            for (int i = 0; i < 10; i++) delayed.Add(new DelayedEntry { BodyAddress = block * Block + 500_000 + i * 1_000, Size = 100, Topic = "t", DeliverAtMs = 1 });
        }
        long boundary = 2 * Block + 64 + 50 * 1_000; // inside the third block: its first 50 halves lie below it
        var live = planner.CollectLiveBelow(boundary);
        Assert.Equal(2 * 100 + 50 + 2 * 10, live.Count);
        Assert.Equal(3 * 110, planner.LastHalvesAndDelayedVisited);

        // Decided halves and released messages leave their blocks; moved ones go with their body.
        Assert.True(halves.Remove("tx-0-0", out _));
        Assert.True(halves.TryGet("tx-1-0", out var moved));
        halves.MoveBody(moved, 99 * Block + 900_000, 100);
        Assert.True(delayed.Remove(500_000, out _));
        delayed.Move(Block + 500_000, 98 * Block, 100);
        live = planner.CollectLiveBelow(boundary);
        Assert.Equal(2 * 100 + 50 + 2 * 10 - 4, live.Count);
        Assert.Equal(3 * 110 - 4, planner.LastHalvesAndDelayedVisited);
        Assert.Equal(100 * 100 - 1 + 100 * 10 - 1, planner.CollectLiveBelow(100 * Block).Count);
    }

    private static (HalfIndex Halves, DelayIndex Delayed, RetentionPlanner Planner) NewState()
    {
        var halves = new HalfIndex(new DecidedIndex(60_000, 1_000));
        var delayed = new DelayIndex();
        var owners = new StateOwners(new TopicQueues(() => long.MaxValue), new ConsumerGroups(), halves, delayed, new PullOffsets(), new TagInterner());
        return (halves, delayed, new RetentionPlanner(owners, new CoreOptions()));
    }

    private static HalfState Half(string id, long address) => new()
    {
        TransactionId = id, MessageId = id, Topic = "t", ProducerGroup = "g", Address = address, Size = 100, NextCheckAtMs = long.MaxValue,
    };
}
