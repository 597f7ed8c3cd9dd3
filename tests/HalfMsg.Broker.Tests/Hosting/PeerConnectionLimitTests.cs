using System.Net;
using HalfMsg.Broker.Hosting;
using Microsoft.AspNetCore.Connections;
using Microsoft.AspNetCore.Connections.Features;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Http.Features;
using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.Logging.Abstractions;

namespace HalfMsg.Broker.Tests.Hosting;

/// <summary>The admin port's count of connections, in all and per peer address, without a broker.</summary>
public sealed class PeerConnectionLimitTests
{
    private static IPAddress Peer(string address) => PeerConnectionLimit.PeerOf(new IPEndPoint(IPAddress.Parse(address), 40000));

    /// <summary>Enters a connection and marks a request in progress on it, so that it is never closed to make room.</summary>
    private static PeerConnectionLimit.Slot? Busy(PeerConnectionLimit limit, IPAddress peer, out bool perAddress)
    {
        PeerConnectionLimit.Slot? slot = limit.TryEnter(peer, () => throw new InvalidOperationException("a busy connection was closed"), out perAddress);
        if (slot is not null) limit.RequestStarted(slot);
        return slot;
    }

    private static PeerConnectionLimit.Slot Idle(PeerConnectionLimit limit, IPAddress peer, List<string> closed, string name)
        => limit.TryEnter(peer, () => closed.Add(name), out _) ?? throw new InvalidOperationException($"{name} was refused");

    [Fact]
    public void With_every_connection_busy_one_address_gets_its_share_others_get_the_rest_and_the_total_stays_bounded()
    {
        var limit = new PeerConnectionLimit("test", max: 5, maxPerAddress: 2, NullLogger.Instance);
        IPAddress a = Peer("10.0.0.1"), b = Peer("10.0.0.2"), c = Peer("10.0.0.3");
        var a1 = Busy(limit, a, out _)!;
        Assert.NotNull(Busy(limit, a, out _));
        Assert.Null(Busy(limit, a, out bool perAddress));
        Assert.True(perAddress);
        var b1 = Busy(limit, b, out _)!;
        Assert.NotNull(Busy(limit, b, out _));
        Assert.NotNull(Busy(limit, c, out _));
        Assert.Null(Busy(limit, c, out perAddress)); // c has one of its two, but the port has all five
        Assert.False(perAddress);

        limit.Leave(a1);
        Assert.NotNull(Busy(limit, c, out _)); // a freed slot serves any address under its share
        Assert.Null(Busy(limit, a, out perAddress));
        Assert.False(perAddress);
        limit.Leave(b1);
        Assert.NotNull(Busy(limit, a, out _));
        Assert.Equal(5, limit.Open);
        Assert.Equal(0, limit.Evicted);
    }

    [Fact]
    public void A_share_above_the_total_is_the_total()
    {
        var limit = new PeerConnectionLimit("test", max: 3, maxPerAddress: 10, NullLogger.Instance);
        IPAddress a = Peer("10.0.0.1");
        for (int i = 0; i < 3; i++) Assert.NotNull(Busy(limit, a, out _));
        Assert.Null(Busy(limit, a, out bool perAddress));
        Assert.True(perAddress);
    }

    /// <summary>
    /// A new connection on a full port closes the longest idle connection of the address holding the most; busy ones
    /// are passed over, and only when nothing is idle is the new one refused. Until the evening session of 2026-12-07 it
    /// was refused whenever the port was full.
    /// </summary>
    [Fact]
    public void A_full_port_closes_the_longest_idle_connection_of_the_address_holding_the_most_never_a_busy_one()
    {
        var limit = new PeerConnectionLimit("test", max: 5, maxPerAddress: 3, NullLogger.Instance);
        IPAddress a = Peer("10.0.0.1"), b = Peer("10.0.0.2"), c = Peer("10.0.0.3"), d = Peer("10.0.0.4");
        var closed = new List<string>();
        Assert.NotNull(Busy(limit, a, out _));
        Idle(limit, a, closed, "a2");
        Idle(limit, a, closed, "a3");
        Idle(limit, b, closed, "b1");
        Idle(limit, b, closed, "b2");

        Idle(limit, c, closed, "c1"); // a holds the most (3): its longest idle, a2, makes room (a1 is busy)
        Assert.Equal(["a2"], closed);
        Idle(limit, d, closed, "d1"); // a and b hold two each: the longest idle of theirs, a3
        Assert.Equal(["a2", "a3"], closed);
        Assert.Equal(5, limit.Open);
        Assert.Equal(2, limit.Evicted);
    }

    [Fact]
    public void A_connection_whose_request_ended_is_idle_again_and_counts_as_idle_since_then()
    {
        var limit = new PeerConnectionLimit("test", max: 3, maxPerAddress: 3, NullLogger.Instance);
        IPAddress a = Peer("10.0.0.1"), b = Peer("10.0.0.2");
        var closed = new List<string>();
        var first = Idle(limit, a, closed, "a1");
        limit.RequestStarted(first);
        var second = Idle(limit, a, closed, "a2");
        limit.RequestStarted(second);
        Idle(limit, a, closed, "a3");
        limit.RequestStarted(limit.TryEnter(b, () => { }, out _) ?? throw new InvalidOperationException("a3 made no room"));
        Assert.Equal(["a3"], closed);

        // Now every connection is busy: a fourth is refused.
        Assert.Null(limit.TryEnter(b, () => { }, out bool perAddress));
        Assert.False(perAddress);
        limit.RequestEnded(second); // a2 idle first, then a1: a2 has been idle longer
        limit.RequestEnded(first);
        Idle(limit, b, closed, "b2");
        Assert.Equal(["a3", "a2"], closed);
        Idle(limit, b, closed, "b3"); // b now holds the most (b1 busy, b2 idle): b2 makes room, not a1
        Assert.Equal(["a3", "a2", "b2"], closed);
        Assert.Equal(3, limit.Open);
    }

    /// <summary>
    /// Over the share of its own address, a new connection closes that address's longest idle connection, not another
    /// address's: a prober on 127.0.0.1 gets in beside a hoarder on 127.0.0.1. Until the evening session of 2026-12-07 it
    /// was refused.
    /// </summary>
    [Fact]
    public void Over_its_share_an_address_closes_its_own_longest_idle_connection()
    {
        var limit = new PeerConnectionLimit("test", max: 10, maxPerAddress: 2, NullLogger.Instance);
        IPAddress a = Peer("127.0.0.1"), b = Peer("10.0.0.2");
        var closed = new List<string>();
        Idle(limit, b, closed, "b1");
        Assert.NotNull(Busy(limit, a, out _));
        Idle(limit, a, closed, "a2");
        Idle(limit, a, closed, "a3");
        Assert.Equal(["a2"], closed);
        Idle(limit, a, closed, "a4");
        Assert.Equal(["a2", "a3"], closed);
        Assert.Equal(3, limit.Open);
        limit.RequestStarted(limit.TryEnter(a, () => { }, out _)!); // closes a4; now both of a's are busy
        Assert.Null(limit.TryEnter(a, () => { }, out bool perAddress));
        Assert.True(perAddress);
        Assert.Equal(["a2", "a3", "a4"], closed);
    }

    [Fact]
    public void A_closed_connection_leaving_afterwards_is_not_counted_twice()
    {
        var limit = new PeerConnectionLimit("test", max: 2, maxPerAddress: 2, NullLogger.Instance);
        IPAddress a = Peer("10.0.0.1"), b = Peer("10.0.0.2");
        var closed = new List<string>();
        var a1 = Idle(limit, a, closed, "a1");
        Idle(limit, a, closed, "a2");
        Idle(limit, b, closed, "b1");
        Assert.Equal(["a1"], closed);
        limit.Leave(a1); // its connection ends after it was closed to make room
        Assert.Equal(2, limit.Open);
        Idle(limit, b, closed, "b2");
        Assert.Equal(["a1", "a2"], closed);
        Assert.Equal(2, limit.Open);
    }

    [Fact]
    public void Evictions_are_logged_at_most_once_a_minute_and_counted_every_time()
    {
        var logger = new HalfMsg.TestKit.ListLogger<PeerConnectionLimitTests>();
        var limit = new PeerConnectionLimit("admin", max: 2, maxPerAddress: 2, logger);
        IPAddress a = Peer("10.0.0.1"), b = Peer("10.0.0.2");
        var closed = new List<string>();
        Idle(limit, a, closed, "a1");
        Idle(limit, a, closed, "a2");
        for (int i = 0; i < 10; i++) Idle(limit, b, closed, $"b{i}");
        Assert.Equal(10, closed.Count);
        Assert.Equal(10, limit.Evicted);
        var line = Assert.Single(logger.Entries);
        Assert.Equal(Microsoft.Extensions.Logging.LogLevel.Warning, line.Level);
        Assert.Contains("admin connection from 10.0.0.2 made room by closing an idle connection from 10.0.0.1", line.Message);
    }

    /// <summary>A connection counted by <paramref name="limit"/> as Kestrel would hand it over, held open until
    /// <paramref name="held"/> completes; its connection items carry what the request middleware reads.</summary>
    private static (Connection Connection, Task Running) Connect(PeerConnectionLimit limit, string from, Task held)
    {
        var connection = new Connection { RemoteEndPoint = new IPEndPoint(IPAddress.Parse(from), 40000) };
        return (connection, limit.OnConnectionAsync(connection, _ => held));
    }

    /// <summary>A connection that records its close at once (the default one signals it on the thread pool).</summary>
    private sealed class Connection : DefaultConnectionContext
    {
        public volatile bool Closed;

        public override void Abort(ConnectionAbortedException abortReason) => Closed = true;
    }

    /// <summary>A request on <paramref name="connection"/> whose server has finished the application's part but has
    /// not yet written the whole answer until <see cref="CompletingResponse.Complete"/>.</summary>
    private static (DefaultHttpContext Context, CompletingResponse Response) RequestOn(Connection connection)
    {
        var context = new DefaultHttpContext();
        var response = new CompletingResponse();
        context.Features.Set<IHttpResponseFeature>(response);
        context.Features.Set<IConnectionItemsFeature>(connection);
        return (context, response);
    }

    /// <summary>A response feature that runs its OnCompleted callbacks when the test says the answer is written, as
    /// Kestrel runs them after its last bytes are flushed.</summary>
    private sealed class CompletingResponse : HttpResponseFeature
    {
        private readonly List<(Func<object, Task> Callback, object State)> _completed = [];

        public override void OnCompleted(Func<object, Task> callback, object state) => _completed.Add((callback, state));

        public async Task Complete()
        {
            for (int i = _completed.Count - 1; i >= 0; i--) await _completed[i].Callback(_completed[i].State);
        }
    }

    /// <summary>
    /// A request that reaches the admin pipeline on a connection already chosen to make room (its headers were parsed
    /// as the close was on its way) answers 503 without running: a commit, rollback or topic delete either runs and is
    /// answered, or does not run. Until the evening session of 2026-12-07 it ran, and the close then cut its answer, so
    /// the operator never learned whether a non-idempotent POST had taken effect.
    /// </summary>
    [Fact]
    public async Task A_request_on_a_connection_already_chosen_to_make_room_answers_503_without_running()
    {
        var limit = new PeerConnectionLimit("admin", max: 10, maxPerAddress: 1, NullLogger.Instance);
        var hold = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var (first, firstRunning) = Connect(limit, "10.0.0.1", hold.Task);
        var (_, secondRunning) = Connect(limit, "10.0.0.1", hold.Task); // over the share: the idle first makes room
        Assert.Equal(1, limit.Evicted);
        Assert.True(first.Closed, "the first connection was not closed");

        var (context, _) = RequestOn(first);
        bool ran = false;
        await limit.TrackRequestsAsync(context, () =>
        {
            ran = true;
            return Task.CompletedTask;
        });

        Assert.False(ran, "the request ran on a connection being closed: its answer would be cut");
        Assert.Equal(StatusCodes.Status503ServiceUnavailable, context.Response.StatusCode);
        Assert.Equal(1, limit.Open);
        hold.SetResult();
        await Task.WhenAll(firstRunning, secondRunning);
        Assert.Equal(0, limit.Open);
    }

    /// <summary>
    /// A request starting and a newcomer choosing a connection to close, at the same moment on two threads, many times:
    /// exactly one wins each time. The request runs and its connection stays open, or the connection is closed and the
    /// request does not run; never both, never neither.
    /// </summary>
    [Fact]
    public async Task A_request_starting_and_a_newcomer_choosing_a_connection_to_close_never_both_win()
    {
        var limit = new PeerConnectionLimit("admin", max: 10, maxPerAddress: 1, NullLogger.Instance);
        IPAddress a = Peer("10.0.0.1");
        int requestWon = 0, closeWon = 0;
        for (int i = 0; i < 2000; i++)
        {
            int closed = 0;
            PeerConnectionLimit.Slot slot = limit.TryEnter(a, () => Interlocked.Exchange(ref closed, 1), out _)
                ?? throw new InvalidOperationException("the only connection of its address was refused");
            using var start = new Barrier(2);
            Task<bool> request = Task.Run(() =>
            {
                start.SignalAndWait();
                return limit.RequestStarted(slot);
            });
            Task<PeerConnectionLimit.Slot?> newcomer = Task.Run(() =>
            {
                start.SignalAndWait();
                return limit.TryEnter(a, () => { }, out _);
            });
            bool ran = await request;
            PeerConnectionLimit.Slot? entered = await newcomer;
            Assert.True(ran != (Volatile.Read(ref closed) == 1), $"round {i}: request ran {ran}, connection closed {closed == 1}");
            Assert.Equal(ran, entered is null); // a busy connection is passed over, so the newcomer is refused
            if (ran) requestWon++; else closeWon++;

            // Back to no connection from the address.
            if (ran) limit.RequestEnded(slot);
            limit.Leave(slot);
            if (entered is not null) limit.Leave(entered);
            Assert.Equal(0, limit.Open);
        }

        Assert.Equal(2000, requestWon + closeWon);
    }

    /// <summary>
    /// A connection whose request has left the pipeline but whose answer is still being written (Kestrel ends the
    /// response after the application returns) is not idle: a newcomer over the share is refused rather than cut that
    /// answer; once the answer is written the connection is idle and makes room. Until the evening session of
    /// 2026-12-07 it counted as idle as soon as the pipeline returned.
    /// </summary>
    [Fact]
    public async Task A_connection_still_writing_its_answer_is_not_closed_to_make_room_until_the_answer_is_written()
    {
        var limit = new PeerConnectionLimit("admin", max: 10, maxPerAddress: 1, NullLogger.Instance);
        var hold = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        try
        {
            var (first, firstRunning) = Connect(limit, "10.0.0.1", hold.Task);
            var (context, response) = RequestOn(first);
            bool ran = false;
            await limit.TrackRequestsAsync(context, () =>
            {
                ran = true;
                return Task.CompletedTask;
            });
            Assert.True(ran);

            var (_, refusedRunning) = Connect(limit, "10.0.0.1", hold.Task);
            Assert.False(first.Closed, "the answer still being written was cut");
            Assert.True(refusedRunning.IsCompleted, "the newcomer was not refused"); // a refusal returns at once
            Assert.Equal(0, limit.Evicted);

            await response.Complete();
            var (_, thirdRunning) = Connect(limit, "10.0.0.1", hold.Task);
            Assert.True(first.Closed, "the idle connection did not make room once its answer was written");
            Assert.Equal(1, limit.Evicted);
            hold.SetResult();
            await Task.WhenAll(firstRunning, thirdRunning);
            Assert.Equal(0, limit.Open);
        }
        finally
        {
            hold.TrySetResult(); // on a failure, lets the connections end
        }
    }

    [Fact]
    public void An_IPv6_peer_counts_by_its_64_and_an_IPv4_mapped_peer_as_IPv4()
    {
        Assert.Equal(Peer("2001:db8:1:2::1"), Peer("2001:db8:1:2:ffff:1:2:3"));
        Assert.NotEqual(Peer("2001:db8:1:2::1"), Peer("2001:db8:1:3::1"));
        Assert.Equal(Peer("fe80::1%2"), Peer("fe80::2%3"));
        Assert.Equal(IPAddress.Parse("192.0.2.7"), Peer("::ffff:192.0.2.7"));
        Assert.Equal(IPAddress.Parse("192.0.2.7"), Peer("192.0.2.7"));
        Assert.NotEqual(Peer("127.0.0.1"), Peer("127.0.0.2"));
        Assert.Equal(IPAddress.None, PeerConnectionLimit.PeerOf(null));
    }

    [Fact]
    public void The_share_per_address_has_a_flag_bounded_by_the_ports_limit()
    {
        static BrokerOptions Bind(params string[] args)
            => BrokerConfiguration.Bind(new ConfigurationBuilder().AddInMemoryCollection(BrokerConfiguration.ParseCommandLine(args)).Build());

        Assert.Equal(AdminEndpoint.DefaultMaxConnectionsPerAddress, Bind().AdminMaxConnectionsPerAddress);
        Assert.Equal(AdminEndpoint.DefaultMaxConnectionsPerAddress, new BrokerOptions().AdminMaxConnectionsPerAddress);
        Assert.Equal(8, Bind("--admin-max-connections-per-address", "8").AdminMaxConnectionsPerAddress);
        Assert.Equal(AdminEndpoint.MaxConnections, Bind("--admin-max-connections-per-address", "256").AdminMaxConnectionsPerAddress);
        var ex = Assert.Throws<BrokerConfigurationException>(() => Bind("--admin-max-connections-per-address", "0"));
        Assert.Contains("--admin-max-connections-per-address must be a whole number in [1, 256]", ex.Message);
        Assert.Throws<BrokerConfigurationException>(() => Bind("--admin-max-connections-per-address", "257"));
    }
}
