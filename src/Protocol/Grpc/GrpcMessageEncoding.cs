using System.Text;

namespace HalfMsg.Protocol.Grpc;

/// <summary>
/// Percent-encoding of the <c>grpc-message</c> trailer (PROTOCOL-HTTP2.md): the message is UTF-8 encoded
/// and every byte outside 0x20..0x7E, plus '%' itself, is written as <c>%XX</c>.
/// Decoding is lenient as the spec asks: malformed escapes are passed through verbatim.
/// </summary>
public static class GrpcMessageEncoding
{
    /// <summary>Percent-encodes <paramref name="message"/> for use as a <c>grpc-message</c> value.</summary>
    public static string Encode(string message)
    {
        ArgumentNullException.ThrowIfNull(message);
        if (!NeedsEncoding(message))
        {
            return message;
        }

        byte[] utf8 = Encoding.UTF8.GetBytes(message);
        var sb = new StringBuilder(utf8.Length * 3);
        foreach (byte b in utf8)
        {
            if (b is >= 0x20 and <= 0x7E && b != (byte)'%')
            {
                sb.Append((char)b);
            }
            else
            {
                sb.Append('%').Append(HexUpper(b >> 4)).Append(HexUpper(b & 0xF));
            }
        }

        return sb.ToString();
    }

    /// <summary>Decodes a <c>grpc-message</c> value; invalid <c>%</c> sequences are kept as-is.</summary>
    public static string Decode(string value)
    {
        ArgumentNullException.ThrowIfNull(value);
        if (!value.Contains('%'))
        {
            return value;
        }

        var bytes = new List<byte>(value.Length);
        Span<byte> utf8 = stackalloc byte[4];
        for (int i = 0; i < value.Length; i++)
        {
            char c = value[i];
            if (c == '%' && i + 2 < value.Length && TryHex(value[i + 1], out int hi) && TryHex(value[i + 2], out int lo))
            {
                bytes.Add((byte)((hi << 4) | lo));
                i += 2;
            }
            else if (c < 0x80)
            {
                bytes.Add((byte)c);
            }
            else
            {
                // Raw non-ASCII is not valid on the wire, but be forgiving and keep the character
                // (or surrogate pair) as UTF-8.
                int charCount = char.IsHighSurrogate(c) && i + 1 < value.Length ? 2 : 1;
                int n = Encoding.UTF8.GetBytes(value.AsSpan(i, charCount), utf8);
                for (int k = 0; k < n; k++)
                {
                    bytes.Add(utf8[k]);
                }

                i += charCount - 1;
            }
        }

        return Encoding.UTF8.GetString(bytes.ToArray());
    }

    private static bool NeedsEncoding(string s)
    {
        foreach (char c in s)
        {
            if (c is < (char)0x20 or > (char)0x7E or '%')
            {
                return true;
            }
        }

        return false;
    }

    private static char HexUpper(int nibble) => (char)(nibble < 10 ? '0' + nibble : 'A' + nibble - 10);

    private static bool TryHex(char c, out int value)
    {
        value = c switch
        {
            >= '0' and <= '9' => c - '0',
            >= 'A' and <= 'F' => c - 'A' + 10,
            >= 'a' and <= 'f' => c - 'a' + 10,
            _ => -1,
        };
        return value >= 0;
    }
}
