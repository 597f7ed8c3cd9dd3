namespace HalfMsg.Broker.FrontEnds.GrpcV5;

/// <summary>Settings of the RocketMQ 5 gRPC front-end.</summary>
public sealed record GrpcV5Options
{
    /// <summary>Host advertised to clients in routes and assignments. Null: the endpoints the request names (the
    /// address the client reached), else the local address the request came in on.</summary>
    public string? AdvertisedHost { get; init; }

    /// <summary>Port advertised in routes and assignments. 0: the endpoints the request names when
    /// <see cref="AdvertisedHost"/> is not set either, else <see cref="Port"/>.</summary>
    public int AdvertisedPort { get; init; }

    /// <summary>The gRPC port, advertised in routes. 0: the local port the request came in on.</summary>
    public int Port { get; init; }

    /// <summary>The broker's name in routes and assignments, and the one recall handles name; the same on the Remoting
    /// front-end (<see cref="BrokerNames"/>).</summary>
    public string BrokerName { get; init; } = BrokerNames.Default;

    /// <summary>Largest request message accepted, checked from the length prefix before buffering
    /// (max message size plus 1 MiB for properties and framing). Also the cap on what one request may inflate to:
    /// a gzip-compressed gRPC message, and the sum of a SendMessage request's GZIP bodies.</summary>
    public int MaxReceiveMessageSize { get; init; } = 5 * 1024 * 1024;

    /// <summary>Largest request body a caller that failed authentication may make us read before it is answered
    /// UNAUTHORIZED. Control requests are small; a large body from a stranger is cut off at the HTTP layer.</summary>
    public int MaxUnauthenticatedRequestSize { get; init; } = 64 * 1024;

    /// <summary>Request-body bytes one connection may make the broker hold at once, over all its streams (partial
    /// messages grpc-dotnet has read but not yet parsed). A stream whose read would go past it is reset. Null: twice
    /// <see cref="MaxReceiveMessageSize"/> or 64 MiB, whichever is larger.</summary>
    public long? MaxBufferedRequestBytesPerConnection { get; init; }

    /// <summary>The effective <see cref="MaxBufferedRequestBytesPerConnection"/>.</summary>
    public long RequestBodyBudget => MaxBufferedRequestBytesPerConnection ?? Math.Max(64L * 1024 * 1024, 2L * MaxReceiveMessageSize);

    /// <summary>Serialized bytes that may wait on one Telemetry stream (check-backs carry whole messages). A check that
    /// would pass them is refused (it goes to another instance, or to this one once it has room); a client whose queue
    /// holds commands with nothing written for <see cref="TelemetryStallTimeout"/> is not reading: its session is ended
    /// and it stops receiving check-backs.</summary>
    public long MaxTelemetryQueuedBytes { get; init; } = 16 * 1024 * 1024;

    /// <summary>How long a Telemetry stream with commands queued may go without a command written before it is ended for
    /// not reading (ABORTED; its unsent checks go to another instance), plus a second per 256 KiB of the command being
    /// written (as a ReceiveMessage answer's write bound), whatever its queue and its connection hold. Since the night
    /// session of 2026-12-07 (before, it was ended as soon as a command did not fit); until the late-night session of
    /// 2026-12-07 only a queue over its bound, or over its connection's, was timed: a stream that stopped reading with a
    /// few small checks queued kept them for ever (found by review).</summary>
    /// <remarks>The flag takes at least 1 s since the late-night session of 2026-12-07 (100 ms before): every stream with
    /// anything queued is timed now, and a reading client behind a slow link, a GC pause or the thread pool's injection
    /// steps (about 0.5 s) can go a few hundred milliseconds without a write completing (found by review).</remarks>
    public TimeSpan TelemetryStallTimeout { get; init; } = TimeSpan.FromSeconds(10);

    /// <summary>The effective bound of a Telemetry stream's queue: <see cref="MaxTelemetryQueuedBytes"/>, or twice
    /// <see cref="MaxReceiveMessageSize"/> when that is larger, so a check for the largest message the broker accepts
    /// always fits (a check that cannot ended the stream without counting, on every pass).</summary>
    public long TelemetryQueueBudget => Math.Max(MaxTelemetryQueuedBytes, 2L * MaxReceiveMessageSize);

    /// <summary>Answer bytes (ReceiveMessage answers not yet written out, Telemetry commands queued) one connection may
    /// make the broker hold. A receive leases only what fits; one without room waits for it (at most its long poll) and
    /// is answered MESSAGE_NOT_FOUND. Null: 64 MiB. Never below twice <see cref="MaxReceiveMessageSize"/>, so the largest
    /// message always fits an empty connection.</summary>
    public long? MaxUnsentBytesPerConnection { get; init; }

    /// <summary>The effective <see cref="MaxUnsentBytesPerConnection"/>.</summary>
    public long AnswerBudgetPerConnection => Math.Max(MaxUnsentBytesPerConnection ?? 64L * 1024 * 1024, 2L * MaxReceiveMessageSize);

    /// <summary>ReceiveMessage answer bytes all connections together may make the broker hold. Null: 512 MiB. Never below
    /// twice <see cref="MaxReceiveMessageSize"/>.</summary>
    public long? MaxUnsentBytes { get; init; }

    /// <summary>The effective <see cref="MaxUnsentBytes"/>.</summary>
    public long AnswerBudgetTotal => Math.Max(MaxUnsentBytes ?? 512L * 1024 * 1024, 2L * MaxReceiveMessageSize);

    /// <summary>How long writing one ReceiveMessage answer may take, final flush included. Past it the stream is reset
    /// and its messages released: a client that reads its answers too slowly no longer keeps them (and their leases).</summary>
    public TimeSpan AnswerWriteTimeout { get; init; } = TimeSpan.FromSeconds(30);

    /// <summary>Shortest <c>invisible_duration</c> a ReceiveMessage may ask (shorter: ILLEGAL_INVISIBLE_TIME). RocketMQ's
    /// proxy refuses below 10 s (minInvisibleTimeMillsForRecv); 1 s keeps our own clients' short leases working while a
    /// client can no longer lease the same messages again for every stream it opens (1 ms leases).</summary>
    public TimeSpan MinReceiveInvisibleDuration { get; init; } = TimeSpan.FromSeconds(1);

    /// <summary>Failed-signature log lines (Debug) allowed per minute; further failures are only counted.</summary>
    public int AuthFailureLogsPerMinute { get; init; } = 10;

    /// <summary>Malformed-request log lines (Debug, category <c>HalfMsg.Broker.FrontEnds.GrpcV5.V5BadInput</c>) allowed
    /// per minute; further ones are only counted.</summary>
    public int BadInputLogsPerMinute { get; init; } = 10;

    /// <summary>Access key → secret. Empty: authentication is off. When set, every call must carry a valid
    /// <c>authorization</c> header (MQv2-HMAC-SHA1 over <c>x-mq-date-time</c>).</summary>
    public IReadOnlyDictionary<string, string> Credentials { get; init; } = new Dictionary<string, string>();

    /// <summary>Long-poll time pushed to consumers in Settings and used when a receive does not say (the proxy's 20 s).</summary>
    public TimeSpan LongPollingTimeout { get; init; } = TimeSpan.FromSeconds(20);

    /// <summary>Lease for a receive without <c>invisible_duration</c> (push consumers with auto-renew), as the proxy's
    /// <c>defaultInvisibleTimeMills</c>.</summary>
    public TimeSpan DefaultInvisibleDuration { get; init; } = TimeSpan.FromSeconds(60);

    /// <summary>
    /// Apache's default group retry policy (CustomizedRetryPolicy: 1s 5s 10s 30s 1m 2m ... 10m 20m 30m 1h 2h), which its
    /// proxy announces to push consumers of a group without a policy of its own.
    /// </summary>
    public static IReadOnlyList<TimeSpan> ApacheRetryDelays { get; } =
    [
        TimeSpan.FromSeconds(1), TimeSpan.FromSeconds(5), TimeSpan.FromSeconds(10), TimeSpan.FromSeconds(30),
        .. Enumerable.Range(1, 10).Select(m => TimeSpan.FromMinutes(m)),
        TimeSpan.FromMinutes(20), TimeSpan.FromMinutes(30), TimeSpan.FromHours(1), TimeSpan.FromHours(2),
    ];

    /// <summary>Delays announced to push consumers in Settings (a customized backoff): after its n-th failed delivery
    /// a consumer makes the message invisible for the n-th delay (ChangeInvisibleDuration), the last repeating.</summary>
    public IReadOnlyList<TimeSpan> RetryDelays { get; init; } = ApacheRetryDelays;

    /// <summary>Delay of the second unsolicited Settings push that works around the Node client's startup race.</summary>
    public TimeSpan SettingsRepushDelay { get; init; } = TimeSpan.FromMilliseconds(1500);

}
