using System.Net;
using System.Net.Sockets;
using HalfMsg.Broker.FrontEnds.GrpcV5;
using Microsoft.AspNetCore.Connections;

namespace HalfMsg.Broker.Hosting;

/// <summary>
/// One port's connection limit with a share per peer address: at most <c>max</c> connections in all, and at most
/// <c>maxPerAddress</c> of them from one address. A connection over either is closed at once, as Kestrel's own limit
/// would, and a refusal is logged at most once a minute for each of the two.
/// </summary>
/// <remarks>
/// Without the share, one peer held every connection of the admin port (idle keep-alive connections cost it nothing, and
/// <c>/health</c> needs no credentials), and the probes, which come from another address (the kubelet, a load balancer,
/// the container's own check on 127.0.0.1), were closed at once: the broker looked dead while it was fine (until
/// 2026-12-06). The total stays bounded; it takes <c>max</c> / <c>maxPerAddress</c> addresses to fill the port.
/// An IPv6 peer counts by its /64, the block one host is normally given, so that it cannot take a share per address of
/// its own block.
/// </remarks>
internal sealed class PeerConnectionLimit
{
    private readonly string _port;
    private readonly int _max;
    private readonly int _maxPerAddress;
    private readonly ILogger _logger;
    private readonly LogRateLimiter _totalLog = new(1, TimeProvider.System);
    private readonly LogRateLimiter _peerLog = new(1, TimeProvider.System);
    private readonly Dictionary<IPAddress, int> _perPeer = [];
    private int _open;

    public PeerConnectionLimit(string port, int max, int maxPerAddress, ILogger logger)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(max, 1);
        ArgumentOutOfRangeException.ThrowIfLessThan(maxPerAddress, 1);
        _port = port;
        _max = max;
        _maxPerAddress = Math.Min(maxPerAddress, max);
        _logger = logger;
    }

    public async Task OnConnectionAsync(ConnectionContext connection, ConnectionDelegate next)
    {
        IPAddress peer = PeerOf(connection.RemoteEndPoint);
        if (!TryEnter(peer, out bool perAddress))
        {
            // Returning ends the connection. Once a minute at most: a flood of connections must not flood the log.
            if (perAddress && _peerLog.TryEnter(out long suppressedPeer))
                _logger.LogWarning("{Port} connection from {Peer} refused: {Max} connections from that address already open ({Suppressed} more refusals not logged since the last line)",
                    _port, peer, _maxPerAddress, suppressedPeer);
            else if (!perAddress && _totalLog.TryEnter(out long suppressed))
                _logger.LogWarning("{Port} connection refused: {Max} connections already open ({Suppressed} more refusals not logged since the last line)",
                    _port, _max, suppressed);
            return;
        }

        try
        {
            await next(connection).ConfigureAwait(false);
        }
        finally
        {
            Leave(peer);
        }
    }

    /// <summary>Counts a connection from <paramref name="peer"/> (a key from <see cref="PeerOf"/>) when both limits allow it;
    /// otherwise <paramref name="perAddress"/> says which one refused it.</summary>
    internal bool TryEnter(IPAddress peer, out bool perAddress)
    {
        // A lock, not two counters: the two limits must be checked and taken together, and admin connections are few.
        lock (_perPeer)
        {
            _perPeer.TryGetValue(peer, out int fromPeer);
            perAddress = fromPeer >= _maxPerAddress;
            if (perAddress || _open >= _max) return false;
            _perPeer[peer] = fromPeer + 1;
            _open++;
            return true;
        }
    }

    internal void Leave(IPAddress peer)
    {
        lock (_perPeer)
        {
            _open--;
            // Removed at zero, so the map holds only addresses with open connections and cannot grow with every peer seen.
            if (_perPeer[peer] == 1) _perPeer.Remove(peer);
            else _perPeer[peer]--;
        }
    }

    /// <summary>
    /// The address a connection is counted under: IPv4 as it is (also when it arrives IPv4-mapped on a dual-stack
    /// socket), IPv6 by its /64 without scope. A peer without an IP address (not seen on a TCP listener) counts as one.
    /// </summary>
    internal static IPAddress PeerOf(EndPoint? remote)
    {
        if (remote is not IPEndPoint { Address: var address }) return IPAddress.None;
        if (address.IsIPv4MappedToIPv6) return address.MapToIPv4();
        if (address.AddressFamily != AddressFamily.InterNetworkV6) return address;
        byte[] bytes = address.GetAddressBytes();
        Array.Clear(bytes, 8, 8);
        return new IPAddress(bytes);
    }
}
