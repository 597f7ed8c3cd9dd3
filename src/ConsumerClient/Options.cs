using HalfMsg.ClientCore;
using Microsoft.Extensions.Logging;

namespace HalfMsg.ConsumerClient;

/// <summary>Configuration of a <see cref="SimpleConsumer"/>.</summary>
public sealed record SimpleConsumerOptions
{
    /// <summary>Defaults: access point <c>127.0.0.1:8081</c>, 20 s long poll, 3 s request timeout.</summary>
    public static SimpleConsumerOptions Default { get; } = new();

    /// <summary>The access point (<c>host:port</c>) used for route lookups.</summary>
    public string Endpoints { get; init; } = "127.0.0.1:8081";

    /// <summary>Consumer group (required).</summary>
    public string ConsumerGroup { get; init; } = string.Empty;

    /// <summary>Topic → tag expression (<c>*</c> for all, or <c>TagA||TagB</c>).</summary>
    public IReadOnlyDictionary<string, string> Subscriptions { get; init; } = new Dictionary<string, string>();

    /// <summary>How long a receive waits on the broker when no message is available (long polling).</summary>
    public TimeSpan AwaitDuration { get; init; } = TimeSpan.FromSeconds(20);

    /// <summary>Deadline of unary calls (ack, change invisible duration, route...).</summary>
    public TimeSpan RequestTimeout { get; init; } = TimeSpan.FromSeconds(3);

    /// <summary>Access key pair; null sends unsigned requests.</summary>
    public Credentials? Credentials { get; init; }

    /// <summary>Resource namespace; null for none.</summary>
    public string? Namespace { get; init; }

    /// <summary>Logger factory for background failures.</summary>
    public ILoggerFactory? LoggerFactory { get; init; }
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

    /// <summary>The access point (<c>host:port</c>) used for route lookups.</summary>
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
    /// Settings (16 if absent). Non-FIFO groups are dead-lettered by the broker; FIFO groups by this client.</summary>
    public int? MaxAttempts { get; init; }

    /// <summary>Redelivery backoff; null takes the broker's exponential backoff (or <see cref="RetryBackoff.Default"/>).</summary>
    public RetryBackoff? RetryBackoff { get; init; }

    /// <summary>How long a received message stays invisible to other consumers. While its handler runs, the lease is
    /// renewed to this duration every half of it (ChangeInvisibleDuration), so handlers may run longer than this.</summary>
    public TimeSpan InvisibleDuration { get; init; } = TimeSpan.FromSeconds(60);

    /// <summary>Long-polling time of each receive when the broker's Settings do not specify one.</summary>
    public TimeSpan AwaitDuration { get; init; } = TimeSpan.FromSeconds(20);

    /// <summary>Deadline of unary calls.</summary>
    public TimeSpan RequestTimeout { get; init; } = TimeSpan.FromSeconds(3);

    /// <summary>Access key pair; null sends unsigned requests.</summary>
    public Credentials? Credentials { get; init; }

    /// <summary>Resource namespace; null for none.</summary>
    public string? Namespace { get; init; }

    /// <summary>Logger factory for handler and background failures.</summary>
    public ILoggerFactory? LoggerFactory { get; init; }
}
