using System.Globalization;
using System.Security.Cryptography;
using System.Text;

namespace HalfMsg.Protocol.Grpc;

/// <summary>
/// The RocketMQ 5 client request signature sent in the <c>authorization</c> header:
/// <c>MQv2-HMAC-SHA1 Credential=&lt;accessKey&gt;, SignedHeaders=x-mq-date-time, Signature=&lt;HEX&gt;</c>
/// where HEX is the upper-case hex HMAC-SHA1 of the <c>x-mq-date-time</c> header value (UTF-8) keyed with
/// the secret (UTF-8). Only the date-time is signed, so the broker should also bound clock skew.
/// </summary>
/// <remarks>
/// Not every client sends the bare access key as the Credential: the Go client sends <c>&lt;accessKey&gt;//rocketmq</c>
/// (with lower-case hex), the C++ client <c>&lt;accessKey&gt;/&lt;region&gt;/&lt;service&gt;</c>. The Apache proxy
/// takes the part before the first '/' as the access key, and so does <see cref="TryParse"/>; <see cref="Sign"/> sends
/// the bare key, as the Java and C# clients do.
/// </remarks>
public static class MqSignature
{
    /// <summary>Authorization scheme/algorithm token.</summary>
    public const string Algorithm = "MQv2-HMAC-SHA1";

    /// <summary><c>x-mq-date-time</c> format (UTC), e.g. <c>20240131T235959Z</c>.</summary>
    public const string DateTimeFormat = "yyyyMMdd'T'HHmmss'Z'";

    private const string CredentialKey = "Credential";
    private const string SignedHeadersKey = "SignedHeaders";
    private const string SignatureKey = "Signature";
    private const int HmacSha1Size = 20;

    /// <summary>Formats <paramref name="utc"/> for the <c>x-mq-date-time</c> header.</summary>
    public static string FormatDateTime(DateTimeOffset utc) =>
        utc.UtcDateTime.ToString(DateTimeFormat, CultureInfo.InvariantCulture);

    /// <summary>Parses an <c>x-mq-date-time</c> header value.</summary>
    public static bool TryParseDateTime(string? value, out DateTimeOffset utc)
    {
        if (DateTime.TryParseExact(value, DateTimeFormat, CultureInfo.InvariantCulture,
                DateTimeStyles.AdjustToUniversal | DateTimeStyles.AssumeUniversal, out DateTime dt))
        {
            utc = new DateTimeOffset(dt, TimeSpan.Zero);
            return true;
        }

        utc = default;
        return false;
    }

    /// <summary>
    /// Reads an <c>x-mq-date-time</c> header value's digits as a date in <paramref name="calendar"/> (the time of day
    /// is the same in every calendar): what a client formats with its culture's calendar, as the C# client's
    /// <c>DateTime.Now.ToString("yyyyMMddTHHmmssZ")</c> does in th-TH (Buddhist year 2569 for 2026), ar-SA (Um al-Qura
    /// 1448) or fa-IR (Persian 1405). False for anything that is not a date of that calendar, without throwing; years at
    /// the edges of the calendar's supported range, which it covers only in part, are not read.
    /// </summary>
    public static bool TryParseDateTime(string? value, Calendar calendar, out DateTimeOffset utc)
    {
        ArgumentNullException.ThrowIfNull(calendar);
        utc = default;
        if (value is not { Length: 16 } || value[8] != 'T' || value[15] != 'Z'
            || !TryDigits(value, 0, 4, out int year) || !TryDigits(value, 4, 2, out int month) || !TryDigits(value, 6, 2, out int day)
            || !TryDigits(value, 9, 2, out int hour) || !TryDigits(value, 11, 2, out int minute) || !TryDigits(value, 13, 2, out int second)
            || year <= calendar.GetYear(calendar.MinSupportedDateTime) || year >= calendar.GetYear(calendar.MaxSupportedDateTime)
            || month < 1 || month > calendar.GetMonthsInYear(year) || day < 1 || day > calendar.GetDaysInMonth(year, month)
            || hour > 23 || minute > 59 || second > 59)
        {
            return false;
        }

        utc = new DateTimeOffset(DateTime.SpecifyKind(calendar.ToDateTime(year, month, day, hour, minute, second, 0), DateTimeKind.Utc));
        return true;
    }

    private static bool TryDigits(string s, int start, int length, out int value)
    {
        value = 0;
        for (int i = start; i < start + length; i++)
        {
            if (!char.IsAsciiDigit(s[i]))
            {
                return false;
            }

            value = (value * 10) + (s[i] - '0');
        }

        return true;
    }

    /// <summary>Builds the <c>authorization</c> header value for <paramref name="dateTime"/> (the exact
    /// <c>x-mq-date-time</c> header value being sent).</summary>
    public static string Sign(string accessKey, string secret, string dateTime)
    {
        ArgumentNullException.ThrowIfNull(accessKey);
        ArgumentNullException.ThrowIfNull(secret);
        ArgumentNullException.ThrowIfNull(dateTime);
        Span<byte> mac = stackalloc byte[HmacSha1Size];
        ComputeMac(secret, dateTime, mac);
        return $"{Algorithm} {CredentialKey}={accessKey}, {SignedHeadersKey}={RocketMqHeaders.DateTime}, {SignatureKey}={Convert.ToHexString(mac)}";
    }

    /// <summary>
    /// Splits an <c>authorization</c> value into access key and signature hex. Accepts the components in any
    /// order and tolerant whitespace; requires the algorithm token and non-empty Credential and Signature. The access
    /// key is the Credential up to its first '/' (the scope the Go and C++ clients add after it is not checked, as the
    /// Apache proxy does not check it), and must not be empty.
    /// </summary>
    public static bool TryParse(string? authorization, out string accessKey, out string signatureHex)
    {
        accessKey = string.Empty;
        signatureHex = string.Empty;
        if (authorization is null)
        {
            return false;
        }

        ReadOnlySpan<char> s = authorization.AsSpan().Trim();
        if (!s.StartsWith(Algorithm, StringComparison.Ordinal) || s.Length == Algorithm.Length || s[Algorithm.Length] != ' ')
        {
            return false;
        }

        string? credential = null;
        string? signature = null;
        foreach (Range r in s[(Algorithm.Length + 1)..].Split(','))
        {
            ReadOnlySpan<char> part = s[(Algorithm.Length + 1)..][r].Trim();
            int eq = part.IndexOf('=');
            if (eq <= 0)
            {
                return false;
            }

            ReadOnlySpan<char> key = part[..eq].Trim();
            ReadOnlySpan<char> value = part[(eq + 1)..].Trim();
            if (key.SequenceEqual(CredentialKey))
            {
                int slash = value.IndexOf('/');
                credential = (slash < 0 ? value : value[..slash]).ToString();
            }
            else if (key.SequenceEqual(SignatureKey))
            {
                signature = value.ToString();
            }
            else if (!key.SequenceEqual(SignedHeadersKey))
            {
                return false;
            }
        }

        if (string.IsNullOrEmpty(credential) || string.IsNullOrEmpty(signature))
        {
            return false;
        }

        accessKey = credential;
        signatureHex = signature;
        return true;
    }

    /// <summary>
    /// Verifies an <c>authorization</c> header: it must parse, name <paramref name="expectedAccessKey"/>, and carry
    /// the HMAC of <paramref name="dateTime"/> under <paramref name="secret"/>. The MAC comparison is constant-time.
    /// </summary>
    public static bool Verify(string? authorization, string dateTime, string expectedAccessKey, string secret)
    {
        ArgumentNullException.ThrowIfNull(dateTime);
        ArgumentNullException.ThrowIfNull(expectedAccessKey);
        ArgumentNullException.ThrowIfNull(secret);
        if (!TryParse(authorization, out string accessKey, out string signatureHex)
            || !string.Equals(accessKey, expectedAccessKey, StringComparison.Ordinal)
            || signatureHex.Length != HmacSha1Size * 2)
        {
            return false;
        }

        Span<byte> presented = stackalloc byte[HmacSha1Size];
        if (Convert.FromHexString(signatureHex, presented, out _, out int written) != System.Buffers.OperationStatus.Done
            || written != HmacSha1Size)
        {
            return false;
        }

        Span<byte> expected = stackalloc byte[HmacSha1Size];
        ComputeMac(secret, dateTime, expected);
        return CryptographicOperations.FixedTimeEquals(expected, presented);
    }

    private static void ComputeMac(string secret, string dateTime, Span<byte> destination)
    {
        byte[] key = Encoding.UTF8.GetBytes(secret);
        byte[] data = Encoding.UTF8.GetBytes(dateTime);
        HMACSHA1.HashData(key, data, destination);
    }
}
