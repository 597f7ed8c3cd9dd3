using System.Security.Cryptography;

namespace HalfMsg.Protocol.Identifiers;

/// <summary>
/// Body digest helper. RocketMQ 5 clients verify <c>SystemProperties.body_digest</c> on every delivered
/// message (a mismatch is treated as corruption and the message is nacked), so the broker attaches an
/// MD5 digest as upper-case hex, the form the official clients produce and compare against.
/// </summary>
public static class Md5Digest
{
    /// <summary>Upper-case hex MD5 of <paramref name="data"/> (32 characters).</summary>
    public static string UpperHex(ReadOnlySpan<byte> data)
    {
        Span<byte> hash = stackalloc byte[MD5.HashSizeInBytes];
        MD5.HashData(data, hash);
        return Convert.ToHexString(hash);
    }
}
