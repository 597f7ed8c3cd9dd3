using HalfMsg.Broker.Core;
using HalfMsg.Broker.Core.Model;
using HalfMsg.Broker.Core.Storage;

namespace HalfMsg.Core.Tests;

/// <summary>
/// A kill -9 keeps a prefix of the log: whatever the last group commit covered. The commit loop runs apart from the
/// engine lock, so a commit can end between two records one hold of the lock appended. These tests rebuild a data dir
/// from such a prefix (the same records in the same order, no checkpoint) and recover it.
/// </summary>
public sealed class LogPrefixCrashTests
{
    private static async Task SendAsync(EngineHarness h, string body) => Assert.True((await h.Engine.SendAsync(h.Draft("events", body))).IsOk);

    private struct AllRecords(List<(long Address, RecordKind Kind, byte[] Bytes)> found) : IRecordConsumer
    {
        public void Consume(ReadOnlySpan<byte> record, long address)
        {
            RecordHeader.TryOpen(record, out var kind, out _, out _);
            found.Add((address, kind, record.ToArray()));
        }
    }

    /// <summary>The records of the harness's log (the engine disposed first).</summary>
    private static List<(long Address, RecordKind Kind, byte[] Bytes)> ReadLog(EngineHarness h)
    {
        var found = new List<(long, RecordKind, byte[])>();
        var log = new RecordLog(Path.Combine(h.DataDir, "log"), FlushMode.Sync, TimeSpan.FromMilliseconds(5), h.Options.SegmentSizeBits, h.Options.MemorySizeBits);
        try
        {
            var all = new AllRecords(found);
            log.Replay(log.BeginAddress, ref all);
        }
        finally
        {
            log.DisposeAsync().AsTask().GetAwaiter().GetResult();
        }
        return found;
    }

    /// <summary>A data dir whose log holds the records up to and including <paramref name="lastKept"/>, in order, committed.
    /// Their addresses differ from the original's (FasterLog's own commit records are not copied): only for records that
    /// name no other record's address.</summary>
    private static Task<string> PrefixDataDirAsync(EngineHarness h, List<(long Address, RecordKind Kind, byte[] Bytes)> records, long lastKept)
        => DataDirAsync(h, records.Where(r => r.Address <= lastKept).Select(r => r.Bytes));

    /// <summary>
    /// A reset (forget the group, start it again at Latest) under a commit that ends inside what it wrote, then kill -9.
    /// It used to write GroupDeleted and GroupStarted in one hold: a commit that ended between them left the group
    /// forgotten, and its next receive started it at the earliest retained message, so every message it had
    /// acknowledged was delivered again. Now it is one record. Whatever prefix survives, nothing is received: before
    /// the reset everything was acked; after it the group is at the latest.
    /// </summary>
    [Theory]
    [InlineData("none")]    // control: nothing of the reset kept (the log ends at the last ack)
    [InlineData("first")]   // the commit ended after the reset's first record (GroupDeleted alone before the fix)
    [InlineData("all")]     // control: the whole reset kept
    public async Task A_crash_inside_a_reset_does_not_deliver_acked_messages_again(string keep)
    {
        await using var h = await EngineHarness.StartAsync();
        for (int i = 0; i < 5; i++) await SendAsync(h, $"old-{i}");
        foreach (var m in await h.ReceiveWhenVisibleAsync("g", "events"))
            Assert.True((await h.Engine.AckAsync("g", "events", m.ReceiptHandle)).IsOk);
        Assert.True((await h.Engine.ResetGroupAsync("g", "events", GroupStartFrom.Latest)).IsOk);
        await h.Engine.DisposeAsync();

        var records = ReadLog(h);
        long lastAck = records.Last(r => r.Kind == RecordKind.Acked).Address;
        var reset = records.Where(r => r.Address > lastAck && r.Kind != RecordKind.Padding).ToList();
        Assert.NotEmpty(reset);
        long lastKept = keep switch { "none" => lastAck, "first" => reset[0].Address, _ => reset[^1].Address };
        string dir = await PrefixDataDirAsync(h, records, lastKept);
        try
        {
            await using var recovered = await BrokerEngine.OpenAsync(h.Options with { DataDir = dir }, h.Clock, startBackgroundLoops: false);
            var again = await ReceiveAsync(recovered);
            Assert.Empty(again.Messages);
        }
        finally
        {
            try { Directory.Delete(dir, recursive: true); } catch (IOException) { }
        }
    }

    /// <summary>
    /// Logs written before the reset was one record hold it as GroupDeleted then GroupStarted: replay reads them as
    /// before. Both kept: the group at its new place (nothing acked again; a new message is received). GroupDeleted
    /// alone (the old crash window): the group forgotten, so it starts again at the earliest retained message, the old
    /// outcome, unchanged.
    /// </summary>
    [Theory]
    [InlineData(true)]
    [InlineData(false)]
    public async Task An_old_log_with_a_reset_as_two_records_replays_as_before(bool bothKept)
    {
        await using var h = await EngineHarness.StartAsync();
        for (int i = 0; i < 5; i++) await SendAsync(h, $"old-{i}");
        foreach (var m in await h.ReceiveWhenVisibleAsync("g", "events"))
            Assert.True((await h.Engine.AckAsync("g", "events", m.ReceiptHandle)).IsOk);
        Assert.True((await h.Engine.ResetGroupAsync("g", "events", GroupStartFrom.Latest)).IsOk);
        await h.Engine.DisposeAsync();

        var records = ReadLog(h);
        // The reset is one record now, and carries what the two records carried.
        var resetRecord = records.Single(r => r.Kind == RecordKind.GroupReset);
        Assert.DoesNotContain(records, r => r.Kind is RecordKind.GroupDeleted or RecordKind.GroupStarted);
        Assert.True(RecordHeader.TryOpen(resetRecord.Bytes, out _, out var reader, out _));
        var reset = GroupResetRecord.Read(ref reader);
        Assert.Equal(("g", "events", h.Options.QueuesPerTopic), (reset.Group, reset.Topic, reset.StartOffsets.Length));
        Assert.Equal(5, reset.StartOffsets.Sum());

        // The same log as an older broker wrote it: the reset as GroupDeleted, then GroupStarted.
        var old = new List<byte[]>();
        foreach (var r in records.Where(r => r.Kind != RecordKind.Padding))
        {
            if (r.Kind != RecordKind.GroupReset) { old.Add(r.Bytes); continue; }
            var w = new RecordWriter();
            reset.Deleted.Write(w);
            old.Add(w.Seal().ToArray());
            if (!bothKept) break;
            reset.Started.Write(w);
            old.Add(w.Seal().ToArray());
        }
        string dir = await DataDirAsync(h, old);
        try
        {
            await using var recovered = await BrokerEngine.OpenAsync(h.Options with { DataDir = dir }, h.Clock, startBackgroundLoops: false);
            if (bothKept)
            {
                Assert.Empty((await ReceiveAsync(recovered)).Messages);
                Assert.True((await recovered.SendAsync(h.Draft("events", "new"))).IsOk);
                Assert.Equal(["new"], (await ReceiveAsync(recovered)).Messages.Select(m => m.Text()));
            }
            else
            {
                Assert.Equal(5, (await ReceiveAsync(recovered)).Messages.Count);
            }
        }
        finally
        {
            try { Directory.Delete(dir, recursive: true); } catch (IOException) { }
        }
    }

    /// <summary>A data dir whose log holds <paramref name="records"/>, in order, committed.</summary>
    private static async Task<string> DataDirAsync(EngineHarness h, IEnumerable<byte[]> records)
    {
        string dir = Path.Combine(Path.GetTempPath(), "halfmsg-prefix-" + Guid.NewGuid().ToString("N")[..12]);
        await using var log = new RecordLog(Path.Combine(dir, "log"), FlushMode.Sync, TimeSpan.FromMilliseconds(5), h.Options.SegmentSizeBits, h.Options.MemorySizeBits);
        foreach (var bytes in records) log.Append(bytes);
        await log.CommitNowAsync();
        return dir;
    }

    private static ValueTask<ReceiveResult> ReceiveAsync(BrokerEngine engine)
        => engine.ReceiveAsync(new ReceiveRequest { ConsumerGroup = "g", Topic = "events", BatchSize = 32, InvisibleDuration = TimeSpan.FromSeconds(30) });
}
