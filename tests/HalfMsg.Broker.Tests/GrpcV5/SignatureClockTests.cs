using HalfMsg.Broker.FrontEnds.GrpcV5;
using HalfMsg.Protocol.Grpc;
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

    private static V5Authenticator Authenticator() => new(
        new GrpcV5Options { Credentials = new Dictionary<string, string> { [Ak] = Sk } }, NullLogger<V5Authenticator>.Instance);

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
}
