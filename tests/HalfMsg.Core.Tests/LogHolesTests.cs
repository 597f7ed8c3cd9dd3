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
    public void A_commit_record_length_that_cannot_be_is_a_hole_not_a_step_backwards()
    {
        var holes = WithLengthAt(64, int.MinValue);
        var check = Task.Run(() => holes.Check(64, 4096));
        Assert.True(check.Wait(TimeSpan.FromSeconds(30)), "Check did not return");
        Assert.Equal(new LogHole(64, 4096), check.Result);
    }
}
