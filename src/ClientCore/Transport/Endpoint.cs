using System.Globalization;
using System.Net;
using System.Net.Sockets;
using Apache.Rocketmq.V2;

namespace HalfMsg.ClientCore.Transport;

/// <summary>One reachable <c>host:port</c>. Routes advertise <see cref="Endpoints"/> (a scheme plus addresses);
/// like the official clients we talk to the first address.</summary>
internal sealed record Endpoint(string Host, int Port)
{
    /// <summary>The channel address. Built when asked for (a channel is created once per endpoint), not with every
    /// endpoint a route yields; and not a field, so equality and hashing stay on host and port.</summary>
    public Uri BaseUri => new UriBuilder(Uri.UriSchemeHttp, Host, Port).Uri;

    /// <summary>Parses <c>host:port</c>, <c>[v6]:port</c> or <c>host</c> (port 80, as the official clients default).
    /// An <c>http://</c> prefix is tolerated.</summary>
    public static Endpoint Parse(string value)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(value);
        string s = value.Trim();
        int schemeEnd = s.IndexOf("://", StringComparison.Ordinal);
        if (schemeEnd >= 0)
        {
            s = s[(schemeEnd + 3)..].TrimEnd('/');
        }

        // Several comma/semicolon separated addresses: use the first (the access point is one logical endpoint).
        int sep = s.IndexOfAny([',', ';']);
        if (sep >= 0)
        {
            s = s[..sep];
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
                port = int.Parse(s[(close + 2)..], CultureInfo.InvariantCulture);
            }
        }
        else if (s.Count(c => c == ':') == 1)
        {
            int colon = s.IndexOf(':');
            host = s[..colon];
            port = int.Parse(s[(colon + 1)..], CultureInfo.InvariantCulture);
        }

        if (host.Length == 0 || port is <= 0 or > 65535)
        {
            throw new FormatException($"Invalid endpoint '{value}'.");
        }

        return new Endpoint(host, port);
    }

    public static Endpoint FromProto(Endpoints endpoints)
    {
        if (endpoints is null || endpoints.Addresses.Count == 0)
        {
            throw new InvalidOperationException("The route advertises a broker without endpoints.");
        }

        Address a = endpoints.Addresses[0];
        return new Endpoint(a.Host, a.Port == 0 ? 80 : a.Port);
    }

    public Endpoints ToProto()
    {
        AddressScheme scheme = AddressScheme.DomainName;
        if (IPAddress.TryParse(Host, out IPAddress? ip))
        {
            scheme = ip.AddressFamily == AddressFamily.InterNetworkV6 ? AddressScheme.Ipv6 : AddressScheme.Ipv4;
        }

        return new Endpoints { Scheme = scheme, Addresses = { new Address { Host = Host, Port = Port } } };
    }

    public override string ToString() => Host.Contains(':') ? $"[{Host}]:{Port}" : $"{Host}:{Port}";
}
