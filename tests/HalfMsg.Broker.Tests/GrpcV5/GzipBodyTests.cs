using System.IO.Compression;
using Apache.Rocketmq.V2;
using Google.Protobuf;
using HalfMsg.Broker.FrontEnds.GrpcV5;
using V2Encoding = Apache.Rocketmq.V2.Encoding;

namespace HalfMsg.Broker.Tests.GrpcV5;

/// <summary>A published message whose body is GZIP (the Java client gzips bodies over 4 KiB): it is stored inflated, and
/// only when the gzip stream is whole (review 2026-12-05, remsend: a cut one was stored short).</summary>
public sealed class GzipBodyTests
{
    private static readonly byte[] Raw = System.Text.Encoding.UTF8.GetBytes(string.Concat(Enumerable.Range(0, 2000).Select(i => i.ToString())));

    private static byte[] Gzip(byte[] raw)
    {
        var ms = new MemoryStream();
        using (var z = new GZipStream(ms, CompressionLevel.Optimal, leaveOpen: true)) z.Write(raw);
        return ms.ToArray();
    }

    private static Message NewMessage(byte[] body) => new()
    {
        Topic = new Resource { Name = "GzipT" },
        Body = ByteString.CopyFrom(body),
        SystemProperties = new SystemProperties
        {
            MessageId = "01" + Guid.NewGuid().ToString("N").ToUpperInvariant(),
            MessageType = MessageType.Normal,
            BodyEncoding = V2Encoding.Gzip,
        },
    };

    private static (bool Ok, Core.Model.MessageDraft? Draft, Status? Invalid) ToDraft(byte[] body)
    {
        long budget = 1024 * 1024;
        bool ok = V5MessageConverter.TryToDraft(NewMessage(body), "", 1024 * 1024, ref budget, out var draft, out var invalid);
        return (ok, draft, invalid);
    }

    [Fact]
    public void A_whole_gzip_body_is_stored_inflated()
    {
        var (ok, draft, invalid) = ToDraft(Gzip(Raw));
        Assert.True(ok, invalid?.ToString());
        Assert.Equal(Raw, draft!.Body.ToArray());
    }

    [Fact]
    public void Two_gzip_members_one_after_the_other_are_stored_as_one_body()
    {
        var (ok, draft, invalid) = ToDraft([.. Gzip(Raw[..1000]), .. Gzip(Raw[1000..])]);
        Assert.True(ok, invalid?.ToString());
        Assert.Equal(Raw, draft!.Body.ToArray());
    }

    [Fact]
    public void A_truncated_gzip_body_is_refused_not_stored_short()
    {
        var full = Gzip(Raw);
        // Cut in the deflate data, and cut in the CRC-32/ISIZE trailer (the inflated bytes are then all there).
        foreach (int length in new[] { full.Length / 2, full.Length - 1, full.Length - 4, full.Length - 8 })
        {
            var (ok, draft, invalid) = ToDraft(full[..length]);
            Assert.False(ok, $"{length} of {full.Length} bytes: stored {draft?.Body.Length} of {Raw.Length} bytes");
            Assert.Equal(Code.MessageCorrupted, invalid!.Code);
        }
    }

    [Fact]
    public void A_gzip_body_whose_checksum_does_not_match_is_refused()
    {
        var bad = Gzip(Raw);
        bad[^5] ^= 0x55; // the CRC-32
        var (ok, _, invalid) = ToDraft(bad);
        Assert.False(ok);
        Assert.Equal(Code.MessageCorrupted, invalid!.Code);
    }
}
