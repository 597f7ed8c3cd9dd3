using System.Buffers;
using System.Globalization;
using System.IO.Pipelines;
using HalfMsg.Broker.Core;
using HalfMsg.Broker.FrontEnds.Remoting;
using HalfMsg.Broker.Tests.Infrastructure;
using HalfMsg.Protocol.Remoting;
using Microsoft.Extensions.Logging.Abstractions;

namespace HalfMsg.Broker.Tests.Remoting;

/// <summary>
/// What the pulls of a connection hold while their answers are built. A pull reads up to 8 MiB of bodies; until
/// 2026-12-06 it read them first and charged its answer to the connection's in-flight budget only once built, so a
/// client that pipelined pulls and read nothing made the broker read 8 MiB per pull being processed (up to about 4,350
/// on one connection) before any was refused. A pull now reserves each body's bytes on the budget before reading it.
/// </summary>
public sealed class RemotingPullBudgetTests : IAsyncLifetime
{
    private const long Budget = 2L * 1024 * 1024;
    private const int MessageSize = 256 * 1024;
    private const int Messages = 40;
    private readonly string _dir = Path.Combine(Path.GetTempPath(), "halfmsg-pullbudget-" + Guid.NewGuid().ToString("N"));
    private BrokerEngine _engine = null!;

    public async Task InitializeAsync()
    {
        _engine = await BrokerEngine.OpenAsync(new CoreOptions { DataDir = _dir, QueuesPerTopic = 1 });
        for (int i = 0; i < Messages; i++)
        {
            var r = await _engine.SendAsync(new Core.Model.MessageDraft { Topic = "Big", MessageId = $"m{i}", Body = new byte[MessageSize] });
            Assert.True(r.Error.IsOk, r.Error.ToString());
        }
    }

    public async Task DisposeAsync()
    {
        await _engine.DisposeAsync();
        try { Directory.Delete(_dir, true); } catch (IOException) { }
    }

    /// <summary>A PULL_MESSAGE frame of group G for queue 0 of the topic (also used by RemotingPullBudgetFairnessTests).</summary>
    internal static byte[] Pull(string topic, long offset, int opaque)
    {
        var bytes = new ArrayBufferWriter<byte>();
        var pull = RemotingCommand.Request(RequestCode.PullMessage).Set("consumerGroup", "G").Set("topic", topic).Set("queueId", 0L)
            .Set("queueOffset", offset).Set("maxMsgNums", 32L).Set("sysFlag", 0L);
        pull.Opaque = opaque;
        RemotingFrame.Write(bytes, pull);
        return bytes.WrittenSpan.ToArray();
    }

    /// <summary>Takes the answers already written to <paramref name="toClient"/>, without waiting; fails on a duplicate.</summary>
    private static void TakeAnswers(Pipe toClient, Dictionary<int, RemotingCommand> answers)
    {
        if (!toClient.Reader.TryRead(out var result)) return;
        var buffer = result.Buffer;
        while (RemotingFrame.TryReadFrame(ref buffer, 1 << 24, out var frame)) Assert.True(answers.TryAdd(frame.Opaque, frame), $"answer {frame.Opaque} twice");
        toClient.Reader.AdvanceTo(buffer.Start, buffer.End);
    }

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

    /// <summary>The offsets a successful answer carries: consecutive from <paramref name="from"/>, and nextBeginOffset
    /// right after the last (a partial answer must not skip what it left out).</summary>
    private static List<long> OffsetsOf(RemotingCommand answer, long from)
    {
        var offsets = StoredMessageCodec.DecodeAll(answer.Body.Span).Select(m => m.QueueOffset).ToList();
        Assert.NotEmpty(offsets);
        Assert.Equal(Enumerable.Range((int)from, offsets.Count).Select(i => (long)i), offsets);
        Assert.Equal(offsets[^1] + 1, long.Parse(answer.Get("nextBeginOffset")!, CultureInfo.InvariantCulture));
        return offsets;
    }

    [Fact]
    public async Task Pipelined_pulls_of_a_connection_that_reads_nothing_read_no_more_bodies_than_its_budget()
    {
        const int pulls = 20; // each would read 32 x 256 KiB = 8 MiB
        var server = new RemotingServer(_engine, new RemotingOptions { MaxInFlightBytesPerConnection = Budget }, NullLoggerFactory.Instance);
        // Pulls that read bodies are held before building their answers: what they read is what they hold at once.
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
        try
        {
            for (int i = 1; i <= pulls; i++) await toServer.Writer.WriteAsync(Pull("Big", 0, i));

            // Every pull either holds its bodies (waiting above) or is answered (refused, small): the answers are taken
            // as they come, which frees nothing the pulls hold.
            var answers = new Dictionary<int, RemotingCommand>();
            await RemotingBroker.EventuallyAsync(() =>
            {
                TakeAnswers(toClient, answers);
                return Task.FromResult(answers.Count + Interlocked.Read(ref holding));
            }, n => n == pulls, TimeSpan.FromSeconds(60), "every pull to hold its bodies or be answered");
            Assert.True(Interlocked.Read(ref read) <= Budget,
                $"{Interlocked.Read(ref holding)} pulls read {Interlocked.Read(ref read) / 1024} KiB of bodies at once on a connection whose budget is {Budget / 1024} KiB");

            // Built and queued, and not read: the answers stay charged within the budget (frame headers aside).
            release.SetResult();
            await RemotingBroker.EventuallyAsync(() => Task.FromResult(session.RequestsInProgress), n => n == 0, TimeSpan.FromSeconds(30), "every pull processed");
            Assert.True(session.InFlightBytes <= Budget + 64 * 1024, $"{session.InFlightBytes} bytes in flight, budget {Budget}");

            // Once read, every pull is answered: messages from offset 0 with nextBeginOffset right after them, or
            // SYSTEM_BUSY (the client backs off and pulls the same offset again).
            await RemotingBroker.EventuallyAsync(() =>
            {
                TakeAnswers(toClient, answers);
                return Task.FromResult(answers.Count);
            }, n => n == pulls, TimeSpan.FromSeconds(30), "every pull answered");
            Assert.Contains(answers.Values, a => a.Code == ResponseCode.Success);
            foreach (var a in answers.Values)
            {
                if (a.Code == ResponseCode.Success) OffsetsOf(a, 0);
                else Assert.True(a.Code == ResponseCode.SystemBusy && a.Remark!.StartsWith("[OVERLOAD]", StringComparison.Ordinal), $"{a.Code} {a.Remark}");
            }

            // A consumer that reads goes through the whole queue by nextBeginOffset, in answers that fit the budget,
            // and misses nothing.
            server.PulledForTests = null;
            var seen = new List<long>();
            for (int opaque = 1000; seen.Count < Messages; opaque++)
            {
                // The answer before is read, and released once its flush completes: then nothing else is in flight.
                await RemotingBroker.EventuallyAsync(() => Task.FromResult(session.InFlightBytes), n => n == 0, TimeSpan.FromSeconds(30), "the answer before released");
                await toServer.Writer.WriteAsync(Pull("Big", seen.Count, opaque));
                var answer = await ReadOneAsync(toClient);
                Assert.True(answer.Code == ResponseCode.Success, $"{answer.Code} {answer.Remark}");
                seen.AddRange(OffsetsOf(answer, seen.Count));
            }
            Assert.Equal(Enumerable.Range(0, Messages).Select(i => (long)i), seen);
        }
        finally
        {
            release.TrySetResult();
            await toServer.Writer.CompleteAsync();
            await toClient.Reader.CompleteAsync(); // answers left unread must not hold up the close
            await run.WaitAsync(TimeSpan.FromSeconds(10));
        }
    }

    /// <summary>
    /// The connections' budgets alone let 10,000 connections hold 64 MiB each: pulled bytes also count on a budget of
    /// the broker's (<see cref="RemotingOptions.MaxPullBytes"/>), released when the answer is flushed or its connection
    /// closes.
    /// </summary>
    [Fact]
    public async Task Pulls_of_all_connections_read_no_more_bodies_than_the_brokers_budget_and_closed_connections_give_their_share_back()
    {
        const int pulls = 10; // per connection, each would read 8 MiB
        var server = new RemotingServer(_engine, new RemotingOptions { MaxPullBytes = Budget }, NullLoggerFactory.Instance);
        var release = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        long read = 0, holding = 0;
        server.PulledForTests = async bytes =>
        {
            Interlocked.Add(ref read, bytes);
            Interlocked.Increment(ref holding);
            await release.Task;
        };
        var (toServerA, toClientA) = (new Pipe(), new Pipe());
        var (toServerB, toClientB) = (new Pipe(), new Pipe());
        var a = new RemotingSession(new DuplexPipe(toServerA.Reader, toClientA.Writer), server, null, null, nameServerOnly: false);
        var b = new RemotingSession(new DuplexPipe(toServerB.Reader, toClientB.Writer), server, null, null, nameServerOnly: false);
        var runA = a.RunAsync(CancellationToken.None);
        var runB = b.RunAsync(CancellationToken.None);
        try
        {
            for (int i = 1; i <= pulls; i++)
            {
                await toServerA.Writer.WriteAsync(Pull("Big", 0, i));
                await toServerB.Writer.WriteAsync(Pull("Big", 0, i));
            }

            var answersA = new Dictionary<int, RemotingCommand>();
            var answersB = new Dictionary<int, RemotingCommand>();
            await RemotingBroker.EventuallyAsync(() =>
            {
                TakeAnswers(toClientA, answersA);
                TakeAnswers(toClientB, answersB);
                return Task.FromResult(answersA.Count + answersB.Count + Interlocked.Read(ref holding));
            }, n => n == 2 * pulls, TimeSpan.FromSeconds(60), "every pull to hold its bodies or be answered");
            Assert.True(Interlocked.Read(ref read) <= Budget,
                $"{Interlocked.Read(ref holding)} pulls of two connections read {Interlocked.Read(ref read) / 1024} KiB of bodies at once, broker budget {Budget / 1024} KiB");
            Assert.Contains(answersA.Values.Concat(answersB.Values), x => x.Code == ResponseCode.SystemBusy && x.Remark!.Contains("all connections", StringComparison.Ordinal));

            release.SetResult();
            await RemotingBroker.EventuallyAsync(() => Task.FromResult(a.RequestsInProgress + b.RequestsInProgress), n => n == 0, TimeSpan.FromSeconds(30), "every pull processed");
            Assert.InRange(server.PullBytes, 1, Budget + 64 * 1024); // answers built, and not read

            // Both clients go away with answers unread: what those held goes back to the broker.
            await toClientA.Reader.CompleteAsync();
            await toServerA.Writer.CompleteAsync();
            await toClientB.Reader.CompleteAsync();
            await toServerB.Writer.CompleteAsync();
            await Task.WhenAll(runA, runB).WaitAsync(TimeSpan.FromSeconds(10));
            await RemotingBroker.EventuallyAsync(() => Task.FromResult(server.PullBytes), n => n == 0, TimeSpan.FromSeconds(30), "every pulled byte released");
        }
        finally
        {
            release.TrySetResult();
            await toServerA.Writer.CompleteAsync();
            await toClientA.Reader.CompleteAsync();
            await toServerB.Writer.CompleteAsync();
            await toClientB.Reader.CompleteAsync();
            await Task.WhenAll(runA, runB).WaitAsync(TimeSpan.FromSeconds(10));
        }
    }

    [Fact]
    public async Task A_message_larger_than_the_budget_still_goes_out_when_nothing_else_of_the_connection_is_in_flight()
    {
        var r = await _engine.SendAsync(new Core.Model.MessageDraft { Topic = "Huge", MessageId = "h", Body = new byte[(int)Budget + 1024] });
        Assert.True(r.Error.IsOk, r.Error.ToString());
        var server = new RemotingServer(_engine, new RemotingOptions { MaxInFlightBytesPerConnection = Budget }, NullLoggerFactory.Instance);
        var toServer = new Pipe();
        var toClient = new Pipe();
        var session = new RemotingSession(new DuplexPipe(toServer.Reader, toClient.Writer), server, null, null, nameServerOnly: false);
        var run = session.RunAsync(CancellationToken.None);
        await toServer.Writer.WriteAsync(Pull("Huge", 0, 1));
        var answer = await ReadOneAsync(toClient);
        Assert.True(answer.Code == ResponseCode.Success, $"{answer.Code} {answer.Remark}");
        Assert.Equal([0L], OffsetsOf(answer, 0));
        await toServer.Writer.CompleteAsync();
        await run.WaitAsync(TimeSpan.FromSeconds(10));
    }
}
