using System.Buffers;
using System.Buffers.Binary;
using System.Text;
using HalfMsg.Protocol.Remoting;

namespace HalfMsg.Protocol.Tests.Remoting;

public sealed class RemotingFrameTests
{
    private static byte[] Frame(byte type, byte[] header, byte[] body)
    {
        var b = new byte[8 + header.Length + body.Length];
        BinaryPrimitives.WriteInt32BigEndian(b, 4 + header.Length + body.Length);
        BinaryPrimitives.WriteInt32BigEndian(b.AsSpan(4), (type << 24) | header.Length);
        header.CopyTo(b, 8);
        body.CopyTo(b, 8 + header.Length);
        return b;
    }

    /// <summary>A server writes a large body after the head, in pieces: the head counts the body, and head + body is
    /// the frame <see cref="RemotingFrame.Write"/> writes.</summary>
    [Fact]
    public void The_head_and_then_the_body_make_the_whole_frame()
    {
        var cmd = RemotingCommand.Request(RequestCode.PullMessage, new() { ["topic"] = "T" }, Encoding.UTF8.GetBytes("0123456789"));
        var pieces = new ArrayBufferWriter<byte>();
        int head = RemotingFrame.WriteHead(pieces, cmd);
        Assert.Equal(pieces.WrittenCount, head);
        pieces.Write(cmd.Body.Span[..4]);
        pieces.Write(cmd.Body.Span[4..]);
        Assert.Equal(RemotingFrame.ToArray(cmd), pieces.WrittenSpan.ToArray());
        Assert.Equal("0123456789", Encoding.UTF8.GetString(ReadOne(pieces.WrittenSpan.ToArray()).Body.Span));
    }

    private static RemotingCommand ReadOne(byte[] bytes, int max = RemotingFrame.DefaultMaxFrameLength)
    {
        var seq = new ReadOnlySequence<byte>(bytes);
        Assert.True(RemotingFrame.TryReadFrame(ref seq, max, out var cmd));
        Assert.True(seq.IsEmpty);
        return cmd;
    }

    [Fact]
    public void Json_header_as_Java_writes_it_decodes_with_ext_fields_and_body()
    {
        // Java fastjson output, including the serializeTypeCurrentRPC key we must ignore.
        string json = """{"code":310,"extFields":{"a":"PG","b":"T","e":"-1"},"flag":0,"language":"JAVA","opaque":7,"serializeTypeCurrentRPC":"JSON","version":477}""";
        var cmd = ReadOne(Frame(0, Encoding.UTF8.GetBytes(json), "hello"u8.ToArray()));
        Assert.Equal(310, cmd.Code);
        Assert.Equal(7, cmd.Opaque);
        Assert.Equal(477, cmd.Version);
        Assert.Equal(LanguageCode.Java, cmd.Language);
        Assert.Equal("PG", cmd.Get("a"));
        Assert.Equal("-1", cmd.Get("e"));
        Assert.Equal("hello", Encoding.UTF8.GetString(cmd.Body.Span));
        Assert.Equal(SerializeType.Json, cmd.SerializeType);
    }

    [Fact]
    public void Json_ext_fields_keep_the_text_of_numbers_and_booleans_as_ali_ons_sends_them()
    {
        string json = """{"code":310,"language":"JAVA","opaque":1,"flag":0,"version":121,"extFields":{"e":0,"g":1700000000000,"k":false,"z":null}}""";
        var cmd = ReadOne(Frame(0, Encoding.UTF8.GetBytes(json), []));
        Assert.Equal("0", cmd.Get("e"));
        Assert.Equal("1700000000000", cmd.Get("g"));
        Assert.Equal("false", cmd.Get("k"));
        Assert.Null(cmd.Get("z"));
    }

    [Fact]
    public void Binary_header_round_trips_remark_ext_fields_and_language()
    {
        var cmd = new RemotingCommand { Code = 11, Language = LanguageCode.DotNet, Version = 401, Opaque = 42, Flag = 2, Remark = "héllo", SerializeType = SerializeType.RocketMq, Body = new byte[] { 1, 2, 3 } };
        cmd.Set("topic", "T").Set("queueId", 3);
        var back = ReadOne(RemotingFrame.ToArray(cmd));
        Assert.Equal(SerializeType.RocketMq, back.SerializeType);
        Assert.Equal((11, LanguageCode.DotNet, 401, 42, 2, "héllo"), (back.Code, back.Language, back.Version, back.Opaque, back.Flag, back.Remark));
        Assert.True(back.IsOneway);
        Assert.Equal("T", back.Get("topic"));
        Assert.Equal("3", back.Get("queueId"));
        Assert.Equal(new byte[] { 1, 2, 3 }, back.Body.ToArray());
    }

    [Fact]
    public void Binary_header_with_zero_length_remark_and_no_ext_fields_decodes_to_nulls()
    {
        var h = new byte[21];
        BinaryPrimitives.WriteInt16BigEndian(h, 34);       // code HEART_BEAT
        BinaryPrimitives.WriteInt32BigEndian(h.AsSpan(5), 9); // opaque
        var cmd = ReadOne(Frame(1, h, []));
        Assert.Equal(34, cmd.Code);
        Assert.Equal(9, cmd.Opaque);
        Assert.Null(cmd.Remark);
        Assert.Null(cmd.ExtFields);
    }

    [Fact]
    public void Json_response_round_trips_and_is_strict_json()
    {
        var req = new RemotingCommand { Code = 10, Opaque = 5 };
        var resp = RemotingCommand.ResponseTo(req, ResponseCode.Success).Set("msgId", "ABC").Set("queueOffset", 12L);
        byte[] bytes = RemotingFrame.ToArray(resp);
        int headerLength = BinaryPrimitives.ReadInt32BigEndian(bytes.AsSpan(4)) & 0xFFFFFF;
        using var doc = System.Text.Json.JsonDocument.Parse(bytes.AsMemory(8, headerLength));
        Assert.Equal(1, doc.RootElement.GetProperty("flag").GetInt32());
        Assert.Equal("12", doc.RootElement.GetProperty("extFields").GetProperty("queueOffset").GetString());
        var back = ReadOne(bytes);
        Assert.True(back.IsResponse);
        Assert.Equal(5, back.Opaque);
        Assert.Equal("ABC", back.Get("msgId"));
    }

    [Fact]
    public void Two_frames_in_one_buffer_are_read_one_after_the_other()
    {
        byte[] a = RemotingFrame.ToArray(new RemotingCommand { Code = 1, Opaque = 1 });
        byte[] b = RemotingFrame.ToArray(new RemotingCommand { Code = 2, Opaque = 2, SerializeType = SerializeType.RocketMq });
        var seq = new ReadOnlySequence<byte>([.. a, .. b]);
        Assert.True(RemotingFrame.TryReadFrame(ref seq, 1 << 20, out var first));
        Assert.True(RemotingFrame.TryReadFrame(ref seq, 1 << 20, out var second));
        Assert.False(RemotingFrame.TryReadFrame(ref seq, 1 << 20, out _));
        Assert.Equal((1, 2), (first.Code, second.Code));
    }

    [Theory]
    [InlineData(0)]
    [InlineData(3)]
    [InlineData(7)]
    [InlineData(20)]
    public void Truncated_frame_is_incomplete_and_leaves_the_buffer_untouched(int keep)
    {
        byte[] full = RemotingFrame.ToArray(new RemotingCommand { Code = 10, Opaque = 1, Body = new byte[50] });
        var seq = new ReadOnlySequence<byte>(full.AsMemory(0, keep));
        Assert.False(RemotingFrame.TryReadFrame(ref seq, 1 << 20, out _));
        Assert.Equal(keep, seq.Length);
    }

    [Fact]
    public void Oversized_declared_length_is_refused_from_the_first_four_bytes_before_any_body_arrives()
    {
        var prefix = new byte[4];
        BinaryPrimitives.WriteInt32BigEndian(prefix, RemotingFrame.DefaultMaxFrameLength + 1);
        var seq = new ReadOnlySequence<byte>(prefix);
        Assert.Throws<RemotingProtocolException>(() => RemotingFrame.TryReadFrame(ref seq, RemotingFrame.DefaultMaxFrameLength, out _));
    }

    public static TheoryData<string, byte[]> MalformedFrames => new()
    {
        // total length smaller than the header-length field itself
        { "total 3", [0, 0, 0, 3, 0, 0, 0, 0] },
        // negative total length (high bit set)
        { "total negative", [0x80, 0, 0, 0, 0, 0, 0, 0] },
        // header length 100 in a frame whose total is 10
        { "header longer than frame", [0, 0, 0, 10, 0, 0, 0, 100, 0, 0, 0, 0, 0, 0] },
        // serialize type 2 does not exist
        { "unknown serialize type", [0, 0, 0, 6, 2, 0, 0, 2, (byte)'{', (byte)'}'] },
        // JSON header that is not JSON
        { "json garbage", [0, 0, 0, 7, 0, 0, 0, 3, (byte)'x', (byte)'y', (byte)'z'] },
        // JSON header that is an array
        { "json array", [0, 0, 0, 6, 0, 0, 0, 2, (byte)'[', (byte)']'] },
        // JSON header without a code
        { "json no code", [0, 0, 0, 6, 0, 0, 0, 2, (byte)'{', (byte)'}'] },
        // binary header shorter than its fixed 21 bytes
        { "binary short", [0, 0, 0, 9, 1, 0, 0, 5, 0, 10, 0, 0, 0] },
    };

    [Theory]
    [MemberData(nameof(MalformedFrames))]
    public void Malformed_frames_throw_a_protocol_exception(string name, byte[] bytes)
    {
        _ = name;
        var seq = new ReadOnlySequence<byte>(bytes);
        Assert.Throws<RemotingProtocolException>(() => RemotingFrame.TryReadFrame(ref seq, 1 << 20, out _));
    }

    [Fact]
    public void Binary_ext_field_lengths_beyond_the_header_are_malformed()
    {
        var h = new List<byte>(new byte[17]); // code..flag (13) + remark length 0 (4)
        h.AddRange([0, 0, 0, 8]);              // ext length 8
        h.AddRange([0, 50, (byte)'k', 0, 0, 0, 1, (byte)'v']); // key length 50 > remaining
        var seq = new ReadOnlySequence<byte>(Frame(1, [.. h], []));
        Assert.Throws<RemotingProtocolException>(() => RemotingFrame.TryReadFrame(ref seq, 1 << 20, out _));
    }

    [Fact]
    public void Frame_split_across_segments_is_read_whole()
    {
        byte[] full = RemotingFrame.ToArray(new RemotingCommand { Code = 10, Opaque = 3, Body = Encoding.UTF8.GetBytes("segmented") });
        var first = new Segment(full.AsMemory(0, 5));
        var last = first.Append(full.AsMemory(5));
        var seq = new ReadOnlySequence<byte>(first, 0, last, last.Memory.Length);
        Assert.True(RemotingFrame.TryReadFrame(ref seq, 1 << 20, out var cmd));
        Assert.Equal("segmented", Encoding.UTF8.GetString(cmd.Body.Span));
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
}
