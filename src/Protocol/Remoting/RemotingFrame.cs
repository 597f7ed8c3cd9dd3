using System.Buffers;
using System.Buffers.Binary;

namespace HalfMsg.Protocol.Remoting;

/// <summary>
/// The Remoting frame (apache/rocketmq <c>RemotingCommand.encode</c> / <c>NettyDecoder</c>). All integers big-endian:
/// <code>
/// +----------------+----------+-------------------------+----------------+----------------+
/// | totalLength i32| type u8  | headerLength (24 bits)  | header bytes   | body bytes     |
/// +----------------+----------+-------------------------+----------------+----------------+
///   totalLength = 4 + headerLength + bodyLength (it does not count itself)
///   type 0 = JSON header, 1 = ROCKETMQ binary header
/// </code>
/// </summary>
public static class RemotingFrame
{
    /// <summary>RocketMQ's <c>com.rocketmq.remoting.frameMaxLength</c> default: 16 MiB.</summary>
    public const int DefaultMaxFrameLength = 16 * 1024 * 1024;

    /// <summary>
    /// Reads one frame. Returns false (buffer untouched) when more bytes are needed. The declared lengths are checked
    /// from the first 8 bytes, before any body is buffered: a total above <paramref name="maxLength"/>, a total below 4
    /// or a header longer than the frame throw <see cref="RemotingProtocolException"/>, as does an undecodable header.
    /// On success <paramref name="buffer"/> is advanced past the frame and the body is copied out of it.
    /// </summary>
    public static bool TryReadFrame(ref ReadOnlySequence<byte> buffer, int maxLength, out RemotingCommand frame)
    {
        frame = null!;
        if (buffer.Length < 4) return false;
        Span<byte> prefix = stackalloc byte[8];
        int have = (int)Math.Min(8, buffer.Length);
        buffer.Slice(0, have).CopyTo(prefix);
        int total = BinaryPrimitives.ReadInt32BigEndian(prefix);
        if (total < 4) RemotingProtocolException.Throw($"frame length {total} is smaller than the 4-byte header-length field");
        if (total > maxLength) RemotingProtocolException.Throw($"frame length {total} exceeds the maximum of {maxLength} bytes");
        if (have < 8) return false;
        int mark = BinaryPrimitives.ReadInt32BigEndian(prefix[4..]);
        byte type = (byte)((mark >> 24) & 0xFF);
        int headerLength = mark & 0xFFFFFF;
        if (type > 1) RemotingProtocolException.Throw($"unknown header serialize type {type}");
        if (headerLength > total - 4) RemotingProtocolException.Throw($"header length {headerLength} exceeds the frame length {total}");
        if (buffer.Length - 4 < total) return false;

        var header = buffer.Slice(8, headerLength);
        var body = buffer.Slice(8 + headerLength, total - 4 - headerLength);
        frame = type == 0 ? RemotingHeaderCodec.DecodeJson(header) : RemotingHeaderCodec.DecodeBinary(header);
        frame.SerializeType = (SerializeType)type;
        frame.Body = body.IsEmpty ? ReadOnlyMemory<byte>.Empty : body.ToArray();
        buffer = buffer.Slice(4 + (long)total);
        return true;
    }

    /// <summary>Writes <paramref name="command"/> as one frame, with its header in <see cref="RemotingCommand.SerializeType"/>.</summary>
    public static void Write(IBufferWriter<byte> writer, RemotingCommand command)
    {
        WriteHead(writer, command);
        if (!command.Body.IsEmpty) writer.Write(command.Body.Span);
    }

    /// <summary>
    /// Writes the frame of <paramref name="command"/> up to its body: the lengths (counting the body) and the header. The
    /// caller writes <see cref="RemotingCommand.Body"/> after it, at its own pace (a server writing a large body to a
    /// slow peer in pieces). Returns the bytes written.
    /// </summary>
    public static int WriteHead(IBufferWriter<byte> writer, RemotingCommand command)
    {
        var header = new ArrayBufferWriter<byte>(256);
        if (command.SerializeType == SerializeType.RocketMq) RemotingHeaderCodec.EncodeBinary(header, command);
        else RemotingHeaderCodec.EncodeJson(header, command);
        int headerLength = header.WrittenCount;
        int bodyLength = command.Body.Length;
        var prefix = writer.GetSpan(8);
        BinaryPrimitives.WriteInt32BigEndian(prefix, 4 + headerLength + bodyLength);
        BinaryPrimitives.WriteInt32BigEndian(prefix[4..], ((int)command.SerializeType << 24) | headerLength);
        writer.Advance(8);
        writer.Write(header.WrittenSpan);
        return 8 + headerLength;
    }

    /// <summary>The frame as a byte array (tests, clients).</summary>
    public static byte[] ToArray(RemotingCommand command)
    {
        var w = new ArrayBufferWriter<byte>();
        Write(w, command);
        return w.WrittenSpan.ToArray();
    }
}
