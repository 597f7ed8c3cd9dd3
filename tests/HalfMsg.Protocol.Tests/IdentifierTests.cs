using Apache.Rocketmq.V2;
using Encoding = System.Text.Encoding;
using System.Collections.Concurrent;
using System.Security.Cryptography;
using System.Text;
using HalfMsg.Protocol.Identifiers;
using HalfMsg.TestKit;

namespace HalfMsg.Protocol.Tests;

public sealed class IdentifierTests
{
    [Fact]
    public void A_message_id_is_34_upper_case_hex_characters_starting_with_version_01()
    {
        string id = new MessageIdGenerator().Next();

        Assert.Equal(34, id.Length);
        Assert.StartsWith("01", id);
        Assert.All(id, c => Assert.True(char.IsAsciiHexDigitUpper(c) || char.IsAsciiDigit(c), $"unexpected '{c}'"));
        Assert.True(MessageIdGenerator.IsWellFormed(id));
    }

    [Fact]
    public void A_message_id_encodes_pid_time_and_sequence_big_endian()
    {
        var clock = new ManualClock(new DateTimeOffset(2021, 1, 1, 0, 0, 0, TimeSpan.Zero).AddSeconds(0x01020304));
        var generator = new MessageIdGenerator(clock);

        byte[] first = Convert.FromHexString(generator.Next());
        byte[] second = Convert.FromHexString(generator.Next());

        Assert.Equal((ushort)Environment.ProcessId, (ushort)((first[7] << 8) | first[8]));
        Assert.Equal(new byte[] { 1, 2, 3, 4 }, first[9..13]);
        uint seq1 = System.Buffers.Binary.BinaryPrimitives.ReadUInt32BigEndian(first.AsSpan(13));
        uint seq2 = System.Buffers.Binary.BinaryPrimitives.ReadUInt32BigEndian(second.AsSpan(13));
        Assert.Equal(seq1 + 1, seq2);
        Assert.Equal(first[..9], second[..9]);
    }

    [Fact]
    public void Message_ids_are_unique_over_100k_calls()
    {
        var generator = new MessageIdGenerator();
        var ids = new HashSet<string>();

        for (int i = 0; i < 100_000; i++)
        {
            Assert.True(ids.Add(generator.Next()));
        }
    }

    [Fact]
    public void Message_ids_generated_concurrently_are_unique()
    {
        var generator = MessageIdGenerator.Shared;
        var ids = new ConcurrentDictionary<string, byte>();

        Parallel.For(0, 8, new ParallelOptions { MaxDegreeOfParallelism = 8 }, _ =>
        {
            for (int i = 0; i < 20_000; i++)
            {
                Assert.True(ids.TryAdd(generator.Next(), 0));
            }
        });

        Assert.Equal(160_000, ids.Count);
    }

    [Theory]
    [InlineData("01AABBCCDDEEFF0001000000010000002A", true)]
    [InlineData("01aabbccddeeff0001000000010000002a", true)]
    [InlineData("02AABBCCDDEEFF0001000000010000002A", false)]
    [InlineData("01AABBCCDDEEFF0001000000010000002", false)]
    [InlineData("01AABBCCDDEEFF0001000000010000002G", false)]
    [InlineData("my-own-id", false)]
    [InlineData("", false)]
    [InlineData(null, false)]
    public void Well_formedness_checks_length_hex_and_version(string? id, bool expected)
    {
        Assert.Equal(expected, MessageIdGenerator.IsWellFormed(id));
    }

    [Theory]
    [InlineData("", "D41D8CD98F00B204E9800998ECF8427E")]
    [InlineData("The quick brown fox jumps over the lazy dog", "9E107D9D372BB6826BD81D3542A419D6")]
    public void The_body_digest_is_upper_case_hex_md5(string body, string expected)
    {
        Assert.Equal(expected, Md5Digest.UpperHex(Encoding.UTF8.GetBytes(body)));
    }

    [Fact]
    public void The_body_digest_matches_the_framework_md5()
    {
        byte[] body = RandomNumberGenerator.GetBytes(4096);

        Assert.Equal(Convert.ToHexString(MD5.HashData(body)), Md5Digest.UpperHex(body));
    }

    [Theory]
    [InlineData("123456789", "3421780262")] // the CRC-32 check value, 0xCBF43926, printed unsigned as Java's CRC32.getValue()
    [InlineData("", "0")]
    public void The_crc32_body_digest_is_the_unsigned_value_in_decimal(string body, string expected)
    {
        Digest digest = BodyDigest.Crc32Of(Encoding.UTF8.GetBytes(body));

        Assert.Equal(DigestType.Crc32, digest.Type);
        Assert.Equal(expected, digest.Checksum);
    }

    [Fact]
    public void The_md5_body_digest_is_upper_case_hex_and_a_crc32_in_hex_as_Java_and_CSharp_send_it_is_accepted()
    {
        byte[] body = Encoding.UTF8.GetBytes("123456789");
        Digest md5 = BodyDigest.Md5Of(body);
        Assert.Equal(DigestType.Md5, md5.Type);
        Assert.Equal("25F9E794323B453885F5181F1B624D0B", md5.Checksum);
        Assert.True(BodyDigest.Matches(new Digest { Type = DigestType.Crc32, Checksum = "CBF43926" }, body)); // Java, C#
        Assert.True(BodyDigest.Matches(new Digest { Type = DigestType.Crc32, Checksum = "cbf43926" }, body));
        Assert.True(BodyDigest.Matches(new Digest { Type = DigestType.Crc32, Checksum = "3421780262" }, body)); // Node
        Assert.False(BodyDigest.Matches(new Digest { Type = DigestType.Crc32, Checksum = "CBF43927" }, body));
    }

    [Fact]
    public void A_digest_of_any_known_type_that_does_not_match_the_body_is_caught()
    {
        byte[] body = RandomNumberGenerator.GetBytes(1024);
        byte[] damaged = (byte[])body.Clone();
        damaged[517] ^= 0x10;
        var digests = new[]
        {
            BodyDigest.Crc32Of(body),
            new Digest { Type = DigestType.Md5, Checksum = Md5Digest.UpperHex(body).ToLowerInvariant() },
            new Digest { Type = DigestType.Sha1, Checksum = Convert.ToHexString(SHA1.HashData(body)) },
        };

        foreach (Digest d in digests)
        {
            Assert.True(BodyDigest.Matches(d, body), d.Type.ToString());
            Assert.False(BodyDigest.Matches(d, damaged), d.Type.ToString());
        }
        Assert.True(BodyDigest.Matches(null, damaged));
        Assert.True(BodyDigest.Matches(new Digest { Type = DigestType.Crc32 }, damaged)); // no checksum: nothing to check
    }

    [Fact]
    public void The_remoting_body_crc_is_the_crc32_masked_to_a_non_negative_int()
    {
        // 0xCBF43926 has its top bit set: Java's UtilAll.crc32 masks it off.
        Assert.Equal(0x4BF43926, HalfMsg.Protocol.Remoting.StoredMessageCodec.BodyCrc(Encoding.UTF8.GetBytes("123456789")));
    }
}
