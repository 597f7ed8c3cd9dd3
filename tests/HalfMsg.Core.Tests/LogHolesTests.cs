using System.Buffers.Binary;
using HalfMsg.Broker.Core.Storage;

namespace HalfMsg.Core.Tests;

/// <summary>
/// LogHoles reads raw segment bytes after damage, so every length it reads may be anything: it must neither allocate
/// what a damaged length says nor walk backwards on one.
/// </summary>
public sealed class LogHolesTests : IDisposable
{
    private const int PageBits = 16, SegmentBits = 20;
    private readonly string _dir = Directory.CreateTempSubdirectory("halfmsg-holes-").FullName;

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    private LogHoles WithLengthAt(long address, int length)
    {
        using (var f = new FileStream(Path.Combine(_dir, "broker.log.0"), FileMode.Create))
        {
            f.SetLength(1L << SegmentBits);                      // sparse: zeros everywhere else
            f.Position = address;
            Span<byte> b = stackalloc byte[4];
            BinaryPrimitives.WriteInt32LittleEndian(b, length);
            f.Write(b);
        }
        return new LogHoles(_dir, SegmentBits, PageBits);
    }

    [Fact]
    public void A_length_beyond_its_page_is_no_record_and_nothing_that_large_is_read()
    {
        foreach (int length in new[] { 0x7FFFFFF0, int.MaxValue, (1 << PageBits) })
        {
            var holes = WithLengthAt(64, length);
            long before = GC.GetAllocatedBytesForCurrentThread();
            Assert.False(holes.IsRecordAt(64, long.MaxValue));
            Assert.InRange(GC.GetAllocatedBytesForCurrentThread() - before, 0, 64 * 1024);
        }
    }

    [Fact]
    public async Task A_commit_record_length_that_cannot_be_is_a_hole_not_a_step_backwards()
    {
        var holes = WithLengthAt(64, int.MinValue);
        var check = Task.Run(() => holes.Check(64, 4096));
        Assert.True(await Task.WhenAny(check, Task.Delay(TimeSpan.FromSeconds(30))) == check, "Check did not return");
        Assert.Equal(new LogHole(64, 4096), await check);
    }
    [Theory]
    [InlineData(int.MinValue, true)]
    [InlineData(int.MaxValue, true)]
    [InlineData(0x7FFFFFF9, true)]     // the smallest magnitude whose entry size overflows to a negative one
    [InlineData(-0x7FFFFFF9, true)]
    [InlineData(0x7FFFFFF8, false)]    // its size is positive and leaves the page: FasterLog throws, which ends its scan
    [InlineData(-16, false)]           // a commit record of its own
    public async Task FasterLogs_recovery_scan_traps_are_the_lengths_whose_entry_size_is_negative(int length, bool trap)
    {
        // An entry at 64 (the log's first address), then the header under test right after it.
        var holes = WithLengthAt(64 + 4 + 12, length);
        using (var f = new FileStream(Path.Combine(_dir, "broker.log.0"), FileMode.Open, FileAccess.Write))
        {
            f.Position = 64;
            Span<byte> b = stackalloc byte[4];
            BinaryPrimitives.WriteInt32LittleEndian(b, 12);
            f.Write(b);
        }
        var scan = Task.Run(() => holes.FindRecoveryScanTraps(64));
        Assert.True(await Task.WhenAny(scan, Task.Delay(TimeSpan.FromSeconds(30))) == scan, "the walk did not return");
        Assert.Equal(trap ? [64 + 4 + 12] : Array.Empty<long>(), await scan);
    }

    [Fact]
    public void A_cleared_trap_reads_zero_and_is_no_trap_any_more()
    {
        var holes = WithLengthAt(128, int.MinValue);
        Assert.Equal([128L], holes.FindRecoveryScanTraps(128));
        holes.ClearLength(128);
        Assert.Equal(0, holes.ReadLength(128));
        Assert.Empty(holes.FindRecoveryScanTraps(128));
    }
}
