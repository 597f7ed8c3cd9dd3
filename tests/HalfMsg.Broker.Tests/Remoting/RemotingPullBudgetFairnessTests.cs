using System.Buffers;
using System.IO.Pipelines;
using HalfMsg.Broker.Core;
using HalfMsg.Broker.FrontEnds.Remoting;
using HalfMsg.Broker.Tests.Infrastructure;
using HalfMsg.Protocol.Remoting;
using Microsoft.Extensions.Logging.Abstractions;

namespace HalfMsg.Broker.Tests.Remoting;

/// <summary>The broker-wide budget of pulled bytes (<c>--remoting-max-pull-bytes</c>) is shared: connections that hold
/// it cannot keep a connection that holds none of it from its first message (found by review, 2026-12-06).</summary>
public sealed class RemotingPullBudgetFairnessTests : IAsyncLifetime
{
    private const long Budget = 2L * 1024 * 1024;
    private const int MessageSize = 256 * 1024;
    private readonly string _dir = Path.Combine(Path.GetTempPath(), "halfmsg-pullfair-" + Guid.NewGuid().ToString("N"));
    private BrokerEngine _engine = null!;

    public async Task InitializeAsync()
    {
        _engine = await BrokerEngine.OpenAsync(new CoreOptions { DataDir = _dir, QueuesPerTopic = 1 });
        for (int i = 0; i < 40; i++)
        {
            var r = await _engine.SendAsync(new Core.Model.MessageDraft { Topic = "Big", MessageId = $"m{i}", Body = new byte[MessageSize] });
            Assert.True(r.Error.IsOk, r.Error.ToString());
        }
        var s = await _engine.SendAsync(new Core.Model.MessageDraft { Topic = "Small", MessageId = "s0", Body = new byte[600 * 1024] });
        Assert.True(s.Error.IsOk, s.Error.ToString());
    }

    public async Task DisposeAsync()
    {
        await _engine.DisposeAsync();
        try { Directory.Delete(_dir, true); } catch (IOException) { }
    }

    private static byte[] Pull(string topic, long offset, int opaque) => RemotingPullBudgetTests.Pull(topic, offset, opaque);

    private static async Task<RemotingCommand> ReadOneAsync(Pipe toClient)
    {
        while (true)
        {
            var result = await toClient.Reader.ReadAsync().AsTask().WaitAsync(TimeSpan.FromSeconds(30));
            var buffer = result.Buffer;
            if (RemotingFrame.TryReadFrame(ref buffer, 1 << 24, out var frame))
            {
                toClient.Reader.AdvanceTo(buffer.Start);
                return frame;
            }
            toClient.Reader.AdvanceTo(buffer.Start, buffer.End);
        }
    }

    /// <summary>
    /// One slow connection (a consumer on a slow link catching up a backlog, or one that reads a little every few
    /// seconds, which the write-stall timeout never closes) holds the whole broker-wide budget, well within its own
    /// budget: a connection that holds nothing still gets its first message at once, and the broker holds at most twice
    /// the budget. Before, every pull of every other connection was answered SYSTEM_BUSY for as long as the slow one
    /// held its share, even for a message well under --max-message-size.
    /// </summary>
    [Fact]
    public async Task A_connection_that_holds_nothing_gets_its_first_message_while_a_slow_connection_holds_the_brokers_budget()
    {
        var server = new RemotingServer(_engine, new RemotingOptions
        {
            MaxPullBytes = Budget, // per connection: the default 64 MiB
            WriteStallTimeout = TimeSpan.FromMinutes(10), // a reader that takes a few bytes now and then is never closed
        }, NullLoggerFactory.Instance);
        var (toServerA, toClientA) = (new Pipe(), new Pipe());
        var (toServerB, toClientB) = (new Pipe(), new Pipe());
        var a = new RemotingSession(new DuplexPipe(toServerA.Reader, toClientA.Writer), server, null, null, nameServerOnly: false);
        var b = new RemotingSession(new DuplexPipe(toServerB.Reader, toClientB.Writer), server, null, null, nameServerOnly: false);
        var runA = a.RunAsync(CancellationToken.None);
        var runB = b.RunAsync(CancellationToken.None);
        try
        {
            // A: a few pulls whose answers it does not read (yet).
            for (int i = 1; i <= 4; i++) await toServerA.Writer.WriteAsync(Pull("Big", 0, i));
            await RemotingBroker.EventuallyAsync(() => Task.FromResult(server.PullBytes), n => n >= Budget - MessageSize, TimeSpan.FromSeconds(30), "A to hold the broker's budget");
            await RemotingBroker.EventuallyAsync(() => Task.FromResult(a.RequestsInProgress), n => n == 0, TimeSpan.FromSeconds(30), "A's pulls processed");

            // B holds nothing and asks for one 600 KiB message (the broker allows 4 MiB).
            await toServerB.Writer.WriteAsync(Pull("Small", 0, 100));
            var answer = await ReadOneAsync(toClientB);
            Assert.True(answer.Code == ResponseCode.Success,
                $"a connection holding nothing was refused while another connection held the broker's pull budget: {answer.Code} {answer.Remark}");
            Assert.True(server.PullBytes <= 2 * Budget, $"the broker holds {server.PullBytes} pulled bytes, more than twice its budget");

            // A, which holds its share, is still held to the budget: another pull of it gets nothing more.
            await toServerA.Writer.WriteAsync(Pull("Big", 8, 99));
            await RemotingBroker.EventuallyAsync(() => Task.FromResult(a.RequestsInProgress), n => n == 0, TimeSpan.FromSeconds(30), "A's last pull processed");
            Assert.True(a.PulledBytes <= Budget, $"the slow connection holds {a.PulledBytes} pulled bytes, more than the budget");
        }
        finally
        {
            await toServerA.Writer.CompleteAsync();
            await toClientA.Reader.CompleteAsync();
            await toServerB.Writer.CompleteAsync();
            await toClientB.Reader.CompleteAsync();
            await Task.WhenAll(runA, runB).WaitAsync(TimeSpan.FromSeconds(10));
        }
    }
}
