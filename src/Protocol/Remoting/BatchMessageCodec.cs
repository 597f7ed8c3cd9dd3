using System.Buffers.Binary;
using System.Text;

namespace HalfMsg.Protocol.Remoting;

/// <summary>
/// The body of SEND_BATCH_MESSAGE (<c>MessageDecoder.encodeMessages</c>): each message as
/// <code>
/// totalSize i32 | magicCode i32 | bodyCRC i32 | flag i32 | bodyLength i32 + body | propertiesLength i16 + properties
/// </code>
/// The topic is the request header's.
/// </summary>
public static class BatchMessageCodec
{
    public readonly record struct Entry(int Flag, byte[] Body, string Properties);

    public static byte[] Encode(IEnumerable<Entry> entries)
    {
        var output = new MemoryStream();
        foreach (var e in entries)
        {
            byte[] props = Encoding.UTF8.GetBytes(e.Properties);
            int total = 4 + 4 + 4 + 4 + 4 + e.Body.Length + 2 + props.Length;
            var b = new byte[total];
            BinaryPrimitives.WriteInt32BigEndian(b, total);
            BinaryPrimitives.WriteInt32BigEndian(b.AsSpan(8), StoredMessageCodec.BodyCrc(e.Body));
            BinaryPrimitives.WriteInt32BigEndian(b.AsSpan(12), e.Flag);
            BinaryPrimitives.WriteInt32BigEndian(b.AsSpan(16), e.Body.Length);
            e.Body.CopyTo(b, 20);
            BinaryPrimitives.WriteInt16BigEndian(b.AsSpan(20 + e.Body.Length), (short)props.Length);
            props.CopyTo(b, 22 + e.Body.Length);
            output.Write(b);
        }
        return output.ToArray();
    }

    /// <summary>Decodes every entry; throws <see cref="RemotingProtocolException"/> when a length does not fit.</summary>
    public static List<Entry> Decode(ReadOnlySpan<byte> data)
    {
        var list = new List<Entry>();
        while (!data.IsEmpty)
        {
            if (data.Length < 22) RemotingProtocolException.Throw("batch entry shorter than its fixed 22 bytes");
            int total = BinaryPrimitives.ReadInt32BigEndian(data);
            if (total < 22 || total > data.Length) RemotingProtocolException.Throw($"batch entry size {total} does not fit the {data.Length} bytes left");
            var e = data[..total];
            int flag = BinaryPrimitives.ReadInt32BigEndian(e[12..]);
            int bodyLength = BinaryPrimitives.ReadInt32BigEndian(e[16..]);
            if (bodyLength < 0 || bodyLength > total - 22) RemotingProtocolException.Throw($"batch body length {bodyLength} does not fit the entry");
            byte[] body = e.Slice(20, bodyLength).ToArray();
            int propsLength = BinaryPrimitives.ReadInt16BigEndian(e[(20 + bodyLength)..]);
            if (propsLength < 0 || propsLength > total - 22 - bodyLength) RemotingProtocolException.Throw($"batch properties length {propsLength} does not fit the entry");
            string props = Encoding.UTF8.GetString(e.Slice(22 + bodyLength, propsLength));
            list.Add(new Entry(flag, body, props));
            data = data[total..];
        }
        return list;
    }
}
