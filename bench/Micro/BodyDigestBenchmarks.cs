using Apache.Rocketmq.V2;
using BenchmarkDotNet.Attributes;
using HalfMsg.Protocol.Identifiers;

namespace HalfMsg.Bench.Micro;

/// <summary>The body digest of one delivered message: MD5 (as before) against CRC32 (what the broker sends now).</summary>
[MemoryDiagnoser]
public class BodyDigestBenchmarks
{
    private byte[] _body = [];

    [Params(1024)]
    public int BodySize { get; set; }

    [GlobalSetup]
    public void Setup()
    {
        _body = new byte[BodySize];
        new Random(7).NextBytes(_body);
    }

    [Benchmark(Baseline = true)]
    public Digest Md5() => new() { Type = DigestType.Md5, Checksum = Md5Digest.UpperHex(_body) };

    [Benchmark]
    public Digest Crc32() => BodyDigest.Crc32Of(_body);
}
