using BenchmarkDotNet.Attributes;
using HalfMsg.Broker.Core;
using HalfMsg.Broker.Core.Transactions;

namespace HalfMsg.Bench.Micro;

/// <summary>
/// The pending halves' share of one transaction: its half is added when stored and removed when decided, with
/// <see cref="InFlight"/> others pending, in log order 1 KiB apart as a broker writes them. The due times are left
/// out (the halves are parked). <see cref="StoreDecideAndRemember"/> adds the decided ids' share.
/// </summary>
[MemoryDiagnoser]
public class HalfIndexBenchmarks
{
    private const long RecordBytes = 1_088;
    private HalfIndex _index = null!;
    private HalfState[] _ring = null!;
    private UInt128[] _keys = null!;
    private long _next;

    [Params(256)]
    public int InFlight { get; set; }

    [GlobalSetup]
    public void Setup()
    {
        _index = new HalfIndex(new DecidedIndex(60_000, 1_000));
        // Halves made ahead, so the measurement is the index's work, not their allocation.
        _ring = new HalfState[1 << 16];
        for (int i = 0; i < _ring.Length; i++)
        {
            string id = "01" + i.ToString("X30", System.Globalization.CultureInfo.InvariantCulture);
            // Parked: no due-time entries, which would pile up here since no check pass takes them (their cost is the
            // same in every build this compares).
            _ring[i] = new HalfState { TransactionId = id, MessageId = id, Topic = "bench", ProducerGroup = "bench-group", Size = (int)RecordBytes, Parked = true };
        }
        _keys = _ring.Select(h => DecidedIndex.KeyOf(h.TransactionId)).ToArray();
        for (; _next < InFlight; _next++) Add(_next);
    }

    private void Add(long n)
    {
        var half = _ring[n & (_ring.Length - 1)];
        half.Address = 64 + n * RecordBytes;
        half.NextCheckAtMs = n;
        _index.Add(half);
    }

    /// <summary>One half stored, the oldest one decided.</summary>
    [Benchmark]
    public bool StoreAndDecide()
    {
        Add(_next);
        return _index.Remove(_ring[(_next++ - InFlight) & (_ring.Length - 1)].TransactionId, out _);
    }

    /// <summary>As <see cref="StoreAndDecide"/>, and the decision remembered, with the decided ids at their bound (each
    /// add forgets the oldest). The id's digest is computed ahead: this is the tables' work.</summary>
    [Benchmark]
    public void StoreDecideAndRemember()
    {
        Add(_next);
        long oldest = (_next++ - InFlight) & (_ring.Length - 1);
        _index.Remove(_ring[oldest].TransactionId, out _);
        _index.Decided.Add(_keys[oldest], HalfMsg.Broker.Core.Model.TransactionResolution.Commit, _next, _next, "");
    }
}
