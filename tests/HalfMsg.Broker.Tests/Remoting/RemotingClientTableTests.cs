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

        server.Clients.RegisterConsumer(session, "LateGroup", "late-client", new Dictionary<string, string> { ["T"] = "*" });

        Assert.DoesNotContain("LateGroup", server.Clients.Groups());
        Assert.Null(server.Clients.Subscription("LateGroup", "T"));
    }
}
