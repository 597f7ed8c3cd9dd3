using HalfMsg.ClientCore;
using Microsoft.Extensions.Logging;

namespace HalfMsg.ConsumerClient;

/// <summary>Configuration of a <see cref="SimpleConsumer"/>.</summary>
public sealed record SimpleConsumerOptions
{
    /// <summary>Defaults: access point <c>127.0.0.1:8081</c>, 20 s long poll, 3 s request timeout.</summary>
    public static SimpleConsumerOptions Default { get; } = new();

    /// <summary>The access point (<c>host:port</c>) used for route lookups; several addresses of one service as
    /// <c>"host1:port;host2:port"</c>: calls go to one that answers (the next when it cannot be connected to).</summary>
    public string Endpoints { get; init; } = "127.0.0.1:8081";

    /// <summary>Consumer group (required).</summary>
    public string ConsumerGroup { get; init; } = string.Empty;

    /// <summary>Topic → tag expression (<c>*</c> for all, or <c>TagA||TagB</c>).</summary>
    public IReadOnlyDictionary<string, string> Subscriptions { get; init; } = new Dictionary<string, string>();

    /// <summary>How long a receive waits on the broker when no message is available (long polling); 0 answers at once.
    /// At most 5 min (brokers cap it lower: HalfMsgBroker at 30 s), else StartAsync throws.</summary>
    public TimeSpan AwaitDuration { get; init; } = TimeSpan.FromSeconds(20);

    /// <summary>Deadline of unary calls (ack, change invisible duration, route...).</summary>
    public TimeSpan RequestTimeout { get; init; } = TimeSpan.FromSeconds(3);

    /// <summary>Bound of opening a connection to one address: TCP, the TLS handshake (with TLS), then the
    /// broker's answer to the HTTP/2 preface. An address that does not answer within it is passed over like a refused one (the
    /// request never left): the call goes to the next address of <c>Endpoints</c> within its deadline, and later calls
    /// start there. With a single address (nowhere else to go) only TCP is bounded by it and the call's deadline bounds
    /// the rest, so a broker slow to answer a new connection is waited for. Null (default): half the
    /// <c>RequestTimeout</c>, at most 3 s (the official Java client's connect timeout). More than 0, else StartAsync throws.</summary>
    public TimeSpan? ConnectTimeout { get; init; }

    /// <summary>With several addresses in <c>Endpoints</c>: after the client moved away from the first, how long until
    /// the addresses before the current one are tried again, in order (a probe in the background, whether or not the
    /// client makes calls; calls go on meanwhile); calls and the Telemetry stream move to the first that answers, and
    /// the earlier ones are tried again after as long. Null (default): 30 s;
    /// <see cref="Timeout.InfiniteTimeSpan"/>: never move back. More than 0 or infinite, else StartAsync throws.</summary>
    public TimeSpan? FailbackInterval { get; init; }

    /// <summary>Speaks TLS to the broker, for every call and stream (default false: cleartext HTTP/2, as before). An
    /// access point given as <c>https://host:port</c> turns it on too. The broker's certificate is verified against the
    /// system's roots and must name the host connected to, unless <see cref="Tls"/> says otherwise.</summary>
    public bool UseTls { get; init; }

    /// <summary>With TLS: the certificate to trust instead of the system's roots (a broker's self-signed one), the
    /// client certificate for a broker that requires one. Read at start: an unreadable file or a wrong password fails
    /// StartAsync with an <see cref="ArgumentException"/> naming the option.</summary>
    public TlsOptions? Tls { get; init; }

    /// <summary>Access key pair; null sends unsigned requests.</summary>
    public Credentials? Credentials { get; init; }

    /// <summary>Resource namespace; null for none.</summary>
    public string? Namespace { get; init; }

    /// <summary>Logger factory for background failures.</summary>
    public ILoggerFactory? LoggerFactory { get; init; }

    /// <summary>Throws an <see cref="ArgumentOutOfRangeException"/> naming the first option that cannot work, so a
    /// misconfigured consumer fails at start (as <see cref="PushConsumerOptions"/> do).</summary>
    internal void Validate()
    {
        if (AwaitDuration < TimeSpan.Zero || AwaitDuration > PushConsumerOptions.MaxAwaitDuration)
        {
            throw new ArgumentOutOfRangeException("options", $"SimpleConsumerOptions.AwaitDuration must be at least 0 and at most {PushConsumerOptions.MaxAwaitDuration}, not {AwaitDuration}{PushConsumerOptions.BareNumberHint}.");
        }
    }
}

/// <summary>What a <see cref="PushConsumer"/> handler reports.</summary>
public enum ConsumeResult
{
    /// <summary>Processed: the message is acknowledged.</summary>
    Success,

    /// <summary>Not processed: the message is redelivered after a backoff (delivery attempt + 1), until the broker
    /// dead-letters it after the maximum attempts.</summary>
    Failure,
}

/// <summary>Exponential retry backoff: delay(n) = min(<see cref="Initial"/> × <see cref="Multiplier"/>^(n−1), <see cref="Max"/>)
/// for the n-th failed delivery.</summary>
/// <param name="Initial">Delay after the first failure.</param>
/// <param name="Max">Upper bound.</param>
/// <param name="Multiplier">Growth factor (≥ 1).</param>
public sealed record RetryBackoff(TimeSpan Initial, TimeSpan Max, double Multiplier)
{
    /// <summary>1 s doubling up to 60 s.</summary>
    public static RetryBackoff Default { get; } = new(TimeSpan.FromSeconds(1), TimeSpan.FromSeconds(60), 2);

    /// <summary>The delay after failed delivery number <paramref name="attempt"/> (1-based).</summary>
    public TimeSpan GetDelay(int attempt)
    {
        double ms = Initial.TotalMilliseconds * Math.Pow(Math.Max(Multiplier, 1), Math.Max(attempt, 1) - 1);
        return TimeSpan.FromMilliseconds(Math.Min(ms, Max.TotalMilliseconds));
    }
}

/// <summary>Configuration of a <see cref="PushConsumer"/>.</summary>
public sealed record PushConsumerOptions
{
    /// <summary>Defaults: access point <c>127.0.0.1:8081</c>, 16 concurrent handlers, attempts and backoff from the broker.</summary>
    public static PushConsumerOptions Default { get; } = new();

    /// <summary>The access point (<c>host:port</c>) used for route lookups; several addresses of one service as
    /// <c>"host1:port;host2:port"</c>: calls go to one that answers (the next when it cannot be connected to).</summary>
    public string Endpoints { get; init; } = "127.0.0.1:8081";

    /// <summary>Consumer group (required).</summary>
    public string ConsumerGroup { get; init; } = string.Empty;

    /// <summary>Topic → tag expression (<c>*</c> for all).</summary>
    public IReadOnlyDictionary<string, string> Subscriptions { get; init; } = new Dictionary<string, string>();

    /// <summary>The message handler (required). An exception counts as <see cref="ConsumeResult.Failure"/>.</summary>
    public Func<ReceivedMessage, CancellationToken, Task<ConsumeResult>>? Handler { get; init; }

    /// <summary>Maximum number of messages being handled at once (also bounds what is fetched ahead).</summary>
    public int MaxConcurrency { get; init; } = 16;

    /// <summary>Maximum deliveries before dead-lettering; null takes <c>backoff_policy.max_attempts</c> from the broker's
    /// Settings (16 if absent); at least 1. Non-FIFO groups are dead-lettered by the broker; FIFO groups by this client.</summary>
    public int? MaxAttempts { get; init; }

    /// <summary>Redelivery backoff; null takes the broker's backoff, customized or exponential (or <see cref="RetryBackoff.Default"/>).
    /// Delays must be non-negative, Initial ≤ Max ≤ 12 h and Multiplier ≥ 1, else StartAsync throws.</summary>
    public RetryBackoff? RetryBackoff { get; init; }

    /// <summary>How long a received message stays invisible to other consumers. While its handler runs, the lease is
    /// renewed to this duration every half of it (ChangeInvisibleDuration), so handlers may run longer than this. More
    /// than 0 and at most 12 h (the broker's limit), else StartAsync throws.</summary>
    public TimeSpan InvisibleDuration { get; init; } = TimeSpan.FromSeconds(60);

    /// <summary>Long-polling time of each receive when the broker's Settings do not specify one. More than 0 and at most
    /// 5 min, else StartAsync throws.</summary>
    public TimeSpan AwaitDuration { get; init; } = TimeSpan.FromSeconds(20);

    /// <summary>Deadline of unary calls.</summary>
    public TimeSpan RequestTimeout { get; init; } = TimeSpan.FromSeconds(3);

    /// <summary>Bound of opening a connection to one address: TCP, the TLS handshake (with TLS), then the
    /// broker's answer to the HTTP/2 preface. An address that does not answer within it is passed over like a refused one (the
    /// request never left): the call goes to the next address of <c>Endpoints</c> within its deadline, and later calls
    /// start there. With a single address (nowhere else to go) only TCP is bounded by it and the call's deadline bounds
    /// the rest, so a broker slow to answer a new connection is waited for. Null (default): half the
    /// <c>RequestTimeout</c>, at most 3 s (the official Java client's connect timeout). More than 0, else StartAsync throws.</summary>
    public TimeSpan? ConnectTimeout { get; init; }

    /// <summary>With several addresses in <c>Endpoints</c>: after the client moved away from the first, how long until
    /// the addresses before the current one are tried again, in order (a probe in the background, whether or not the
    /// client makes calls; calls go on meanwhile); calls and the Telemetry stream move to the first that answers, and
    /// the earlier ones are tried again after as long. Null (default): 30 s;
    /// <see cref="Timeout.InfiniteTimeSpan"/>: never move back. More than 0 or infinite, else StartAsync throws.</summary>
    public TimeSpan? FailbackInterval { get; init; }

    /// <summary>Speaks TLS to the broker, for every call and stream (default false: cleartext HTTP/2, as before). An
    /// access point given as <c>https://host:port</c> turns it on too. The broker's certificate is verified against the
    /// system's roots and must name the host connected to, unless <see cref="Tls"/> says otherwise.</summary>
    public bool UseTls { get; init; }

    /// <summary>With TLS: the certificate to trust instead of the system's roots (a broker's self-signed one), the
    /// client certificate for a broker that requires one. Read at start: an unreadable file or a wrong password fails
    /// StartAsync with an <see cref="ArgumentException"/> naming the option.</summary>
    public TlsOptions? Tls { get; init; }

    /// <summary>Access key pair; null sends unsigned requests.</summary>
    public Credentials? Credentials { get; init; }

    /// <summary>Resource namespace; null for none.</summary>
    public string? Namespace { get; init; }

    /// <summary>Logger factory for handler and background failures.</summary>
    public ILoggerFactory? LoggerFactory { get; init; }

    /// <summary>The longest lease a broker grants (HalfMsgBroker and the RocketMQ proxy: 12 h).</summary>
    internal static readonly TimeSpan MaxInvisibleDuration = TimeSpan.FromHours(12);
    // The broker refuses a receive asking for less (ILLEGAL_INVISIBLE_TIME): the consumer would consume nothing.
    internal static readonly TimeSpan MinInvisibleDuration = TimeSpan.FromSeconds(1);

    /// <summary>The longest long poll accepted here (brokers cap it lower: HalfMsgBroker at 30 s).</summary>
    internal static readonly TimeSpan MaxAwaitDuration = TimeSpan.FromMinutes(5);

    internal const string BareNumberHint = " (in configuration a bare number such as \"30\" is read as days; write \"00:00:30\" for 30 s)";

    /// <summary>Throws an <see cref="ArgumentException"/> (<see cref="ArgumentOutOfRangeException"/> for a value out of range) naming the first option a broker would refuse on every call
    /// (or that makes no sense), so a misconfigured consumer fails at start instead of retrying forever.</summary>
    internal void Validate()
    {
        if (Handler is null)
        {
            throw new ArgumentException("PushConsumerOptions.Handler is required.", "options");
        }

        if (MaxConcurrency < 1)
        {
            throw new ArgumentOutOfRangeException("options", $"PushConsumerOptions.MaxConcurrency must be at least 1, not {MaxConcurrency}.");
        }

        if (InvisibleDuration < MinInvisibleDuration || InvisibleDuration > MaxInvisibleDuration)
        {
            throw new ArgumentOutOfRangeException("options", $"PushConsumerOptions.InvisibleDuration must be at least {MinInvisibleDuration} (a HalfMsgBroker's shortest lease) and at most {MaxInvisibleDuration} (the broker's longest lease), not {InvisibleDuration}{BareNumberHint}.");
        }

        if (AwaitDuration <= TimeSpan.Zero || AwaitDuration > MaxAwaitDuration)
        {
            throw new ArgumentOutOfRangeException("options", $"PushConsumerOptions.AwaitDuration must be more than 0 and at most {MaxAwaitDuration}, not {AwaitDuration}{BareNumberHint}.");
        }

        if (MaxAttempts is < 1)
        {
            throw new ArgumentOutOfRangeException("options", $"PushConsumerOptions.MaxAttempts must be at least 1 (or null for the broker's), not {MaxAttempts}.");
        }

        if (RetryBackoff is { } b)
        {
            if (b.Initial < TimeSpan.Zero || b.Max < TimeSpan.Zero)
            {
                throw new ArgumentOutOfRangeException("options", $"PushConsumerOptions.RetryBackoff delays must not be negative (Initial {b.Initial}, Max {b.Max}).");
            }

            if (b.Initial > b.Max)
            {
                throw new ArgumentOutOfRangeException("options", $"PushConsumerOptions.RetryBackoff.Initial ({b.Initial}) must not exceed RetryBackoff.Max ({b.Max}).");
            }

            if (b.Max > MaxInvisibleDuration)
            {
                throw new ArgumentOutOfRangeException("options", $"PushConsumerOptions.RetryBackoff.Max must be at most {MaxInvisibleDuration} (the broker's longest invisible duration), not {b.Max}{BareNumberHint}.");
            }

            if (!(b.Multiplier >= 1) || double.IsInfinity(b.Multiplier))
            {
                throw new ArgumentOutOfRangeException("options", $"PushConsumerOptions.RetryBackoff.Multiplier must be a finite number of at least 1, not {b.Multiplier}.");
            }
        }
    }
}
