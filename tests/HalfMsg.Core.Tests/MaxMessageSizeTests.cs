using HalfMsg.Broker.Core;
using HalfMsg.Broker.Core.Model;
using HalfMsg.Broker.Core.Storage;

namespace HalfMsg.Core.Tests;

/// <summary>
/// Issue 8, defect 4: every body up to the configured maximum is stored (the log page is derived from it), one byte more
/// is MessageTooLarge, and nothing reaches FasterLog's "Entry does not fit on page".
/// </summary>
public sealed class MaxMessageSizeTests
{
    private const int FourMiB = 4 * 1024 * 1024;

    private static byte[] Body(int size, int seed)
    {
        var body = new byte[size];
        new Random(seed).NextBytes(body);
        return body;
    }

    private static MessageDraft Draft(EngineHarness h, string topic, byte[] body, IReadOnlyDictionary<string, string>? properties = null, string[]? keys = null) => new()
    {
        Topic = topic, MessageId = h.NextId(), Body = body, Properties = properties ?? MessageDraft.EmptyProperties, Keys = keys ?? [],
        BornTimestampMs = h.Clock.GetUtcNow().ToUnixTimeMilliseconds(), BornHost = "test",
    };

    private static async Task<DeliveredMessage> ReceiveOneAsync(EngineHarness h, string group, string topic)
    {
        var got = await h.ReceiveAsync(group, topic, batch: 1);
        return Assert.Single(got);
    }

    [Theory]
    [InlineData(FourMiB)]          // the default maximum, exactly
    [InlineData(4_194_240)]        // 64 bytes under it: failed before too (the record header made it too big)
    public async Task A_body_of_the_default_maximum_is_stored_and_delivered_intact_and_one_byte_more_is_too_large(int size)
    {
        await using var h = await EngineHarness.StartAsync();
        Assert.Equal(FourMiB, h.Options.MaxMessageSize);
        var body = Body(size, size);
        var sent = await h.Engine.SendAsync(Draft(h, "big", body));
        Assert.True(sent.IsOk, sent.Error.ToString());

        var got = await ReceiveOneAsync(h, "g", "big");
        Assert.Equal(size, got.Message.Body.Length);
        Assert.True(body.AsSpan().SequenceEqual(got.Message.Body.Span));

        // One byte over the maximum: MessageTooLarge, for a normal and a half message alike.
        var over = await h.Engine.SendAsync(Draft(h, "big", new byte[FourMiB + 1]));
        Assert.Equal(BrokerStatus.MessageTooLarge, over.Error.Status);
        var overHalf = await h.Engine.SendHalfAsync(Draft(h, "big", new byte[FourMiB + 1]), "big", "p1", null);
        Assert.Equal(BrokerStatus.MessageTooLarge, overHalf.Error.Status);
    }

    [Fact]
    public async Task A_half_message_of_the_maximum_is_stored_committed_and_delivered_also_after_a_restart()
    {
        await using var h = await EngineHarness.StartAsync();
        var body = Body(FourMiB, 7);
        var half = await h.Engine.SendHalfAsync(Draft(h, "big-tx", body), "big-tx", "p1", null);
        Assert.True(half.IsOk, half.Error.ToString());
        var decided = await h.Engine.EndTransactionAsync(half.TransactionId, null, TransactionResolution.Commit, DecisionSource.Client);
        Assert.True(decided.Error.IsOk, decided.Error.ToString());

        await h.RestartAsync(); // replay reads the 4 MiB record back from the log

        var got = await ReceiveOneAsync(h, "g", "big-tx");
        Assert.True(body.AsSpan().SequenceEqual(got.Message.Body.Span));
    }

    [Fact]
    public async Task The_largest_allowed_setting_stores_a_body_of_that_size_and_refuses_one_byte_more()
    {
        int max = RecordLimits.MaxMessageSizeLimit;
        await using var h = await EngineHarness.StartAsync(o => o with { MaxMessageSize = max });
        var body = Body(max, 64);
        var sent = await h.Engine.SendAsync(Draft(h, "huge", body));
        Assert.True(sent.IsOk, sent.Error.ToString());
        var over = await h.Engine.SendAsync(Draft(h, "huge", new byte[max + 1]));
        Assert.Equal(BrokerStatus.MessageTooLarge, over.Error.Status);

        await h.RestartAsync();

        var got = await ReceiveOneAsync(h, "g", "huge");
        Assert.True(body.AsSpan().SequenceEqual(got.Message.Body.Span));
    }

    [Fact]
    public async Task A_maximum_beyond_the_allowed_range_is_refused_at_open()
    {
        var dir = Path.Combine(Path.GetTempPath(), "halfmsg-max-" + Guid.NewGuid().ToString("N")[..12]);
        try
        {
            await Assert.ThrowsAsync<ArgumentOutOfRangeException>(() =>
                BrokerEngine.OpenAsync(new CoreOptions { DataDir = dir, MaxMessageSize = RecordLimits.MaxMessageSizeLimit + 1 }, startBackgroundLoops: false));
            await Assert.ThrowsAsync<ArgumentOutOfRangeException>(() =>
                BrokerEngine.OpenAsync(new CoreOptions { DataDir = dir, MaxMessageSize = 0 }, startBackgroundLoops: false));
        }
        finally
        {
            try { Directory.Delete(dir, true); } catch (IOException) { }
        }
    }

    [Fact]
    public async Task Metadata_too_large_for_the_record_reserve_is_refused_with_its_own_status()
    {
        await using var h = await EngineHarness.StartAsync();
        var props = Enumerable.Range(0, 70).ToDictionary(i => $"k{i}", _ => new string('v', 1024));
        var sent = await h.Engine.SendAsync(Draft(h, "meta", new byte[FourMiB], props));
        Assert.Equal(BrokerStatus.PropertiesTooLarge, sent.Error.Status);

        // Just inside the reserve, with a maximum body: stored.
        var fits = Enumerable.Range(0, 60).ToDictionary(i => $"k{i}", _ => new string('v', 1024));
        var ok = await h.Engine.SendAsync(Draft(h, "meta", new byte[FourMiB], fits, ["a", "b"]));
        Assert.True(ok.IsOk, ok.Error.ToString());
    }

    [Fact]
    public void The_page_holds_the_maximum_body_plus_the_worst_case_record_overhead()
    {
        foreach (int max in new[] { 1, 1024, FourMiB - RecordLimits.MaxRecordOverhead, FourMiB, 5_000_000, 16 << 20, RecordLimits.MaxMessageSizeLimit })
        {
            int bits = RecordLimits.PageSizeBitsFor(max);
            Assert.True(RecordLimits.BodyCapacity(bits) >= max, $"max {max}: page 2^{bits} holds bodies of {RecordLimits.BodyCapacity(bits)}");
            Assert.True(bits == RecordLimits.MinPageSizeBits || RecordLimits.BodyCapacity(bits - 1) < max, $"max {max}: page 2^{bits} is not the smallest");
        }
        Assert.Equal(23, RecordLimits.PageSizeBitsFor(FourMiB));
        Assert.Equal(27, RecordLimits.PageSizeBitsFor(RecordLimits.MaxMessageSizeLimit));
    }

    [Fact]
    public async Task An_existing_log_keeps_its_page_and_a_larger_maximum_is_refused_with_what_to_change()
    {
        var dir = Path.Combine(Path.GetTempPath(), "halfmsg-layout-" + Guid.NewGuid().ToString("N")[..12]);
        var options = new CoreOptions { DataDir = dir, MaxMessageSize = 1 << 20, SegmentSizeBits = 22, MemorySizeBits = 23 };
        try
        {
            await using (var engine = await BrokerEngine.OpenAsync(options, startBackgroundLoops: false))
                Assert.True((await engine.SendAsync(new MessageDraft { Topic = "t", MessageId = "m1", Body = new byte[1 << 20] })).IsOk);

            // 8 MiB bodies need 16 MiB pages; this log has 4 MiB ones. Reading it with bigger pages would skip records.
            var ex = await Assert.ThrowsAsync<LogLayoutException>(() =>
                BrokerEngine.OpenAsync(options with { MaxMessageSize = 8 << 20 }, startBackgroundLoops: false));
            Assert.Contains("4 MiB pages", ex.Message);
            Assert.Contains($"Set the maximum message size to {RecordLimits.BodyCapacity(22)} or less", ex.Message);

            // The same or a smaller maximum opens it, with its own page size, and everything is still there.
            await using (var engine = await BrokerEngine.OpenAsync(options with { MaxMessageSize = RecordLimits.BodyCapacity(22) }, startBackgroundLoops: false))
            {
                var got = await engine.ReceiveAsync(new ReceiveRequest { ConsumerGroup = "g", Topic = "t", BatchSize = 8, InvisibleDuration = TimeSpan.FromSeconds(30) });
                Assert.Equal(1 << 20, Assert.Single(got.Messages).Message.Body.Length);
                var atCapacity = await engine.SendAsync(new MessageDraft { Topic = "t", MessageId = "m2", Body = new byte[RecordLimits.BodyCapacity(22)] });
                Assert.True(atCapacity.IsOk, atCapacity.Error.ToString());
            }
        }
        finally
        {
            try { Directory.Delete(dir, true); } catch (IOException) { }
        }
    }

    [Fact]
    public async Task A_new_log_directory_holding_lost_and_found_and_a_stray_file_gets_the_layout_of_a_new_log()
    {
        // Storage review, finding 6: any entry in a log directory without a layout file was taken for a log written
        // before the file existed (4 MiB pages), so a freshly formatted mount of its own (ext4 puts lost+found there)
        // refused the default 4 MiB maximum message size. Neither entry is FasterLog's.
        var dir = Path.Combine(Path.GetTempPath(), "halfmsg-layout-" + Guid.NewGuid().ToString("N")[..12]);
        var options = new CoreOptions { DataDir = dir, SegmentSizeBits = 22, MemorySizeBits = 23 };
        string log = Path.Combine(dir, "log");
        Directory.CreateDirectory(Path.Combine(log, "lost+found"));
        File.WriteAllText(Path.Combine(log, ".write-probe-1-left-by-a-kill-9"), "");
        try
        {
            await using (var engine = await BrokerEngine.OpenAsync(options, startBackgroundLoops: false))
            {
                var sent = await engine.SendAsync(new MessageDraft { Topic = "t", MessageId = "m1", Body = new byte[FourMiB] });
                Assert.True(sent.IsOk, sent.Error.ToString());
            }
            Assert.Contains($"page-size-bits={RecordLimits.PageSizeBitsFor(FourMiB)}", File.ReadAllText(Path.Combine(log, LogLayout.FileName)));
            Assert.True(Directory.Exists(Path.Combine(log, "lost+found")));
        }
        finally
        {
            try { Directory.Delete(dir, true); } catch (IOException) { }
        }
    }

    [Fact]
    public async Task A_log_written_before_the_layout_file_existed_is_still_taken_for_one_with_4_MiB_pages()
    {
        var dir = Path.Combine(Path.GetTempPath(), "halfmsg-layout-" + Guid.NewGuid().ToString("N")[..12]);
        var options = new CoreOptions { DataDir = dir, MaxMessageSize = 1 << 20, SegmentSizeBits = 22, MemorySizeBits = 23 };
        string log = Path.Combine(dir, "log");
        try
        {
            // A log with 4 MiB pages, as FasterLog and the commit manager leave it, then without its layout file.
            await using (var engine = await BrokerEngine.OpenAsync(options, startBackgroundLoops: false))
                Assert.True((await engine.SendAsync(new MessageDraft { Topic = "t", MessageId = "m1", Body = new byte[1 << 20] })).IsOk);
            File.Delete(Path.Combine(log, LogLayout.FileName));
            Directory.CreateDirectory(Path.Combine(log, "lost+found"));

            var ex = await Assert.ThrowsAsync<LogLayoutException>(() => BrokerEngine.OpenAsync(options with { MaxMessageSize = FourMiB }, startBackgroundLoops: false));
            Assert.Contains("4 MiB pages", ex.Message);
            await using (var engine = await BrokerEngine.OpenAsync(options, startBackgroundLoops: false))
            {
                var got = await engine.ReceiveAsync(new ReceiveRequest { ConsumerGroup = "g", Topic = "t", BatchSize = 8, InvisibleDuration = TimeSpan.FromSeconds(30) });
                Assert.Equal(1 << 20, Assert.Single(got.Messages).Message.Body.Length);
            }
            Assert.Contains($"page-size-bits={LogLayout.LegacyPageSizeBits}", File.ReadAllText(Path.Combine(log, LogLayout.FileName)));
        }
        finally
        {
            try { Directory.Delete(dir, true); } catch (IOException) { }
        }
    }

    [Theory]
    [InlineData("broker.log.0", false, true)]   // a FasterLog segment of the broker's device
    [InlineData("commit-meta", false, true)]    // SlotLogCommitManager's slots
    [InlineData("log-commits", true, true)]     // FASTER's own commit manager, before SlotLogCommitManager
    [InlineData("lost+found", true, false)]     // a freshly formatted ext4 mount
    [InlineData(".write-probe-1-x", false, false)] // OpenAsync's writability probe, left by a kill -9
    [InlineData("layout.tmp", false, false)]    // a layout write a crash interrupted
    [InlineData("broker.log", false, false)]    // not a segment (segments are numbered)
    public void Only_what_fasterlog_and_its_commit_manager_write_marks_a_log_from_before_the_layout_file(string entry, bool directory, bool legacy)
    {
        var dir = Path.Combine(Path.GetTempPath(), "halfmsg-layout-" + Guid.NewGuid().ToString("N")[..12]);
        try
        {
            if (directory) Directory.CreateDirectory(Path.Combine(dir, entry));
            else { Directory.CreateDirectory(dir); File.WriteAllText(Path.Combine(dir, entry), ""); }
            // The default maximum needs 8 MiB pages: a legacy log (4 MiB) refuses it, a new one gets them.
            if (legacy) Assert.Throws<LogLayoutException>(() => LogLayout.Resolve(dir, RecordLog.DefaultMaxRecordSize));
            else Assert.Equal(RecordLimits.PageSizeBitsFor(FourMiB), LogLayout.Resolve(dir, RecordLog.DefaultMaxRecordSize));
        }
        finally
        {
            try { Directory.Delete(dir, true); } catch (IOException) { }
        }
    }
}
