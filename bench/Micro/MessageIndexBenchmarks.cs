using BenchmarkDotNet.Attributes;
using HalfMsg.Broker.Core.Diagnostics;
using HalfMsg.Broker.Core.Model;

namespace HalfMsg.Bench.Micro;

/// <summary>
/// The message index's share of one committed, delivered and acked transaction (its four hooks: half stored, decided,
/// delivered, acked), on an index kept full at its default capacity as on a busy broker. Allocated bytes are per
/// transaction; what stays allocated is the index's memory per message (see <see cref="RetainedBytesPerMessage"/>).
/// </summary>
[MemoryDiagnoser]
public class MessageIndexBenchmarks
{
    private const int Capacity = 200_000;
    private MessageIndex _index = null!;
    private long _next;
    private readonly byte[] _body = new byte[1024];

    [GlobalSetup]
    public void Setup()
    {
        _index = new MessageIndex(Capacity);
        for (int i = 0; i < Capacity; i++) Transaction(_index, _next++, _body);
    }

    [Benchmark]
    public void OneTransaction() => Transaction(_index, _next++, _body);

    /// <summary>One transaction as the engine reports it, with ids and a key the size real ones have.</summary>
    internal static void Transaction(MessageIndex index, long n, byte[] body)
    {
        string id = "01" + n.ToString("X30", System.Globalization.CultureInfo.InvariantCulture); // 32 characters, like our message ids
        var draft = new MessageDraft { Topic = "bench-tx", MessageId = id, Keys = ["order-" + n.ToString(System.Globalization.CultureInfo.InvariantCulture)], Body = body };
        int queue = (int)(n % 8);
        long offset = n / 8;
        index.OnHalf(draft, "bench-producer-group", n);
        index.OnDecided(id, TransactionResolution.Commit, DecisionSource.Client, queue, offset, n + 1, n);
        index.OnDelivered("bench-tx", "bench-consumer-group", "client-1", [(queue, offset, 1)], n + 2);
        index.OnAcked("bench-consumer-group", "bench-tx", queue, offset, n + 3);
    }

    /// <summary>Bytes the index keeps per message when full: the live heap with a full index, less without it.</summary>
    public static double RetainedBytesPerMessage(int capacity = Capacity)
    {
        var body = new byte[1024];
        long before = GC.GetTotalMemory(forceFullCollection: true);
        var index = new MessageIndex(capacity);
        for (long n = 0; n < capacity * 2L; n++) Transaction(index, n, body);
        long after = GC.GetTotalMemory(forceFullCollection: true);
        GC.KeepAlive(index);
        return (after - before) / (double)capacity;
    }
}
