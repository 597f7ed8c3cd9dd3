using System.Reflection;
using Microsoft.Extensions.Logging;

namespace HalfMsg.ClientCore.Transport;

/// <summary>What every call needs to know about the client: identity, access point, credentials, timeouts, TLS.</summary>
internal sealed class ClientConfig
{
    private static int _index;

    public ClientConfig(string accessPoint, Credentials? credentials, TimeSpan requestTimeout, string? ns, ILoggerFactory? loggerFactory,
        ClientTls? tls = null)
    {
        AccessPoint = Endpoint.Parse(accessPoint);
        Tls = tls;
        Credentials = credentials;
        RequestTimeout = requestTimeout > TimeSpan.Zero ? requestTimeout : TimeSpan.FromSeconds(3);
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
    public string? Namespace { get; }
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
