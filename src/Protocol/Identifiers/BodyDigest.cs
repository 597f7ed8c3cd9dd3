using System.Globalization;
using System.IO.Hashing;
using System.Security.Cryptography;
using Apache.Rocketmq.V2;

namespace HalfMsg.Protocol.Identifiers;

/// <summary>
/// The body digest of a RocketMQ 5 message (<c>SystemProperties.body_digest</c>). The official clients verify it on
/// every delivered message and treat a mismatch as corruption. They accept CRC32, MD5 and SHA1; the CRC32 checksum is
/// the unsigned value in decimal (as <c>java.util.zip.CRC32.getValue()</c> prints it), MD5 and SHA1 are hex.
/// </summary>
/// <remarks>
/// The broker and our clients send CRC32: it guards the bytes in transit as well as MD5 does against accidental damage
/// (the log's own records carry a CRC-32C), and <see cref="Crc32"/> (System.IO.Hashing, carry-less multiply) costs a
/// small fraction of an MD5 per delivered body.
/// </remarks>
public static class BodyDigest
{
    /// <summary>A CRC32 digest of <paramref name="body"/>.</summary>
    public static Digest Crc32Of(ReadOnlySpan<byte> body) =>
        new() { Type = DigestType.Crc32, Checksum = Crc32Text(body) };

    /// <summary>
    /// False when <paramref name="digest"/> names a known type and does not match <paramref name="body"/>; true when it
    /// matches, is empty, or its type is unknown (as the official clients do).
    /// </summary>
    public static bool Matches(Digest? digest, ReadOnlySpan<byte> body)
    {
        if (digest is null || string.IsNullOrEmpty(digest.Checksum)) return true;
        return digest.Type switch
        {
            DigestType.Crc32 => Crc32TextMatches(digest.Checksum, body),
            DigestType.Md5 => string.Equals(digest.Checksum, Md5Digest.UpperHex(body), StringComparison.OrdinalIgnoreCase),
            DigestType.Sha1 => string.Equals(digest.Checksum, Sha1Hex(body), StringComparison.OrdinalIgnoreCase),
            _ => true,
        };
    }

    /// <summary>Whether <paramref name="text"/> is the unsigned CRC32 of <paramref name="body"/> in decimal, compared as
    /// text (no leading zeros or signs, as Java prints it) without building the expected string.</summary>
    private static bool Crc32TextMatches(string text, ReadOnlySpan<byte> body)
    {
        Span<char> expected = stackalloc char[10];
        return Crc32.HashToUInt32(body).TryFormat(expected, out int n, default, CultureInfo.InvariantCulture)
            && text.AsSpan().SequenceEqual(expected[..n]);
    }

    /// <summary>The unsigned CRC32 in decimal, the form the official clients compare.</summary>
    private static string Crc32Text(ReadOnlySpan<byte> body) => Crc32.HashToUInt32(body).ToString(CultureInfo.InvariantCulture);

    private static string Sha1Hex(ReadOnlySpan<byte> body)
    {
        Span<byte> hash = stackalloc byte[SHA1.HashSizeInBytes];
        SHA1.HashData(body, hash);
        return Convert.ToHexString(hash);
    }
}
