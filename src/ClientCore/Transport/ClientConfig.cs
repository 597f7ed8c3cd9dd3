using System.Reflection;
using Microsoft.Extensions.Logging;

namespace HalfMsg.ClientCore.Transport;

/// <summary>What every call needs to know about the client: identity, access point, credentials, timeouts, TLS.</summary>
internal sealed class ClientConfig
{
    private static int _index;

    /// <summary>Upper bound of the default <see cref="ConnectTimeout"/>: the official Java client's connect timeout.</summary>
    public static readonly TimeSpan MaxDefaultConnectTimeout = TimeSpan.FromSeconds(3);

    /// <summary>Default <see cref="FailbackInterval"/>.</summary>
    public static readonly TimeSpan DefaultFailbackInterval = TimeSpan.FromSeconds(30);

    /// <summary>The configuration of one client; <paramref name="connectTimeout"/> and <paramref name="failbackInterval"/>
    /// null for their defaults (half the request timeout and at most 3 s; 30 s). <paramref name="option"/> names the
    /// options class in errors; <paramref name="accessPoint"/>, <paramref name="credentials"/>,
    /// <paramref name="requestTimeout"/>, <paramref name="ns"/>, <paramref name="loggerFactory"/> and
    /// <paramref name="tls"/> are the client's options.</summary>
    public ClientConfig(string accessPoint, Credentials? credentials, TimeSpan requestTimeout, string? ns, ILoggerFactory? loggerFactory,
        ClientTls? tls = null, TimeSpan? connectTimeout = null, TimeSpan? failbackInterval = null, string option = "Options")
    {
        AccessPoint = Endpoint.Parse(accessPoint);
        Tls = tls;
        Credentials = credentials;
        RequestTimeout = requestTimeout > TimeSpan.Zero ? requestTimeout : TimeSpan.FromSeconds(3);
        if (connectTimeout is { } connect && connect <= TimeSpan.Zero)
        {
            throw new ArgumentOutOfRangeException(nameof(connectTimeout), connect,
                $"{option}.ConnectTimeout must be more than 0 (null for the default: half the RequestTimeout, at most 3 s).");
        }

        if (failbackInterval is { } failback && failback <= TimeSpan.Zero && failback != Timeout.InfiniteTimeSpan)
        {
            throw new ArgumentOutOfRangeException(nameof(failbackInterval), failback,
                $"{option}.FailbackInterval must be more than 0, or Timeout.InfiniteTimeSpan never to move back to the first address (null for the default, 30 s).");
        }

        ConnectTimeout = connectTimeout ?? TimeSpan.FromTicks(Math.Min(RequestTimeout.Ticks / 2, MaxDefaultConnectTimeout.Ticks));
        FailbackInterval = failbackInterval ?? DefaultFailbackInterval;
        Namespace = string.IsNullOrEmpty(ns) ? null : ns;
        LoggerFactory = loggerFactory ?? Microsoft.Extensions.Logging.Abstractions.NullLoggerFactory.Instance;

        // Same shape as the official clients: host@pid@index@time(base36). The server keys Settings and the
        // telemetry channel (used for check-backs) by this id, so it must be unique per client instance.
        ClientId = $"{Environment.MachineName}@{Environment.ProcessId}@{Interlocked.Increment(ref _index) - 1}@{ToBase36(DateTimeOffset.UtcNow.ToUnixTimeMilliseconds())}";
    }

    public string ClientId { get; }
    public Endpoint AccessPoint { get; }
    public Credentials? Credentials { get; }
    public TimeSpan RequestTimeout { get; }

    /// <summary>
    /// Bound of opening a connection to one address: TCP, the TLS handshake (with TLS), then the broker's answer to
    /// the HTTP/2 preface. An address that does not answer within it fails like a refused one: the call goes on to the
    /// next address of the access point within its deadline, so this should be shorter than <see cref="RequestTimeout"/>.
    /// An address with no other to go to (not part of a multi-address endpoint) has only TCP bounded by it in cleartext;
    /// the call's deadline bounds the broker's answer (see <c>RpcChannel.Open</c>).
    /// </summary>
    public TimeSpan ConnectTimeout { get; }

    /// <summary>
    /// After an access point of several addresses moved away from its first address, how long until the addresses before
    /// the current one are tried again, in order (by a probe in the background, on a timer of the client's own, whether
    /// or not it makes calls; calls go on to the current address meanwhile); calls and the Telemetry stream move to the
    /// first that answers, and while that is not the first address, the earlier ones are tried again after as long.
    /// <see cref="Timeout.InfiniteTimeSpan"/>: never.
    /// </summary>
    public TimeSpan FailbackInterval { get; }
    public string? Namespace { get; }

    /// <summary>Asks a HalfMsgBroker for check tokens in check-backs' transaction ids
    /// (<see cref="HalfMsg.Protocol.Grpc.CheckTokenIds.AcceptHeader"/> on every call): set by the producer, which strips
    /// them before its checker sees the id and echoes them in its answer. Since the afternoon session of 2026-12-07.</summary>
    public bool AcceptsCheckTokens { get; init; }
    public ILoggerFactory LoggerFactory { get; }

    /// <summary>The TLS of every channel (to the access point and to every broker a route names); null for cleartext.</summary>
    public ClientTls? Tls { get; }

    /// <summary>Sent as <c>x-mq-client-version</c> and in the Settings user agent.</summary>
    public static string Version { get; } =
        typeof(ClientConfig).Assembly.GetCustomAttribute<AssemblyInformationalVersionAttribute>()?.InformationalVersion.Split('+')[0]
        ?? "0.1.0";

    private static string ToBase36(long value)
    {
        const string digits = "0123456789abcdefghijklmnopqrstuvwxyz";
        Span<char> buf = stackalloc char[16];
        int i = buf.Length;
        do
        {
            buf[--i] = digits[(int)(value % 36)];
            value /= 36;
        }
        while (value > 0);
        return new string(buf[i..]);
    }
}
