using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;

namespace HalfMsg.Broker.Core.Storage;

/// <summary>
/// Refuses new messages before the data dir's file system is actually full, as RocketMQ does with its disk-usage
/// ratio (<c>diskSpaceWarningLevelRatio</c>, 0.90: <c>CleanCommitLogService</c> marks the store "disk full" and
/// <c>putMessage</c> answers <c>SERVICE_NOT_AVAILABLE</c>). The space left below the limit is a reserve for the small
/// records that finish work already accepted — decisions on stored halves, acks, leases, checkpoints and retention
/// cuts — so that a full disk never becomes a failed commit (which stays the storage-failure path: after a failed
/// fsync durability is unknown and the log refuses everything until a restart).
/// </summary>
/// <remarks>
/// Cheap: the free space is one <c>statvfs</c> (<see cref="DriveInfo.AvailableFreeSpace"/>), taken at most every
/// <see cref="SampleInterval"/>, or sooner once the log has grown by an eighth of the reserve since the last sample.
/// Bytes appended to the log but not yet flushed count as used. The state clears by
/// itself, with a little hysteresis, once space returns (an operator deleted files, retention cut the log).
/// </remarks>
public sealed class DiskSpaceGuard
{
    /// <summary>How often free space is sampled at most (unless the log grew by an eighth of the reserve).</summary>
    public static readonly TimeSpan SampleInterval = TimeSpan.FromMilliseconds(200);

    private readonly string _directory;
    private readonly long _minFreeBytes;
    private readonly double _maxUsedRatio;
    private readonly Func<long> _logTail;
    private readonly Func<long> _pendingBytes;
    private readonly Func<string, (long Free, long Total)> _probe;
    private readonly ILogger _logger;
    private readonly object _sampleGate = new();
    private long _sampledAtTicks = long.MinValue / 2; // "long ago", without overflowing now - last
    private long _tailAtSample;
    private volatile bool _full;
    private long _freeBytes = -1;
    private long _totalBytes = -1;
    private long _refused;

    /// <param name="directory">The log directory (its file system is the one that fills).</param>
    /// <param name="minFreeBytes">Refuse new messages when fewer bytes than this are free (0 = no byte limit).</param>
    /// <param name="maxUsedRatio">Refuse new messages when the file system is used beyond this ratio (1 = no ratio limit).</param>
    /// <param name="logTail">The log's tail address (resample early when it moved a lot).</param>
    /// <param name="pendingBytes">Bytes appended but not yet on disk: they will need space too.</param>
    /// <param name="logger">Says once when writes stop and once when they resume.</param>
    /// <param name="probe">Free and total bytes of a directory's file system (tests); <see cref="DriveInfo"/> otherwise.</param>
    public DiskSpaceGuard(string directory, long minFreeBytes, double maxUsedRatio, Func<long> logTail, Func<long> pendingBytes,
        ILogger? logger = null, Func<string, (long Free, long Total)>? probe = null)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(minFreeBytes);
        if (maxUsedRatio is <= 0 or > 1) throw new ArgumentOutOfRangeException(nameof(maxUsedRatio), "must be in (0, 1]");
        _directory = Path.GetFullPath(directory);
        _minFreeBytes = minFreeBytes;
        _maxUsedRatio = maxUsedRatio;
        _logTail = logTail;
        _pendingBytes = pendingBytes;
        _logger = logger ?? NullLogger.Instance;
        _probe = probe ?? Probe;
    }

    /// <summary>Free bytes at the last sample, minus bytes not yet flushed; -1 before the first sample.</summary>
    public long FreeBytes => Interlocked.Read(ref _freeBytes);

    /// <summary>Size of the file system at the last sample; -1 before the first sample.</summary>
    public long TotalBytes => Interlocked.Read(ref _totalBytes);

    /// <summary>New messages refused because of the disk since start.</summary>
    public long Refused => Interlocked.Read(ref _refused);

    /// <summary>True while new messages are refused. Samples when the last sample is stale.</summary>
    public bool IsFull
    {
        get
        {
            long now = Environment.TickCount64;
            long last = Interlocked.Read(ref _sampledAtTicks);
            long growth = _minFreeBytes / 8;
            if (now - last >= (long)SampleInterval.TotalMilliseconds || (growth > 0 && _logTail() - Interlocked.Read(ref _tailAtSample) > growth))
                Sample(now);
            return _full;
        }
    }

    /// <summary>The reason given to clients and operators while full (RocketMQ's own words first).</summary>
    public string Reason
    {
        get
        {
            long free = FreeBytes, total = TotalBytes;
            double used = total > 0 ? 1 - (double)free / total : 0;
            return $"service not available now: the broker's disk is full ({Mib(free)} free of {Mib(total)}, {used:P1} used; " +
                   $"new messages are refused below {Mib(_minFreeBytes)} free or above {_maxUsedRatio:P0} used, data dir {_directory})";
        }
    }

    /// <summary>Counts one refused message and returns the error to answer it with.</summary>
    public BrokerError Refuse()
    {
        Interlocked.Increment(ref _refused);
        return new BrokerError(BrokerStatus.DiskFull, Reason);
    }

    /// <summary>Samples now (tests, and the admin API after an operator freed space).</summary>
    public void Sample() => Sample(Environment.TickCount64, force: true);

    private void Sample(long now, bool force = false)
    {
        if (!Monitor.TryEnter(_sampleGate))
        {
            if (!force) return; // someone else is sampling; their answer is as good as ours
            Monitor.Enter(_sampleGate);
        }
        try
        {
            long tail = _logTail();
            (long free, long total) = _probe(_directory);
            free = Math.Max(0, free - Math.Max(0, _pendingBytes()));
            Interlocked.Exchange(ref _freeBytes, free);
            Interlocked.Exchange(ref _totalBytes, total);
            Interlocked.Exchange(ref _tailAtSample, tail);
            Interlocked.Exchange(ref _sampledAtTicks, now);
            double used = total > 0 ? 1 - (double)free / total : 0;
            bool wasFull = _full;
            // Hysteresis: resume only with an eighth of the reserve (at least 1 MiB) and a point of the ratio to spare,
            // so the state does not flap with every message when the disk hovers at the limit.
            long slack = wasFull ? Math.Max(_minFreeBytes / 8, 1L << 20) : 0;
            double ratioSlack = wasFull ? 0.01 : 0;
            bool full = free < _minFreeBytes + slack || (_maxUsedRatio < 1 && used > _maxUsedRatio - ratioSlack);
            if (full == wasFull) return;
            _full = full;
            if (full) _logger.LogWarning("Disk full: {Reason}. Reads, decisions on stored halves and acks go on; sends resume by themselves when space returns.", Reason);
            else _logger.LogInformation("Disk space is back ({Free} free of {Total}): new messages are accepted again.", Mib(free), Mib(total));
        }
        catch (Exception ex) when (ex is IOException or UnauthorizedAccessException or ArgumentException)
        {
            // Cannot tell: keep the last answer (the real ENOSPC, if it comes, is the storage-failure path).
            _logger.LogDebug(ex, "Free-space probe of {Directory} failed", _directory);
            Interlocked.Exchange(ref _sampledAtTicks, now);
        }
        finally
        {
            Monitor.Exit(_sampleGate);
        }
    }

    private static (long Free, long Total) Probe(string directory)
    {
        // On Unix DriveInfo takes any path and statvfs()es it: the file system the log is on, whatever its mount point.
        var drive = new DriveInfo(directory);
        return (drive.AvailableFreeSpace, drive.TotalSize);
    }

    private static string Mib(long bytes) => bytes < 0 ? "?" : $"{bytes / (1024.0 * 1024):0.#} MiB";
}
