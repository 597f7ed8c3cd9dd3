using BenchmarkDotNet.Attributes;
using HalfMsg.Broker.Core;
using HalfMsg.Broker.Core.Delivery;

namespace HalfMsg.Bench.Micro;

/// <summary>
/// The delay index's share of one delay message: added when stored (its id hashed, as the replay of its record does)
/// and taken when due, with <see cref="InFlight"/> others waiting, in log order 1 KiB apart as a broker writes them.
/// <see cref="SameTime"/> puts every message at one delivery millisecond (a campaign scheduled for one instant).
/// </summary>
[MemoryDiagnoser]
public class DelayIndexBenchmarks
{
    private const long RecordBytes = 1_088;
    private DelayIndex _index = null!;
    private DelayedEntry[] _ring = null!;
    private string[] _ids = null!;
    private long _next;

    [Params(4_096)]
    public int InFlight { get; set; }

    [Params(false, true)]
    public bool SameTime { get; set; }

    [GlobalSetup]
    public void Setup()
    {
        _index = new DelayIndex();
        // Entries made ahead, so the measurement is the index's work, not their allocation.
        _ring = new DelayedEntry[1 << 16];
        _ids = new string[_ring.Length];
        for (int i = 0; i < _ring.Length; i++)
        {
            _ids[i] = "7F00000100" + i.ToString("X22", System.Globalization.CultureInfo.InvariantCulture);
            _ring[i] = new DelayedEntry { Topic = "bench", Size = (int)RecordBytes };
        }
        for (; _next < InFlight; _next++) Add(_next);
    }

    private void Add(long n)
    {
        int slot = (int)(n & (_ring.Length - 1));
        var entry = _ring[slot];
        entry.BodyAddress = entry.SentAt = entry.SendOrder = 64 + n * RecordBytes;
        entry.DeliverAtMs = SameTime ? 500 : n;
        entry.IdHash = DelayedEntry.HashOfId(_ids[slot]);
        _index.Add(entry);
    }

    /// <summary>One delay message stored, the earliest due one taken and removed (its delivery).</summary>
    [Benchmark]
    public bool StoreAndDeliver()
    {
        Add(_next++);
        return _index.TryTakeDue(long.MaxValue, out var due) && _index.Remove(due.BodyAddress, out _);
    }
}
