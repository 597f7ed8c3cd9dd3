using System.Buffers;
using System.Buffers.Binary;
using Google.Protobuf;

namespace HalfMsg.Protocol.Grpc;

/// <summary>Result of <see cref="GrpcFrame.TryReadFrame"/>.</summary>
public enum GrpcFrameStatus
{
    /// <summary>A whole frame was read; the buffer was advanced past it.</summary>
    Complete,

    /// <summary>Not enough bytes yet (prefix or body); read more and retry. The buffer is untouched.</summary>
    Incomplete,

    /// <summary>The declared length exceeds the limit. Decided from the prefix alone, so an attacker
    /// cannot make us buffer an oversized body; answer RESOURCE_EXHAUSTED.</summary>
    TooLarge,

    /// <summary>Compressed-Flag = 1. We never advertise a <c>grpc-encoding</c>, so a compliant peer
    /// does not send this; answer INTERNAL (or UNIMPLEMENTED).</summary>
    Compressed,

    /// <summary>Compressed-Flag is neither 0 nor 1: the stream is corrupt.</summary>
    InvalidFlag,
}

/// <summary>
/// gRPC "Length-Prefixed-Message" codec (gRPC over HTTP/2 spec, section "Requests"/"Responses"):
/// <c>Compressed-Flag (1 byte) | Message-Length (4 bytes, big-endian, unsigned) | Message</c>.
/// Pure and allocation-free so the Kestrel server and the HttpClient-based clients can share it.
/// </summary>
public static class GrpcFrame
{
    /// <summary>Size of the length prefix that precedes every message.</summary>
    public const int HeaderSize = 5;

    /// <summary>Default maximum message size, matching the grpc-java/grpc-go default of 4 MiB.</summary>
    public const int DefaultMaxMessageSize = 4 * 1024 * 1024;

    /// <summary>
    /// Tries to read one frame from <paramref name="buffer"/>. On <see cref="GrpcFrameStatus.Complete"/>
    /// <paramref name="payload"/> is a slice of the input (valid as long as the input is) and
    /// <paramref name="buffer"/> is advanced past the frame; otherwise <paramref name="buffer"/> is unchanged.
    /// </summary>
    public static GrpcFrameStatus TryReadFrame(ref ReadOnlySequence<byte> buffer, int maxMessageSize, out ReadOnlySequence<byte> payload)
    {
        payload = default;
        if (buffer.Length < HeaderSize)
        {
            return GrpcFrameStatus.Incomplete;
        }

        Span<byte> header = stackalloc byte[HeaderSize];
        buffer.Slice(0, HeaderSize).CopyTo(header);

        switch (header[0])
        {
            case 0:
                break;
            case 1:
                return GrpcFrameStatus.Compressed;
            default:
                return GrpcFrameStatus.InvalidFlag;
        }

        // The length is an unsigned 32-bit value; anything above int.MaxValue is certainly too large.
        uint length = BinaryPrimitives.ReadUInt32BigEndian(header[1..]);
        if (length > (uint)Math.Max(maxMessageSize, 0))
        {
            return GrpcFrameStatus.TooLarge;
        }

        if (buffer.Length - HeaderSize < length)
        {
            return GrpcFrameStatus.Incomplete;
        }

        payload = buffer.Slice(HeaderSize, length);
        buffer = buffer.Slice(payload.End);
        return GrpcFrameStatus.Complete;
    }

    /// <summary>Writes the 5-byte prefix followed by the serialized <paramref name="message"/>, serializing
    /// straight into the writer's memory.</summary>
    public static void WriteFrame(IBufferWriter<byte> writer, IMessage message)
    {
        ArgumentNullException.ThrowIfNull(writer);
        ArgumentNullException.ThrowIfNull(message);

        int size = message.CalculateSize();
        Span<byte> span = writer.GetSpan(HeaderSize + size);
        span[0] = 0; // not compressed
        BinaryPrimitives.WriteUInt32BigEndian(span.Slice(1, 4), (uint)size);
        message.WriteTo(span.Slice(HeaderSize, size));
        writer.Advance(HeaderSize + size);
    }

    /// <summary>Writes the 5-byte uncompressed prefix for a <paramref name="length"/>-byte message (for callers that
    /// serialize the body themselves, e.g. into a pooled buffer).</summary>
    public static void WriteHeader(Span<byte> destination, int length)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(length);
        destination[0] = 0;
        BinaryPrimitives.WriteUInt32BigEndian(destination.Slice(1, 4), (uint)length);
    }

    /// <summary>Parses a protobuf message directly from a (possibly multi-segment) payload without copying.</summary>
    /// <exception cref="InvalidProtocolBufferException">The payload is not a valid encoding of <typeparamref name="T"/>.</exception>
    public static T Parse<T>(MessageParser<T> parser, in ReadOnlySequence<byte> payload)
        where T : IMessage<T>
    {
        ArgumentNullException.ThrowIfNull(parser);
        return parser.ParseFrom(payload);
    }
}
