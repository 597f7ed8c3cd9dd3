using BenchmarkDotNet.Attributes;
using HalfMsg.Broker.Core.Storage;

namespace HalfMsg.Bench.Micro;

/// <summary>Encode (RecordWriter → sealed record with CRC-32C) and decode (RecordHeader.TryOpen + every field) of a
/// MessageStored-like record with a 1 KiB body, field order as BrokerEngine.SendAsync writes it.</summary>
[MemoryDiagnoser]
public class RecordCodecBenchmarks
{
    private readonly RecordWriter _writer = new();
    private byte[] _body = [];
    private byte[] _record = [];
    private readonly string[] _keys = ["order-42"];
    private readonly Dictionary<string, string> _props = new() { ["trace"] = "abc123", ["tenant"] = "t1" };

    [Params(1024)]
    public int BodyBytes { get; set; }

    [GlobalSetup]
    public void Setup()
    {
        _body = new byte[BodyBytes];
        Random.Shared.NextBytes(_body);
        _record = Write().ToArray();
    }

    private ReadOnlySpan<byte> Write() =>
        _writer.Begin(RecordKind.MessageStored).I32(3).I64(123_456).I64(-1).Byte(4).Str(null).Str(null).I32(-1)
            .Str("bench-topic").Str("01A2B3C4D5E6F70800000000000000002A").Str("TagA").StrList(_keys).StrMap(_props)
            .I64(1_760_000_000_000).Str("10.0.0.1").I64(1_760_000_000_123).Str(null).I64(0)
            .Bytes(_body).Seal();

    [Benchmark]
    public int Encode() => Write().Length;

    [Benchmark]
    public long Decode()
    {
        if (!RecordHeader.TryOpen(_record, out var kind, out var r, out var error)) throw new InvalidOperationException(error);
        long acc = (long)kind;
        acc += r.I32(); acc += r.I64(); acc += r.I64(); acc += r.Byte(); _ = r.Str(); _ = r.Str(); acc += r.I32();
        acc += r.Str()!.Length; acc += r.Str()!.Length; acc += r.Str()?.Length ?? 0;
        acc += r.StrList().Length; acc += r.StrMap().Count;
        acc += r.I64(); _ = r.Str(); acc += r.I64(); _ = r.Str(); acc += r.I64();
        acc += r.Bytes().Length;
        return acc;
    }
}
