using System.Buffers.Binary;
using System.Net;
using System.Text;
using HalfMsg.Protocol.Remoting;

namespace HalfMsg.Protocol.Tests.Remoting;

public sealed class StoredMessageCodecTests
{
    [Fact]
    public void Properties_encode_as_key_01_value_02_pairs_and_skip_nulls()
    {
        string s = MessageProperties.Encode([new("TAGS", "A"), new("KEYS", "k1 k2"), new("X", null)]);
        Assert.Equal("TAGS\u0001A\u0002KEYS\u0001k1 k2\u0002", s);
    }

    [Theory]
    // well-formed, trailing separator
    [InlineData("A\u00011\u0002B\u00012\u0002", "A=1;B=2")]
    // no trailing separator after the last pair
    [InlineData("A\u00011\u0002B\u00012", "A=1;B=2")]
    // empty value and empty key are dropped, as Java's string2messageProperties does
    [InlineData("A\u0001\u0002\u0001x\u0002C\u00013\u0002", "C=3")]
    // a pair without the 0x01 separator is dropped
    [InlineData("junk\u0002D\u00014\u0002", "D=4")]
    [InlineData("", "")]
    public void Properties_decode_like_Java(string text, string expected)
    {
        var map = MessageProperties.Decode(text);
        Assert.Equal(expected, string.Join(';', map.Select(p => $"{p.Key}={p.Value}")));
    }

    [Theory]
    [InlineData("", 0)]
    [InlineData("TagA", 2598919)]
    [InlineData("hello", 99162322)]
    public void Tag_hash_is_Java_String_hashCode(string s, int expected) => Assert.Equal(expected, MessageProperties.JavaHashCode(s));

    [Fact]
    public void Stored_message_has_the_V1_layout_field_by_field()
    {
        var m = new RemotingMessage
        {
            Topic = "T1", QueueId = 3, Flag = 9, QueueOffset = 17, PhysicalOffset = 4096, SysFlag = 0,
            BornTimestamp = 1000, BornHost = new IPEndPoint(IPAddress.Parse("10.0.0.5"), 5555), StoreTimestamp = 2000,
            StoreHost = new IPEndPoint(IPAddress.Parse("127.0.0.1"), 10911), ReconsumeTimes = 2, PreparedTransactionOffset = 0,
            Body = "abc"u8.ToArray(), Properties = new() { ["TAGS"] = "A" },
        };
        byte[] b = StoredMessageCodec.Encode(m);
        int props = "TAGS\u0001A\u0002".Length;
        // 96 fixed bytes (see the layout) + body 3 + topic 1+2 + properties 2+n
        Assert.Equal(96 + 3 + 1 + 2 + 2 + props, b.Length);
        Assert.Equal(b.Length, BinaryPrimitives.ReadInt32BigEndian(b));
        Assert.Equal(-626843481, BinaryPrimitives.ReadInt32BigEndian(b.AsSpan(4)));     // MESSAGE_MAGIC_CODE V1
        Assert.Equal(StoredMessageCodec.BodyCrc("abc"u8), BinaryPrimitives.ReadInt32BigEndian(b.AsSpan(8)));
        Assert.Equal(3, BinaryPrimitives.ReadInt32BigEndian(b.AsSpan(12)));              // queueId
        Assert.Equal(17, BinaryPrimitives.ReadInt64BigEndian(b.AsSpan(20)));             // queueOffset
        Assert.Equal(4096, BinaryPrimitives.ReadInt64BigEndian(b.AsSpan(28)));           // physicalOffset
        Assert.Equal(new byte[] { 10, 0, 0, 5 }, b.AsSpan(48, 4).ToArray());              // bornHost IPv4
        Assert.Equal(5555, BinaryPrimitives.ReadInt32BigEndian(b.AsSpan(52)));
        Assert.Equal(2, BinaryPrimitives.ReadInt32BigEndian(b.AsSpan(72)));              // reconsumeTimes
        Assert.Equal(3, BinaryPrimitives.ReadInt32BigEndian(b.AsSpan(84)));              // body length
        Assert.Equal("abc", Encoding.ASCII.GetString(b, 88, 3));
        Assert.Equal(2, b[91]);                                                           // topic length (1 byte)
        Assert.Equal("T1", Encoding.ASCII.GetString(b, 92, 2));

        var back = Assert.Single(StoredMessageCodec.DecodeAll(b));
        Assert.Equal(("T1", 3, 9, 17L, 4096L, 2, "A"), (back.Topic, back.QueueId, back.Flag, back.QueueOffset, back.PhysicalOffset, back.ReconsumeTimes, back.Properties["TAGS"]));
        Assert.Equal("10.0.0.5:5555", back.BornHost.ToString());
    }

    [Fact]
    public void Body_crc_matches_java_util_zip_CRC32_masked_to_31_bits()
    {
        // CRC32("123456789") = 0xCBF43926; masked with 0x7FFFFFFF.
        Assert.Equal(0x4BF43926, StoredMessageCodec.BodyCrc("123456789"u8));
    }

    [Fact]
    public void Truncated_stored_message_is_malformed()
    {
        byte[] b = StoredMessageCodec.Encode(new RemotingMessage { Topic = "T", Body = [1, 2] });
        Assert.Throws<RemotingProtocolException>(() => StoredMessageCodec.DecodeAll(b.AsSpan(0, b.Length - 1)));
    }

    [Fact]
    public void Offset_message_id_is_host_port_and_offset_in_32_hex_chars()
    {
        string id = OffsetMessageId.Encode(new IPEndPoint(IPAddress.Parse("127.0.0.1"), 10911), 0x1234);
        Assert.Equal("7F00000100002A9F0000000000001234", id);
        Assert.True(OffsetMessageId.TryDecode(id, out var host, out long off));
        Assert.Equal(("127.0.0.1:10911", 0x1234L), (host.ToString(), off));
        Assert.False(OffsetMessageId.TryDecode("XYZ", out _, out _));
    }
}

public sealed class RemotingAclSignatureTests
{
    [Fact]
    public void Signature_is_HMAC_SHA1_base64_over_values_in_ordinal_key_order_then_the_body()
    {
        var cmd = RemotingCommand.Request(10, new() { ["b"] = "2", ["a"] = "1", ["B"] = "3" }, "xyz"u8.ToArray());
        RemotingAclSignature.Sign(cmd, "AK", "secret");
        // Ordinal order: AccessKey, B, a, b → "AK" + "3" + "1" + "2", then the body.
        string expected = Convert.ToBase64String(System.Security.Cryptography.HMACSHA1.HashData("secret"u8, "AK312xyz"u8));
        Assert.Equal(expected, cmd.Get("Signature"));
        Assert.True(RemotingAclSignature.Verify(cmd, "secret"));
        Assert.False(RemotingAclSignature.Verify(cmd, "other"));
    }
}
