using System.Buffers;
using System.IO.Pipelines;
using HalfMsg.Broker.Core;
using HalfMsg.Broker.FrontEnds.Remoting;
using HalfMsg.Broker.Tests.Infrastructure;
using HalfMsg.Protocol.Remoting;
using Microsoft.Extensions.Logging.Abstractions;

namespace HalfMsg.Broker.Tests.Remoting;

/// <summary>
/// VIEW_MESSAGE_BY_ID and QUERY_MESSAGE answers reserve each body's room on the connection's in-flight budget and the
/// broker's budget of pulled bytes before reading it, as a pull does (<see cref="RemotingPullBudgetTests"/>). Until
/// 2026-12-06 they read first and were charged only once built, to their connection alone: a client that pipelined
/// look-ups and read nothing made the broker read a whole answer per look-up being processed (a QUERY_MESSAGE up to
/// 8 MiB) before any was refused.
/// </summary>
public sealed class RemotingLookupBudgetTests : IAsyncLifetime
{
    private const long Budget = 2L * 1024 * 1024;
    private const int MessageSize = 256 * 1024;
    private const int Messages = 32;
    private readonly string _dir = Path.Combine(Path.GetTempPath(), "halfmsg-lookupbudget-" + Guid.NewGuid().ToString("N"));
    private BrokerEngine _engine = null!;

    public async Task InitializeAsync()
    {
        _engine = await BrokerEngine.OpenAsync(new CoreOptions { DataDir = _dir, QueuesPerTopic = 1 });
        for (int i = 0; i < Messages; i++)
        {
            var r = await _engine.SendAsync(new Core.Model.MessageDraft { Topic = "Big", MessageId = $"m{i}", Keys = ["k"], Body = new byte[MessageSize] });
            Assert.True(r.Error.IsOk, r.Error.ToString());
        }
        var huge = await _engine.SendAsync(new Core.Model.MessageDraft { Topic = "Huge", MessageId = "h", Keys = ["h"], Body = new byte[1024 * 1024] });
        Assert.True(huge.Error.IsOk, huge.Error.ToString());
    }

    public async Task DisposeAsync()
    {
        await _engine.DisposeAsync();
        try { Directory.Delete(_dir, true); } catch (IOException) { }
    }

    private static byte[] Frame(RemotingCommand command, int opaque)
    {
        var bytes = new ArrayBufferWriter<byte>();
        command.Opaque = opaque;
        RemotingFrame.Write(bytes, command);
        return bytes.WrittenSpan.ToArray();
    }

    /// <summary>QUERY_MESSAGE for key k of Big: all 32 messages, 8 MiB of bodies.</summary>
    private static byte[] Query(int opaque) => Frame(RemotingCommand.Request(RequestCode.QueryMessage).Set("topic", "Big").Set("key", "k")
        .Set("maxNum", 32L).Set("beginTimestamp", 0L).Set("endTimestamp", long.MaxValue), opaque);

    private static byte[] View(long offset, int opaque) => Frame(RemotingCommand.Request(RequestCode.ViewMessageById).Set("offset", offset), opaque);

    private static void TakeAnswers(Pipe toClient, Dictionary<int, RemotingCommand> answers)
    {
        if (!toClient.Reader.TryRead(out var result)) return;
        var buffer = result.Buffer;
        while (RemotingFrame.TryReadFrame(ref buffer, 1 << 24, out var frame)) Assert.True(answers.TryAdd(frame.Opaque, frame), $"answer {frame.Opaque} twice");
        toClient.Reader.AdvanceTo(buffer.Start, buffer.End);
    }

    /// <summary>Sends <paramref name="requests"/> on one connection that reads nothing while the look-ups that read bodies
    /// are held: what they read is what they hold at once. Returns the bytes read and every answer once all are let go.</summary>
    private async Task<(long Read, Dictionary<int, RemotingCommand> Answers, RemotingServer Server)> RunAsync(RemotingOptions options, IReadOnlyList<byte[]> requests)
    {
        var server = new RemotingServer(_engine, options, NullLoggerFactory.Instance);
        var release = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        long read = 0, holding = 0;
        server.PulledForTests = async bytes =>
        {
            Interlocked.Add(ref read, bytes);
            Interlocked.Increment(ref holding);
            await release.Task;
        };
        var toServer = new Pipe();
        var toClient = new Pipe();
        var session = new RemotingSession(new DuplexPipe(toServer.Reader, toClient.Writer), server, null, null, nameServerOnly: false);
        var run = session.RunAsync(CancellationToken.None);
        var answers = new Dictionary<int, RemotingCommand>();
        long readAtOnce;
        try
        {
            foreach (var request in requests) await toServer.Writer.WriteAsync(request);
            await RemotingBroker.EventuallyAsync(() =>
            {
                TakeAnswers(toClient, answers);
                return Task.FromResult(answers.Count + Interlocked.Read(ref holding));
            }, n => n == requests.Count, TimeSpan.FromSeconds(60), "every look-up to hold its bodies or be answered");
            readAtOnce = Interlocked.Read(ref read);

            release.SetResult();
            await RemotingBroker.EventuallyAsync(() =>
            {
                TakeAnswers(toClient, answers);
                return Task.FromResult(answers.Count);
            }, n => n == requests.Count, TimeSpan.FromSeconds(30), "every look-up answered");
            await RemotingBroker.EventuallyAsync(() => Task.FromResult(session.InFlightBytes + server.PullBytes), n => n == 0, TimeSpan.FromSeconds(30), "every answer released once read");
        }
        finally
        {
            release.TrySetResult();
            await toServer.Writer.CompleteAsync();
            await toClient.Reader.CompleteAsync();
            await run.WaitAsync(TimeSpan.FromSeconds(10));
        }
        return (readAtOnce, answers, server);
    }

    private static void AssertAnsweredOrBusy(Dictionary<int, RemotingCommand> answers, int ok)
    {
        foreach (var a in answers.Values)
        {
            if (a.Code == ok) continue;
            Assert.True(a.Code == ResponseCode.SystemBusy && a.Remark!.StartsWith("[OVERLOAD]", StringComparison.Ordinal), $"{a.Code} {a.Remark}");
        }
        Assert.Contains(answers.Values, a => a.Code == ok);
    }

    [Fact]
    public async Task Pipelined_queries_of_a_connection_read_no_more_bodies_than_its_budget()
    {
        var (read, answers, _) = await RunAsync(new RemotingOptions { MaxInFlightBytesPerConnection = Budget }, [.. Enumerable.Range(1, 20).Select(Query)]);
        Assert.True(read <= Budget, $"20 queries read {read / 1024} KiB of bodies at once on a connection whose budget is {Budget / 1024} KiB");
        AssertAnsweredOrBusy(answers, ResponseCode.Success);
        foreach (var a in answers.Values.Where(a => a.Code == ResponseCode.Success))
            Assert.NotEmpty(StoredMessageCodec.DecodeAll(a.Body.Span));
    }

    [Fact]
    public async Task Queries_read_no_more_bodies_than_the_brokers_budget_of_pulled_bytes()
    {
        var (read, answers, _) = await RunAsync(new RemotingOptions { MaxPullBytes = Budget }, [.. Enumerable.Range(1, 20).Select(Query)]);
        // A connection that holds none of the broker's budget may take one message past it (the fairness rule).
        Assert.True(read <= Budget + MessageSize, $"20 queries read {read / 1024} KiB of bodies at once, broker budget {Budget / 1024} KiB");
        AssertAnsweredOrBusy(answers, ResponseCode.Success);
    }

    [Fact]
    public async Task Pipelined_views_of_a_connection_read_no_more_bodies_than_its_budget()
    {
        long offset = _engine.BodyAddressOf("Huge", 0, 0);
        var (read, answers, _) = await RunAsync(new RemotingOptions { MaxInFlightBytesPerConnection = Budget }, [.. Enumerable.Range(1, 20).Select(i => View(offset, i))]);
        Assert.True(read <= Budget, $"20 views read {read / 1024} KiB of bodies at once on a connection whose budget is {Budget / 1024} KiB");
        AssertAnsweredOrBusy(answers, ResponseCode.Success);
    }
    /// <summary>
    /// An answer of at most 4 KiB always goes out, whatever the connection holds (as every other small answer): a Java
    /// client's consumers, producers and look-ups share one connection per broker, and a slow consumer's unread pulled
    /// answers must not make a look-up of a small message SYSTEM_BUSY (found by the review of the change that reserved
    /// look-ups' room first; before that change they were charged once built, by the small-answer rule).
    /// </summary>
    [Fact]
    public async Task A_view_and_a_query_of_a_small_message_are_answered_on_a_connection_whose_budget_is_held()
    {
        var small = await _engine.SendAsync(new Core.Model.MessageDraft { Topic = "Small", MessageId = "s0", Keys = ["s"], Body = new byte[100] });
        Assert.True(small.Error.IsOk, small.Error.ToString());
        var server = new RemotingServer(_engine, new RemotingOptions { MaxInFlightBytesPerConnection = Budget, MaxPullBytes = Budget }, NullLoggerFactory.Instance);
        var toServer = new Pipe();
        var toClient = new Pipe();
        var session = new RemotingSession(new DuplexPipe(toServer.Reader, toClient.Writer), server, null, null, nameServerOnly: false);
        var run = session.RunAsync(CancellationToken.None);
        session.ChargeInFlight(Budget); // the same client's unread pulled answers
        var answers = new Dictionary<int, RemotingCommand>();
        try
        {
            // One after the other, each once the one before is answered and released: two at once would have the second
            // refused at its admission (the connection over its budget by the first's answer), which is not the rule
            // under test (a stressed CI round failed so on 2026-12-06).
            await toServer.Writer.WriteAsync(View(_engine.BodyAddressOf("Small", 0, 0), 1));
            await RemotingBroker.EventuallyAsync(() => { TakeAnswers(toClient, answers); return Task.FromResult(answers.Count); }, n => n == 1,
                TimeSpan.FromSeconds(30), "the view answered");
            await RemotingBroker.EventuallyAsync(() => Task.FromResult(session.InFlightBytes), n => n == Budget, TimeSpan.FromSeconds(30), "the view's answer released");
            await toServer.Writer.WriteAsync(Frame(RemotingCommand.Request(RequestCode.QueryMessage).Set("topic", "Small").Set("key", "s")
                .Set("maxNum", 32L).Set("beginTimestamp", 0L).Set("endTimestamp", long.MaxValue), 2));
            await RemotingBroker.EventuallyAsync(() => { TakeAnswers(toClient, answers); return Task.FromResult(answers.Count); }, n => n == 2,
                TimeSpan.FromSeconds(30), "the query answered");
            Assert.True(answers[1].Code == ResponseCode.Success, $"view: {answers[1].Code} {answers[1].Remark}");
            Assert.True(answers[2].Code == ResponseCode.Success, $"query: {answers[2].Code} {answers[2].Remark}");
            Assert.Single(StoredMessageCodec.DecodeAll(answers[2].Body.Span));
        }
        finally
        {
            session.ChargeInFlight(-Budget);
            await toServer.Writer.CompleteAsync();
            await toClient.Reader.CompleteAsync();
            await run.WaitAsync(TimeSpan.FromSeconds(10));
        }
        await RemotingBroker.EventuallyAsync(() => Task.FromResult(session.InFlightBytes + server.PullBytes), n => n == 0, TimeSpan.FromSeconds(10), "room released");
    }
}
