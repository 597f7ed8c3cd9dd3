using System.Runtime.InteropServices;
using Microsoft.Extensions.Logging;

namespace HalfMsg.Broker.Core.Storage;

/// <summary>
/// Writes the log's next segment file full of zeros before FasterLog reaches it, so that its synchronous page writes
/// land on blocks the file system has already allocated: measured on this machine's disk, a 16 KiB write with
/// <c>fdatasync</c> took 0.23-0.27 ms at p50 over blocks written before against 0.44-0.45 ms at the end of a growing
/// file, and the raw log's appends ran 1.34× (8 in flight) and 1.39× (64) as fast in pre-zeroed segments
/// (<c>bench/results/2026-12-02-ab/prepared-segments.md</c>). FasterLog opens a segment with "open or create" on its
/// first write there, so a prepared file is simply used.
/// <para>
/// Safe against FasterLog by construction: the zeros go to a temporary file whose name FasterLog never reads (it parses
/// every <c>broker.log*</c> name as a segment number on recovery), and that file becomes the segment by <c>link(2)</c>,
/// which fails if the segment exists: if FasterLog created the segment meanwhile, its file is never touched. The
/// directory is synced before the segment can be used (the tail is at least an eighth of a segment away when it is
/// linked), so the name survives a power loss. Recovery is unchanged: FasterLog's scan beyond the committed tail stops
/// at the first zeroed page, as it stops at the end of a shorter file.
/// </para>
/// Linux only (elsewhere nothing is prepared). Preparation starts once the tail is a quarter into a segment, so a log
/// that never writes that much (tests, short runs) never writes a zeroed segment; the first segment is never prepared
/// unless asked (<see cref="PrepareNow"/>).
/// </summary>
public sealed class SegmentPreparer
{
    /// <summary>The temporary file's name. It must not start with <c>broker.log</c>: FasterLog's device recovery parses
    /// every such name as a segment number.</summary>
    public const string TemporaryName = "prepared-segment.tmp";

    private readonly string _directory;
    private readonly int _segmentSizeBits;
    private readonly Func<long> _tail;
    private readonly ILogger _logger;
    private readonly CancellationTokenSource _stop = new();
    private Task _running = Task.CompletedTask;
    private long _lastStarted = -1;
    private long _prepared;
    private long _skipped;

    public SegmentPreparer(string directory, int segmentSizeBits, Func<long> tail, ILogger logger)
    {
        _directory = directory;
        _segmentSizeBits = segmentSizeBits;
        _tail = tail;
        _logger = logger;
        TryDelete(Path.Combine(directory, TemporaryName)); // left by a crash while zeroing
    }

    /// <summary>The log's segment size in bytes.</summary>
    public long SegmentSize => 1L << _segmentSizeBits;

    /// <summary>Segments put in place, zeroed, before FasterLog reached them.</summary>
    public long Prepared => Interlocked.Read(ref _prepared);

    /// <summary>Segments not prepared: FasterLog got there first or nearly, the disk was short of space, or zeroing failed.</summary>
    public long Skipped => Interlocked.Read(ref _skipped);

    /// <summary>The preparation running now, if any (tests wait for it).</summary>
    public Task Running => Volatile.Read(ref _running);

    /// <summary>
    /// Called with the log's tail after each commit: once the tail is a quarter into segment N, prepares segment N + 1
    /// in the background (one at a time; cheap when there is nothing to do).
    /// </summary>
    public void OnTail(long tail)
    {
        long next = (tail >> _segmentSizeBits) + 1;
        if (next <= Volatile.Read(ref _lastStarted) || (tail & (SegmentSize - 1)) < SegmentSize / 4) return;
        if (!Volatile.Read(ref _running).IsCompleted || !OperatingSystem.IsLinux() || _stop.IsCancellationRequested) return;
        Volatile.Write(ref _lastStarted, next);
        Volatile.Write(ref _running, Task.Run(() => PrepareNow(next)));
    }

    /// <summary>
    /// Writes segment <paramref name="segment"/> as zeros and puts it in place, unless it exists, the tail is within an
    /// eighth of a segment of it, or the disk would keep less than four segments free. True when the segment was put in
    /// place. Never throws: a segment not prepared is only slower to write.
    /// </summary>
    public bool PrepareNow(long segment) => Prepare(segment, logOpen: true);

    /// <summary>
    /// Before FasterLog opens a new, empty log: prepares its first segment, so that a log measured from its start (the
    /// bench's raw-log ceiling) writes into zeroed blocks as a log past its first segment does.
    /// </summary>
    public bool PrepareFirstSegment() =>
        !Directory.EnumerateFiles(_directory, "broker.log*").Any() && Prepare(0, logOpen: false);

    private bool Prepare(long segment, bool logOpen)
    {
        if (!OperatingSystem.IsLinux()) return false;
        string final = Path.Combine(_directory, $"broker.log.{segment}");
        string temporary = Path.Combine(_directory, TemporaryName);
        try
        {
            if (File.Exists(final) || (logOpen && TooClose(segment))) return Skip();
            if (new DriveInfo(Path.GetFullPath(_directory)).AvailableFreeSpace < 4 * SegmentSize) return Skip();
            var ct = _stop.Token;
            using (var file = new FileStream(temporary, FileMode.Create, FileAccess.Write, FileShare.None, bufferSize: 0))
            {
                var zeros = new byte[(int)Math.Min(SegmentSize, 1 << 20)];
                for (long written = 0; written < SegmentSize; written += zeros.Length)
                {
                    ct.ThrowIfCancellationRequested();
                    file.Write(zeros, 0, (int)Math.Min(zeros.Length, SegmentSize - written));
                }
                file.Flush(flushToDisk: true);
            }

            // Writing took a while: FasterLog may be about to open the segment. Leave it to FasterLog then.
            if (logOpen && TooClose(segment))
            {
                TryDelete(temporary);
                return Skip();
            }

            if (Link(temporary, final) != 0)
            {
                // EEXIST: FasterLog created the segment meanwhile; its file is untouched.
                int errno = Marshal.GetLastPInvokeError();
                TryDelete(temporary);
                if (errno != 17) _logger.LogWarning("Could not put a prepared log segment in place as {File} (errno {Errno}); FasterLog creates it instead.", final, errno);
                return Skip();
            }

            TryDelete(temporary);
            DirectorySync.Fsync(_directory);
            Interlocked.Increment(ref _prepared);
            return true;
        }
        catch (OperationCanceledException)
        {
            TryDelete(temporary);
            return false;
        }
        catch (Exception ex) when (ex is IOException or UnauthorizedAccessException)
        {
            _logger.LogWarning(ex, "Could not prepare log segment {Segment}; FasterLog creates it instead.", segment);
            TryDelete(temporary);
            return Skip();
        }
    }

    /// <summary>Stops a preparation under way (its temporary file is removed) and waits for it.</summary>
    public async Task StopAsync()
    {
        _stop.Cancel();
        try { await Running.ConfigureAwait(false); } catch (Exception) { /* PrepareNow never throws; a cancelled Task.Run may */ }
    }

    private bool TooClose(long segment) => _tail() >= (segment << _segmentSizeBits) - SegmentSize / 8;

    private bool Skip()
    {
        Interlocked.Increment(ref _skipped);
        return false;
    }

    private static void TryDelete(string path)
    {
        try { File.Delete(path); } catch (Exception ex) when (ex is IOException or UnauthorizedAccessException) { }
    }

    [DllImport("libc", EntryPoint = "link", SetLastError = true)]
    private static extern int Link([MarshalAs(UnmanagedType.LPUTF8Str)] string existing, [MarshalAs(UnmanagedType.LPUTF8Str)] string created);
}
