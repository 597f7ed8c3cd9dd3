using System.Security.Cryptography;
using System.Text;
using HalfMsg.Protocol.Grpc;

namespace HalfMsg.Protocol.Tests;

public sealed class MqSignatureTests
{
    private const string AccessKey = "AK123";
    private const string Secret = "s3cr3t";
    private const string DateTime = "20240131T235959Z";

    [Fact]
    public void The_signature_is_upper_hex_hmac_sha1_of_the_date_time_keyed_with_the_secret()
    {
        byte[] mac = HMACSHA1.HashData(Encoding.UTF8.GetBytes(Secret), Encoding.UTF8.GetBytes(DateTime));
        string expected = "MQv2-HMAC-SHA1 Credential=AK123, SignedHeaders=x-mq-date-time, Signature=" + Convert.ToHexString(mac);

        Assert.Equal(expected, MqSignature.Sign(AccessKey, Secret, DateTime));
    }

    [Fact]
    public void The_signature_matches_the_rfc2202_hmac_sha1_test_vector()
    {
        // RFC 2202 test case 2: key "Jefe", data "what do ya want for nothing?".
        string header = MqSignature.Sign("ak", "Jefe", "what do ya want for nothing?");

        Assert.EndsWith("Signature=EFFCDF6AE5EB2FA2D27416D5F184DF9C259A7C79", header);
    }

    [Fact]
    public void A_signed_header_parses_back_to_access_key_and_signature()
    {
        string header = MqSignature.Sign(AccessKey, Secret, DateTime);

        Assert.True(MqSignature.TryParse(header, out string ak, out string sig));
        Assert.Equal(AccessKey, ak);
        Assert.Equal(40, sig.Length);
        Assert.Equal(header, $"MQv2-HMAC-SHA1 Credential={ak}, SignedHeaders=x-mq-date-time, Signature={sig}");
    }

    [Fact]
    public void A_correct_signature_verifies()
    {
        Assert.True(MqSignature.Verify(MqSignature.Sign(AccessKey, Secret, DateTime), DateTime, AccessKey, Secret));
    }

    [Fact]
    public void A_lower_case_signature_still_verifies()
    {
        string header = MqSignature.Sign(AccessKey, Secret, DateTime);
        int at = header.IndexOf("Signature=", StringComparison.Ordinal) + "Signature=".Length;

        Assert.True(MqSignature.Verify(header[..at] + header[at..].ToLowerInvariant(), DateTime, AccessKey, Secret));
    }

    /// <summary>The Go client's Credential (<c>&lt;ak&gt;//rocketmq</c>, lower-case hex) and the C++ client's
    /// (<c>&lt;ak&gt;/&lt;region&gt;/&lt;service&gt;</c>): the access key is the part before the first '/', as in the Apache proxy.</summary>
    [Theory]
    [InlineData("AK123//rocketmq", true)]
    [InlineData("AK123/cn-hangzhou/RocketMQ", false)]
    [InlineData("AK123/", false)]
    public void A_credential_with_a_scope_after_a_slash_names_the_access_key_before_it(string credential, bool lowerHex)
    {
        string hex = Convert.ToHexString(HMACSHA1.HashData(Encoding.UTF8.GetBytes(Secret), Encoding.UTF8.GetBytes(DateTime)));
        if (lowerHex) hex = hex.ToLowerInvariant();
        string header = $"MQv2-HMAC-SHA1 Credential={credential}, SignedHeaders=x-mq-date-time, Signature={hex}";

        Assert.True(MqSignature.TryParse(header, out string ak, out _));
        Assert.Equal(AccessKey, ak);
        Assert.True(MqSignature.Verify(header, DateTime, AccessKey, Secret));
        Assert.False(MqSignature.Verify(header, DateTime, credential, Secret));
    }

    [Theory]
    [InlineData(AccessKey, "wrong-secret", DateTime)]
    [InlineData("OTHER", Secret, DateTime)]
    [InlineData(AccessKey, Secret, "20240101T000000Z")]
    public void A_signature_for_other_credentials_or_time_is_rejected(string verifyAk, string verifySecret, string verifyDate)
    {
        string header = MqSignature.Sign(AccessKey, Secret, DateTime);

        Assert.False(MqSignature.Verify(header, verifyDate, verifyAk, verifySecret));
    }

    [Theory]
    [InlineData(null)]
    [InlineData("")]
    [InlineData("MQv2-HMAC-SHA1")]
    [InlineData("Bearer abc")]
    [InlineData("MQv2-HMAC-SHA1 Credential=AK123, SignedHeaders=x-mq-date-time")]
    [InlineData("MQv2-HMAC-SHA1 SignedHeaders=x-mq-date-time, Signature=ABCD")]
    [InlineData("MQv2-HMAC-SHA1 Credential=, Signature=ABCD")]
    [InlineData("MQv2-HMAC-SHA1 Credential=/rocketmq, Signature=ABCD")]
    [InlineData("MQv2-HMAC-SHA1 Credential=AK123, Signature")]
    [InlineData("MQv2-HMAC-SHA1 Credential=AK123, Bogus=1, Signature=ABCD")]
    [InlineData("MQv2-HMAC-SHA1Credential=AK123, Signature=ABCD")]
    public void A_malformed_authorization_header_does_not_parse(string? header)
    {
        Assert.False(MqSignature.TryParse(header, out _, out _));
        Assert.False(MqSignature.Verify(header, DateTime, AccessKey, Secret));
    }

    [Theory]
    [InlineData("ZZ")]
    [InlineData("ABCD")]
    [InlineData("ZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZ")]
    public void A_signature_that_is_not_40_hex_digits_is_rejected(string signature)
    {
        Assert.False(MqSignature.Verify($"MQv2-HMAC-SHA1 Credential={AccessKey}, SignedHeaders=x-mq-date-time, Signature={signature}", DateTime, AccessKey, Secret));
    }

    [Fact]
    public void The_date_time_header_round_trips_in_utc()
    {
        var when = new DateTimeOffset(2024, 1, 31, 23, 59, 59, TimeSpan.FromHours(2));

        string formatted = MqSignature.FormatDateTime(when);

        Assert.Equal("20240131T215959Z", formatted);
        Assert.True(MqSignature.TryParseDateTime(formatted, out var parsed));
        Assert.Equal(when, parsed);
        Assert.False(MqSignature.TryParseDateTime("2024-01-31", out _));
    }

    [Fact]
    public void A_date_time_reads_in_another_calendar()
    {
        Assert.True(MqSignature.TryParseDateTime("25690101T080910Z", new System.Globalization.ThaiBuddhistCalendar(), out var thai));
        Assert.Equal(new DateTimeOffset(2026, 1, 1, 8, 9, 10, TimeSpan.Zero), thai);
        Assert.True(MqSignature.TryParseDateTime("14050830T120000Z", new System.Globalization.PersianCalendar(), out var persian));
        Assert.Equal(new DateTimeOffset(2026, 11, 21, 12, 0, 0, TimeSpan.Zero), persian);
        Assert.True(MqSignature.TryParseDateTime("14480611T120000Z", new System.Globalization.UmAlQuraCalendar(), out var umAlQura));
        Assert.Equal(new DateTimeOffset(2026, 11, 21, 12, 0, 0, TimeSpan.Zero), umAlQura);
    }

    /// <summary>No date of the calendar, or out of its range: false, never an exception (the header is the caller's).</summary>
    [Theory]
    [InlineData("20261121T120000Z")] // Gregorian year 2026 is past Um al-Qura's range (1318-1500)
    [InlineData("13180101T000000Z")] // the range's first year, covered only in part in some calendars: not read
    [InlineData("14481311T120000Z")] // month 13
    [InlineData("14480631T120000Z")] // a lunar month has at most 30 days
    [InlineData("14480600T120000Z")]
    [InlineData("14480611T240000Z")]
    [InlineData("14480611T126000Z")]
    [InlineData("14480611T120060Z")]
    [InlineData("14480611 120000Z")]
    [InlineData("14480611T120000")]
    [InlineData("1448O611T120000Z")]
    [InlineData("-4480611T120000Z")]
    [InlineData("")]
    [InlineData(null)]
    public void A_date_time_that_is_no_date_of_the_calendar_does_not_parse(string? value)
    {
        Assert.False(MqSignature.TryParseDateTime(value, new System.Globalization.UmAlQuraCalendar(), out _));
    }
}
