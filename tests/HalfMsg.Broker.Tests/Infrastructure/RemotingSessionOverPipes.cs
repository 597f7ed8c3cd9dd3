using System.IO.Pipelines;
using HalfMsg.Broker.Core;
using HalfMsg.Broker.FrontEnds.Remoting;
using Microsoft.Extensions.Logging.Abstractions;

namespace HalfMsg.Broker.Tests.Infrastructure;

/// <summary>
/// An engine on its own temp dir and one Remoting session on it over two in-memory pipes, no socket or Kestrel: what
/// the Remoting check-back queue tests drive. The pipe to the client pauses its writer past 64 KiB, so a client that
/// reads nothing holds the session's write loop in its first large flush.
/// </summary>
internal sealed class RemotingSessionOverPipes : IAsyncDisposable
{
    private readonly string _dir;

    private RemotingSessionOverPipes(string dir, BrokerEngine engine, RemotingOptions options)
    {
        _dir = dir;
        Engine = engine;
        Server = new RemotingServer(engine, options, NullLoggerFactory.Instance);
        Session = new RemotingSession(new DuplexPipe(ToServer.Reader, ToClient.Writer), Server, null, null, nameServerOnly: false);
        Run = Session.RunAsync(CancellationToken.None);
    }

    public BrokerEngine Engine { get; }
    public RemotingServer Server { get; }
    public RemotingSession Session { get; }

    /// <summary>The session's run: ends once both pipes are completed.</summary>
    public Task Run { get; }

    /// <summary>What the client writes (requests) to the session.</summary>
    public Pipe ToServer { get; } = new();

    /// <summary>What the session writes to the client.</summary>
    public Pipe ToClient { get; } = new(new PipeOptions(pauseWriterThreshold: 64 * 1024, resumeWriterThreshold: 32 * 1024));

    /// <summary>Opens the engine (two queues per topic) in a new temp dir named after <paramref name="dirPrefix"/>.</summary>
    public static async Task<RemotingSessionOverPipes> OpenAsync(string dirPrefix, RemotingOptions? options = null,
        TimeProvider? clock = null, bool startBackgroundLoops = true)
    {
        string dir = Path.Combine(Path.GetTempPath(), dirPrefix + Guid.NewGuid().ToString("N"));
        var engine = await BrokerEngine.OpenAsync(new CoreOptions { DataDir = dir, QueuesPerTopic = 2 }, clock, startBackgroundLoops: startBackgroundLoops);
        return new RemotingSessionOverPipes(dir, engine, options ?? new RemotingOptions());
    }

    public async ValueTask DisposeAsync()
    {
        await ToServer.Writer.CompleteAsync();
        await ToClient.Reader.CompleteAsync();            // lets a write loop blocked on the full pipe finish
        await Run.WaitAsync(TimeSpan.FromSeconds(10));
        await Engine.DisposeAsync();
        try { Directory.Delete(_dir, true); } catch (IOException) { }
    }
}
