using HalfMsg.ClientCore;
using HalfMsg.ProducerClient.Barrier;
using Microsoft.Extensions.Logging;

namespace HalfMsg.ProducerClient;

/// <summary>Configuration of a <see cref="Producer"/>.</summary>
public sealed record ProducerOptions
{
    /// <summary>Defaults: access point <c>127.0.0.1:8081</c>, no topics, 3 s request timeout, no checker.</summary>
    public static ProducerOptions Default { get; } = new();

    /// <summary>The access point (<c>host:port</c>) used for route lookups. Other calls go to the broker endpoints the
    /// route advertises. Several addresses of one service as <c>"host1:port;host2:port"</c> (the official Java client's
    /// form; <c>,</c> also separates): calls go to one that answers, the next when it cannot be connected to, and the
    /// Telemetry stream (check-backs) follows; an error names every address only when none could be.</summary>
    public string Endpoints { get; init; } = "127.0.0.1:8081";

    /// <summary>Topics to prepare at start (route lookup, Telemetry). The broker sends transaction check-backs only for
    /// topics a producer declared, so list every topic you send transactional messages to.</summary>
    public IReadOnlyList<string> Topics { get; init; } = [];

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

    /// <summary>Deadline of each unary call (the official clients' default is 3 s).</summary>
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

    /// <summary>Resolves half messages the broker asks about (check-back). Without one, check-backs are ignored and the
    /// broker keeps asking until it gives up.</summary>
    public ITransactionChecker? TransactionChecker { get; init; }

    /// <summary>How many check-backs the <see cref="TransactionChecker"/> answers at once (default 8); more wait for a
    /// turn. Each <see cref="Barrier.BarrierChecker"/> check holds a database connection, and on SQLite a thread while it
    /// waits for the write lock, so a burst of checks (after a restart) must not take the whole pool.</summary>
    public int MaxConcurrentChecks { get; init; } = 8;

    /// <summary>Maximum attempts of a normal (non-transactional) send; transport errors, throttling and internal errors
    /// are retried. Transactional sends are attempted once.</summary>
    public int MaxSendAttempts { get; init; } = 3;

    /// <summary>
    /// Half sends of concurrent transactions: at most this many SendMessage calls per broker and topic at once; halves
    /// sent while they are all outstanding wait and go together in the next call (up to 32 messages and 1 MiB of
    /// bodies; a larger half goes alone). Below that many transactions in flight nothing changes. Used only against a HalfMsgBroker (its Settings reply says
    /// so): an Apache RocketMQ broker refuses several transactional messages in one call, so against one every half
    /// has a call of its own, as with the official clients. 0 turns it off.
    /// </summary>
    public int HalfSendCallsInFlight { get; init; } = 4;

    /// <summary>
    /// Decisions (commit, rollback) of concurrent transactions: at most this many calls per broker at once; decisions
    /// made while they are all outstanding wait and go together in the next call (up to 128), each answered as if sent
    /// alone. Uses HalfMsgBroker's own <c>halfmsg.v1.TransactionService/EndTransactions</c>, so only against a
    /// HalfMsgBroker; against an Apache RocketMQ broker (or a HalfMsgBroker without that call) every decision is an
    /// EndTransaction of its own, as with the official clients. 0 turns it off.
    /// </summary>
    public int DecisionCallsInFlight { get; init; } = 4;

    /// <summary>SQL dialect of the barrier table used by <see cref="Producer.ExecuteAsync(System.Data.Common.DbConnection, Message, Func{System.Data.Common.DbTransaction, CancellationToken, Task}, CancellationToken)"/>;
    /// null detects SQLite and PostgreSQL from the connection type.</summary>
    public IBarrierDialect? BarrierDialect { get; init; }

    /// <summary>Resource namespace sent as <c>x-mq-namespace</c> and in resources; null for none.</summary>
    public string? Namespace { get; init; }

    /// <summary>Logger factory for background failures (telemetry reconnects, check-back errors).</summary>
    public ILoggerFactory? LoggerFactory { get; init; }
}
