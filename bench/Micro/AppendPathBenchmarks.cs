using BenchmarkDotNet.Attributes;
using FASTER.core;
using HalfMsg.Broker.Core;
using HalfMsg.Broker.Core.Model;
using CoreFlush = HalfMsg.Broker.Core.FlushMode;

namespace HalfMsg.Bench.Micro;

/// <summary>
/// Broker append path vs raw log, single thread, no fsync wait: <c>BrokerEngine.SendAsync</c> (flush async: validation,
/// record encode + CRC, FasterLog enqueue, queue index) of a 1 KiB message vs <c>FasterLog.Enqueue</c> of a record of the
/// same encoded size. The ratio Raw/Broker is the "broker append path vs raw log" CPU ratio.
/// </summary>
[MemoryDiagnoser]
public class AppendPathBenchmarks
{
    private string _dir = "";
    private BrokerEngine _engine = null!;
    private IDevice _device = null!;
    private FasterLog _log = null!;
    private byte[] _body = [];
    private byte[] _raw = [];
    private long _i;
    private readonly string _prefix = Guid.NewGuid().ToString("N")[..8] + "-";

    [Params(1024)]
    public int BodyBytes { get; set; }

    [GlobalSetup]
    public void Setup()
    {
        _dir = Path.Combine(Path.GetTempPath(), "halfmsg-micro-append-" + Guid.NewGuid().ToString("N")[..10]);
        Directory.CreateDirectory(_dir);
        _engine = BrokerEngine.OpenAsync(new CoreOptions
        {
            DataDir = Path.Combine(_dir, "engine"),
            Flush = CoreFlush.Async,
            // keep the micro run from filling the disk: small retention, frequent checkpoints
            RetentionBytes = 512L * 1024 * 1024,
            SegmentSizeBits = 26,
        }, startBackgroundLoops: true).GetAwaiter().GetResult();
        _body = new byte[BodyBytes];
        Random.Shared.NextBytes(_body);
        _raw = new byte[BodyBytes + 100]; // about the encoded MessageStored size for this body
        Random.Shared.NextBytes(_raw);
        // Exactly the broker's FasterLog settings, so the ratio compares like with like.
        var (settings, device, _) = HalfMsg.Broker.Core.Storage.RecordLog.CreateSettings(Path.Combine(_dir, "raw"), segmentSizeBits: 26, memorySizeBits: 26);
        _device = device;
        _log = new FasterLog(settings);
    }

    [Benchmark]
    public int BrokerSendAsync()
    {
        var r = _engine.SendAsync(new MessageDraft
        {
            Topic = "bench-micro", MessageId = _prefix + (++_i), Body = _body, BornTimestampMs = 1_760_000_000_000, BornHost = "bench",
        });
        return r.IsCompletedSuccessfully ? r.Result.QueueId : r.AsTask().GetAwaiter().GetResult().QueueId;
    }

    [Benchmark(Baseline = true)]
    public long RawEnqueue()
    {
        long address = _log.Enqueue(_raw);
        if ((++_i & ((1 << 18) - 1)) == 0)
        {
            _log.TruncateUntilPageStart(_log.FlushedUntilAddress);
            _log.Commit(spinWait: false);
        }
        return address;
    }

    [GlobalCleanup]
    public void Cleanup()
    {
        try { _engine.DisposeAsync().AsTask().GetAwaiter().GetResult(); } catch (Exception) { /* temp */ }
        _log.Dispose();
        _device.Dispose();
        try { Directory.Delete(_dir, recursive: true); } catch (Exception) { /* temp */ }
    }
}
