using System.Buffers;
using System.Buffers.Binary;
using System.Text;
using HalfMsg.Broker.Admin;
using HalfMsg.Broker.Core;
using HalfMsg.Broker.Core.Delivery;
using HalfMsg.Broker.Core.Storage;
using HalfMsg.Broker.Hosting;
using HalfMsg.Protocol.Grpc;
using HalfMsg.Protocol.Identifiers;
using HalfMsg.Protocol.Remoting;

namespace HalfMsg.Fuzz;

/// <summary>
/// One fuzz target: a parser fed arbitrary bytes. <see cref="Run"/> returns normally when the parser accepted the input
/// or refused it with its documented error; any other exception is a finding (afl records it as a crash).
/// </summary>
public sealed record FuzzTarget(string Name, string Parser, string DocumentedError, Action<byte[]> Run);

/// <summary>Every parser of untrusted or on-disk bytes (issue 13, item 2). Shared by the afl harness and the corpus regression test.</summary>
public static class FuzzTargets
{
    public static readonly IReadOnlyList<FuzzTarget> All =
    [
        new("record", "RecordHeader.TryOpen + each record kind's Read (Storage/Records.cs)", nameof(InvalidDataException), Record),
        new("replay", "BrokerEngine.OpenAsync replaying a log of the input's records (the engine's apply path)", "none (damage is skipped and reported)", Replay),
        new("checkpoint", "BrokerEngine.OpenAsync loading the input as its chain of checkpoint files over a real log", "none (an unusable checkpoint is ignored)", Checkpoint),
        new("frame", "RemotingFrame.TryReadFrame (both header codecs behind it)", nameof(RemotingProtocolException), Frame),
        new("header-json", "RemotingHeaderCodec.DecodeJson", nameof(RemotingProtocolException), HeaderJson),
        new("header-binary", "RemotingHeaderCodec.DecodeBinary (ROCKETMQ)", nameof(RemotingProtocolException), HeaderBinary),
        new("stored-message", "StoredMessageCodec.DecodeAll (pull bodies, CHECK_TRANSACTION_STATE) and BatchMessageCodec.Decode", nameof(RemotingProtocolException), StoredMessage),
        new("receipt-handle", "ReceiptHandle.TryParse, OffsetMessageId.TryDecode, MessageIdGenerator.IsWellFormed", "none (TryParse)", ReceiptHandles),
        new("signature", "MqSignature.TryParse/Verify/TryParseDateTime, RemotingAclSignature.Verify", "none (TryParse)", Signature),
        new("admin", "AdminInputs (group start from, reset-offset to), BrokerConfiguration durations and sizes, MessageLookup.BodyPreview", nameof(BrokerConfigurationException), Admin),
    ];

    public static FuzzTarget? Find(string name) => All.FirstOrDefault(t => t.Name == name);

    // ------------------------------------------------------------------ on-disk records

    /// <summary>
    /// The envelope's checksum is recomputed (when the input is long enough) so mutations reach the payload decoders;
    /// the checksum check itself is exercised by the unfixed inputs of the corpus regression test.
    /// </summary>
    internal static byte[] WithChecksum(byte[] record)
    {
        if (record.Length < RecordHeader.Size) return record;
        var copy = (byte[])record.Clone();
        BinaryPrimitives.WriteUInt32LittleEndian(copy.AsSpan(4), RecordHeader.Checksum(copy));
        return copy;
    }

    private static void Record(byte[] data)
    {
        DecodeRecord(data);
        DecodeRecord(WithChecksum(data));
    }

    /// <summary>Decodes one record as replay would, every field read; false when refused.</summary>
    public static bool DecodeRecord(ReadOnlySpan<byte> record)
    {
        if (!RecordHeader.TryOpen(record, out var kind, out var r, out _)) return false;
        try
        {
            switch (kind)
            {
                case RecordKind.TopicCreated: TopicCreatedRecord.Read(ref r); break;
                case RecordKind.MessageStored:
                {
                    var m = MessageStoredRecord.Read(ref r);
                    _ = m.Message.Keys(); _ = m.Message.Properties();
                    break;
                }
                case RecordKind.HalfStored:
                {
                    var h = HalfStoredRecord.Read(ref r);
                    _ = h.Message.Keys(); _ = h.Message.Properties();
                    break;
                }
                case RecordKind.TxDecided: TxDecidedRecord.Read(ref r); break;
                case RecordKind.TxChecked: TxCheckedRecord.Read(ref r); break;
                case RecordKind.TxParked: TxParkedRecord.Read(ref r); break;
                case RecordKind.TxResumed: TxResumedRecord.Read(ref r); break;
                case RecordKind.Delivered: DeliveredRecord.Read(ref r); break;
                case RecordKind.Acked: AckedRecord.Read(ref r); break;
                case RecordKind.InvisibilityChanged: InvisibilityChangedRecord.Read(ref r); break;
                case RecordKind.DeadLettered: DeadLetteredRecord.Read(ref r); break;
                case RecordKind.QueueEntryAdded: QueueEntryAddedRecord.Read(ref r); break;
                case RecordKind.Redriven: RedrivenRecord.Read(ref r); break;
                case RecordKind.RedrivenAcked: RedrivenAckedRecord.Read(ref r); break;
                case RecordKind.RedrivenStored:
                {
                    var m = RedrivenStoredRecord.Read(ref r).Stored;
                    _ = m.Message.Keys(); _ = m.Message.Properties();
                    break;
                }
                case RecordKind.BodyRelocated:
                {
                    var b = BodyRelocatedRecord.Read(ref r);
                    DecodeRecord(b.Original);
                    break;
                }
                case RecordKind.GroupDeleted: GroupDeletedRecord.Read(ref r); break;
                case RecordKind.LogCut: LogCutRecord.Read(ref r); break;
                case RecordKind.GroupStarted: GroupStartedRecord.Read(ref r); break;
                case RecordKind.GroupReset: GroupResetRecord.Read(ref r); break;
                case RecordKind.ConsumerOffsetCommitted: ConsumerOffsetCommittedRecord.Read(ref r); break;
                case RecordKind.TopicDeleted: TopicDeletedRecord.Read(ref r); break;
                case RecordKind.DelayRecalled: DelayRecalledRecord.Read(ref r); break;
                case RecordKind.TopicQueuesGrown: TopicQueuesGrownRecord.Read(ref r); break;
                case RecordKind.GroupConfigured: GroupConfiguredRecord.Read(ref r); break;
                default: return false;
            }
            return true;
        }
        catch (InvalidDataException)
        {
            return false;
        }
    }

    /// <summary>
    /// Replay input: records, each <c>u16 LE length | bytes</c> (checksums fixed), appended to a fresh log; then a
    /// broker engine opens the directory and replays it through its one apply path. Opening must never throw.
    /// </summary>
    private static void Replay(byte[] data)
    {
        var records = SplitRecords(data);
        RunEngineOn(dir =>
        {
            var log = new RecordLog(Path.Combine(dir, "log"), FlushMode.Sync, TimeSpan.FromMilliseconds(5), SegmentBits, MemoryBits);
            try
            {
                long last = 0;
                foreach (var rec in records) last = log.Append(rec);
                if (records.Count > 0) log.WaitDurableAsync(last).AsTask().GetAwaiter().GetResult();
            }
            finally
            {
                log.DisposeAsync().AsTask().GetAwaiter().GetResult();
            }
        });
    }

    public static List<byte[]> SplitRecords(byte[] data)
    {
        var list = new List<byte[]>();
        int pos = 0;
        while (pos + 2 <= data.Length && list.Count < 256)
        {
            int n = BinaryPrimitives.ReadUInt16LittleEndian(data.AsSpan(pos));
            pos += 2;
            n = Math.Min(n, data.Length - pos);
            if (n == 0) continue; // FasterLog refuses empty entries
            list.Add(WithChecksum(data.AsSpan(pos, n).ToArray()));
            pos += n;
        }
        return list;
    }

    /// <summary>Joins records in the replay input format (the capture writes seeds with it).</summary>
    public static byte[] JoinRecords(IEnumerable<byte[]> records)
    {
        var ms = new MemoryStream();
        Span<byte> len = stackalloc byte[2];
        foreach (var r in records)
        {
            if (r.Length > ushort.MaxValue) continue;
            BinaryPrimitives.WriteUInt16LittleEndian(len, (ushort)r.Length);
            ms.Write(len);
            ms.Write(r);
        }
        return ms.ToArray();
    }

    /// <summary>
    /// Checkpoint input: one or more checkpoint files (each from "HMCP" on), the chain a restart loads, over the log of
    /// <see cref="CheckpointChainFixture"/>; file i takes the fixture's i-th covered address (name and header), a delta
    /// builds on the file before it, and the checksum of every record in each file (<c>u32 length | record</c> after the
    /// 21- or 30-byte header) is recomputed, so mutations reach the snapshot decoder and the chain's loading rather than
    /// stopping at the header or the checksum.
    /// </summary>
    private static void Checkpoint(byte[] data)
        => RunEngineOn(dir => CheckpointChainFixture.Prepare(dir, data), CheckpointChainFixture.Options);

    public static byte[] WithCheckpointChecksums(byte[] file)
    {
        var copy = (byte[])file.Clone();
        int pos = copy.Length > 4 && copy[4] >= 3 ? 30 : 21; // version 3 added the kind and the previous checkpoint
        while (pos + 4 <= copy.Length)
        {
            int len = BinaryPrimitives.ReadInt32LittleEndian(copy.AsSpan(pos));
            pos += 4;
            if (len < RecordHeader.Size || len > copy.Length - pos) break;
            var rec = copy.AsSpan(pos, len);
            BinaryPrimitives.WriteUInt32LittleEndian(rec[4..], RecordHeader.Checksum(rec));
            pos += len;
        }
        return copy;
    }

    private const int SegmentBits = 22;
    private const int MemoryBits = 23;

    private static void RunEngineOn(Action<string> prepare, Func<string, CoreOptions>? options = null)
    {
        string dir = Path.Combine(Path.GetTempPath(), "halfmsg-fuzz-" + Guid.NewGuid().ToString("N"));
        Directory.CreateDirectory(dir);
        try
        {
            prepare(dir);
            var opened = options?.Invoke(dir) ?? new CoreOptions { DataDir = dir, SegmentSizeBits = SegmentBits, MemorySizeBits = MemoryBits, QueuesPerTopic = 2 };
            var engine = BrokerEngine.OpenAsync(opened, startBackgroundLoops: false).GetAwaiter().GetResult();
            try
            {
                if (!engine.IsReady) throw new InvalidOperationException("engine opened but is not ready");
                // Whatever recovery built must be describable (the admin API walks it) and usable: a broker that opened
                // must serve its consumers, operators and next checkpoint without an exception (refusals are answers).
                var topics = engine.ListTopics();
                _ = engine.PendingCount;
                UseRecoveredState(engine, topics).GetAwaiter().GetResult();
            }
            finally
            {
                engine.DisposeAsync().AsTask().GetAwaiter().GetResult();
            }
        }
        finally
        {
            try { Directory.Delete(dir, recursive: true); } catch (IOException) { }
        }
    }

    private static async Task UseRecoveredState(BrokerEngine engine, IReadOnlyList<BrokerEngine.TopicInfo> topics)
    {
        foreach (var topic in topics.Where(t => !t.System).Take(4))
        {
            foreach (string group in topic.ConsumerGroups.Take(2).Append("fuzz-new-group"))
            {
                _ = engine.FindGroup(group);
                var got = await engine.ReceiveAsync(new HalfMsg.Broker.Core.Model.ReceiveRequest { ConsumerGroup = group, Topic = topic.Name, BatchSize = 8 });
                foreach (var m in got.Messages) await engine.AckAsync(group, topic.Name, m.ReceiptHandle);
            }
            for (int q = 0; q < Math.Min(topic.Queues.Count, 2); q++)
                _ = await engine.PullAsync(topic.Name, q, 0, 8, TagFilter.All, TimeSpan.Zero);
        }
        foreach (var half in engine.ListTransactions(parked: false, afterAddress: -1, limit: 8, out _))
            _ = await engine.ReadPendingHalfAsync(half.TransactionId);
        _ = engine.ListTransactions(parked: true, afterAddress: -1, limit: 8, out _);
        engine.RunSweep();
        await engine.RunCheckPassAsync();
        await engine.CheckpointAsync();
    }

    // ------------------------------------------------------------------ Remoting

    private static void Frame(byte[] data)
    {
        // Whole, and split in two segments at a point taken from the input (the pipe hands the decoder segments).
        ReadFrames(new ReadOnlySequence<byte>(data));
        if (data.Length > 1)
        {
            int cut = 1 + data[^1] % (data.Length - 1);
            ReadFrames(TwoSegments(data, cut));
        }
    }

    private static void ReadFrames(ReadOnlySequence<byte> buffer)
    {
        try
        {
            while (RemotingFrame.TryReadFrame(ref buffer, RemotingFrame.DefaultMaxFrameLength, out var cmd))
            {
                _ = cmd.ToString();
                // The dispatcher's accessors on whatever arrived.
                _ = cmd.GetInt("queueId", 0); _ = cmd.GetLong("queueOffset", 0); _ = cmd.GetBool("unitMode", false);
                if (cmd.Get("properties", "i") is { } props) _ = MessageProperties.Decode(props);
            }
        }
        catch (RemotingProtocolException)
        {
        }
    }

    internal static ReadOnlySequence<byte> TwoSegments(byte[] data, int cut)
    {
        var first = new Segment(data.AsMemory(0, cut));
        var last = first.Append(data.AsMemory(cut));
        return new ReadOnlySequence<byte>(first, 0, last, last.Memory.Length);
    }

    private sealed class Segment : ReadOnlySequenceSegment<byte>
    {
        public Segment(ReadOnlyMemory<byte> memory) => Memory = memory;
        public Segment Append(ReadOnlyMemory<byte> memory)
        {
            var next = new Segment(memory) { RunningIndex = RunningIndex + Memory.Length };
            Next = next;
            return next;
        }
    }

    private static void HeaderJson(byte[] data)
    {
        try { RemotingHeaderCodec.DecodeJson(new ReadOnlySequence<byte>(data)); }
        catch (RemotingProtocolException) { }
        if (data.Length > 1)
        {
            try { RemotingHeaderCodec.DecodeJson(TwoSegments(data, data.Length / 2)); }
            catch (RemotingProtocolException) { }
        }
    }

    private static void HeaderBinary(byte[] data)
    {
        try
        {
            var cmd = RemotingHeaderCodec.DecodeBinary(new ReadOnlySequence<byte>(data));
            // Round trip: what decodes must encode and decode to the same fields.
            var again = new ArrayBufferWriter<byte>();
            RemotingHeaderCodec.EncodeBinary(again, cmd);
            var back = RemotingHeaderCodec.DecodeBinary(new ReadOnlySequence<byte>(again.WrittenMemory));
            if (back.Code != (short)cmd.Code || back.Opaque != cmd.Opaque || (back.ExtFields?.Count ?? 0) != (cmd.ExtFields?.Count ?? 0))
                throw new InvalidOperationException("binary header does not round-trip");
        }
        catch (RemotingProtocolException) { }
    }

    private static void StoredMessage(byte[] data)
    {
        try
        {
            foreach (var m in StoredMessageCodec.DecodeAll(data)) _ = m.Properties?.Count;
        }
        catch (RemotingProtocolException) { }
        try { BatchMessageCodec.Decode(data); }
        catch (RemotingProtocolException) { }
    }

    // ------------------------------------------------------------------ identifiers, signatures, admin inputs

    private static string Text(byte[] data) => Encoding.UTF8.GetString(data);

    private static void ReceiptHandles(byte[] data)
    {
        string s = Text(data);
        if (ReceiptHandle.TryParse(s, out var h) && !ReceiptHandle.TryParse(h.Encode(), out _))
            throw new InvalidOperationException("a parsed receipt handle does not re-parse");
        OffsetMessageId.TryDecode(s, out _, out _);
        MessageIdGenerator.IsWellFormed(s);
    }

    private static readonly System.Globalization.Calendar[] ClientCalendars =
        [new System.Globalization.ThaiBuddhistCalendar(), new System.Globalization.UmAlQuraCalendar(), new System.Globalization.HijriCalendar(), new System.Globalization.PersianCalendar()];

    private static void Signature(byte[] data)
    {
        string s = Text(data);
        int nl = s.IndexOf('\n', StringComparison.Ordinal);
        string authorization = nl < 0 ? s : s[..nl];
        string dateTime = nl < 0 ? "20260131T235959Z" : s[(nl + 1)..];
        MqSignature.TryParse(authorization, out _, out _);
        MqSignature.TryParseDateTime(dateTime, out _);
        // The calendars the broker reads a date-time in when the Gregorian reading is refused (V5Authenticator).
        foreach (var calendar in ClientCalendars) MqSignature.TryParseDateTime(dateTime, calendar, out _);
        MqSignature.Verify(authorization, dateTime, "ak", "sk");
        // Remoting ACL: the input's lines as ext fields (key=value), signed against a fixed secret.
        var cmd = new RemotingCommand { ExtFields = new Dictionary<string, string>(StringComparer.Ordinal) };
        foreach (var line in s.Split('\n'))
        {
            int eq = line.IndexOf('=', StringComparison.Ordinal);
            if (eq > 0) cmd.ExtFields[line[..eq]] = line[(eq + 1)..];
        }
        cmd.Body = data;
        RemotingAclSignature.Verify(cmd, "sk");
    }

    private static void Admin(byte[] data)
    {
        string s = Text(data);
        AdminInputs.TryParseStartFrom(s, out _, out _);
        AdminInputs.TryParseResetTo(s, out _);
        BrokerConfiguration.TryParseDuration(s, out _);
        try { BrokerConfiguration.Duration("--fuzz", s, TimeSpan.Zero); } catch (BrokerConfigurationException) { }
        try { BrokerConfiguration.Size("--fuzz", s, 0, long.MaxValue); } catch (BrokerConfigurationException) { }
        MessageLookup.BodyPreview(data);
    }
}
