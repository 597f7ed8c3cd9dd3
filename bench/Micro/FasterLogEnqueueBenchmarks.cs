using BenchmarkDotNet.Attributes;
using FASTER.core;

namespace HalfMsg.Bench.Micro;

/// <summary>FasterLog.Enqueue of one record (no commit): the in-memory append cost the broker pays per record.</summary>
[MemoryDiagnoser]
public class FasterLogEnqueueBenchmarks
{
    private string _dir = "";
    private IDevice _device = null!;
    private FasterLog _log = null!;
    private byte[] _record = [];

    [Params(1024)]
    public int RecordBytes { get; set; }

    [GlobalSetup]
    public void Setup()
    {
        _dir = Path.Combine(Path.GetTempPath(), "halfmsg-micro-" + Guid.NewGuid().ToString("N")[..10]);
        Directory.CreateDirectory(_dir);
        // Exactly the broker's FasterLog settings, so the ratio compares like with like.
        var (settings, device, _) = HalfMsg.Broker.Core.Storage.RecordLog.CreateSettings(Path.Combine(_dir, "raw"), segmentSizeBits: 26, memorySizeBits: 26);
        _device = device;
        _log = new FasterLog(settings);
        _record = new byte[RecordBytes];
        Random.Shared.NextBytes(_record);
    }

    private long _count;

    [Benchmark]
    public long Enqueue() => Reclaim(_log.Enqueue(_record));

    [Benchmark]
    public long EnqueueSpan() => Reclaim(_log.Enqueue((ReadOnlySpan<byte>)_record));

    /// <summary>
    /// Keeps the file from growing by the tens of GB a full BenchmarkDotNet run appends: every 256k records, truncate
    /// what is flushed and commit (which deletes whole segments). Amortized, well under 1% of an enqueue.
    /// </summary>
    private long Reclaim(long address)
    {
        if ((++_count & ((1 << 18) - 1)) == 0)
        {
            _log.TruncateUntilPageStart(_log.FlushedUntilAddress);
            _log.Commit(spinWait: false);
        }
        return address;
    }

    [GlobalCleanup]
    public void Cleanup()
    {
        _log.Dispose();
        _device.Dispose();
        try { Directory.Delete(_dir, recursive: true); } catch (Exception) { /* temp */ }
    }
}
