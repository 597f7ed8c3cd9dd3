using System.Net;
using HalfMsg.Broker.FrontEnds.GrpcV5;
using Microsoft.AspNetCore.Connections;
using Microsoft.AspNetCore.Connections.Features;

namespace HalfMsg.Broker.Hosting;

/// <summary>
/// One port's connection limit with a share per peer address: at most <c>max</c> connections in all, and at most
/// <c>maxPerAddress</c> of them from one address. A connection over either limit makes room by closing an idle one (no
/// request in progress: silent since it was accepted, or between two keep-alive requests): over the share of its own
/// address, that address's longest idle connection; over the total, the longest idle connection of the address that
/// holds the most. Only when no such connection is idle is the new one closed at once, as Kestrel's own limit would.
/// Refusals and evictions are each logged at most once a minute.
/// </summary>
/// <remarks>
/// Without the share, one peer held every connection of the admin port (idle keep-alive connections cost it nothing, and
/// <c>/health</c> needs no credentials), and the probes, which come from another address (the kubelet, a load balancer,
/// the container's own check on 127.0.0.1), were closed at once: the broker looked dead while it was fine (until
/// 2026-12-06). With the share alone, a peer with four addresses (or one on the prober's own address) still did so
/// (until the evening session of 2026-12-07): now the probe's connection closes a hoarder's idle one instead, and a
/// request in progress (a long /api call, a dashboard page) is never cut. The total stays bounded. An IPv6 peer counts by
/// its /64, the block one host is normally given, so that it cannot take a share per address of its own block.
/// A request is "in progress" from the moment the HTTP pipeline sees it (<see cref="TrackRequestsAsync"/>) until its
/// answer is written; a connection still sending its request's headers counts as idle (Kestrel's header timeout bounds
/// it anyway), and a request that reaches the pipeline after its connection was chosen answers 503 without running.
/// </remarks>
internal sealed class PeerConnectionLimit
{
    /// <summary>The key under which a connection's <see cref="Slot"/> sits in its connection's <c>Items</c>.</summary>
    private static readonly object s_slotKey = new();

    private readonly string _port;
    private readonly int _max;
    private readonly int _maxPerAddress;
    private readonly ILogger _logger;
    private readonly LogRateLimiter _totalLog = new(1, TimeProvider.System);
    private readonly LogRateLimiter _peerLog = new(1, TimeProvider.System);
    private readonly LogRateLimiter _evictLog = new(1, TimeProvider.System);
    private readonly Dictionary<IPAddress, int> _perPeer = [];
    private readonly HashSet<Slot> _slots = [];
    private long _tick;
    private long _evicted;

    /// <summary>One open connection: its peer key, how to close it, and whether it has a request in progress.</summary>
    internal sealed class Slot(IPAddress peer, Action abort)
    {
        public IPAddress Peer { get; } = peer;
        internal Action Abort { get; } = abort;
        /// <summary>Requests in progress (HTTP/1.1: 0 or 1).</summary>
        internal int Requests;
        /// <summary>The limit's tick when the connection was accepted or its last request ended: lower is idle longer.</summary>
        internal long IdleSince;
        /// <summary>No longer counted: it left, or it was closed to make room.</summary>
        internal bool Gone;
    }

    public PeerConnectionLimit(string port, int max, int maxPerAddress, ILogger logger)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(max, 1);
        ArgumentOutOfRangeException.ThrowIfLessThan(maxPerAddress, 1);
        _port = port;
        _max = max;
        _maxPerAddress = Math.Min(maxPerAddress, max);
        _logger = logger;
    }

    /// <summary>Idle connections closed to make room for a new one, since start (<c>/api/stats</c>).</summary>
    public long Evicted => Interlocked.Read(ref _evicted);

    /// <summary>Connections counted now.</summary>
    public int Open
    {
        get { lock (_slots) return _slots.Count; }
    }

    /// <summary>Connections counted now with a request in progress (tests).</summary>
    internal int Busy
    {
        get { lock (_slots) return _slots.Count(s => s.Requests > 0); }
    }

    public async Task OnConnectionAsync(ConnectionContext connection, ConnectionDelegate next)
    {
        IPAddress peer = PeerOf(connection.RemoteEndPoint);
        Slot? slot = TryEnter(peer, () => connection.Abort(new ConnectionAbortedException("closed to make room for a new connection")), out bool perAddress);
        if (slot is null)
        {
            // Returning ends the connection. Once a minute at most: a flood of connections must not flood the log.
            if (perAddress && _peerLog.TryEnter(out long suppressedPeer))
                _logger.LogWarning("{Port} connection from {Peer} refused: {Max} connections from that address already open, each with a request in progress ({Suppressed} more refusals not logged since the last line)",
                    _port, peer, _maxPerAddress, suppressedPeer);
            else if (!perAddress && _totalLog.TryEnter(out long suppressed))
                _logger.LogWarning("{Port} connection refused: {Max} connections already open, each with a request in progress ({Suppressed} more refusals not logged since the last line)",
                    _port, _max, suppressed);
            return;
        }

        connection.Items[s_slotKey] = slot;
        try
        {
            await next(connection).ConfigureAwait(false);
        }
        finally
        {
            Leave(slot);
        }
    }

    /// <summary>
    /// HTTP middleware for the port's pipeline: marks the connection busy from the moment a request reaches the pipeline
    /// until its answer is written (Kestrel's OnCompleted, after it flushed the end of the response; the pipeline returns
    /// before that), so that no answer is cut to make room. A request on a connection already chosen to make room (its
    /// headers were parsed as the close was on its way) answers 503 without running: a commit, rollback or topic delete
    /// either runs and is answered, or does not run. A request on a connection this limit does not count (another port)
    /// passes untouched.
    /// </summary>
    public async Task TrackRequestsAsync(HttpContext context, Func<Task> next)
    {
        if (context.Features.Get<IConnectionItemsFeature>()?.Items is not { } items
            || !items.TryGetValue(s_slotKey, out object? value) || value is not Slot slot)
        {
            await next().ConfigureAwait(false);
            return;
        }

        if (!RequestStarted(slot))
        {
            context.Response.StatusCode = StatusCodes.Status503ServiceUnavailable;
            context.Response.Headers.Connection = "close";
            await context.Response.WriteAsJsonAsync(new
            {
                error = "this connection was closed to make room for a new one before the request arrived; the request did not run, send it again",
                code = "ConnectionClosed",
            }).ConfigureAwait(false);
            return;
        }

        // Kestrel runs OnCompleted for every request it started, also after an exception or an abort (and a connection
        // that ends is uncounted by Leave anyway).
        context.Response.OnCompleted(() =>
        {
            RequestEnded(slot);
            return Task.CompletedTask;
        });
        await next().ConfigureAwait(false);
    }

    /// <summary>
    /// Counts a connection from <paramref name="peer"/> (a key from <see cref="PeerOf"/>), closing an idle one with
    /// <see cref="Slot.Abort"/> when a limit is reached; null when the limit is reached and nothing is idle, and then
    /// <paramref name="perAddress"/> says which limit refused it.
    /// </summary>
    internal Slot? TryEnter(IPAddress peer, Action abort, out bool perAddress)
    {
        Slot? victim;
        Slot slot;
        bool victimOfShare;
        // A lock, not counters: the two limits must be checked and taken together, and admin connections are few (a scan
        // of at most max slots for an eviction is cheap next to the TCP handshake that asked for it).
        lock (_slots)
        {
            _perPeer.TryGetValue(peer, out int fromPeer);
            perAddress = fromPeer >= _maxPerAddress;
            victim = null;
            victimOfShare = perAddress;
            if (perAddress) victim = LongestIdle(peer);
            else if (_slots.Count >= _max) victim = LongestIdleOfLargestPeer();
            if ((perAddress || _slots.Count >= _max) && victim is null) return null;
            if (victim is not null) Remove(victim);
            slot = new Slot(peer, abort) { IdleSince = ++_tick };
            _slots.Add(slot);
            _perPeer[peer] = _perPeer.GetValueOrDefault(peer) + 1;
        }

        if (victim is not null)
        {
            Interlocked.Increment(ref _evicted);
            if (_evictLog.TryEnter(out long suppressed))
            {
                if (victimOfShare)
                    _logger.LogWarning("{Port} connection from {Peer} made room by closing an idle connection from the same address ({Max} from that address were open; {Suppressed} more not logged since the last line)",
                        _port, peer, _maxPerAddress, suppressed);
                else
                    _logger.LogWarning("{Port} connection from {Peer} made room by closing an idle connection from {Victim}, the address holding the most ({Max} connections were open; {Suppressed} more not logged since the last line)",
                        _port, peer, victim.Peer, _max, suppressed);
            }

            victim.Abort(); // outside the lock: aborting a transport may run continuations
        }

        return slot;
    }

    internal void Leave(Slot slot)
    {
        lock (_slots)
        {
            if (!slot.Gone) Remove(slot);
        }
    }

    /// <summary>Marks a request in progress on <paramref name="slot"/>; false when the connection was already chosen to
    /// make room (or has left): then the request must not run. Under the same lock as the choice, so exactly one of the
    /// two wins: a busy connection is never chosen, and a chosen one never starts a request.</summary>
    internal bool RequestStarted(Slot slot)
    {
        lock (_slots)
        {
            if (slot.Gone) return false;
            slot.Requests++;
            return true;
        }
    }

    internal void RequestEnded(Slot slot)
    {
        lock (_slots)
        {
            slot.Requests--;
            slot.IdleSince = ++_tick;
        }
    }

    private void Remove(Slot slot)
    {
        slot.Gone = true;
        _slots.Remove(slot);
        // Removed at zero, so the map holds only addresses with open connections and cannot grow with every peer seen.
        if (_perPeer[slot.Peer] == 1) _perPeer.Remove(slot.Peer);
        else _perPeer[slot.Peer]--;
    }

    private Slot? LongestIdle(IPAddress peer)
    {
        Slot? best = null;
        foreach (Slot s in _slots)
            if (s.Requests == 0 && s.Peer.Equals(peer) && (best is null || s.IdleSince < best.IdleSince)) best = s;
        return best;
    }

    /// <summary>The longest idle connection of the address holding the most connections among those with one idle
    /// (on a tie, the one idle longest).</summary>
    private Slot? LongestIdleOfLargestPeer()
    {
        Slot? best = null;
        int bestCount = 0;
        foreach (Slot s in _slots)
        {
            if (s.Requests != 0) continue;
            int count = _perPeer[s.Peer];
            if (best is null || count > bestCount || (count == bestCount && s.IdleSince < best.IdleSince))
            {
                best = s;
                bestCount = count;
            }
        }

        return best;
    }

    /// <summary>The address a connection is counted under (<see cref="AddressShare.PeerOf"/>: IPv6 by its /64), the same
    /// rule as the gRPC and Remoting ports' shares.</summary>
    internal static IPAddress PeerOf(EndPoint? remote) => AddressShare.PeerOf(remote);
}
