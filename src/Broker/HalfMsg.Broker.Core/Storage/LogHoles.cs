using System.Buffers.Binary;

namespace HalfMsg.Broker.Core.Storage;

/// <summary>A stretch of the log that replay could not read: zeros (a torn or cut segment) where records were written.</summary>
public readonly record struct LogHole(long From, long To);

/// <summary>
/// Reads the log's segment files as FasterLog writes them (a 4-byte length per entry, negative for FasterLog's own
/// commit records, zero only for page-end padding; entries never cross a page) for replay, which walks them itself
/// (<see cref="RecordLog.Replay"/>), and tells damage from padding: whether a zero is page-end padding the next entry
/// did not fit in, where the next intact record of ours begins, and whether intact records run up to an address.
/// </summary>
internal sealed class LogHoles(string directory, int segmentSizeBits, int pageSizeBits)
{
    private readonly long _pageSize = 1L << pageSizeBits;
    private readonly long _segmentSize = 1L << segmentSizeBits;

    /// <summary>
    /// The hole in [<paramref name="from"/>, <paramref name="to"/>), a gap between the end of one entry the scan
    /// returned and the next one (or the tail), if there is one: null when the gap is only FasterLog's commit records
    /// and page-end padding that the following entry did not fit in.
    /// </summary>
    public LogHole? Check(long from, long to)
    {
        long pos = from;
        while (pos < to)
        {
            int length = ReadInt(pos);
            long pageEnd = (pos / _pageSize + 1) * _pageSize;
            if (length < 0)
            {
                // FasterLog commit record; one whose length leaves its page is damage (int.MinValue stays negative
                // when negated: stepping by it went backwards).
                if (!FitsPage(pos, -(long)length)) return new LogHole(pos, to);
                pos += EntrySize(-length);
                continue;
            }
            if (length > 0) return new LogHole(pos, to);        // an entry the scan never returned
            // Zero: legitimate only as padding at a page end that the next entry (at the page boundary) did not fit in.
            if (pageEnd > to || pageEnd == pos) return new LogHole(pos, to);
            int next = ReadInt(pageEnd);
            if (next == 0 || EntrySize(Math.Abs(next)) <= pageEnd - pos) return new LogHole(pos, to);
            pos = pageEnd;
        }
        return null;
    }

    /// <summary>
    /// The address of the first intact record of ours after <paramref name="from"/> and before <paramref name="to"/>
    /// and the end of <paramref name="from"/>'s page: a 4-byte length followed by a record of that length whose envelope
    /// (version, CRC-32C) checks out. <paramref name="to"/> or the page end when there is none. Used to find where the
    /// log goes on after a record whose FasterLog length header was damaged.
    /// </summary>
    public long FindNextRecord(long from, long to)
    {
        long pageEnd = (from / _pageSize + 1) * _pageSize;
        long end = Math.Min(to, pageEnd);
        long start = (from + 3) & ~3L;
        if (start >= end) return end;
        byte[] bytes = Read(start, (int)(end - start));
        for (int i = 0; i + 4 + RecordHeader.Size <= bytes.Length; i += 4)
        {
            int length = BinaryPrimitives.ReadInt32LittleEndian(bytes.AsSpan(i, 4));
            if (length < RecordHeader.Size || i + 4L + length > bytes.Length) continue;
            if (RecordHeader.TryOpen(bytes.AsSpan(i + 4, length), out _, out _, out _)) return start + i;
        }
        return end;
    }

    /// <summary>
    /// The first address in [<paramref name="from"/>, <paramref name="to"/>) from which intact entries follow one
    /// another up to exactly <paramref name="to"/>: a record of ours that checks out, then records, FasterLog commit
    /// records or page-end padding, entry after entry, landing on <paramref name="to"/>. Null when there is none. Used
    /// after a damaged record whose length still lands on an intact record: if intact records fill the stretch before
    /// that one, the length header was damaged (made longer), and they are records to replay, not the damaged record's
    /// bytes.
    /// </summary>
    public long? FindChainEndingAt(long from, long to, long tail)
    {
        long pos = from;
        while (pos < to)
        {
            long start = FindNextRecord(pos, to);
            if (start >= to) return null;
            if (!IsRecordAt(start, tail))
            {
                pos = start > pos ? start : pos + 4;            // a page end with nothing found before it: go on from there
                continue;
            }
            long p = start;
            while (p < to)
            {
                int length = ReadInt(p);
                if (length < 0 && FitsPage(p, -(long)length)) p += EntrySize(-length); // FasterLog commit record
                else if (length == 0 && p % _pageSize != 0) p = (p / _pageSize + 1) * _pageSize; // page-end padding
                else if (length >= RecordHeader.Size && IsRecordAt(p, tail)) p += EntrySize(length);
                else break;
            }
            if (p == to) return start;
            pos = start + 4;
        }
        return null;
    }

    /// <summary>Whether an intact record of ours starts at <paramref name="address"/> (before <paramref name="to"/>).</summary>
    public bool IsRecordAt(long address, long to) => address < to && FindNextRecordExactly(address, to);

    private bool FindNextRecordExactly(long address, long to)
    {
        // FasterLog never lets an entry cross a page: a length that does is damage, not a size to read (it may be
        // any int, up to 2 GiB).
        int length = ReadInt(address);
        if (length < RecordHeader.Size || address + 4 + length > to || !FitsPage(address, length)) return false;
        return RecordHeader.TryOpen(Read(address + 4, length), out _, out _, out _);
    }

    /// <summary>
    /// Whether the entry at <paramref name="pageEnd"/> (a page boundary) needs more than <paramref name="space"/> bytes:
    /// then the stretch before the boundary is page-end padding that entry did not fit in.
    /// </summary>
    public bool NextPageEntryNeededMoreThan(long pageEnd, long space)
    {
        int next = ReadInt(pageEnd);
        return next != 0 && 4 + ((Math.Abs((long)next) + 3) & ~3L) > space;
    }

    /// <summary>FasterLog's first address (its log begins after a 64-byte reserved stretch): a log whose begin is past
    /// it has been cut by retention.</summary>
    internal const long FirstLogAddress = 64;

    /// <summary>The file FasterLog keeps segment <paramref name="segment"/> of the log in.</summary>
    private static string SegmentFile(string directory, long segment) => Path.Combine(directory, $"{RecordLog.DeviceFileName}.{segment}");

    /// <summary>
    /// The length headers at or after <paramref name="from"/> on which FasterLog's recovery scan would never end, walked
    /// as that scan walks (FasterLog 2.6.5, <c>RestoreLatest</c> → <c>ScanForwardForCommit</c> →
    /// <c>GetNextInternal</c>): an entry's size is <c>4 + ((|length| + 3) &amp; ~3)</c> in 32-bit arithmetic, and for
    /// <c>int.MinValue</c> and lengths of magnitude 0x7FFFFFF9 or more it comes out negative, so the scan steps backwards,
    /// its monotonic update refuses, and it reads the same header again for ever. A zero length goes on at the next page
    /// (a zero at a page's start ends the scan), a size that leaves its page ends it (FasterLog throws, and recovery
    /// catches that). A trap is walked as if it were zero, which is what <see cref="ClearLength"/> makes it.
    /// </summary>
    public List<long> FindRecoveryScanTraps(long from)
    {
        var traps = new List<long>();
        var page = new byte[_pageSize];
        long loaded = -1;
        using var reader = OpenReader();
        long pos = Math.Max(from, FirstLogAddress);
        while (true)
        {
            long pageStart = pos / _pageSize * _pageSize;
            if (pageStart != loaded)
            {
                // Pages never cross segments (a segment is at least a page), so one read fills it.
                reader.Read(pageStart, page);
                loaded = pageStart;
            }
            long offset = pos - pageStart;
            int length = BinaryPrimitives.ReadInt32LittleEndian(page.AsSpan((int)offset, 4));
            int size = length < 0 ? unchecked(-length) : length;
            int entrySize = unchecked(4 + ((size + 3) & ~3));
            if (length != 0 && entrySize <= 0)
            {
                traps.Add(pos);
                length = 0;
            }
            if (length == 0)
            {
                if (offset == 0) return traps;                   // an uninitialized page: the scan ends
                pos = pageStart + _pageSize;
                continue;
            }
            if (offset + entrySize > _pageSize) return traps;    // "Invalid length of record found": the scan ends
            pos += entrySize;
        }
    }

    /// <summary>The 4-byte length header at <paramref name="address"/> (zero past a file's end).</summary>
    public int ReadLength(long address) => ReadInt(address);

    /// <summary>Overwrites the 4-byte length header at <paramref name="address"/> with zeros, durably.</summary>
    public void ClearLength(long address)
    {
        string file = SegmentFile(directory, address / _segmentSize);
        using var handle = File.OpenHandle(file, FileMode.Open, FileAccess.ReadWrite, FileShare.ReadWrite | FileShare.Delete);
        RandomAccess.Write(handle, new byte[4], address % _segmentSize);
        RandomAccess.FlushToDisk(handle);
    }

    /// <summary>Reads the log's segment files for a replay; keeps one segment open at a time.</summary>
    public SegmentReader OpenReader() => new(directory, _segmentSize);

    /// <summary>Reads log bytes by address from the segment files (zeros past a file's end or for a missing file).</summary>
    internal sealed class SegmentReader(string directory, long segmentSize) : IDisposable
    {
        private Microsoft.Win32.SafeHandles.SafeFileHandle? _handle;
        private long _segment = -1;

        /// <summary>Fills <paramref name="into"/> with the bytes from <paramref name="address"/> on, within one segment.</summary>
        public void Read(long address, Span<byte> into)
        {
            long segment = address / segmentSize;
            if (segment != _segment)
            {
                _handle?.Dispose();
                _handle = null;
                _segment = segment;
                try
                {
                    _handle = File.OpenHandle(SegmentFile(directory, segment), FileMode.Open, FileAccess.Read, FileShare.ReadWrite | FileShare.Delete);
                }
                catch (FileNotFoundException)
                {
                }
            }
            int read = 0;
            if (_handle is not null)
            {
                long offset = address % segmentSize;
                while (read < into.Length)
                {
                    int n = RandomAccess.Read(_handle, into[read..], offset + read);
                    if (n == 0) break;                          // past the end of a cut file: reads as zeros
                    read += n;
                }
            }
            into[read..].Clear();
        }

        public void Dispose() => _handle?.Dispose();
    }

    private byte[] Read(long address, int count)
    {
        var buffer = new byte[count];
        string file = SegmentFile(directory, address / _segmentSize);
        try
        {
            using var stream = new FileStream(file, FileMode.Open, FileAccess.Read, FileShare.ReadWrite | FileShare.Delete);
            stream.Position = address % _segmentSize;
            int read = 0;
            while (read < count)
            {
                int n = stream.Read(buffer, read, count - read);
                if (n == 0) break;
                read += n;
            }
        }
        catch (FileNotFoundException)
        {
        }
        return buffer;
    }

    private static long EntrySize(int length) => 4 + ((length + 3L) & ~3L);

    /// <summary>Whether an entry of <paramref name="length"/> bytes at <paramref name="address"/> ends within its page.</summary>
    private bool FitsPage(long address, long length) => length >= 0 && address + 4 + length <= (address / _pageSize + 1) * _pageSize;

    private int ReadInt(long address)
    {
        string file = SegmentFile(directory, address / _segmentSize);
        Span<byte> buffer = stackalloc byte[4];
        buffer.Clear();
        try
        {
            using var stream = new FileStream(file, FileMode.Open, FileAccess.Read, FileShare.ReadWrite | FileShare.Delete);
            stream.Position = address % _segmentSize;
            int read = 0;
            while (read < 4)
            {
                int n = stream.Read(buffer[read..]);
                if (n == 0) break;                              // past the end of a cut file: reads as zeros
                read += n;
            }
        }
        catch (FileNotFoundException)
        {
        }
        return BinaryPrimitives.ReadInt32LittleEndian(buffer);
    }
}
