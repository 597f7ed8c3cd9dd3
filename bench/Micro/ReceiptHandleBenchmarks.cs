using BenchmarkDotNet.Attributes;
using HalfMsg.Broker.Core.Delivery;

namespace HalfMsg.Bench.Micro;

/// <summary>Receipt handle encode (string) and parse.</summary>
[MemoryDiagnoser]
public class ReceiptHandleBenchmarks
{
    private readonly ReceiptHandle _handle = new(5, 1_234_567, 0x1234_5678_9ABC_DEF0);
    private string _text = "";

    [GlobalSetup]
    public void Setup() => _text = _handle.Encode();

    [Benchmark]
    public int Encode() => _handle.Encode().Length;

    [Benchmark]
    public long Decode() => ReceiptHandle.TryParse(_text, out var h) ? h.QueueOffset : -1;
}
