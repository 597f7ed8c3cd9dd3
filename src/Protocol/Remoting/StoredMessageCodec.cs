using System.Buffers.Binary;
using System.Globalization;
using System.Net;
using System.Text;

namespace HalfMsg.Protocol.Remoting;

/// <summary>A message in RocketMQ's stored (commit log) layout, as PULL_MESSAGE, CHECK_TRANSACTION_STATE and VIEW_MESSAGE_BY_ID carry it.</summary>
public sealed class RemotingMessage
{
    public string Topic { get; set; } = "";
    public int QueueId { get; set; }
    public int Flag { get; set; }
    public long QueueOffset { get; set; }
    public long PhysicalOffset { get; set; }
    public int SysFlag { get; set; }
    public long BornTimestamp { get; set; }
    public IPEndPoint BornHost { get; set; } = new(IPAddress.Loopback, 0);
    public long StoreTimestamp { get; set; }
    public IPEndPoint StoreHost { get; set; } = new(IPAddress.Loopback, 0);
    public int ReconsumeTimes { get; set; }
    public long PreparedTransactionOffset { get; set; }
    public byte[] Body { get; set; } = [];
    public int BodyCrc { get; set; }
    public Dictionary<string, string> Properties { get; set; } = new(StringComparer.Ordinal);

    /// <summary>The client's id (UNIQ_KEY) when present, else the offset message id, as Java's MessageClientExt.getMsgId does.</summary>
    public string MsgId => Properties.TryGetValue(MessageConst.UniqueKey, out var u) ? u : OffsetMessageId.Encode(StoreHost, PhysicalOffset);
}

/// <summary>
/// Encoder/decoder of the stored-message record (<c>MessageDecoder</c>), big-endian:
/// <code>
///  totalSize i32 | magic i32 | bodyCRC i32 | queueId i32 | flag i32 | queueOffset i64 | physicalOffset i64 | sysFlag i32
///  bornTimestamp i64 | bornHost (IPv4 4B + port i32) | storeTimestamp i64 | storeHost (IPv4 4B + port i32)
///  reconsumeTimes i32 | preparedTransactionOffset i64 | bodyLength i32 + body | topicLength i8 (V1) + topic
///  propertiesLength i16 + properties
/// </code>
/// We always write magic V1 with IPv4 hosts: ali-ons decodes only that (IPv6 hosts are written as 127.0.0.1).
/// </summary>
public static class StoredMessageCodec
{
    public const int MagicV1 = unchecked((int)0xDAA320A7);
    public const int MagicV2 = unchecked((int)0xDAA320AB);

    /// <summary>The largest properties string the layout can carry: its length is a 16-bit signed integer.</summary>
    public const int MaxPropertiesBytes = short.MaxValue;

    /// <summary>Properties kept first when a message's properties do not all fit (<see cref="Encode(RemotingMessage, out IReadOnlyList{string})"/>).</summary>
    private static readonly string[] SystemFirst =
    [
        MessageConst.UniqueKey, MessageConst.Tags, MessageConst.ReconsumeTime, MessageConst.MaxReconsumeTimes, MessageConst.RetryTopic,
        MessageConst.OriginMessageId, MessageConst.RealTopic, MessageConst.RealQueueId, MessageConst.TransactionPrepared,
        MessageConst.ProducerGroup, MessageConst.TransactionId, MessageConst.ShardingKey, MessageConst.DelayLevel, MessageConst.Keys,
    ];

    public static byte[] Encode(RemotingMessage m) => Encode(m, out _);

    /// <summary>
    /// Encodes <paramref name="m"/>. Properties whose encoding exceeds <see cref="MaxPropertiesBytes"/> (a message stored
    /// before sends were checked against it) are cut down rather than refused, so a pull goes past the message: the
    /// system properties (UNIQ_KEY, TAGS, ..., then KEYS) are kept first, then the user properties in order while they
    /// fit; the names left out are in <paramref name="dropped"/> (empty when everything fit).
    /// </summary>
    public static byte[] Encode(RemotingMessage m, out IReadOnlyList<string> dropped)
    {
        byte[] topic = Encoding.UTF8.GetBytes(m.Topic);
        if (topic.Length > 127) throw new ArgumentException("topic longer than 127 bytes cannot be written in the V1 layout", nameof(m));
        byte[] props = Encoding.UTF8.GetBytes(MessageProperties.Encode(m.Properties.Select(p => new KeyValuePair<string, string?>(p.Key, p.Value))));
        dropped = [];
        if (props.Length > MaxPropertiesBytes) props = FitProperties(m.Properties, out dropped);
        int sysFlag = m.SysFlag & ~(MessageSysFlag.BornHostV6 | MessageSysFlag.StoreHostV6);
        int total = 4 + 4 + 4 + 4 + 4 + 8 + 8 + 4 + 8 + 8 + 8 + 8 + 8 + 4 + 8 + 4 + m.Body.Length + 1 + topic.Length + 2 + props.Length;
        var buf = new byte[total];
        var s = buf.AsSpan();
        int p = 0;
        void I32(Span<byte> span, int v) { BinaryPrimitives.WriteInt32BigEndian(span[p..], v); p += 4; }
        void I64(Span<byte> span, long v) { BinaryPrimitives.WriteInt64BigEndian(span[p..], v); p += 8; }
        void Host(Span<byte> span, IPEndPoint ep)
        {
            var ip = ep.Address.IsIPv4MappedToIPv6 ? ep.Address.MapToIPv4() : ep.Address;
            if (ip.AddressFamily != System.Net.Sockets.AddressFamily.InterNetwork) ip = IPAddress.Loopback;
            ip.TryWriteBytes(span.Slice(p, 4), out _);
            p += 4;
            I32(span, ep.Port);
        }
        I32(s, total);
        I32(s, MagicV1);
        I32(s, BodyCrc(m.Body));
        I32(s, m.QueueId);
        I32(s, m.Flag);
        I64(s, m.QueueOffset);
        I64(s, m.PhysicalOffset);
        I32(s, sysFlag);
        I64(s, m.BornTimestamp);
        Host(s, m.BornHost);
        I64(s, m.StoreTimestamp);
        Host(s, m.StoreHost);
        I32(s, m.ReconsumeTimes);
        I64(s, m.PreparedTransactionOffset);
        I32(s, m.Body.Length);
        m.Body.CopyTo(s[p..]); p += m.Body.Length;
        s[p++] = (byte)topic.Length;
        topic.CopyTo(s[p..]); p += topic.Length;
        BinaryPrimitives.WriteInt16BigEndian(s[p..], (short)props.Length); p += 2;
        props.CopyTo(s[p..]);
        return buf;
    }

    /// <summary>The properties that fit in <see cref="MaxPropertiesBytes"/>, system ones first; the rest are named in <paramref name="dropped"/>.</summary>
    private static byte[] FitProperties(Dictionary<string, string> properties, out IReadOnlyList<string> dropped)
    {
        var order = SystemFirst.Where(properties.ContainsKey).Concat(properties.Keys.Where(k => Array.IndexOf(SystemFirst, k) < 0));
        var kept = new List<KeyValuePair<string, string?>>();
        var left = new List<string>();
        int bytes = 0;
        foreach (var key in order)
        {
            int size = Encoding.UTF8.GetByteCount(key) + Encoding.UTF8.GetByteCount(properties[key]) + 2;
            if (bytes + size > MaxPropertiesBytes) { left.Add(key); continue; }
            bytes += size;
            kept.Add(new(key, properties[key]));
        }
        dropped = left;
        return Encoding.UTF8.GetBytes(MessageProperties.Encode(kept));
    }

    /// <summary>CRC32 (zlib polynomial) of the body, masked to a non-negative int as Java's <c>UtilAll.crc32</c>.</summary>
    public static int BodyCrc(ReadOnlySpan<byte> body) => (int)(System.IO.Hashing.Crc32.HashToUInt32(body) & 0x7FFFFFFF);

    /// <summary>Decodes every record of a PULL_MESSAGE body (or one CHECK body). Throws <see cref="RemotingProtocolException"/> when malformed.</summary>
    public static List<RemotingMessage> DecodeAll(ReadOnlySpan<byte> data)
    {
        var list = new List<RemotingMessage>();
        while (!data.IsEmpty)
        {
            list.Add(Decode(data, out int used));
            data = data[used..];
        }
        return list;
    }

    public static RemotingMessage Decode(ReadOnlySpan<byte> data, out int used)
    {
        int p = 0;
        void Need(ReadOnlySpan<byte> d, int n) { if (d.Length - p < n) RemotingProtocolException.Throw("stored message is truncated"); }
        int I32(ReadOnlySpan<byte> d) { Need(d, 4); int v = BinaryPrimitives.ReadInt32BigEndian(d[p..]); p += 4; return v; }
        long I64(ReadOnlySpan<byte> d) { Need(d, 8); long v = BinaryPrimitives.ReadInt64BigEndian(d[p..]); p += 8; return v; }
        int total = I32(data);
        if (total < 4 || total > data.Length) RemotingProtocolException.Throw($"stored message size {total} does not fit the {data.Length} bytes left");
        data = data[..total];
        int magic = I32(data);
        if (magic != MagicV1 && magic != MagicV2) RemotingProtocolException.Throw($"stored message magic 0x{magic:X8} is unknown");
        var m = new RemotingMessage { BodyCrc = I32(data), QueueId = I32(data), Flag = I32(data), QueueOffset = I64(data), PhysicalOffset = I64(data), SysFlag = I32(data), BornTimestamp = I64(data) };
        IPEndPoint Host(ReadOnlySpan<byte> d, bool v6)
        {
            int n = v6 ? 16 : 4;
            Need(d, n);
            var ip = new IPAddress(d.Slice(p, n));
            p += n;
            int port = I32(d);
            if (port is < IPEndPoint.MinPort or > IPEndPoint.MaxPort) RemotingProtocolException.Throw($"stored message host port {port} is out of range");
            return new IPEndPoint(ip, port);
        }
        m.BornHost = Host(data, (m.SysFlag & MessageSysFlag.BornHostV6) != 0);
        m.StoreTimestamp = I64(data);
        m.StoreHost = Host(data, (m.SysFlag & MessageSysFlag.StoreHostV6) != 0);
        m.ReconsumeTimes = I32(data);
        m.PreparedTransactionOffset = I64(data);
        int bodyLength = I32(data);
        if (bodyLength < 0) RemotingProtocolException.Throw("negative body length");
        Need(data, bodyLength);
        m.Body = data.Slice(p, bodyLength).ToArray(); p += bodyLength;
        int topicLength;
        if (magic == MagicV1) { Need(data, 1); topicLength = data[p]; p += 1; }
        else { Need(data, 2); topicLength = BinaryPrimitives.ReadInt16BigEndian(data[p..]); p += 2; }
        if (topicLength < 0) RemotingProtocolException.Throw("negative topic length");
        Need(data, topicLength);
        m.Topic = Encoding.UTF8.GetString(data.Slice(p, topicLength)); p += topicLength;
        Need(data, 2);
        int propsLength = BinaryPrimitives.ReadInt16BigEndian(data[p..]); p += 2;
        if (propsLength < 0) RemotingProtocolException.Throw("negative properties length");
        Need(data, propsLength);
        m.Properties = MessageProperties.Decode(Encoding.UTF8.GetString(data.Slice(p, propsLength)));
        used = total;
        return m;
    }
}

/// <summary>
/// The "offset message id": upper-case hex of store host IPv4 (4 bytes) + port (int32) + physical offset (int64), 32
/// characters. Java clients decode it to find the broker and the commit log offset (END_TRANSACTION).
/// </summary>
public static class OffsetMessageId
{
    public static string Encode(IPEndPoint storeHost, long physicalOffset)
    {
        Span<byte> b = stackalloc byte[16];
        var ip = storeHost.Address.IsIPv4MappedToIPv6 ? storeHost.Address.MapToIPv4() : storeHost.Address;
        if (ip.AddressFamily != System.Net.Sockets.AddressFamily.InterNetwork) ip = IPAddress.Loopback;
        ip.TryWriteBytes(b, out _);
        BinaryPrimitives.WriteInt32BigEndian(b[4..], storeHost.Port);
        BinaryPrimitives.WriteInt64BigEndian(b[8..], physicalOffset);
        return Convert.ToHexString(b);
    }

    public static bool TryDecode(string? id, out IPEndPoint host, out long physicalOffset)
    {
        host = null!;
        physicalOffset = 0;
        if (id is null || id.Length != 32) return false;
        Span<byte> b = stackalloc byte[16];
        for (int i = 0; i < 16; i++)
            if (!byte.TryParse(id.AsSpan(i * 2, 2), NumberStyles.HexNumber, CultureInfo.InvariantCulture, out b[i])) return false;
        // A 32-hex UNIQ_KEY has the same shape: its "port" is any int32, and IPEndPoint throws outside 0..65535.
        int port = BinaryPrimitives.ReadInt32BigEndian(b[4..]);
        if (port is < IPEndPoint.MinPort or > IPEndPoint.MaxPort) return false;
        host = new IPEndPoint(new IPAddress(b[..4]), port);
        physicalOffset = BinaryPrimitives.ReadInt64BigEndian(b[8..]);
        return true;
    }
}
