using System.Buffers.Binary;
using System.Diagnostics;
using HalfMsg.Broker.Core;
using HalfMsg.Broker.Core.Storage;
using Microsoft.Extensions.Logging.Abstractions;

namespace HalfMsg.Core.Tests;

/// <summary>
/// The log writes its next segment as zeros before FasterLog reaches it (<see cref="SegmentPreparer"/>): FasterLog then
/// writes into that file, every durable record survives a reopen, and a segment FasterLog created itself is never
/// touched.
/// </summary>
public sealed class SegmentPreparerTests
{
    private static string NewDir(string name) => Path.Combine(Path.GetTempPath(), $"halfmsg-{name}-" + Guid.NewGuid().ToString("N")[..12]);

    [Fact]
    public async Task The_next_segment_is_zeroed_ahead_of_the_tail_the_log_writes_into_it_and_every_record_survives_a_reopen()
    {
        if (!OperatingSystem.IsLinux()) return; // prepared only on Linux
        string dir = NewDir("prep");
        var records = new List<(long Seq, long Address)>();
        try
        {
            // 16 MiB segments: FasterLog itself opens (creates, empty) the segments its first pages fall in, and a segment
            // that exists is never prepared, so the segments must be larger than the pages it touches at open.
            var log = new RecordLog(dir, FlushMode.Sync, TimeSpan.FromMilliseconds(5), segmentSizeBits: 24, memorySizeBits: 24, maxRecordSize: 16 * 1024);
            long segment = log.Segments.SegmentSize;
            string second = Path.Combine(dir, "broker.log.1");
            try
            {
                long seq = 0;
                async Task AppendUntilAsync(long tail)
                {
                    while (log.TailAddress < tail)
                    {
                        long last = -1;
                        for (int i = 0; i < 16; i++, seq++)
                        {
                            var record = new byte[4000];
                            BinaryPrimitives.WriteInt64LittleEndian(record, seq);
                            BinaryPrimitives.WriteInt64LittleEndian(record.AsSpan(3992), seq * 31 + 7);
                            last = log.Append(record);
                            records.Add((seq, last));
                        }
                        await log.WaitDurableAsync(last).AsTask().WaitAsync(TimeSpan.FromSeconds(30));
                    }
                }

                // Past a quarter of the first segment: the second one is written as zeros, before the tail gets there.
                await AppendUntilAsync(segment / 4 + 8192);
                var sw = Stopwatch.StartNew();
                while (log.Segments.Prepared == 0 && sw.Elapsed < TimeSpan.FromSeconds(30)) await Task.Delay(10);
                Assert.True(log.Segments.Prepared == 1, $"prepared {log.Segments.Prepared}, skipped {log.Segments.Skipped}, segment {segment}, tail {log.TailAddress}, files {string.Join(",", Directory.GetFiles(dir).Select(f => Path.GetFileName(f) + ":" + new FileInfo(f).Length))}");
                Assert.True(log.TailAddress < segment, "the tail reached the second segment before it was checked");
                byte[] prepared = await File.ReadAllBytesAsync(second);
                Assert.Equal(segment, prepared.LongLength);
                Assert.True(prepared.All(b => b == 0), "the prepared segment is not all zeros");
                Assert.False(File.Exists(Path.Combine(dir, SegmentPreparer.TemporaryName)), "the temporary file remained");

                // Into the second segment and beyond: FasterLog writes into the prepared file, which keeps its size.
                await AppendUntilAsync(segment + segment / 4 + 8192);
                await log.Segments.Running.WaitAsync(TimeSpan.FromSeconds(30));
                Assert.True(log.Segments.Prepared + log.Segments.Skipped >= 2, "the third segment was never considered");
                byte[] written = await File.ReadAllBytesAsync(second);
                Assert.Equal(segment, written.LongLength);
                Assert.Contains(written.Take(64 * 1024), b => b != 0);
            }
            finally
            {
                await log.DisposeAsync();
            }

            // Reopened: every durable record, in every segment, reads back as written; the log keeps working.
            var again = new RecordLog(dir, FlushMode.Sync, TimeSpan.FromMilliseconds(5), segmentSizeBits: 24, memorySizeBits: 24, maxRecordSize: 16 * 1024);
            try
            {
                Assert.True(records.Max(r => r.Address) >= segment, "no record landed in the prepared segment");
                foreach (var (seq, address) in records)
                {
                    byte[]? record = await again.ReadAsync(address);
                    Assert.True(record is not null, $"record {seq} at {address} is missing after the reopen");
                    Assert.Equal(seq, BinaryPrimitives.ReadInt64LittleEndian(record));
                    Assert.Equal(seq * 31 + 7, BinaryPrimitives.ReadInt64LittleEndian(record.AsSpan(3992)));
                }
                long added = again.Append(new byte[] { 1, 2, 3 });
                await again.WaitDurableAsync(added).AsTask().WaitAsync(TimeSpan.FromSeconds(30));
                Assert.Equal(new byte[] { 1, 2, 3 }, await again.ReadAsync(added));
            }
            finally
            {
                await again.DisposeAsync();
            }
        }
        finally
        {
            try { Directory.Delete(dir, true); } catch (IOException) { }
        }
    }

    [Fact]
    public void A_segment_that_exists_appears_while_zeroing_or_that_the_tail_nearly_reached_is_never_written()
    {
        if (!OperatingSystem.IsLinux()) return;
        string dir = NewDir("prep-race");
        Directory.CreateDirectory(dir);
        try
        {
            long tail = 0;
            File.WriteAllText(Path.Combine(dir, SegmentPreparer.TemporaryName), "left by a crash");
            var preparer = new SegmentPreparer(dir, 20, () => tail, NullLogger.Instance);
            Assert.False(File.Exists(Path.Combine(dir, SegmentPreparer.TemporaryName)), "a stale temporary file was kept");

            // FasterLog created segment 3 first: its file stays exactly as it was.
            string third = Path.Combine(dir, "broker.log.3");
            File.WriteAllBytes(third, [1, 2, 3]);
            Assert.False(preparer.PrepareNow(3));
            Assert.Equal(new byte[] { 1, 2, 3 }, File.ReadAllBytes(third));

            // The tail within an eighth of a segment of segment 5: left to FasterLog.
            tail = (5L << 20) - (1 << 20) / 8;
            Assert.False(preparer.PrepareNow(5));
            Assert.False(File.Exists(Path.Combine(dir, "broker.log.5")));
            Assert.Equal(2, preparer.Skipped);

            // Far enough ahead: prepared, once.
            tail = 4L << 20;
            Assert.True(preparer.PrepareNow(6));
            Assert.Equal(1L << 20, new FileInfo(Path.Combine(dir, "broker.log.6")).Length);
            Assert.False(preparer.PrepareNow(6));
            Assert.Equal(1, preparer.Prepared);
            Assert.False(File.Exists(Path.Combine(dir, SegmentPreparer.TemporaryName)));

            // FasterLog creates segment 7 while it is being zeroed (here: when the tail is read after the zeroing): the
            // zeroed file does not replace it.
            string seventh = Path.Combine(dir, "broker.log.7");
            int reads = 0;
            var racing = new SegmentPreparer(dir, 20, () =>
            {
                if (++reads == 2) File.WriteAllBytes(seventh, [9]);
                return 0;
            }, NullLogger.Instance);
            Assert.False(racing.PrepareNow(7));
            Assert.Equal(2, reads);
            Assert.Equal(new byte[] { 9 }, File.ReadAllBytes(seventh));
            Assert.False(File.Exists(Path.Combine(dir, SegmentPreparer.TemporaryName)));

            // The tail comes within an eighth of segment 8 while it is being zeroed: left to FasterLog.
            int tailReads = 0;
            var overtaken = new SegmentPreparer(dir, 20, () => ++tailReads == 2 ? (8L << 20) - 1 : 0, NullLogger.Instance);
            Assert.False(overtaken.PrepareNow(8));
            Assert.Equal(2, tailReads);
            Assert.False(File.Exists(Path.Combine(dir, "broker.log.8")));
            Assert.False(File.Exists(Path.Combine(dir, SegmentPreparer.TemporaryName)));

            // The first segment of a new log only; never over a log that has segments.
            Assert.False(preparer.PrepareFirstSegment());
            string empty = NewDir("prep-first");
            Directory.CreateDirectory(empty);
            try
            {
                Assert.True(new SegmentPreparer(empty, 20, () => 0, NullLogger.Instance).PrepareFirstSegment());
                Assert.Equal(1L << 20, new FileInfo(Path.Combine(empty, "broker.log.0")).Length);
            }
            finally
            {
                Directory.Delete(empty, true);
            }
        }
        finally
        {
            try { Directory.Delete(dir, true); } catch (IOException) { }
        }
    }
}
