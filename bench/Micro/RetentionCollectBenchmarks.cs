using BenchmarkDotNet.Attributes;
using HalfMsg.Broker.Core;
using HalfMsg.Broker.Core.Delivery;
using HalfMsg.Broker.Core.Retention;
using HalfMsg.Broker.Core.Storage;
using HalfMsg.Broker.Core.Transactions;

namespace HalfMsg.Bench.Micro;

/// <summary>
/// A retention cut's search for the live bodies below it, with many pending halves and delayed messages, as the
/// engine runs it under its lock (once per relocation round, at least twice, and once more in the hold that cuts the
/// head). The halves lie in log order, 1 KiB apart, as a broker writes them; the cut lies <see cref="BelowCut"/> of
/// them in, as when a burst of transactions is still pending when the log reaches its limit. No queue entries: their
/// search reads only the blocks near the cut already.
/// </summary>
[MemoryDiagnoser]
public class RetentionCollectBenchmarks
{
    private const long RecordBytes = 1_088; // a 1 KiB body with its record header
    private const int BelowCut = 1_000;
    private RetentionPlanner _planner = null!;
    private long _boundary;

    [Params(100_000, 1_000_000)]
    public int Pending { get; set; }

    [GlobalSetup]
    public void Setup()
    {
        var halves = new HalfIndex(new DecidedIndex(60_000, 1_000));
        var delayed = new DelayIndex();
        for (int i = 0; i < Pending; i++)
        {
            long address = 64 + i * RecordBytes;
            if (i % 10 == 9)
            {
                delayed.Add(new DelayedEntry { BodyAddress = address, Size = (int)RecordBytes, Topic = "bench", DeliverAtMs = long.MaxValue });
                continue;
            }
            string id = "01" + i.ToString("X30", System.Globalization.CultureInfo.InvariantCulture);
            halves.Add(new HalfState
            {
                TransactionId = id, MessageId = id, Topic = "bench", ProducerGroup = "bench-group", Address = address,
                Size = (int)RecordBytes, NextCheckAtMs = long.MaxValue,
            });
        }
        _boundary = 64 + BelowCut * RecordBytes;
        var owners = new StateOwners(new TopicQueues(() => long.MaxValue), new ConsumerGroups(), halves, delayed, new PullOffsets(), new TagInterner());
        _planner = new RetentionPlanner(owners, new CoreOptions());
    }

    /// <summary>One search; returns how many bodies it found below the cut (<see cref="BelowCut"/>).</summary>
    [Benchmark]
    public int CollectLiveBelow() => _planner.CollectLiveBelow(_boundary).Count;
}
