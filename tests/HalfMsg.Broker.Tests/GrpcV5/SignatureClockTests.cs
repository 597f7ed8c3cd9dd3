using System.Globalization;
using HalfMsg.Broker.FrontEnds.GrpcV5;
using HalfMsg.Protocol.Grpc;
using HalfMsg.TestKit;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.Logging.Abstractions;

namespace HalfMsg.Broker.Tests.GrpcV5;

/// <summary>
/// The official Java 5 client formats <c>x-mq-date-time</c> with <c>new SimpleDateFormat("yyyyMMdd'T'HHmmss'Z'")</c> and
/// no time zone (the JVM's local time followed by a literal 'Z'), the C# client with <c>DateTime.Now.ToString(...)</c>;
/// only Node sends UTC. The Apache proxy checks only the HMAC over that string. A correctly signed client anywhere in
/// the world (UTC−12 to UTC+14) must be accepted; a date-time outside every time zone's reach is still refused.
/// (Review 2026-12-05, gRPC producer side, finding 1.)
/// </summary>
public sealed class SignatureClockTests
{
    private const string Ak = "ak";
    private const string Sk = "sk-secret";

    private static V5Authenticator Authenticator(TimeProvider? clock = null) => new(
        new GrpcV5Options { Credentials = new Dictionary<string, string> { [Ak] = Sk } }, NullLogger<V5Authenticator>.Instance, clock);

    private static Calendar CalendarNamed(string name) => name switch
    {
        "ThaiBuddhist" => new ThaiBuddhistCalendar(),
        "UmAlQura" => new UmAlQuraCalendar(),
        "Hijri" => new HijriCalendar(),
        "Persian" => new PersianCalendar(),
        _ => throw new ArgumentOutOfRangeException(nameof(name), name, null),
    };

    /// <summary>What <c>DateTime.Now.ToString("yyyyMMddTHHmmssZ")</c> gives in a culture with that calendar.</summary>
    private static string Format(Calendar calendar, DateTime local) => string.Create(CultureInfo.InvariantCulture,
        $"{calendar.GetYear(local):D4}{calendar.GetMonth(local):D2}{calendar.GetDayOfMonth(local):D2}T{local:HHmmss}Z");

    private static HttpContext Request(string dateTime)
    {
        var http = new DefaultHttpContext();
        http.Request.Headers[RocketMqHeaders.DateTime] = dateTime;
        http.Request.Headers[RocketMqHeaders.Authorization] = MqSignature.Sign(Ak, Sk, dateTime);
        return http;
    }

    /// <summary>A Java client in Shanghai (UTC+8), a C# client in New York (UTC−5), one in Berlin (UTC+1), and the
    /// extremes of the world's offsets (UTC+14, UTC−12).</summary>
    [Theory]
    [InlineData(8)]
    [InlineData(-5)]
    [InlineData(1)]
    [InlineData(14)]
    [InlineData(-12)]
    public void A_correct_signature_over_the_clients_local_time_as_the_Java_and_CSharp_clients_send_it_is_accepted(int utcOffsetHours)
    {
        string local = MqSignature.FormatDateTime(DateTimeOffset.UtcNow.AddHours(utcOffsetHours)); // what SimpleDateFormat/DateTime.Now give
        Assert.Null(Authenticator().Check(Request(local)));
    }

    /// <summary>No time zone is a day (or 15 hours ahead / 13 hours behind, past the skew) away: a replay.</summary>
    [Theory]
    [InlineData(-24 * 60)]
    [InlineData(24 * 60)]
    [InlineData(14 * 60 + 16)]
    [InlineData(-(12 * 60 + 16))]
    public void A_correct_signature_over_a_date_time_no_time_zone_can_have_is_refused(int minutes)
    {
        string far = MqSignature.FormatDateTime(DateTimeOffset.UtcNow.AddMinutes(minutes));
        Assert.Equal(Apache.Rocketmq.V2.Code.Unauthorized, Authenticator().Check(Request(far))?.Code);
    }

    /// <summary>A C# client in th-TH, ar-SA (Um al-Qura, or Hijri on older Windows) or fa-IR formats its local time in
    /// its culture's calendar; a Java client under a th_TH default locale in the Buddhist one. Each is read in that
    /// calendar and accepted at the same offsets as a Gregorian date.</summary>
    [Theory]
    [InlineData("ThaiBuddhist", 7)]
    [InlineData("ThaiBuddhist", -12)]
    [InlineData("UmAlQura", 3)]
    [InlineData("UmAlQura", 14)]
    [InlineData("Hijri", 3)]
    [InlineData("Hijri", -12)]
    [InlineData("Persian", 3)]
    [InlineData("Persian", 14)]
    public void A_correct_signature_over_the_clients_local_time_in_its_cultures_calendar_is_accepted(string calendar, int utcOffsetHours)
    {
        var clock = new ManualClock();
        string local = Format(CalendarNamed(calendar), clock.GetUtcNow().UtcDateTime.AddHours(utcOffsetHours));
        Assert.Null(Authenticator(clock).Check(Request(local)));
    }

    /// <summary>The 29th of February of Buddhist year 2571 (2028) is no Gregorian date (2571 is not a leap year): the
    /// Gregorian reading fails outright, and the Buddhist one is still tried.</summary>
    [Fact]
    public void A_buddhist_leap_day_that_is_no_gregorian_date_is_accepted()
    {
        var clock = new ManualClock(new DateTimeOffset(2028, 2, 29, 12, 0, 0, TimeSpan.Zero));
        Assert.Null(Authenticator(clock).Check(Request("25710229T120000Z")));
    }

    /// <summary>Read in any of the calendars, a date-time no time zone can have now is still refused: each reading is held
    /// to the same window. (At the clock's start, 2026-11-21, the Um al-Qura and tabular Hijri dates agree, so the two
    /// Hijri readings of one text are the same instant.)</summary>
    [Theory]
    [InlineData("ThaiBuddhist", -24 * 60)]
    [InlineData("ThaiBuddhist", 14 * 60 + 16)]
    [InlineData("UmAlQura", 24 * 60)]
    [InlineData("UmAlQura", -(12 * 60 + 16))]
    [InlineData("Hijri", -24 * 60)]
    [InlineData("Hijri", 14 * 60 + 16)]
    [InlineData("Persian", 24 * 60)]
    [InlineData("Persian", -(12 * 60 + 16))]
    [InlineData("ThaiBuddhist", 365 * 24 * 60)]
    public void A_correct_signature_over_a_date_time_no_time_zone_can_have_in_any_calendar_is_refused(string calendar, int minutes)
    {
        var clock = new ManualClock();
        string far = Format(CalendarNamed(calendar), clock.GetUtcNow().UtcDateTime.AddMinutes(minutes));
        Assert.Equal(Apache.Rocketmq.V2.Code.Unauthorized, Authenticator(clock).Check(Request(far))?.Code);
    }
}
