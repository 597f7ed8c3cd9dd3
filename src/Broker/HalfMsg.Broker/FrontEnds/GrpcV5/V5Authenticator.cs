using System.Globalization;
using Apache.Rocketmq.V2;
using HalfMsg.Protocol.Grpc;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.Logging;
using Status = Apache.Rocketmq.V2.Status;

namespace HalfMsg.Broker.FrontEnds.GrpcV5;

/// <summary>
/// The one place where a call's credentials are checked: <c>authorization</c> (MQv2-HMAC-SHA1 over
/// <c>x-mq-date-time</c>, see <see cref="MqSignature"/>) against the configured access keys, with a freshness window
/// wide enough for every time zone (<see cref="IsFresh"/>).
/// The verdict is computed once per request from the headers alone, before any body is read
/// (<see cref="GrpcV5Extensions.MapGrpcV5"/> uses it to cap what a stranger may send) and answered by <see cref="V5CallInterceptor"/>.
/// </summary>
internal sealed partial class V5Authenticator
{
    private static readonly object VerdictKey = new();
    private static readonly TimeSpan MaxClockSkew = TimeSpan.FromMinutes(15);

    /// <summary>The world's UTC offsets run from −12 h (Baker Island) to +14 h (Line Islands).</summary>
    private static readonly TimeSpan MostBehindUtc = TimeSpan.FromHours(12);
    private static readonly TimeSpan MostAheadOfUtc = TimeSpan.FromHours(14);
    private static readonly Status Allowed = V5Status.Ok();

    /// <summary>
    /// The calendars a client's culture may format its date-time in, besides the Gregorian (<see cref="IsFreshInAnyCalendar"/>):
    /// the C# client formats <c>DateTime.Now</c> in the current culture, whose default calendar is the Thai Buddhist one in
    /// th-TH, Um al-Qura in ar-SA (Hijri on older Windows), Persian in fa-IR (and Afghan cultures); a Java client's
    /// <c>SimpleDateFormat</c> gives the Buddhist year under a th_TH default locale. These are managed classes, so they
    /// read the same with the broker's invariant globalization. Their methods only compute (Hijri's one cached
    /// adjustment is set once to the same value), so one instance of each serves every request.
    /// </summary>
    private static readonly Calendar[] ClientCalendars =
    [
        new ThaiBuddhistCalendar(),
        new UmAlQuraCalendar(),
        new HijriCalendar(),
        new PersianCalendar(),
    ];

    private readonly GrpcV5Options _options;
    private readonly TimeProvider _time;
    private readonly ILogger _logger;
    private readonly LogRateLimiter _logLimit;

    public V5Authenticator(GrpcV5Options options, ILogger<V5Authenticator> logger, TimeProvider? time = null)
    {
        _options = options;
        _logger = logger;
        _time = time ?? TimeProvider.System;
        _logLimit = new LogRateLimiter(options.AuthFailureLogsPerMinute, _time);
    }

    public bool Enabled => _options.Credentials.Count > 0;

    /// <summary>Null when the call may proceed; otherwise the UNAUTHORIZED status to answer with. Cached on the request.</summary>
    public Status? Check(HttpContext http)
    {
        if (!Enabled)
        {
            return null;
        }

        if (http.Items.TryGetValue(VerdictKey, out object? cached) && cached is Status verdict)
        {
            return ReferenceEquals(verdict, Allowed) ? null : verdict;
        }

        Status? denied = Verify(http.Request.Headers);
        http.Items[VerdictKey] = denied ?? Allowed;
        return denied;
    }

    private Status? Verify(IHeaderDictionary headers)
    {
        string? authorization = headers[RocketMqHeaders.Authorization].FirstOrDefault();
        string? dateTime = headers[RocketMqHeaders.DateTime].FirstOrDefault();
        if (authorization is null || dateTime is null)
        {
            LogDenied("(none)", "missing authorization or x-mq-date-time");
            return V5Status.Of(Code.Unauthorized, "authorization and x-mq-date-time headers are required");
        }

        // The signature covers only x-mq-date-time: without a freshness window a captured header would work forever.
        // The other calendars are read only when the Gregorian reading is refused, so a usual client pays nothing for them.
        if (!(MqSignature.TryParseDateTime(dateTime, out DateTimeOffset signedAt) && IsFresh(signedAt)) && !IsFreshInAnyCalendar(dateTime))
        {
            LogDenied("(unchecked)", "x-mq-date-time outside the clock-skew window");
            return V5Status.Of(Code.Unauthorized,
                $"x-mq-date-time (yyyyMMdd'T'HHmmss'Z') must be the client's UTC or local time, within {MaxClockSkew.TotalMinutes:0} minutes of the broker's clock in some time zone");
        }

        if (MqSignature.TryParse(authorization, out string accessKey, out _)
            && _options.Credentials.TryGetValue(accessKey, out string? secret)
            && MqSignature.Verify(authorization, dateTime, accessKey, secret))
        {
            return null;
        }

        // Never log the secret or the signature; the access key (caller-chosen, so truncated) names the client.
        LogDenied(accessKey.Length > 64 ? accessKey[..64] : accessKey, "bad credentials");
        return V5Status.Of(Code.Unauthorized, "invalid credentials");
    }

    /// <summary>
    /// Whether a signed date-time could be a correct client's clock now. The Java 5 client formats it with
    /// <c>SimpleDateFormat("yyyyMMdd'T'HHmmss'Z'")</c> and no time zone, the C# client from <c>DateTime.Now</c>: both
    /// send their LOCAL time followed by a literal 'Z' (only Node sends UTC), and the Apache proxy checks only the HMAC.
    /// So any time some time zone shows now is accepted, from UTC−12 h to UTC+14 h, each widened by the clock skew. A
    /// captured header can therefore be replayed for about a day (26 h plus the skew), no longer. (A date in the Hijri
    /// calendars is read both as Um al-Qura and as tabular Hijri (<see cref="ClientCalendars"/>), which may put the same
    /// text a day or two apart: such a header has one window per reading, so up to about three days in all.)
    /// </summary>
    private bool IsFresh(DateTimeOffset signedAt)
    {
        TimeSpan ahead = signedAt - _time.GetUtcNow(); // the time zone's offset, plus any clock skew
        return ahead >= -(MostBehindUtc + MaxClockSkew) && ahead <= MostAheadOfUtc + MaxClockSkew;
    }

    /// <summary>
    /// Whether <paramref name="dateTime"/>, read as a date of one of <see cref="ClientCalendars"/>, is fresh
    /// (<see cref="IsFresh"/>, the same window as the Gregorian reading). Until 2026-12-06 only the Gregorian reading was
    /// tried, so a correctly signed client whose culture's calendar is another (th-TH's year 2569, ar-SA's 1448, fa-IR's
    /// 1405) was refused on every call, while the Apache proxy, which checks only the HMAC, served it (found by review).
    /// A date-time that is not fresh in any reading is still refused: each reading gives one instant, and each is held
    /// to the window.
    /// </summary>
    private bool IsFreshInAnyCalendar(string dateTime)
    {
        foreach (Calendar calendar in ClientCalendars)
        {
            if (MqSignature.TryParseDateTime(dateTime, calendar, out DateTimeOffset signedAt) && IsFresh(signedAt))
            {
                return true;
            }
        }

        return false;
    }

    /// <summary>A failed signature is the caller's problem, and the caller chooses how many to send: log at Debug, at
    /// most <see cref="GrpcV5Options.AuthFailureLogsPerMinute"/> lines a minute, and count the rest.</summary>
    private void LogDenied(string accessKey, string reason)
    {
        if (!_logger.IsEnabled(LogLevel.Debug))
        {
            return;
        }

        if (!_logLimit.TryEnter(out long suppressed))
        {
            return;
        }

        LogAuthFailed(accessKey, reason, suppressed);
    }

    [LoggerMessage(Level = LogLevel.Debug,
        Message = "Rejected a gRPC call for access key '{AccessKey}': {Reason} ({Suppressed} more rejections not logged since the last line)")]
    private partial void LogAuthFailed(string accessKey, string reason, long suppressed);
}
