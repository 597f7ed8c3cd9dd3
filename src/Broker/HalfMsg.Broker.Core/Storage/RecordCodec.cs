using System.Buffers;
using System.Buffers.Binary;
using System.Diagnostics.CodeAnalysis;
using System.Text;

namespace HalfMsg.Broker.Core.Storage;

/// <summary>The kinds of log records. Every state change of the broker is one of these.</summary>
public enum RecordKind : byte
{
    /// <summary>A normal/FIFO/delay message stored into a topic (or re-appended by retention).</summary>
    MessageStored = 1,
    /// <summary>A half (prepared) message: durable, invisible.</summary>
    HalfStored = 2,
    /// <summary>Commit or rollback of a half message.</summary>
    TxDecided = 3,
    /// <summary>A check-back was sent; carries the new check count.</summary>
    TxChecked = 4,
    /// <summary>The half reached the check limit and was parked in TRANS_CHECK_MAX_TIME_TOPIC.</summary>
    TxParked = 5,
    /// <summary>An operator resumed a parked half: checks start again.</summary>
    TxResumed = 6,
    /// <summary>A message was leased to a consumer of a group.</summary>
    Delivered = 7,
    /// <summary>A consumer acknowledged a message.</summary>
    Acked = 8,
    /// <summary>A lease was extended or shortened.</summary>
    InvisibilityChanged = 9,
    /// <summary>A message left a group's queue for the group's dead-letter topic.</summary>
    DeadLettered = 10,
    /// <summary>A topic was created with its queue count.</summary>
    TopicCreated = 11,
    /// <summary>An existing stored body was indexed into a queue (delay release).</summary>
    QueueEntryAdded = 12,
    /// <summary>Retention moved a live body from below a cut to the tail (see <see cref="BodyRelocatedRecord"/>).</summary>
    BodyRelocated = 13,
    /// <summary>An operator deleted a consumer group.</summary>
    GroupDeleted = 14,
    /// <summary>Retention cut the log before an address (its commit is what persists the new begin).</summary>
    LogCut = 15,
    /// <summary>An operator created a consumer group at chosen start offsets (earliest, latest or a time).</summary>
    GroupStarted = 16,
    /// <summary>Fills the rest of a page after a hole found at recovery (see <see cref="RecordLog.SkipToNextPage"/>); ignored by replay.</summary>
    Padding = 17,
    /// <summary>A re-drive put a lease group's dead letter back onto its topic for that group only (see <see cref="RedrivenRecord"/>).</summary>
    Redriven = 18,
    /// <summary>An operator reset a lease group: forgotten and started again at chosen offsets, as one record (see <see cref="GroupResetRecord"/>).</summary>
    GroupReset = 19,
    /// <summary>A re-drive's put-back onto a lease group's topic with its acknowledgements in the dead-letter topic, as one record (see <see cref="RedrivenAckedRecord"/>).</summary>
    RedrivenAcked = 20,
    /// <summary>A re-drive's store into a Remoting group's retry topic with its acknowledgements in the dead-letter topic, as one record (see <see cref="RedrivenStoredRecord"/>); a message body.</summary>
    RedrivenStored = 21,
    /// <summary>A producer recalled a delay message before its delivery time (see <see cref="DelayRecalledRecord"/>).</summary>
    DelayRecalled = 22,
    /// <summary>An operator gave an existing topic more queues (see <see cref="TopicQueuesGrownRecord"/>).</summary>
    TopicQueuesGrown = 23,
    /// <summary>An operator set a consumer group's settings (its order mode; see <see cref="GroupConfiguredRecord"/>).</summary>
    GroupConfigured = 24,
    /// <summary>A pull (Remoting) consumer group committed its offset on a queue.</summary>
    ConsumerOffsetCommitted = 40,
    /// <summary>An operator deleted a topic (Remoting DELETE_TOPIC): its queues, groups, offsets and delayed messages go.</summary>
    TopicDeleted = 41,
}

/// <summary>
/// Record envelope. Every record in the log (and in a checkpoint file) starts with this 8-byte header:
/// <code>
///  0        1        2        3        4        5        6        7
/// +--------+--------+--------+--------+--------+--------+--------+--------+
/// |  kind  |version |  flags (u16 LE) |        CRC-32C (u32 LE)           |
/// +--------+--------+--------+--------+--------+--------+--------+--------+
/// | payload: the kind's fields in order, each a LEB128 varint, a          |
/// | length-prefixed UTF-8 string (length+1, 0 = null) or a byte string   |
/// +-----------------------------------------------------------------------+
/// </code>
/// The CRC covers bytes 0..3 and the payload. FasterLog stores each record's length itself. The flags are 0 but for
/// <see cref="FilteredOutFlag"/> and <see cref="CarriedCopyFlag"/>; a reader that knows no flag (every version before
/// 2026-12-06) ignores them.
/// </summary>
public static class RecordHeader
{
    public const int Size = 8;
    public const byte CurrentVersion = 1;

    /// <summary>
    /// On an <see cref="AckedRecord"/>: the settle of an SQL-filtered receive, for a message that does not match the
    /// group's expression and was never handed out. Replay applies it as any ack; the message index rebuilt from the log
    /// shows the message filtered out, as the live index does, not delivered and acked (see
    /// <see cref="AckedRecord"/>). Versions before it read such a record as a plain ack.
    /// </summary>
    public const ushort FilteredOutFlag = 0x0001;

    /// <summary>
    /// On a <see cref="LogCutRecord"/> that carries lists: the second copy of the carrying record just before it, written
    /// in the same hold of the engine lock (since the evening session of 2026-12-07), so that one damaged record does
    /// not lose what a retention cut carried. Replay takes whichever copy is intact; the items stay carried by the first
    /// (a later cut carries them again once it lies below its boundary, so both copies are in the log while either is
    /// needed). Builds before read the copy as one more carrying record of the same values.
    /// </summary>
    public const ushort CarriedCopyFlag = 0x0002;

    /// <summary>The flags of a record (bytes 2..3; 0 for a record shorter than its header).</summary>
    public static ushort FlagsOf(ReadOnlySpan<byte> record) => record.Length < Size ? (ushort)0 : BinaryPrimitives.ReadUInt16LittleEndian(record.Slice(2, 2));

    public static uint Checksum(ReadOnlySpan<byte> record)
    {
        // CRC over header bytes 0..3 followed by the payload, as one stream.
        Span<byte> head = stackalloc byte[4];
        record[..4].CopyTo(head);
        uint crc = Crc32C.Compute(head);
        return Crc32C.Compute(record[Size..], crc);
    }

    /// <summary>Checks size, version and checksum; returns the kind and a reader over the payload.</summary>
    public static bool TryOpen(ReadOnlySpan<byte> record, out RecordKind kind, out RecordReader payload, [NotNullWhen(false)] out string? error)
    {
        kind = default;
        payload = default;
        if (record.Length < Size) { error = $"record of {record.Length} bytes is shorter than its header"; return false; }
        if (record[1] != CurrentVersion) { error = $"record version {record[1]} is not supported"; return false; }
        uint stored = BinaryPrimitives.ReadUInt32LittleEndian(record.Slice(4, 4));
        if (stored != Checksum(record)) { error = "record checksum mismatch"; return false; }
        kind = (RecordKind)record[0];
        payload = new RecordReader(record[Size..]);
        error = null;
        return true;
    }
}

/// <summary>Writes one record into a reusable buffer. Not thread-safe; the engine writes under its lock.</summary>
public sealed class RecordWriter
{
    private byte[] _buffer = new byte[4096];
    private int _length;

    public ReadOnlySpan<byte> Written => _buffer.AsSpan(0, _length);

    public RecordWriter Begin(RecordKind kind, ushort flags = 0)
    {
        _length = RecordHeader.Size;
        _buffer[0] = (byte)kind;
        _buffer[1] = RecordHeader.CurrentVersion;
        BinaryPrimitives.WriteUInt16LittleEndian(_buffer.AsSpan(2, 2), flags);
        return this;
    }

    /// <summary>Finishes the record (checksum) and returns it; valid until the next <see cref="Begin"/>.</summary>
    public ReadOnlySpan<byte> Seal()
    {
        var span = _buffer.AsSpan(0, _length);
        BinaryPrimitives.WriteUInt32LittleEndian(span.Slice(4, 4), RecordHeader.Checksum(span));
        return span;
    }

    private Span<byte> Reserve(int n)
    {
        if (_length + n > _buffer.Length)
            Array.Resize(ref _buffer, Math.Max(_buffer.Length * 2, _length + n));
        return _buffer.AsSpan(_length, n);
    }

    public RecordWriter U64(ulong value)
    {
        var span = Reserve(10);
        int i = 0;
        while (value >= 0x80) { span[i++] = (byte)(value | 0x80); value >>= 7; }
        span[i++] = (byte)value;
        _length += i;
        return this;
    }

    /// <summary>Signed values are zig-zag encoded so that -1 (the "none" marker) costs one byte.</summary>
    public RecordWriter I64(long value) => U64((ulong)((value << 1) ^ (value >> 63)));
    public RecordWriter I32(int value) => I64(value);
    public RecordWriter Byte(byte value) { Reserve(1)[0] = value; _length++; return this; }
    public RecordWriter Bool(bool value) => Byte(value ? (byte)1 : (byte)0);

    public RecordWriter Str(string? value)
    {
        if (value is null) return U64(0);
        int max = Encoding.UTF8.GetMaxByteCount(value.Length);
        if (max < 128)
        {
            // Short strings (topics, ids, tags): encode into a stack buffer first to learn the exact length.
            Span<byte> tmp = stackalloc byte[max];
            int n = Encoding.UTF8.GetBytes(value, tmp);
            U64((ulong)n + 1);
            tmp[..n].CopyTo(Reserve(n));
            _length += n;
            return this;
        }
        int count = Encoding.UTF8.GetByteCount(value);
        U64((ulong)count + 1);
        Encoding.UTF8.GetBytes(value, Reserve(count));
        _length += count;
        return this;
    }

    public RecordWriter Bytes(ReadOnlySpan<byte> value)
    {
        U64((ulong)value.Length);
        value.CopyTo(Reserve(value.Length));
        _length += value.Length;
        return this;
    }

    public RecordWriter StrList(IReadOnlyList<string> values)
    {
        U64((ulong)values.Count);
        for (int i = 0; i < values.Count; i++) Str(values[i]);
        return this;
    }

    public RecordWriter StrMap(IReadOnlyDictionary<string, string> values)
    {
        U64((ulong)values.Count);
        foreach (var (k, v) in values) { Str(k); Str(v); }
        return this;
    }

    /// <summary>
    /// As <see cref="StrMap(IReadOnlyDictionary{string, string})"/>, with <paramref name="key"/> set to
    /// <paramref name="value"/> (left out when null) in place of any entry of that name in <paramref name="values"/>.
    /// </summary>
    public RecordWriter StrMap(IReadOnlyDictionary<string, string> values, string key, string? value)
    {
        bool replaced = values.ContainsKey(key);
        U64((ulong)(values.Count - (replaced ? 1 : 0) + (value is null ? 0 : 1)));
        foreach (var (k, v) in values)
            if (k != key) { Str(k); Str(v); }
        if (value is not null) { Str(key); Str(value); }
        return this;
    }
}

/// <summary>
/// Reads a record payload in the order it was written. Throws <see cref="InvalidDataException"/> (and nothing else) on
/// truncation, an over-long varint, a value out of its field's range, or a count larger than the bytes left.
/// </summary>
public ref struct RecordReader
{
    private ReadOnlySpan<byte> _rest;

    public RecordReader(ReadOnlySpan<byte> payload) => _rest = payload;

    public readonly bool End => _rest.IsEmpty;

    public ulong U64()
    {
        ulong result = 0;
        for (int shift = 0, i = 0; shift < 64; shift += 7, i++)
        {
            if (i >= _rest.Length) Truncated();
            byte b = _rest[i];
            result |= (ulong)(b & 0x7F) << shift;
            if (b < 0x80) { _rest = _rest[(i + 1)..]; return result; }
        }
        throw new InvalidDataException("varint longer than 10 bytes");
    }

    public long I64() { ulong v = U64(); return (long)(v >> 1) ^ -(long)(v & 1); }
    public int I32() { long v = I64(); if (v is < int.MinValue or > int.MaxValue) OutOfRange(v); return (int)v; }
    public byte Byte() { if (_rest.IsEmpty) Truncated(); byte b = _rest[0]; _rest = _rest[1..]; return b; }
    public bool Bool() => Byte() != 0;

    public string? Str()
    {
        ulong n = U64();
        if (n == 0) return null;
        if (n - 1 > (ulong)_rest.Length) Truncated();
        int len = (int)(n - 1);
        var s = Encoding.UTF8.GetString(_rest[..len]);
        _rest = _rest[len..];
        return s;
    }

    public ReadOnlySpan<byte> Bytes()
    {
        ulong n = U64();
        if (n > (ulong)_rest.Length) Truncated();
        int len = (int)n;
        var s = _rest[..len];
        _rest = _rest[len..];
        return s;
    }

    /// <summary>Skips a string list and returns its raw bytes (count included) for a later <see cref="StrList"/>.</summary>
    public ReadOnlySpan<byte> SkipStrList()
    {
        var start = _rest;
        int n = Count();
        for (int i = 0; i < n; i++) SkipStr();
        return start[..(start.Length - _rest.Length)];
    }

    /// <summary>Skips a string map and returns its raw bytes (count included) for a later <see cref="StrMap"/>.</summary>
    public ReadOnlySpan<byte> SkipStrMap()
    {
        var start = _rest;
        int n = Count();
        for (int i = 0; i < 2 * n; i++) SkipStr();
        return start[..(start.Length - _rest.Length)];
    }

    private void SkipStr()
    {
        ulong n = U64();
        if (n == 0) return;
        if (n - 1 > (ulong)_rest.Length) Truncated();
        _rest = _rest[(int)(n - 1)..];
    }

    public string[] StrList()
    {
        int n = Count();
        if (n == 0) return [];
        var list = new string[n];
        for (int i = 0; i < n; i++) list[i] = Str() ?? "";
        return list;
    }

    public IReadOnlyDictionary<string, string> StrMap()
    {
        int n = Count();
        if (n == 0) return Model.MessageDraft.EmptyProperties;
        var map = new Dictionary<string, string>(n);
        for (int i = 0; i < n; i++) { var k = Str() ?? ""; map[k] = Str() ?? ""; }
        return map;
    }

    /// <summary>Bytes left in the payload (a count read from it can be checked against this before allocating).</summary>
    public readonly int Remaining => _rest.Length;

    /// <summary>An element count: each element takes at least one byte, so a count above what is left is damage.</summary>
    private int Count()
    {
        ulong n = U64();
        if (n > (ulong)_rest.Length) Truncated();
        return (int)n;
    }

    [DoesNotReturn]
    private static void Truncated() => throw new InvalidDataException("record payload is truncated");

    [DoesNotReturn]
    private static void OutOfRange(long value) => throw new InvalidDataException($"record field {value} does not fit 32 bits");
}
