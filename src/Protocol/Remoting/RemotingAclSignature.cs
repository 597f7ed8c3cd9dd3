using System.Security.Cryptography;
using System.Text;

namespace HalfMsg.Protocol.Remoting;

/// <summary>
/// RocketMQ 4 ACL request signing (<c>AclClientRPCHook</c> / <c>AclUtils.combineRequestContent</c>): the values of
/// every ext field except <c>Signature</c>, in ordinal key order (Java's TreeMap), concatenated as UTF-8, followed by the
/// body; HMAC-SHA1 keyed with the secret; Base64. The client sends it as ext field <c>Signature</c> beside
/// <c>AccessKey</c> (which is itself signed, as are <c>SecurityToken</c> and ali-ons' <c>OnsChannel</c>). The broker side
/// (<c>PlainAccessResource.parse</c>) signs every ext field but <c>Signature</c> and <c>_UNIQUE_KEY_QUERY</c>; so do we.
/// </summary>
public static class RemotingAclSignature
{
    public const string AccessKeyField = "AccessKey";
    public const string SignatureField = "Signature";
    /// <summary>Java's MixAll.UNIQUE_MSG_QUERY_FLAG, which the broker leaves out of the signed content.</summary>
    private const string UniqueMessageQueryFlag = "_UNIQUE_KEY_QUERY";

    public static string Compute(IReadOnlyDictionary<string, string>? extFields, ReadOnlySpan<byte> body, string secret)
    {
        var sb = new StringBuilder();
        if (extFields is not null)
            foreach (var key in extFields.Keys.Where(k => k is not SignatureField and not UniqueMessageQueryFlag).Order(StringComparer.Ordinal))
                sb.Append(extFields[key]);
        byte[] head = Encoding.UTF8.GetBytes(sb.ToString());
        var content = new byte[head.Length + body.Length];
        head.CopyTo(content, 0);
        body.CopyTo(content.AsSpan(head.Length));
        return Convert.ToBase64String(HMACSHA1.HashData(Encoding.UTF8.GetBytes(secret), content));
    }

    /// <summary>Adds <c>AccessKey</c> and <c>Signature</c> to a request (test and client side).</summary>
    public static void Sign(RemotingCommand request, string accessKey, string secret)
    {
        request.Set(AccessKeyField, accessKey);
        request.ExtFields!.Remove(SignatureField);
        request.Set(SignatureField, Compute(request.ExtFields, request.Body.Span, secret));
    }

    public static bool Verify(RemotingCommand request, string secret)
    {
        string? given = request.Get(SignatureField);
        if (given is null) return false;
        string expected = Compute(request.ExtFields, request.Body.Span, secret);
        return CryptographicOperations.FixedTimeEquals(Encoding.ASCII.GetBytes(expected), Encoding.ASCII.GetBytes(given));
    }
}
