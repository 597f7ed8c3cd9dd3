using System.Net;
using System.Net.Sockets;
using HalfMsg.Broker.FrontEnds.GrpcV5;

namespace HalfMsg.Broker.Hosting;

/// <summary>
/// A port's share per peer address for ports whose clients hold long-lived idle connections (gRPC, Remoting and the name
/// server): at most <see cref="Share"/> connections from one address, and one more from it is refused at once. Unlike the
/// admin port's <see cref="PeerConnectionLimit"/>, nothing open is ever closed to make room: an idle gRPC or Remoting
/// connection is a client waiting for check-backs, pushes or long polls, not a hoarder. The whole port's limit is counted
/// by the caller; a share as large as it limits nothing, and then no <see cref="AddressShare"/> is made at all
/// (<see cref="For"/>), so the default costs nothing per connection. Refusals are logged at most once a minute.
/// </summary>
/// <remarks>
/// Without the share (until the small-hours session of 2026-12-08) one host could open every connection of the gRPC port
/// (1,000) or of the Remoting ports (10,000), keep every other client out, and multiply each per-connection memory bound
/// by the whole port. Counted per address as <see cref="PeerOf"/> keys it (an IPv6 peer by its /64), the same rule as the
/// admin port's. A connection is counted from its acceptance to its end, whatever ends it (the caller releases it in a
/// <c>finally</c> around the whole connection, TLS handshake included).
/// </remarks>
internal sealed class AddressShare
{
    private readonly string _flag;
    private readonly ILogger _logger;
    private readonly LogRateLimiter _log = new(1, TimeProvider.System);
    private readonly Dictionary<IPAddress, int> _perPeer = [];

    public AddressShare(int share, string flag, ILogger logger)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(share, 1);
        Share = share;
        _flag = flag;
        _logger = logger;
    }

    /// <summary>Connections one address may hold at once.</summary>
    public int Share { get; }

    /// <summary>The share for a port that takes <paramref name="max"/> connections in all: null when
    /// <paramref name="share"/> is 0 or at least <paramref name="max"/> (it would limit nothing).</summary>
    public static AddressShare? For(int share, int max, string flag, ILogger logger) =>
        share <= 0 || share >= max ? null : new AddressShare(share, flag, logger);

    /// <summary>Counts a connection from <paramref name="peer"/> (a key from <see cref="PeerOf"/>); false, with a
    /// rate-limited warning naming <paramref name="port"/>, when that address already holds its share.</summary>
    public bool TryEnter(string port, IPAddress peer)
    {
        // A lock, not a concurrent map: taken once per accepted connection, never per request.
        lock (_perPeer)
        {
            _perPeer.TryGetValue(peer, out int open);
            if (open < Share)
            {
                _perPeer[peer] = open + 1;
                return true;
            }
        }

        // Once a minute at most: a flood of connections must not flood the log.
        if (_log.TryEnter(out long suppressed))
            _logger.LogWarning("{Port} connection from {Peer} refused: {Share} connections from that address already open ({Flag}; they are kept; {Suppressed} more refusals not logged since the last line)",
                port, peer, Share, _flag, suppressed);
        return false;
    }

    /// <summary>Uncounts a connection counted by <see cref="TryEnter"/>.</summary>
    public void Leave(IPAddress peer)
    {
        lock (_perPeer)
        {
            // Removed at zero, so the map holds only addresses with open connections and cannot grow with every peer seen.
            if (_perPeer[peer] == 1) _perPeer.Remove(peer);
            else _perPeer[peer]--;
        }
    }

    /// <summary>Connections counted now from <paramref name="peer"/> (tests).</summary>
    internal int OpenFrom(IPAddress peer)
    {
        lock (_perPeer) return _perPeer.GetValueOrDefault(peer);
    }

    /// <summary>Addresses with a connection counted now (tests: nothing stays counted once every connection ended).</summary>
    internal int Addresses
    {
        get { lock (_perPeer) return _perPeer.Count; }
    }

    /// <summary>
    /// The address a connection is counted under, on every port with a per-address share: IPv4 as it is (also when it
    /// arrives IPv4-mapped on a dual-stack socket), IPv6 by its /64 without scope (the block one host is normally given,
    /// so that it cannot take a share per address of its own block). A peer without an IP address (not seen on a TCP
    /// listener) counts as one.
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
