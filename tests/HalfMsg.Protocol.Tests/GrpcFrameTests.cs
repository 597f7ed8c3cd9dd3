using System.Buffers;
using Apache.Rocketmq.V2;
using Google.Protobuf;
using HalfMsg.Protocol.Grpc;

namespace HalfMsg.Protocol.Tests;

public sealed class GrpcFrameTests
{
    private const int Max = GrpcFrame.DefaultMaxMessageSize;

    private static byte[] Frame(byte flag, params byte[] body)
    {
        var bytes = new byte[5 + body.Length];
        bytes[0] = flag;
        GrpcFrame.WriteHeader(bytes, body.Length);
        bytes[0] = flag;
        body.CopyTo(bytes, 5);
        return bytes;
    }

    [Fact]
    public void A_complete_frame_is_read_and_the_buffer_is_advanced_past_it()
    {
        var buffer = new ReadOnlySequence<byte>(Frame(0, 1, 2, 3));

        var status = GrpcFrame.TryReadFrame(ref buffer, Max, out var payload);

        Assert.Equal(GrpcFrameStatus.Complete, status);
        Assert.Equal(new byte[] { 1, 2, 3 }, payload.ToArray());
        Assert.True(buffer.IsEmpty);
    }

    [Fact]
    public void Two_frames_in_one_buffer_are_read_one_after_the_other()
    {
        var buffer = new ReadOnlySequence<byte>([.. Frame(0, 1, 2), .. Frame(0, 9)]);

        Assert.Equal(GrpcFrameStatus.Complete, GrpcFrame.TryReadFrame(ref buffer, Max, out var first));
        Assert.Equal(new byte[] { 1, 2 }, first.ToArray());
        Assert.Equal(GrpcFrameStatus.Complete, GrpcFrame.TryReadFrame(ref buffer, Max, out var second));
        Assert.Equal(new byte[] { 9 }, second.ToArray());
        Assert.True(buffer.IsEmpty);
        Assert.Equal(GrpcFrameStatus.Incomplete, GrpcFrame.TryReadFrame(ref buffer, Max, out _));
    }

    [Theory]
    [InlineData(1)]
    [InlineData(2)]
    [InlineData(3)]
    [InlineData(7)]
    public void A_frame_split_across_segments_is_reassembled(int segmentSize)
    {
        byte[] bytes = [.. Frame(0, 10, 20, 30, 40, 50), .. Frame(0, 60)];
        var buffer = Segments.Create(bytes.Chunk(segmentSize).ToArray());
        Assert.False(buffer.IsSingleSegment);

        Assert.Equal(GrpcFrameStatus.Complete, GrpcFrame.TryReadFrame(ref buffer, Max, out var payload));
        Assert.Equal(new byte[] { 10, 20, 30, 40, 50 }, payload.ToArray());
        Assert.Equal(GrpcFrameStatus.Complete, GrpcFrame.TryReadFrame(ref buffer, Max, out payload));
        Assert.Equal(new byte[] { 60 }, payload.ToArray());
        Assert.True(buffer.IsEmpty);
    }

    [Theory]
    [InlineData(0)]
    [InlineData(1)]
    [InlineData(2)]
    [InlineData(3)]
    [InlineData(4)]
    public void An_incomplete_prefix_needs_more_bytes_and_leaves_the_buffer_untouched(int available)
    {
        var original = new ReadOnlySequence<byte>(Frame(0, 1, 2, 3), 0, available);
        var buffer = original;

        Assert.Equal(GrpcFrameStatus.Incomplete, GrpcFrame.TryReadFrame(ref buffer, Max, out _));
        Assert.Equal(original.Length, buffer.Length);
    }

    [Fact]
    public void A_truncated_body_needs_more_bytes()
    {
        byte[] frame = Frame(0, 1, 2, 3, 4);
        var buffer = new ReadOnlySequence<byte>(frame, 0, frame.Length - 1);

        Assert.Equal(GrpcFrameStatus.Incomplete, GrpcFrame.TryReadFrame(ref buffer, Max, out _));
        Assert.Equal(frame.Length - 1, buffer.Length);
    }

    [Theory]
    [InlineData(new byte[] { 0, 0, 0, 0x04, 0x01 }, 1024)]        // 1025 > 1024
    [InlineData(new byte[] { 0, 0xFF, 0xFF, 0xFF, 0xFF }, Max)]    // uint.MaxValue, larger than int
    [InlineData(new byte[] { 0, 0x80, 0, 0, 0 }, int.MaxValue)]    // 2^31 exceeds any int limit
    public void An_oversized_declared_length_is_rejected_from_the_prefix_alone(byte[] prefix, int max)
    {
        var buffer = new ReadOnlySequence<byte>(prefix);

        Assert.Equal(GrpcFrameStatus.TooLarge, GrpcFrame.TryReadFrame(ref buffer, max, out _));
    }

    [Fact]
    public void A_length_equal_to_the_limit_is_accepted()
    {
        var buffer = new ReadOnlySequence<byte>(Frame(0, 1, 2, 3, 4));

        Assert.Equal(GrpcFrameStatus.Complete, GrpcFrame.TryReadFrame(ref buffer, 4, out _));
    }

    [Theory]
    [InlineData(1, GrpcFrameStatus.Compressed)]
    [InlineData(7, GrpcFrameStatus.InvalidFlag)]
    [InlineData(0xFF, GrpcFrameStatus.InvalidFlag)]
    public void A_non_zero_flag_is_reported(byte flag, GrpcFrameStatus expected)
    {
        var buffer = new ReadOnlySequence<byte>(Frame(flag, 1, 2));

        Assert.Equal(expected, GrpcFrame.TryReadFrame(ref buffer, Max, out _));
    }

    [Fact]
    public void A_zero_length_message_is_a_complete_empty_frame()
    {
        var buffer = new ReadOnlySequence<byte>(Frame(0));

        Assert.Equal(GrpcFrameStatus.Complete, GrpcFrame.TryReadFrame(ref buffer, Max, out var payload));
        Assert.True(payload.IsEmpty);
        Assert.True(buffer.IsEmpty);
        Assert.Equal(new HeartbeatRequest(), GrpcFrame.Parse(HeartbeatRequest.Parser, payload));
    }

    [Fact]
    public void A_written_send_message_request_reads_back_equal()
    {
        var request = new SendMessageRequest
        {
            Messages =
            {
                new Message
                {
                    Topic = new Resource { Name = "orders", ResourceNamespace = "ns" },
                    Body = ByteString.CopyFromUtf8("hello half message"),
                    UserProperties = { ["k"] = "v" },
                    SystemProperties = new SystemProperties
                    {
                        MessageId = "01AABBCCDDEEFF0001000000010000002A",
                        MessageType = MessageType.Transaction,
                        Tag = "TagA",
                        Keys = { "key-1" },
                        BodyDigest = new Digest { Type = DigestType.Md5, Checksum = "X" },
                    },
                },
            },
        };
        var writer = new ArrayBufferWriter<byte>();

        GrpcFrame.WriteFrame(writer, request);
        GrpcFrame.WriteFrame(writer, new HeartbeatRequest()); // a following empty message

        Assert.Equal(5 + request.CalculateSize() + 5, writer.WrittenCount);
        var buffer = Segments.Create(writer.WrittenSpan.ToArray().Chunk(4).ToArray());
        Assert.Equal(GrpcFrameStatus.Complete, GrpcFrame.TryReadFrame(ref buffer, Max, out var payload));
        Assert.Equal(request, GrpcFrame.Parse(SendMessageRequest.Parser, payload));
        Assert.Equal(GrpcFrameStatus.Complete, GrpcFrame.TryReadFrame(ref buffer, Max, out payload));
        Assert.True(payload.IsEmpty);
        Assert.True(buffer.IsEmpty);
    }

    [Fact]
    public void The_written_prefix_is_flag_zero_and_big_endian_length()
    {
        var message = new Resource { Name = new string('a', 300) };
        var writer = new ArrayBufferWriter<byte>();

        GrpcFrame.WriteFrame(writer, message);

        int size = message.CalculateSize();
        Assert.Equal(new byte[] { 0, 0, 0, (byte)(size >> 8), (byte)size }, writer.WrittenSpan[..5].ToArray());
    }

    [Fact]
    public void An_invalid_payload_throws_an_invalid_protocol_buffer_exception()
    {
        var payload = new ReadOnlySequence<byte>(new byte[] { 0x0A, 0x05, 0x01 }); // length 5, only 1 byte

        Assert.Throws<InvalidProtocolBufferException>(() => GrpcFrame.Parse(SendMessageRequest.Parser, payload));
    }
}

/// <summary>Builds multi-segment sequences, as a PipeReader would hand them out.</summary>
internal static class Segments
{
    public static ReadOnlySequence<byte> Create(params byte[][] chunks)
    {
        if (chunks.Length == 0)
        {
            return ReadOnlySequence<byte>.Empty;
        }

        var first = new Segment(chunks[0], 0);
        Segment last = first;
        foreach (byte[] chunk in chunks.Skip(1))
        {
            last = last.Append(chunk);
        }

        return new ReadOnlySequence<byte>(first, 0, last, last.Memory.Length);
    }

    private sealed class Segment : ReadOnlySequenceSegment<byte>
    {
        public Segment(ReadOnlyMemory<byte> memory, long runningIndex)
        {
            Memory = memory;
            RunningIndex = runningIndex;
        }

        public Segment Append(ReadOnlyMemory<byte> memory)
        {
            var next = new Segment(memory, RunningIndex + Memory.Length);
            Next = next;
            return next;
        }
    }
}
