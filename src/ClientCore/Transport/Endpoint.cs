using System.Globalization;
using System.Net;
using System.Net.Sockets;
using Apache.Rocketmq.V2;

namespace HalfMsg.ClientCore.Transport;

/// <summary>
/// One logical endpoint: an access point, or a broker as a route advertises it (a scheme plus addresses). With several
/// addresses (<c>"10.0.0.1:8081;10.0.0.2:8081"</c>, as the official Java client parses an access point, and as a route
/// echoes it back) every address serves the same thing, and <see cref="RpcChannel"/> talks to one of them at a time,
/// moving to the next when it cannot connect (the Java client's gRPC channel over the address list does the same).
/// <see cref="Host"/> and <see cref="Port"/> are the first address. Equal when the addresses are equal, in order.
/// </summary>
internal sealed class Endpoint : IEquatable<Endpoint>
{
    private readonly (string Host, int Port)[] _addresses;
    private readonly int _hash;

    /// <summary>An endpoint of one address.</summary>
    public Endpoint(string host, int port)
        : this([(host, port)])
    {
    }

    private Endpoint((string Host, int Port)[] addresses)
    {
        _addresses = addresses;
        var hash = new HashCode();
        foreach ((string host, int port) in addresses)
        {
            hash.Add(host, StringComparer.Ordinal);
            hash.Add(port);
        }

        _hash = hash.ToHashCode();
    }

    /// <summary>The first address's host.</summary>
    public string Host => _addresses[0].Host;

    /// <summary>The first address's port.</summary>
    public int Port => _addresses[0].Port;

    /// <summary>How many addresses this endpoint has (at least one).</summary>
    public int AddressCount => _addresses.Length;

    /// <summary>The endpoint of address <paramref name="index"/> alone (the key of its gRPC channel).</summary>
    public Endpoint Address(int index) => _addresses.Length == 1 ? this : new Endpoint([_addresses[index]]);

    /// <summary>The cleartext channel address of the first address. Built when asked for (a channel is created once per
    /// address), not with every endpoint a route yields.</summary>
    public Uri BaseUri => BaseUriFor(tls: false);

    /// <summary>The channel address of the first address: <c>https://</c> with <paramref name="tls"/>, else <c>http://</c>.</summary>
    public Uri BaseUriFor(bool tls) => new UriBuilder(tls ? Uri.UriSchemeHttps : Uri.UriSchemeHttp, Host, Port).Uri;

    /// <summary>
    /// Parses <c>host:port</c>, <c>[v6]:port</c> or <c>host</c> (port 80, as the official clients default); several
    /// of them separated by <c>;</c> (the official Java client's separator) or <c>,</c>. An <c>http://</c> or
    /// <c>https://</c> prefix is taken off (<see cref="ParseTlsScheme"/> says what it means). Until 2026-12-07 every address but the first was ignored, so a client of a multi-address access point
    /// could not start, or went on failing, while its first address was down (review of our clients).
    /// </summary>
    public static Endpoint Parse(string value)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(value);
        var addresses = new List<(string, int)>();
        foreach (string part in value.Split([',', ';'], StringSplitOptions.TrimEntries))
        {
            if (part.Length == 0)
            {
                continue;
            }

            (string Host, int Port) address = ParseOne(part, value);
            if (!addresses.Contains(address))
            {
                addresses.Add(address);
            }
        }

        if (addresses.Count == 0)
        {
            throw new FormatException($"Invalid endpoint '{value}'.");
        }

        return new Endpoint([.. addresses]);
    }

    /// <summary>
    /// What the schemes of <paramref name="value"/>'s addresses say about TLS: true when they are <c>https://</c>,
    /// false when <c>http://</c>, null when they have none (or another). Addresses of one access point must agree.
    /// </summary>
    public static bool? ParseTlsScheme(string value)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(value);
        bool? tls = null;
        bool first = true;
        foreach (string part in value.Split([',', ';'], StringSplitOptions.TrimEntries | StringSplitOptions.RemoveEmptyEntries))
        {
            bool? this_ = part.StartsWith("https://", StringComparison.OrdinalIgnoreCase) ? true
                : part.StartsWith("http://", StringComparison.OrdinalIgnoreCase) ? false
                : null;
            if (!first && this_ != tls)
            {
                throw new FormatException($"Invalid endpoint '{value}': its addresses must all be https://, all http://, or all without a scheme.");
            }

            tls = this_;
            first = false;
        }

        return tls;
    }

    private static (string Host, int Port) ParseOne(string part, string value)
    {
        string s = part;
        int schemeEnd = s.IndexOf("://", StringComparison.Ordinal);
        if (schemeEnd >= 0)
        {
            s = s[(schemeEnd + 3)..].TrimEnd('/');
        }

        string host = s;
        int port = 80;
        if (s.StartsWith('['))
        {
            int close = s.IndexOf(']');
            if (close < 0)
            {
                throw new FormatException($"Invalid endpoint '{value}'.");
            }

            host = s[1..close];
            if (close + 1 < s.Length && s[close + 1] == ':')
            {
                port = ParsePort(s[(close + 2)..], value);
            }
        }
        else if (s.Count(c => c == ':') == 1)
        {
            int colon = s.IndexOf(':');
            host = s[..colon];
            port = ParsePort(s[(colon + 1)..], value);
        }

        if (host.Length == 0 || port is <= 0 or > 65535)
        {
            throw new FormatException($"Invalid endpoint '{value}'.");
        }

        return (host, port);
    }

    private static int ParsePort(string text, string value) =>
        int.TryParse(text, NumberStyles.None, CultureInfo.InvariantCulture, out int port)
            ? port
            : throw new FormatException($"Invalid endpoint '{value}': bad port '{text}'.");

    /// <summary>The broker endpoint a route advertises: every address it lists.</summary>
    public static Endpoint FromProto(Endpoints endpoints)
    {
        if (endpoints is null || endpoints.Addresses.Count == 0)
        {
            throw new InvalidOperationException("The route advertises a broker without endpoints.");
        }

        if (endpoints.Addresses.Count == 1)
        {
            Address a = endpoints.Addresses[0];
            return new Endpoint(a.Host, a.Port == 0 ? 80 : a.Port);
        }

        var addresses = new List<(string, int)>(endpoints.Addresses.Count);
        foreach (Address a in endpoints.Addresses)
        {
            (string, int) address = (a.Host, a.Port == 0 ? 80 : a.Port);
            if (!addresses.Contains(address))
            {
                addresses.Add(address);
            }
        }

        return new Endpoint([.. addresses]);
    }

    /// <summary>Every address, with the scheme of the first (IPv4, IPv6 or a domain name; several names go as IPv6).</summary>
    public Endpoints ToProto()
    {
        AddressScheme scheme = AddressScheme.DomainName;
        if (IPAddress.TryParse(Host, out IPAddress? ip))
        {
            scheme = ip.AddressFamily == AddressFamily.InterNetworkV6 ? AddressScheme.Ipv6 : AddressScheme.Ipv4;
        }
        else if (_addresses.Length > 1)
        {
            // As the Java client sends an access point of several names (IPv6 unless the first is a dotted quad): the
            // official clients refuse DOMAIN_NAME with several addresses, and the broker answers such a request with the
            // connection's address instead of echoing the list.
            scheme = AddressScheme.Ipv6;
        }

        var endpoints = new Endpoints { Scheme = scheme };
        foreach ((string host, int port) in _addresses)
        {
            endpoints.Addresses.Add(new Address { Host = host, Port = port });
        }

        return endpoints;
    }

    public bool Equals(Endpoint? other)
    {
        if (ReferenceEquals(this, other))
        {
            return true;
        }

        if (other is null || other._hash != _hash || other._addresses.Length != _addresses.Length)
        {
            return false;
        }

        for (int i = 0; i < _addresses.Length; i++)
        {
            if (!string.Equals(_addresses[i].Host, other._addresses[i].Host, StringComparison.Ordinal) || _addresses[i].Port != other._addresses[i].Port)
            {
                return false;
            }
        }

        return true;
    }

    public override bool Equals(object? obj) => Equals(obj as Endpoint);

    public override int GetHashCode() => _hash;

    public override string ToString() => _addresses.Length == 1
        ? Format(_addresses[0])
        : string.Join(';', _addresses.Select(Format));

    private static string Format((string Host, int Port) a) => a.Host.Contains(':') ? $"[{a.Host}]:{a.Port}" : $"{a.Host}:{a.Port}";
}
