using System.Buffers.Binary;
using FASTER.core;
using Microsoft.Win32.SafeHandles;

namespace HalfMsg.Broker.Core.Storage;

/// <summary>
/// FasterLog's commit manager for fast-commit mode, without a file per commit. FASTER's
/// <see cref="DeviceLogCommitCheckpointManager"/> creates <c>log-commits/commit.N.0</c>, writes it through and deletes
/// the previous one on every group commit (a profile showed about one <c>openat</c>, one <c>unlink</c> and two
/// write-through <c>pwrite</c> per commit, all on FASTER's serial commit path). In fast-commit mode each commit's
/// record is already in the log, so the metadata only tells recovery where to start scanning forward for commit
/// records (<c>FasterLog.RestoreLatest</c> → <c>ScanForwardForCommit</c>), and it is required only when the log's
/// begin address moves (FASTER passes <c>forceWriteMetadata</c> then, before it deletes segments).
/// </summary>
/// <remarks>
/// <para>One file, <c>commit-meta</c>, with two fixed slots written alternately in place, each
/// <c>[magic u32][length i32][commit number i64][crc32c u32][metadata]</c> and fsynced before <see cref="Commit"/>
/// returns. A write torn by a crash fails its checksum and recovery uses the other slot, which holds the previous
/// completed (durable) write, so a valid slot never lies before a begin address that FASTER already acted on: a
/// forced write is durable before FASTER deletes any segment, and every later write carries that begin or a newer
/// one.</para>
/// <para>Unforced commits write a slot only every <see cref="CommitsPerWrite"/> commits or
/// <see cref="IntervalPerWrite"/>, whichever comes first: recovery then scans at most that much log forward, as with
/// FASTER's own <c>fastCommitThrottleFreq</c>.</para>
/// <para>A data dir written by <see cref="DeviceLogCommitCheckpointManager"/> still recovers: its
/// <c>log-commits</c> files are listed after the slots (older commit numbers) until the first slot write, which then
/// removes them.</para>
/// </remarks>
public sealed class SlotLogCommitManager : ILogCommitManager
{
    public const string FileName = "commit-meta";
    private const uint Magic = 0x484D4331; // "HMC1"
    private const int HeaderSize = 4 + 4 + 8 + 4;
    /// <summary>Bytes per slot: FASTER's commit metadata is ~100 bytes plus iterators (none here) and a cookie (none).</summary>
    public const int SlotSize = 4096;

    public int CommitsPerWrite { get; }
    public TimeSpan IntervalPerWrite { get; }

    private readonly string _path;
    private readonly SafeFileHandle _file;
    private readonly DeviceLogCommitCheckpointManager? _legacy;
    private readonly object _gate = new();
    private readonly byte[] _buffer = new byte[SlotSize];
    private int _nextSlot;
    private long _lastWrittenNum = -1;
    private long _lastWriteTicks;
    private bool _legacyRemoved;
    private long _slotWrites;

    /// <param name="directory">The log directory (the file goes beside the log segments).</param>
    /// <param name="commitsPerWrite">An unforced commit writes a slot once this many commits passed since the last write.</param>
    /// <param name="intervalPerWrite">... or once this much time passed (default 1 s).</param>
    /// <param name="legacy">FASTER's manager over the same directory, to read commits of a log written before this class.</param>
    public SlotLogCommitManager(string directory, int commitsPerWrite = 1024, TimeSpan? intervalPerWrite = null,
        DeviceLogCommitCheckpointManager? legacy = null)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(commitsPerWrite, 1);
        CommitsPerWrite = commitsPerWrite;
        IntervalPerWrite = intervalPerWrite ?? TimeSpan.FromSeconds(1);
        _path = Path.Combine(directory, FileName);
        bool existed = File.Exists(_path);
        _file = File.OpenHandle(_path, FileMode.OpenOrCreate, FileAccess.ReadWrite, FileShare.Read);
        if (!existed)
        {
            RandomAccess.FlushToDisk(_file);
            DirectorySync.Fsync(directory);
        }
        _legacy = legacy;
        // Continue after the newest valid slot, so the older one is overwritten first.
        var newest = ReadSlots().OrderByDescending(s => s.CommitNum).FirstOrDefault();
        if (newest.Metadata is not null) _nextSlot = 1 - newest.Slot;
    }

    /// <summary>Slot writes so far (for tests and diagnostics).</summary>
    public long SlotWrites => Interlocked.Read(ref _slotWrites);

    // The until address of the newest commit this manager has finished (its slot fsynced, or skipped by the throttle),
    // for RecordLog: in fast-commit mode FasterLog marks a commit done before it calls Commit, and its CommitAsync can
    // return in between (see WhenDoneAsync).
    private long _doneUntil = -1;
    private TaskCompletionSource? _doneChanged;
    private Exception? _failure;

    /// <summary>Tests: runs in <see cref="Commit"/> before anything is written (a slow <c>commit-meta</c> fsync).</summary>
    internal Action? BeforeCommitForTests;

    /// <summary>After recovery: the commit FasterLog recovered to needs no slot write from this process.</summary>
    internal void NoteRecovered(long committedUntil)
    {
        lock (_gate) _doneUntil = Math.Max(_doneUntil, committedUntil);
    }

    /// <summary>
    /// Completes once <see cref="Commit"/> has finished a commit up to at least <paramref name="untilAddress"/> or, when
    /// it completes earlier, after the next commit this manager finishes (look again); faulted when a slot write failed.
    /// FasterLog in fast-commit mode sets <c>CommittedUntilAddress</c> before it calls <see cref="Commit"/>, and
    /// <c>CommitAsync</c> returns as soon as it sees that address, so a commit can be reported done while its slot is
    /// still being written. The log's waiters are released only once this completes.
    /// </summary>
    internal Task WhenDoneAsync(long untilAddress)
    {
        lock (_gate)
        {
            if (_failure is not null) return Task.FromException(_failure);
            if (_doneUntil >= untilAddress) return Task.CompletedTask;
            return (_doneChanged ??= new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously)).Task;
        }
    }

    /// <inheritdoc />
    public void Commit(long beginAddress, long untilAddress, byte[] commitMetadata, long commitNum, bool forceWriteMetadata)
    {
        BeforeCommitForTests?.Invoke();
        TaskCompletionSource? changed;
        lock (_gate)
        {
            try
            {
                long now = Environment.TickCount64;
                if (forceWriteMetadata || _lastWrittenNum < 0
                    || commitNum - _lastWrittenNum >= CommitsPerWrite
                    || now - _lastWriteTicks >= (long)IntervalPerWrite.TotalMilliseconds)
                {
                    WriteSlot(commitMetadata, commitNum);
                    _lastWrittenNum = commitNum;
                    _lastWriteTicks = now;
                    if (!_legacyRemoved && _legacy is not null)
                    {
                        // A durable slot is newer than every legacy commit file: those are no longer needed.
                        try { _legacy.RemoveAllCommits(); } catch (IOException) { }
                        _legacyRemoved = true;
                    }
                }
                _doneUntil = Math.Max(_doneUntil, untilAddress);
            }
            catch (Exception ex)
            {
                _failure ??= ex;
                throw;
            }
            finally
            {
                changed = _doneChanged;
                _doneChanged = null;
            }
        }
        changed?.TrySetResult();
    }

    private void WriteSlot(byte[] metadata, long commitNum)
    {
        if (HeaderSize + metadata.Length > SlotSize)
            throw new InvalidOperationException($"FasterLog commit metadata of {metadata.Length} bytes does not fit a {SlotSize}-byte slot");
        Span<byte> b = _buffer;
        b.Clear();
        BinaryPrimitives.WriteUInt32LittleEndian(b, Magic);
        BinaryPrimitives.WriteInt32LittleEndian(b[4..], metadata.Length);
        BinaryPrimitives.WriteInt64LittleEndian(b[8..], commitNum);
        metadata.CopyTo(b[HeaderSize..]);
        BinaryPrimitives.WriteUInt32LittleEndian(b[16..], Checksum(b, metadata.Length));
        RandomAccess.Write(_file, _buffer, (long)_nextSlot * SlotSize);
        RandomAccess.FlushToDisk(_file);
        _nextSlot = 1 - _nextSlot;
        Interlocked.Increment(ref _slotWrites);
    }

    /// <summary>CRC32C over the length, the commit number and the metadata (not the magic, not the checksum field).</summary>
    private static uint Checksum(ReadOnlySpan<byte> slot, int length)
        => Crc32C.Compute(slot.Slice(HeaderSize, length), Crc32C.Compute(slot[4..16]));

    private List<(int Slot, long CommitNum, byte[]? Metadata)> ReadSlots()
    {
        var result = new List<(int, long, byte[]?)>(2);
        var slot = new byte[SlotSize];
        for (int i = 0; i < 2; i++)
        {
            int read = RandomAccess.Read(_file, slot, (long)i * SlotSize);
            if (read < HeaderSize) continue;
            ReadOnlySpan<byte> s = slot.AsSpan(0, read);
            if (BinaryPrimitives.ReadUInt32LittleEndian(s) != Magic) continue;
            int length = BinaryPrimitives.ReadInt32LittleEndian(s[4..]);
            if (length < 0 || HeaderSize + length > read) continue;
            if (BinaryPrimitives.ReadUInt32LittleEndian(s[16..]) != Checksum(s, length)) continue;
            result.Add((i, BinaryPrimitives.ReadInt64LittleEndian(s[8..]), s.Slice(HeaderSize, length).ToArray()));
        }
        return result;
    }

    /// <inheritdoc />
    public byte[] GetCommitMetadata(long commitNum)
    {
        lock (_gate)
        {
            foreach (var (_, num, metadata) in ReadSlots())
            {
                if (num == commitNum) return metadata!;
            }
        }
        return _legacy?.GetCommitMetadata(commitNum)!;
    }

    /// <inheritdoc />
    public IEnumerable<long> ListCommits()
    {
        List<long> nums;
        lock (_gate) nums = ReadSlots().Select(s => s.CommitNum).OrderByDescending(n => n).ToList();
        if (_legacy is not null)
        {
            // Legacy commit numbers are older than any slot (commit numbers continue after recovery).
            nums.AddRange(_legacy.ListCommits().Where(n => nums.Count == 0 || n < nums[^1]));
        }
        return nums;
    }

    /// <inheritdoc />
    public void RemoveCommit(long commitNum)
    {
        lock (_gate)
        {
            foreach (var (slot, num, _) in ReadSlots())
            {
                if (num == commitNum) ClearSlot(slot);
            }
        }
        _legacy?.RemoveCommit(commitNum);
    }

    /// <inheritdoc />
    public void RemoveAllCommits()
    {
        lock (_gate)
        {
            ClearSlot(0);
            ClearSlot(1);
            _lastWrittenNum = -1;
        }
        _legacy?.RemoveAllCommits();
    }

    private void ClearSlot(int slot)
    {
        RandomAccess.Write(_file, new byte[SlotSize], (long)slot * SlotSize);
        RandomAccess.FlushToDisk(_file);
    }

    /// <inheritdoc />
    public void OnRecovery(long commitNum)
    {
        // Both slots stay: the older is the fallback if the next write is torn.
    }

    /// <inheritdoc />
    public void Dispose()
    {
        _file.Dispose();
        _legacy?.Dispose();
    }
}
