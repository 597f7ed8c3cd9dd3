using System.Text;
using HalfMsg.Broker.Core.Model;

namespace HalfMsg.Broker.Core.Storage;

/// <summary>
/// How large one log record can get, and so how large a FasterLog page must be. FasterLog never splits an entry across
/// pages (<c>Enqueue</c> throws "Entry does not fit on page"), so every message the broker accepts must fit, whole,
/// into one page together with everything else its record carries.
/// </summary>
/// <remarks>
/// The largest records are the ones that carry a body: <see cref="RecordKind.HalfStored"/>, and
/// <see cref="RecordKind.MessageStored"/> (also when retention re-appends it with a transaction id and a topic override),
/// and <see cref="RecordKind.RedrivenStored"/>, a MessageStored with a re-drive's acknowledgements before it (two cursor
/// names of at most 255 ASCII, a dead-letter topic name of at most 260, two integers: under 1 KiB of the slack below).
/// One such record, as FasterLog stores it:
/// <code>
/// +----------------+----------------------------------------------------------------------------------------------+
/// | FasterLog 4 B  | record: 8 B header | fixed fields | ids and names | metadata | body length | body | (pad to 4) |
/// +----------------+----------------------------------------------------------------------------------------------+
/// </code>
/// <list type="bullet">
/// <item>FasterLog's own entry header: 4 bytes (no per-entry checksum; our record has its own CRC), and the entry is
/// padded to a multiple of 4: at most <see cref="FasterEntryOverhead"/> = 4 + 3 bytes.</item>
/// <item>Everything that is not the body or the client-controlled metadata is bounded by <see cref="ReservedBytes"/>
/// (64 KiB): the 8-byte <see cref="RecordHeader"/>; at most 16 varint integers (10 bytes each at worst: queue,
/// offsets, kind, timestamps, check counts, immunity, the body length); the transaction/message ids (validated to
/// 128 UTF-16 units, at most 3 UTF-8 bytes each), producer group (255 ASCII), topic and topic override (127 ASCII,
/// DLQ names 5 + 255), tag and message group (255 UTF-16 units each); and the producer's client id, which arrives in a
/// gRPC header and so is bounded by Kestrel's 32 KiB limit on all request headers. That sums to under 36 KiB; the
/// rest of the 64 KiB is slack for a field added later.</item>
/// <item>The client-controlled metadata (keys, user properties, born host, plus topic, id, tag and group again as the
/// message's own fields) is checked against <see cref="MaxMetadataBytes"/> (64 KiB) on every send by
/// <see cref="CheckMetadata"/>: RocketMQ's own commit log caps properties at 32 KiB (a short length), so real clients
/// never come near it.</item>
/// <item>The body: at most <see cref="CoreOptions.MaxMessageSize"/>, checked on every send.</item>
/// </list>
/// So a page of <c>2^PageSizeBitsFor(max)</c> bytes, the smallest power of two of at least
/// <c>FasterEntryOverhead + MaxRecordOverhead + max</c>, holds the largest acceptable message. A record that still
/// does not fit (only possible from an in-process caller with a client id over 32 KiB) is refused by
/// <see cref="RecordLog.Append"/> with <see cref="RecordTooLargeException"/>, never by FasterLog.
/// </remarks>
public static class RecordLimits
{
    /// <summary>The largest allowed <c>--max-message-size</c> (64 MiB: 128 MiB pages, 512 MiB of log buffer, four pages).</summary>
    public const int MaxMessageSizeLimit = 64 * 1024 * 1024;
    /// <summary>Keys, user properties, born host, topic, id, tag and message group of one message, encoded.</summary>
    public const int MaxMetadataBytes = 64 * 1024;
    /// <summary>Everything else in a record besides body and metadata (see the remarks above for the sum).</summary>
    public const int ReservedBytes = 64 * 1024;
    /// <summary>Worst-case bytes of a body-carrying record that are not the body.</summary>
    public const int MaxRecordOverhead = MaxMetadataBytes + ReservedBytes;
    /// <summary>FasterLog's per-entry length header (4 B) plus its padding to 4 B (at most 3 B).</summary>
    public const int FasterEntryOverhead = 4 + 3;
    /// <summary>Pages are never smaller than 4 MiB, the size the broker was measured with.</summary>
    public const int MinPageSizeBits = 22;

    /// <summary>The largest record a log must accept when bodies may be up to <paramref name="maxMessageSize"/> bytes.</summary>
    public static int MaxRecordSize(int maxMessageSize)
    {
        ValidateMaxMessageSize(maxMessageSize);
        return maxMessageSize + MaxRecordOverhead;
    }

    /// <summary>The page size (as a power of two) whose pages hold a record of <paramref name="maxRecordSize"/> bytes.</summary>
    public static int PageSizeBitsForRecord(int maxRecordSize)
    {
        long needed = (long)maxRecordSize + FasterEntryOverhead;
        int bits = MinPageSizeBits;
        while ((1L << bits) < needed) bits++;
        return bits;
    }

    /// <summary>The page size (as a power of two) that holds every message of up to <paramref name="maxMessageSize"/> bytes.</summary>
    public static int PageSizeBitsFor(int maxMessageSize) => PageSizeBitsForRecord(MaxRecordSize(maxMessageSize));

    /// <summary>The largest record FasterLog accepts on a page of 2^<paramref name="pageSizeBits"/> bytes.</summary>
    public static int RecordCapacity(int pageSizeBits) => (int)Math.Min(int.MaxValue, (1L << pageSizeBits) - FasterEntryOverhead);

    /// <summary>The largest body a page of 2^<paramref name="pageSizeBits"/> bytes is guaranteed to hold.</summary>
    public static int BodyCapacity(int pageSizeBits) => RecordCapacity(pageSizeBits) - MaxRecordOverhead;

    /// <summary>Throws unless <paramref name="maxMessageSize"/> is in [1, <see cref="MaxMessageSizeLimit"/>].</summary>
    public static void ValidateMaxMessageSize(int maxMessageSize)
    {
        if (maxMessageSize < 1 || maxMessageSize > MaxMessageSizeLimit)
            throw new ArgumentOutOfRangeException(nameof(maxMessageSize), maxMessageSize,
                $"the maximum message size must be in [1, {MaxMessageSizeLimit}] bytes");
    }

    /// <summary>
    /// Checks the part of a message that is neither body nor a validated name against <see cref="MaxMetadataBytes"/>.
    /// Counts the encoded size (UTF-8 plus a length prefix of at most 5 bytes per string), as the record will hold it.
    /// </summary>
    public static BrokerError CheckMetadata(MessageDraft msg)
    {
        long bytes = Str(msg.Topic) + Str(msg.MessageId) + Str(msg.Tag) + Str(msg.BornHost) + Str(msg.MessageGroup) + 5;
        if (msg.Flag != 0) bytes += Str(MessageFields.FlagProperty) + 16; // the flag's entry: at most 11 digits, within a 16-byte string
        foreach (var key in msg.Keys)
        {
            bytes += Str(key);
            if (bytes > MaxMetadataBytes) break;
        }
        foreach (var (k, v) in msg.Properties)
        {
            bytes += Str(k) + Str(v);
            if (bytes > MaxMetadataBytes) break;
        }
        return bytes <= MaxMetadataBytes
            ? BrokerError.None
            : new(BrokerStatus.PropertiesTooLarge,
                $"message keys, properties, tag and other metadata take more than {MaxMetadataBytes} bytes (the body is limited separately)");

        static long Str(string? s) => s is null ? 1 : 5 + Encoding.UTF8.GetByteCount(s);
    }
}

/// <summary>A record larger than one log page: refused before it reaches FasterLog.</summary>
public sealed class RecordTooLargeException(int length, int capacity)
    : InvalidOperationException($"a record of {length} bytes does not fit a log page (at most {capacity} bytes)");
