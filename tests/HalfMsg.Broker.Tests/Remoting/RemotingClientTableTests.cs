using System.IO.Pipelines;
using System.Text.Json;
using HalfMsg.Broker.Core;
using HalfMsg.Broker.FrontEnds.Remoting;
using HalfMsg.Broker.Tests.Infrastructure;
using HalfMsg.Protocol.Remoting;
using HalfMsg.TestKit;
using Microsoft.Extensions.Logging.Abstractions;

namespace HalfMsg.Broker.Tests.Remoting;

/// <summary>
/// The consumer-group table of the Remoting front end, driven over in-memory sessions: what a connection may put in it
/// (live sessions only, a bounded number of groups and subscriptions, valid names) and how long it stays there.
/// </summary>
public sealed class RemotingClientTableTests : IAsyncLifetime
{
    private readonly string _dir = Path.Combine(Path.GetTempPath(), "halfmsg-clients-" + Guid.NewGuid().ToString("N"));
    private readonly List<(Pipe ToServer, Pipe ToClient, Task Run)> _sessions = [];
    private BrokerEngine _engine = null!;

    public async Task InitializeAsync()
        => _engine = await BrokerEngine.OpenAsync(new CoreOptions { DataDir = _dir, QueuesPerTopic = 2 });

    public async Task DisposeAsync()
    {
        foreach (var (toServer, toClient, run) in _sessions)
        {
            await toServer.Writer.CompleteAsync();
            await toClient.Reader.CompleteAsync();
            await run.WaitAsync(TimeSpan.FromSeconds(10));
        }
        await _engine.DisposeAsync();
        try { Directory.Delete(_dir, true); } catch (IOException) { }
    }

    private RemotingServer Server(RemotingOptions? options = null, TimeProvider? time = null)
        => new(_engine, options ?? new RemotingOptions(), NullLoggerFactory.Instance) { Time = time ?? TimeProvider.System };

    private (RemotingSession Session, Pipe ToServer, Pipe ToClient) Open(RemotingServer server)
    {
        var toServer = new Pipe();
        var toClient = new Pipe();
        var session = new RemotingSession(new DuplexPipe(toServer.Reader, toClient.Writer), server, null, null, nameServerOnly: false);
        _sessions.Add((toServer, toClient, session.RunAsync(CancellationToken.None)));
        return (session, toServer, toClient);
    }

    /// <summary>A heartbeat already read when its connection closed is still dispatched: it must not leave the dead
    /// session in the group table, where nothing would ever remove it.</summary>
    [Fact]
    public async Task A_registration_after_the_session_closed_leaves_nothing_behind()
    {
        var server = Server();
        var (session, toServer, _) = Open(server);
        await toServer.Writer.CompleteAsync();
        await _sessions[^1].Run.WaitAsync(TimeSpan.FromSeconds(10));
        Assert.False(session.IsAlive);

        server.Clients.RegisterConsumer(session, "LateGroup", "late-client", new Dictionary<string, SubscriptionData> { ["T"] = new("*") });

        Assert.DoesNotContain("LateGroup", server.Clients.Groups());
        Assert.Null(server.Clients.Subscription("LateGroup", "T"));
    }

    private static byte[] Heartbeat(string clientId, params string[] groups)
    {
        var body = JsonSerializer.SerializeToUtf8Bytes(new
        {
            clientID = clientId,
            producerDataSet = Array.Empty<object>(),
            consumerDataSet = groups.Select(g => new { groupName = g, messageModel = "CLUSTERING", subscriptionDataSet = new[] { new { topic = "T", subString = "*" } } }),
        });
        return RemotingFrame.ToArray(RemotingCommand.Request(RequestCode.HeartBeat, body: body));
    }

    /// <summary>Writes a request and returns its answer; the broker's own requests on the way go to <paramref name="seen"/>.</summary>
    private static async Task<RemotingCommand> InvokeAsync(Pipe toServer, Pipe toClient, byte[] frame, List<RemotingCommand>? seen = null)
    {
        await toServer.Writer.WriteAsync(frame);
        while (true)
        {
            var result = await toClient.Reader.ReadAsync().AsTask().WaitAsync(TimeSpan.FromSeconds(10));
            var buffer = result.Buffer;
            RemotingCommand? answer = null;
            while (answer is null && RemotingFrame.TryReadFrame(ref buffer, 1 << 24, out var cmd))
                if (cmd.IsResponse) answer = cmd;
                else seen?.Add(cmd);
            toClient.Reader.AdvanceTo(buffer.Start, buffer.End);
            if (answer is not null) return answer;
        }
    }

    /// <summary>
    /// Java's broker drops a group's channel 120 s after the last heartbeat that named the group (ConsumerManager
    /// scanNotActiveChannel), so a client that stopped one consumer but keeps another leaves the first group. Until
    /// 2026-12-05 a membership lasted as long as the connection.
    /// </summary>
    [Fact]
    public async Task A_group_no_heartbeat_names_for_the_expiry_loses_the_member_and_the_others_are_told()
    {
        var clock = new ManualClock();
        var server = Server(time: clock);
        var (_, aIn, aOut) = Open(server);
        var (_, bIn, bOut) = Open(server);
        Assert.Equal(ResponseCode.Success, (await InvokeAsync(aIn, aOut, Heartbeat("client-a", "G1", "G2"))).Code);
        Assert.Equal(ResponseCode.Success, (await InvokeAsync(bIn, bOut, Heartbeat("client-b", "G1"))).Code);
        Assert.Equal(["client-a", "client-b"], server.Clients.ConsumerIds("G1"));

        // client-a stops its G1 consumer: its heartbeats name only G2 from now on.
        clock.Advance(TimeSpan.FromSeconds(60));
        await InvokeAsync(aIn, aOut, Heartbeat("client-a", "G2"));
        await InvokeAsync(bIn, bOut, Heartbeat("client-b", "G1"));
        clock.Advance(TimeSpan.FromSeconds(61));

        Assert.Equal(["client-b"], server.Clients.ConsumerIds("G1"));
        Assert.Equal(["client-a"], server.Clients.ConsumerIds("G2"));
        // The next heartbeat sweeps the table: client-b is told G1 changed, so it rebalances at once.
        var seen = new List<RemotingCommand>();
        await InvokeAsync(bIn, bOut, Heartbeat("client-b", "G1"), seen);
        if (!seen.Any(c => c.Code == RequestCode.NotifyConsumerIdsChanged && c.Get("consumerGroup") == "G1"))
        {
            var result = await bOut.Reader.ReadAsync().AsTask().WaitAsync(TimeSpan.FromSeconds(10));
            var buffer = result.Buffer;
            Assert.True(RemotingFrame.TryReadFrame(ref buffer, 1 << 24, out var notify));
            bOut.Reader.AdvanceTo(buffer.Start, buffer.End);
            Assert.Equal((RequestCode.NotifyConsumerIdsChanged, "G1"), (notify.Code, notify.Get("consumerGroup")));
        }
        Assert.Equal(["client-b"], server.Clients.ConsumerIds("G1"));
    }

    /// <summary>Each consumer group a connection names is held for the connection's life and costs a NOTIFY to its
    /// members: a connection registers at most 1,024 (as producer groups), only valid names, and a group with more
    /// subscriptions than a consumer has is not registered. The rest of the heartbeat is served.</summary>
    [Fact]
    public async Task A_connection_registers_a_bounded_number_of_valid_consumer_groups()
    {
        var server = Server();
        var (_, toServer, toClient) = Open(server);
        var groups = Enumerable.Range(0, 1500).Select(i => $"cg-{i}").Append("bad name!").Append(new string('g', 256)).ToArray();
        Assert.Equal(ResponseCode.Success, (await InvokeAsync(toServer, toClient, Heartbeat("client-many", groups))).Code);
        Assert.Equal(1024, server.Clients.Groups().Count);
        Assert.DoesNotContain("bad name!", server.Clients.Groups());

        var (_, toServer2, toClient2) = Open(server);
        var body = JsonSerializer.SerializeToUtf8Bytes(new
        {
            clientID = "client-subs",
            consumerDataSet = new[]
            {
                new { groupName = "WideGroup", messageModel = "CLUSTERING", subscriptionDataSet = Enumerable.Range(0, 300).Select(i => new { topic = $"T{i}", subString = "*" }).ToArray() },
                new { groupName = "NarrowGroup", messageModel = "CLUSTERING", subscriptionDataSet = new[] { new { topic = "T", subString = "a || b" } } },
            },
        });
        Assert.Equal(ResponseCode.Success, (await InvokeAsync(toServer2, toClient2, RemotingFrame.ToArray(RemotingCommand.Request(RequestCode.HeartBeat, body: body)))).Code);
        Assert.Empty(server.Clients.ConsumerIds("WideGroup"));
        Assert.Equal("a || b", server.Clients.Subscription("NarrowGroup", "T")?.Expression);
    }

    /// <summary>LOCK_BATCH_MQ locks only queues that exist: a client cannot fill the lock table with names.</summary>
    [Fact]
    public async Task Only_queues_of_existing_topics_are_locked()
    {
        var server = Server();
        var (_, toServer, toClient) = Open(server);
        Assert.True((await _engine.CreateTopicAsync("Locked")).Error.IsOk);
        var body = JsonSerializer.SerializeToUtf8Bytes(new
        {
            consumerGroup = "LockGroup",
            clientId = "client-lock",
            mqSet = new[] { ("Locked", 0), ("Locked", 1), ("Locked", 2), ("Locked", -1), ("NoSuchTopic", 0) }
                .Select(q => new { topic = q.Item1, brokerName = "broker-a", queueId = q.Item2 }).ToArray(),
        });
        var r = await InvokeAsync(toServer, toClient, RemotingFrame.ToArray(RemotingCommand.Request(RequestCode.LockBatchMq, body: body)));
        Assert.Equal(ResponseCode.Success, r.Code);
        using var doc = JsonDocument.Parse(r.Body);
        var locked = doc.RootElement.GetProperty("lockOKMQSet").EnumerateArray().Select(q => (q.GetProperty("topic").GetString(), q.GetProperty("queueId").GetInt32())).Order().ToList();
        Assert.Equal([("Locked", 0), ("Locked", 1)], locked);
        Assert.Equal(2, server.Clients.LockCount);
    }

    private static byte[] LockRequest(string group, string clientId, string topic, int queueId)
        => RemotingFrame.ToArray(RemotingCommand.Request(RequestCode.LockBatchMq, body: JsonSerializer.SerializeToUtf8Bytes(new
        {
            consumerGroup = group,
            clientId,
            mqSet = new[] { new { topic, brokerName = "broker-a", queueId } },
        })));

    /// <summary>
    /// A client id is kept for as long as what it names lives: a connection's (HEART_BEAT clientID) for the connection's
    /// life, a lock's (LOCK_BATCH_MQ clientId) for its lease, each lock request its own string. Until the late-night
    /// session of 2026-12-07 any length a 16 MiB frame holds was kept, so 4,096 locks of one connection could hold
    /// gigabytes. Longer than 1,024 characters (the consumer list's own limit) is refused with a remark naming it, and
    /// nothing is registered or locked; an id of the limit's length still works.
    /// </summary>
    [Fact]
    public async Task A_client_id_longer_than_the_limit_is_refused_and_kept_nowhere()
    {
        var server = Server();
        var (session, toServer, toClient) = Open(server);
        Assert.True((await _engine.CreateTopicAsync("LockedLong")).Error.IsOk);
        string tooLong = new('c', RemotingClients.MaxClientIdLength + 1);
        string longest = new('k', RemotingClients.MaxClientIdLength);

        var refused = await InvokeAsync(toServer, toClient, Heartbeat(tooLong, "LongIdGroup"));
        Assert.Equal(ResponseCode.SystemError, refused.Code);
        Assert.Contains("1024", refused.Remark);
        Assert.NotEqual(tooLong, session.ClientId);
        Assert.DoesNotContain("LongIdGroup", server.Clients.Groups());

        var lockRefused = await InvokeAsync(toServer, toClient, LockRequest("LongIdGroup", tooLong, "LockedLong", 0));
        Assert.Equal(ResponseCode.SystemError, lockRefused.Code);
        Assert.Contains("1024", lockRefused.Remark);
        Assert.Equal(0, server.Clients.LockCount);

        Assert.Equal(ResponseCode.Success, (await InvokeAsync(toServer, toClient, Heartbeat(longest, "LongIdGroup"))).Code);
        Assert.Equal(longest, session.ClientId);
        Assert.Equal([longest], server.Clients.ConsumerIds("LongIdGroup"));
        var locked = await InvokeAsync(toServer, toClient, LockRequest("LongIdGroup", longest, "LockedLong", 0));
        Assert.Equal(ResponseCode.Success, locked.Code);
        Assert.Equal(1, server.Clients.LockCount);
    }

    private static byte[] HeartbeatWith(string clientId, IEnumerable<(string Group, string Expression, string? Type)> groups)
        => RemotingFrame.ToArray(RemotingCommand.Request(RequestCode.HeartBeat, body: JsonSerializer.SerializeToUtf8Bytes(new
        {
            clientID = clientId,
            consumerDataSet = groups.Select(g => new
            {
                groupName = g.Group,
                messageModel = "CLUSTERING",
                subscriptionDataSet = new[] { new { topic = "T", subString = g.Expression, expressionType = g.Type } },
            }).ToArray(),
        })));

    /// <summary>
    /// A connection's memberships keep their subscriptions for as long as its heartbeats renew them: their characters are
    /// bounded over all its groups (<see cref="RemotingClients.MaxSubscriptionCharsPerConnection"/>), the expression's
    /// type included, not only per group. Until the late-night session of 2026-12-07 1,024 groups of 64 Ki characters
    /// each (128 MiB) could be held by one connection, and an expression type of any length by each subscription.
    /// Within the bound a group's subscriptions may change, and a group left frees its room.
    /// </summary>
    [Fact]
    public async Task A_connection_keeps_subscriptions_of_a_bounded_number_of_characters_over_all_its_groups()
    {
        var server = Server();
        var (session, toServer, toClient) = Open(server);
        string wide = new('x', 60_000);
        var groups = Enumerable.Range(0, 20).Select(i => ($"wide-{i}", wide, (string?)null)).ToList();
        Assert.Equal(ResponseCode.Success, (await InvokeAsync(toServer, toClient, HeartbeatWith("client-wide", groups))).Code);

        int fit = RemotingClients.MaxSubscriptionCharsPerConnection / 60_001; // 17: each is 60,000 characters and a topic of one
        Assert.Equal(Enumerable.Range(0, fit).Select(i => $"wide-{i}").Order(), server.Clients.Groups().Order());
        Assert.True(server.Clients.SubscriptionCharsOf(session) <= RemotingClients.MaxSubscriptionCharsPerConnection);

        // A subscription's expression type counts too: one of 70,000 characters alone passes the group's bound.
        var (_, otherIn, otherOut) = Open(server);
        Assert.Equal(ResponseCode.Success, (await InvokeAsync(otherIn, otherOut, HeartbeatWith("client-type", [("typed", "*", new string('t', 70_000))]))).Code);
        Assert.DoesNotContain("typed", server.Clients.Groups());

        // The first group narrows its subscription: the room it frees takes the next group.
        var narrowed = groups.Take(fit + 1).Select((g, i) => i == 0 ? (g.Item1, "*", (string?)"TAG") : g).ToList();
        Assert.Equal(ResponseCode.Success, (await InvokeAsync(toServer, toClient, HeartbeatWith("client-wide", narrowed))).Code);
        Assert.Contains($"wide-{fit}", server.Clients.Groups());
        Assert.Equal("*", server.Clients.Subscription("wide-0", "T")?.Expression);

        await toServer.Writer.CompleteAsync();
        await _sessions[0].Run.WaitAsync(TimeSpan.FromSeconds(10));
        Assert.Equal(0, server.Clients.SubscriptionCharsOf(session));
        Assert.DoesNotContain("wide-0", server.Clients.Groups());
    }
}
