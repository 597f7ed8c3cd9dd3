using HalfMsg.Broker.Core;
using HalfMsg.Broker.Core.Delivery;
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

    /// <summary>
    /// A re-drive under a commit that ends anywhere inside what it wrote, then kill -9, recovery, and a second re-drive:
    /// the group receives the dead letter once in all. Until 2026-12-06 the put-back and the acknowledgements for the
    /// re-drive cursor and its sibling were separate records in one hold of the lock: a commit that ended after the
    /// put-back kept the message back on its topic (or in the group's retry topic) and still un-acked in the dead-letter
    /// topic, so the second re-drive put it back again and the group received it twice. Now each put-back is one record
    /// with both acknowledgements. "lease": a lease group's dead letter goes back onto its topic for the group; "remoting":
    /// a Remoting consumer's (sent back past its maximum) goes into <c>%RETRY%G</c>. The second re-drive reads with the
    /// first one's cursor, or with its sibling (the one filtering the origin topic), which the first marks done too.
    /// </summary>
    [Theory]
    [InlineData("lease", false)]
    [InlineData("lease", true)]      // the second re-drive reads with the sibling cursor (filtered by the origin topic)
    [InlineData("remoting", false)]
    [InlineData("remoting", true)]
    public async Task A_crash_inside_a_redrive_then_a_second_redrive_delivers_the_dead_letter_once(string path, bool secondFiltered)
    {
        bool lease = path == "lease";
        await using var h = await EngineHarness.StartAsync(o => o with { MaxDeliveryAttempts = 1 });
        var (group, messageId, before) = await DeadLetterAndRedriveAsync(h, lease);
        await h.Engine.DisposeAsync();

        var records = ReadLog(h);
        var inside = records.Where(r => r.Address >= before && r.Kind != RecordKind.Padding).ToList();
        Assert.True(inside.Count >= 2, $"the re-drive wrote {inside.Count} records"); // the cursor's lease, then the put-back
        var lastKept = new List<long> { before - 1 };
        lastKept.AddRange(inside.Select(r => r.Address));
        var received = new List<string>();
        foreach (long last in lastKept)
        {
            string dir = await AlignedPrefixDataDirAsync(h, records, last);
            try
            {
                await using var recovered = await BrokerEngine.OpenAsync(h.Options with { DataDir = dir }, h.Clock, startBackgroundLoops: false);
                // The cursor's lease from before the crash runs out (a re-drive cursor's lease never dead-letters).
                h.Clock.Advance(TimeSpan.FromMinutes(2));
                recovered.RunSweep();
                var again = await recovered.RedriveDeadLettersAsync(group, secondFiltered ? (lease ? "t" : "T") : null, 100);
                Assert.True(again.Error.IsOk, again.Error.ToString());
                int times = await TimesReceivedAsync(recovered, lease, messageId);
                received.Add($"{(last < before ? "none" : records.Single(r => r.Address == last).Kind)}:{times}");
            }
            finally
            {
                try { Directory.Delete(dir, recursive: true); } catch (IOException) { }
            }
        }
        // One entry per prefix, "the last record kept : times received".
        Assert.All(received, r => Assert.EndsWith(":1", r));
    }

    /// <summary>
    /// A re-drive that leaves a dead letter it cannot put back ("gone": its topic deleted with auto-creation off;
    /// "limit": the broker at MaxTopics, so the deleted topic is not made again on first use) and puts back the rest,
    /// under a kill -9 at every record it wrote: the letter left is never acknowledged, so whatever prefix survives, the
    /// re-drive after recovery (the topic created again) puts it back, and every dead letter reaches the group once.
    /// Until 2026-12-06 the first re-drive stopped at that letter and put none of the others back.
    /// </summary>
    [Theory]
    [InlineData("gone")]
    [InlineData("limit")]
    public async Task A_crash_inside_a_redrive_that_left_a_dead_letter_then_a_second_redrive_delivers_each_once(string cause)
    {
        bool gone = cause == "gone";
        await using var h = await EngineHarness.StartAsync(o => o with { MaxDeliveryAttempts = 1, AutoCreateTopics = !gone, MaxTopics = gone ? o.MaxTopics : 3 });
        foreach (var t in new[] { "t1", "t2" }) Assert.True((await h.Engine.CreateTopicAsync(t)).Error.IsOk);
        var ids = new List<string> { (await h.Engine.SendAsync(h.Draft("t1", "bad"))).MessageId };
        Assert.Single((await ReceiveAsync(h.Engine, "A", "t1", TimeSpan.FromSeconds(1))).Messages);
        h.Clock.Advance(TimeSpan.FromSeconds(2));
        h.Engine.RunSweep();
        Assert.Single(await h.ReceiveWhenVisibleAsync("ops", "%DLQ%A")); // the oldest dead letter
        for (int i = 0; i < 3; i++) ids.Add((await h.Engine.SendAsync(h.Draft("t2", "ok" + i))).MessageId);
        Assert.Equal(3, (await ReceiveAsync(h.Engine, "A", "t2", TimeSpan.FromSeconds(1))).Messages.Count);
        h.Clock.Advance(TimeSpan.FromSeconds(2));
        h.Engine.RunSweep();
        Assert.Equal(3, (await h.ReceiveCountWhenVisibleAsync("ops", "%DLQ%A", 3)).Count);
        Assert.True((await h.Engine.DeleteTopicAsync("t1")).IsOk);
        if (!gone) Assert.True((await h.Engine.SendAsync(h.Draft("t3", "filler"))).IsOk); // t2, %DLQ%A, t3: at MaxTopics

        long before = h.Engine.LogTailAddress;
        var first = await h.Engine.RedriveDeadLettersAsync("A", null, 100);
        Assert.True(first.Error.IsOk, first.Error.ToString());
        Assert.Equal((3, 1), (first.Redriven, first.NotRedriven));
        Assert.Equal((ids[0], BrokerStatus.TopicNotFound), (first.NotRedrivenLetters[0].MessageId, first.NotRedrivenLetters[0].Status));
        await h.Engine.DisposeAsync();

        var records = ReadLog(h);
        var inside = records.Where(r => r.Address >= before && r.Kind != RecordKind.Padding).ToList();
        var lastKept = new List<long> { before - 1 };
        lastKept.AddRange(inside.Select(r => r.Address));
        var received = new List<string>();
        foreach (long last in lastKept)
        {
            string dir = await AlignedPrefixDataDirAsync(h, records, last);
            try
            {
                await using var recovered = await BrokerEngine.OpenAsync(h.Options with { DataDir = dir }, h.Clock, startBackgroundLoops: false);
                // The cursor's leases from before the crash run out (a re-drive cursor's lease never dead-letters).
                h.Clock.Advance(TimeSpan.FromMinutes(2));
                recovered.RunSweep();
                Assert.True((await recovered.CreateTopicAsync("t1")).Error.IsOk);
                var again = await recovered.RedriveDeadLettersAsync("A", null, 100);
                Assert.True(again.Error.IsOk, again.Error.ToString());
                Assert.Equal(0, again.NotRedriven);
                var got = new List<string>();
                foreach (var topic in new[] { "t1", "t2" })
                {
                    while ((await ReceiveAsync(recovered, "A", topic, TimeSpan.FromSeconds(30))).Messages is { Count: > 0 } batch)
                        foreach (var m in batch)
                        {
                            got.Add(m.Message.MessageId);
                            Assert.True((await recovered.AckAsync("A", topic, m.ReceiptHandle)).IsOk);
                        }
                }
                var times = ids.Select(id => got.Count(g => g == id));
                received.Add($"{(last < before ? "none" : records.Single(r => r.Address == last).Kind)}:{string.Join(',', times)}");
            }
            finally
            {
                try { Directory.Delete(dir, recursive: true); } catch (IOException) { }
            }
        }
        // One entry per prefix, "the last record kept : times each dead letter was received".
        Assert.All(received, r => Assert.EndsWith(":1,1,1,1", r));
    }

    /// <summary>
    /// Logs written before a re-drive's put-back and acknowledgements were one record hold the put-back (Redriven, or
    /// MessageStored into the retry topic) and then an Acked record for the cursor and one for its sibling: replay reads
    /// them as before. Both forms recover to the live state (and the rebuilt message index finds the message where the
    /// live one did), and a second re-drive finds nothing to put back.
    /// </summary>
    [Theory]
    [InlineData("lease")]
    [InlineData("remoting")]
    public async Task A_redrive_is_one_record_and_an_old_log_with_it_as_three_records_replays_to_the_same_state(string path)
    {
        bool lease = path == "lease";
        await using var h = await EngineHarness.StartAsync(o => o with { MaxDeliveryAttempts = 1 });
        var (group, messageId, before) = await DeadLetterAndRedriveAsync(h, lease);
        string live = h.Engine.DescribeState();
        var liveIndexed = h.Engine.MessageIndex.Find(messageId);
        Assert.NotNull(liveIndexed);
        Assert.Equal(lease ? "t" : "%RETRY%G", liveIndexed.Topic);
        await h.Engine.DisposeAsync();

        var records = ReadLog(h);
        var put = records.Single(r => r.Address >= before && r.Kind == (lease ? RecordKind.RedrivenAcked : RecordKind.RedrivenStored));
        Assert.DoesNotContain(records, r => r.Address >= before && r.Kind is RecordKind.Redriven or RecordKind.Acked or RecordKind.MessageStored);
        Assert.True(RecordHeader.TryOpen(put.Bytes, out _, out var reader, out _));
        RedriveAcks acks;
        byte[] putBack;
        if (lease)
        {
            var rec = RedrivenAckedRecord.Read(ref reader);
            acks = rec.Acks;
            var w = new RecordWriter();
            rec.Put.Write(w);
            putBack = w.Seal().ToArray();
        }
        else
        {
            acks = RedriveAcks.Read(ref reader);
            // The rest is a MessageStored record's payload.
            putBack = new byte[RecordHeader.Size + reader.Remaining];
            put.Bytes.AsSpan(put.Bytes.Length - reader.Remaining).CopyTo(putBack.AsSpan(RecordHeader.Size));
            putBack[0] = (byte)RecordKind.MessageStored;
            putBack[1] = RecordHeader.CurrentVersion;
            System.Buffers.Binary.BinaryPrimitives.WriteUInt32LittleEndian(putBack.AsSpan(4, 4), RecordHeader.Checksum(putBack));
        }
        Assert.Equal((RedrivePrefix + group, RedrivePrefix + group + (lease ? "|t" : "|T"), "%DLQ%" + group, 0),
            (acks.Cursor, acks.Sibling, acks.DeadLetterTopic, acks.QueueId));
        var old = new List<(long Address, RecordKind Kind, byte[] Bytes)>();
        foreach (var r in records)
        {
            if (r.Address != put.Address) { old.Add(r); continue; }
            // From here on the records are at new addresses (the last ones: no later record names them).
            old.Add((r.Address, lease ? RecordKind.Redriven : RecordKind.MessageStored, putBack));
            foreach (var ack in new[] { acks.CursorAck, acks.SiblingAck!.Value })
            {
                var w = new RecordWriter();
                ack.Write(w);
                old.Add((-1, RecordKind.Acked, w.Seal().ToArray()));
            }
        }
        // The entry of a message stored in the retry topic records the size of its record, which is smaller without the acks.
        string liveOld = lease ? live
            : live.Replace($" {put.Address}/{put.Address}/{put.Bytes.Length}/", $" {put.Address}/{put.Address}/{putBack.Length}/", StringComparison.Ordinal);
        Assert.True(lease || liveOld != live);
        foreach (var (form, log, expected) in new[] { ("one record", records, live), ("three records", old, liveOld) })
        {
            string dir = await AlignedPrefixDataDirAsync(h, log, long.MaxValue);
            try
            {
                await using var recovered = await BrokerEngine.OpenAsync(h.Options with { DataDir = dir }, h.Clock, startBackgroundLoops: false);
                States.AssertSame(expected, recovered.DescribeState(), form);
                // The message index, rebuilt from the log, finds the message where the live one did.
                await recovered.MessageIndexReady;
                var indexed = recovered.MessageIndex.Find(messageId);
                Assert.NotNull(indexed);
                Assert.Equal((liveIndexed.Topic, liveIndexed.QueueId, liveIndexed.QueueOffset), (indexed.Topic, indexed.QueueId, indexed.QueueOffset));
                h.Clock.Advance(TimeSpan.FromMinutes(2));
                recovered.RunSweep();
                Assert.Equal(0, (await recovered.RedriveDeadLettersAsync(group, null, 100)).Redriven);
                Assert.Equal(0, (await recovered.RedriveDeadLettersAsync(group, lease ? "t" : "T", 100)).Redriven);
                Assert.Equal(1, await TimesReceivedAsync(recovered, lease, messageId));
            }
            finally
            {
                try { Directory.Delete(dir, recursive: true); } catch (IOException) { }
            }
        }
    }

    private const string RedrivePrefix = BrokerEngine.RedrivePrefix;

    /// <summary>
    /// A message dead-lettered for a group, then re-driven (unfiltered) once: "lease", group A's lease ran out on topic t
    /// with one delivery attempt allowed; "remoting", a pull consumer of group G sent it back past its maximum. Returns
    /// the log's tail before the re-drive.
    /// </summary>
    private static async Task<(string Group, string MessageId, long Before)> DeadLetterAndRedriveAsync(EngineHarness h, bool lease)
    {
        string group, messageId;
        if (lease)
        {
            (group, messageId) = ("A", (await h.Engine.SendAsync(h.Draft("t", "poison"))).MessageId);
            Assert.Single((await ReceiveAsync(h.Engine, "A", "t", TimeSpan.FromSeconds(1))).Messages);
            h.Clock.Advance(TimeSpan.FromSeconds(2));
            h.Engine.RunSweep();
            Assert.Single(await h.ReceiveWhenVisibleAsync("ops", "%DLQ%A")); // the dead letter is durable
        }
        else
        {
            group = "G";
            Assert.True((await h.Engine.SendAsync(h.Draft("T", "fail").WithQueue(0))).IsOk);
            var pulled = Assert.Single((await h.Engine.PullAsync("T", 0, 0, 32, TagFilter.All, TimeSpan.Zero)).Messages);
            messageId = pulled.Message.MessageId;
            Assert.True((await h.Engine.SendBackAsync("G", pulled.PhysicalOffset, 0, maxReconsumeTimes: 0, "T")).DeadLettered);
        }
        long before = h.Engine.LogTailAddress;
        var redrive = await h.Engine.RedriveDeadLettersAsync(group, null, 100);
        Assert.True(redrive.Error.IsOk, redrive.Error.ToString());
        Assert.Equal(1, redrive.Redriven);
        return (group, messageId, before);
    }

    /// <summary>How many times the re-driven message reaches its group: A's receives on t, or G's retry topic.</summary>
    private static Task<int> TimesReceivedAsync(BrokerEngine engine, bool lease, string messageId)
        => lease ? ReceiveAllAsync(engine, "A", "t", messageId) : PullAllAsync(engine, "%RETRY%G", messageId);

    /// <summary>Receives (and acknowledges) everything there is for the group; how many times the message came.</summary>
    private static async Task<int> ReceiveAllAsync(BrokerEngine engine, string group, string topic, string messageId)
    {
        int times = 0;
        while (true)
        {
            var r = await ReceiveAsync(engine, group, topic, TimeSpan.FromSeconds(30));
            if (r.Messages.Count == 0) return times;
            foreach (var m in r.Messages)
            {
                if (m.Message.MessageId == messageId) times++;
                Assert.True((await engine.AckAsync(group, topic, m.ReceiptHandle)).IsOk);
            }
        }
    }

    /// <summary>How many times the message is in the (one-queue) topic.</summary>
    private static async Task<int> PullAllAsync(BrokerEngine engine, string topic, string messageId)
        => (await engine.PullAsync(topic, 0, 0, 32, TagFilter.All, TimeSpan.Zero)).Messages.Count(m => m.Message.MessageId == messageId);

    private static ValueTask<ReceiveResult> ReceiveAsync(BrokerEngine engine, string group, string topic, TimeSpan invisible)
        => engine.ReceiveAsync(new ReceiveRequest { ConsumerGroup = group, Topic = topic, BatchSize = 32, InvisibleDuration = invisible });

    /// <summary>
    /// A recall of a message with a copy (a retried send), where the log kept the handle's recall record but not the
    /// copy's: what a kill -9 leaves when the copies stored during the recall's last listing are recalled after the
    /// handle (the night session of 2026-12-06). Returns the data dir of that log, and the handle's and the copy's sends.
    /// </summary>
    private static async Task<(string Dir, SendResult First, SendResult Copy, long DueAt)> RecallCutAfterTheHandlesRecordAsync(EngineHarness h)
    {
        long dueAt = h.Clock.GetUtcNow().AddMinutes(30).ToUnixTimeMilliseconds();
        var draft = h.Draft("timers", "m", deliverAt: dueAt);
        var first = await h.Engine.SendAsync(draft);
        var copy = await h.Engine.SendAsync(draft);
        Assert.True(first.IsOk && copy.IsOk);
        Assert.Equal(RecallOutcome.Recalled, (await h.Engine.RecallDelayedAsync("timers", first.LogAddress, dueAt, first.MessageId)).Outcome);
        await h.Engine.DisposeAsync();

        var records = ReadLog(h);
        var recalls = records.Where(r => r.Kind == RecordKind.DelayRecalled).ToList();
        Assert.Equal(2, recalls.Count); // the copy's, then the handle's
        string dir = await AlignedPrefixDataDirAsync(h, records.Where(r => r.Address != recalls[0].Address).ToList(), recalls[1].Address);
        return (dir, first, copy, dueAt);
    }

    /// <summary>The recall retried finds the handle's message gone and, since the recall is remembered, takes out the
    /// copy left; before, it answered "not waiting" and the copy was delivered.</summary>
    [Fact]
    public async Task A_recall_retried_after_a_crash_that_kept_only_the_handles_record_recalls_the_copy_left()
    {
        await using var h = await EngineHarness.StartAsync();
        var (dir, first, copy, dueAt) = await RecallCutAfterTheHandlesRecordAsync(h);
        try
        {
            await using var recovered = await BrokerEngine.OpenAsync(h.Options with { DataDir = dir }, h.Clock, startBackgroundLoops: false);
            lock (recovered.GateForTests) Assert.True(recovered.DelayedForTests.TryGetSentAt(copy.LogAddress, out _), "the copy waits after the crash");
            var (error, outcome) = await recovered.RecallDelayedAsync("timers", first.LogAddress, dueAt, first.MessageId);
            Assert.True(error.IsOk, error.ToString());
            Assert.Equal(RecallOutcome.NotWaiting, outcome);
            lock (recovered.GateForTests) Assert.False(recovered.DelayedForTests.TryGetSentAt(copy.LogAddress, out _), "the copy left by the crash is still waiting: it will be delivered");
        }
        finally
        {
            try { Directory.Delete(dir, recursive: true); } catch (IOException) { }
        }
    }

    /// <summary>Found by the review of the night session of 2026-12-06: a caller that gave up after the crash left the
    /// copy to be delivered. The broker takes it out at start, before its first sweep: here the broker comes back after
    /// the message's time, so a sweep first would put the copy on its queue.</summary>
    [Fact]
    public async Task A_copy_a_crash_left_after_a_recalls_handle_record_is_recalled_at_start()
    {
        await using var h = await EngineHarness.StartAsync();
        var (dir, _, copy, dueAt) = await RecallCutAfterTheHandlesRecordAsync(h);
        try
        {
            h.Clock.Advance(TimeSpan.FromMilliseconds(dueAt - h.Clock.GetUtcNow().ToUnixTimeMilliseconds() + 1000)); // down past its time
            await using var recovered = await BrokerEngine.OpenAsync(h.Options with { DataDir = dir }, h.Clock);
            // The first sweep ran once the recall, now past its time, is forgotten.
            await Conditions.WaitUntil(() =>
            {
                lock (recovered.GateForTests) return recovered.DelayedForTests.RecallCount == 0 && !recovered.DelayedForTests.TryGetSentAt(copy.LogAddress, out _);
            }, () => "the sweeper did not run, or the copy still waits");
            var got = await recovered.ReceiveAsync(new ReceiveRequest { ConsumerGroup = "g", Topic = "timers", BatchSize = 32, InvisibleDuration = TimeSpan.FromSeconds(30) });
            Assert.Empty(got.Messages); // the copy was recalled, not released onto its queue
        }
        finally
        {
            try { Directory.Delete(dir, recursive: true); } catch (IOException) { }
        }
    }

    /// <summary>
    /// As <see cref="PrefixDataDirAsync"/>, but each record at its original address, so records that name another
    /// record's address (a put-back names its body's) still point at it: where the original log has FasterLog's own
    /// commit records, the copy has Padding records of the same size (replay ignores them). A record at address -1 goes
    /// wherever the log's tail is.
    /// </summary>
    private static async Task<string> AlignedPrefixDataDirAsync(EngineHarness h, List<(long Address, RecordKind Kind, byte[] Bytes)> records, long lastKept)
    {
        string dir = Path.Combine(Path.GetTempPath(), "halfmsg-prefix-" + Guid.NewGuid().ToString("N")[..12]);
        await using var log = new RecordLog(Path.Combine(dir, "log"), FlushMode.Sync, TimeSpan.FromMilliseconds(5), h.Options.SegmentSizeBits, h.Options.MemorySizeBits);
        foreach (var (address, _, bytes) in records.Where(r => r.Address <= lastKept))
        {
            if (address < 0)
            {
                log.Append(bytes);
                continue;
            }
            long gap = address - log.TailAddress;
            if (gap > 0)
            {
                // One FasterLog entry: a 4-byte length, then the record padded to 4 bytes.
                Assert.True(gap >= 4 + RecordHeader.Size && gap % 4 == 0, $"a gap of {gap} bytes before {address} cannot hold a Padding record");
                var padding = new byte[gap - 4];
                padding[0] = (byte)RecordKind.Padding;
                padding[1] = RecordHeader.CurrentVersion;
                System.Buffers.Binary.BinaryPrimitives.WriteUInt32LittleEndian(padding.AsSpan(4, 4), RecordHeader.Checksum(padding));
                log.Append(padding);
            }
            Assert.Equal(address, log.Append(bytes));
        }
        await log.CommitNowAsync();
        return dir;
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
