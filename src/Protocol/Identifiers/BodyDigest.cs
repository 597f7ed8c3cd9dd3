using System.Globalization;
using System.IO.Hashing;
using System.Security.Cryptography;
using Apache.Rocketmq.V2;

namespace HalfMsg.Protocol.Identifiers;

/// <summary>
/// The body digest of a RocketMQ 5 message (<c>SystemProperties.body_digest</c>). The official clients verify it on
/// every delivered message (and every check-back) and treat a mismatch as corruption: Java, C# and Go push consumers
/// nack such a message without calling the listener, so it ends in the dead-letter queue.
/// </summary>
/// <remarks>
/// The clients agree only on MD5 and SHA1, as upper-case hex (the Apache proxy sends MD5). For CRC32 they disagree: Java
/// compares <c>Long.toHexString(crc).toUpperCase()</c>, C# <c>ToString("X")</c> and Go upper-case hex without leading
/// zeros, C++ and Python eight upper-case hex digits, while Node compares the unsigned value in decimal; no CRC32 text
/// verifies in all. The broker therefore sends MD5 (<see cref="Md5Of"/>),
/// except to our own clients, which ask for a CRC32 (<c>x-halfmsg-accept-digest: crc32</c>) and verify it in either form.
/// Until 2026-12-05 it sent CRC32 in decimal, which only Node verified: every message a Java or C# consumer received
/// looked corrupted. Our clients accept CRC32 in either form (<see cref="Matches"/>). On publish no official client
/// sends a digest at all, and neither the Apache proxy nor this broker reads one; our producer sends none either (since
/// 2026-12-06; it sent a CRC32 in decimal before).
/// </remarks>
public static class BodyDigest
{
    /// <summary>An MD5 digest of <paramref name="body"/>, upper-case hex: the form every official client verifies.</summary>
    public static Digest Md5Of(ReadOnlySpan<byte> body) =>
        new() { Type = DigestType.Md5, Checksum = Md5Digest.UpperHex(body) };

    /// <summary>A CRC32 digest of <paramref name="body"/>, the unsigned value in decimal (as Node compares it; Java and
    /// C# compare hex: do not send it to them).</summary>
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
            DigestType.Md5 => HashMatches(digest.Checksum, body, md5: true),
            DigestType.Sha1 => HashMatches(digest.Checksum, body, md5: false),
            _ => true,
        };
    }

    /// <summary>Whether <paramref name="text"/> is the unsigned CRC32 of <paramref name="body"/> in decimal (as Node
    /// sends it) or in hex of either case without leading zeros (as Java and C# send it), compared as text without
    /// building the expected string.</summary>
    private static bool Crc32TextMatches(string text, ReadOnlySpan<byte> body)
    {
        uint crc = Crc32.HashToUInt32(body);
        Span<char> expected = stackalloc char[10];
        if (crc.TryFormat(expected, out int n, default, CultureInfo.InvariantCulture) && text.AsSpan().SequenceEqual(expected[..n]))
            return true;
        return crc.TryFormat(expected, out n, "X", CultureInfo.InvariantCulture)
            && text.AsSpan().Equals(expected[..n], StringComparison.OrdinalIgnoreCase);
    }

    /// <summary>The unsigned CRC32 in decimal, the form Node compares (and our own clients, see <see cref="Matches"/>).</summary>
    private static string Crc32Text(ReadOnlySpan<byte> body) => Crc32.HashToUInt32(body).ToString(CultureInfo.InvariantCulture);

    /// <summary>Whether <paramref name="text"/> is the MD5 (or SHA1) of <paramref name="body"/> in hex of either case,
    /// without building the expected string: a consumer checks every message it receives.</summary>
    private static bool HashMatches(string text, ReadOnlySpan<byte> body, bool md5)
    {
        Span<byte> hash = stackalloc byte[SHA1.HashSizeInBytes]; // 20 bytes: room for either
        int n = md5 ? MD5.HashData(body, hash) : SHA1.HashData(body, hash);
        Span<char> hex = stackalloc char[2 * SHA1.HashSizeInBytes];
        return Convert.TryToHexString(hash[..n], hex, out int chars)
            && text.AsSpan().Equals(hex[..chars], StringComparison.OrdinalIgnoreCase);
    }
}
