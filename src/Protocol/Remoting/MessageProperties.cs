using System.Text;

namespace HalfMsg.Protocol.Remoting;

/// <summary>
/// RocketMQ's properties string (<c>MessageDecoder.messageProperties2String</c> / <c>string2messageProperties</c>):
/// <c>key 0x01 value 0x02</c> repeated, the last pair also terminated by 0x02. Null values are skipped on encode;
/// pairs with an empty key or value are dropped on decode, as Java does.
/// </summary>
public static class MessageProperties
{
    public const char NameValueSeparator = '\u0001';
    public const char PropertySeparator = '\u0002';

    public static string Encode(IEnumerable<KeyValuePair<string, string?>> properties)
    {
        var sb = new StringBuilder();
        foreach (var (k, v) in properties)
        {
            if (v is null) continue;
            sb.Append(k).Append(NameValueSeparator).Append(v).Append(PropertySeparator);
        }
        return sb.ToString();
    }

    public static Dictionary<string, string> Decode(string? text)
    {
        var map = new Dictionary<string, string>(StringComparer.Ordinal);
        if (string.IsNullOrEmpty(text)) return map;
        foreach (var pair in text.Split(PropertySeparator))
        {
            int sep = pair.IndexOf(NameValueSeparator);
            if (sep <= 0 || sep == pair.Length - 1) continue;
            map[pair[..sep]] = pair[(sep + 1)..];
        }
        return map;
    }

    /// <summary>Java's <c>String.hashCode</c>, which tag filtering on the broker compares (SubscriptionData.codeSet).</summary>
    public static int JavaHashCode(string s)
    {
        int h = 0;
        foreach (char c in s) h = unchecked(31 * h + c);
        return h;
    }
}
