using System.Buffers;
using System.IO.Pipelines;
using HalfMsg.Broker.Core;
using HalfMsg.Broker.FrontEnds.Remoting;
using HalfMsg.Broker.Tests.Infrastructure;
using HalfMsg.Protocol.Remoting;
using Microsoft.Extensions.Logging.Abstractions;

namespace HalfMsg.Broker.Tests.Remoting;

/// <summary>Measures the managed heap, so it runs alone: other tests' allocations would blur the measure.</summary>
[CollectionDefinition("remoting-memory", DisableParallelization = true)]
public sealed class RemotingMemoryCollection;

/// <summary>
/// What a connection that does not read its socket can make the broker hold. Responses count against the connection's
/// in-flight byte budget until they are flushed; until 2026-12-05 the outbound queue was bounded by frames only (1,024
/// of up to 16 MiB each), and a client sending pulls by offset and reading nothing made the broker hold hundreds of MiB.
/// </summary>
[Collection("remoting-memory")]
public sealed class RemotingOutboundBudgetTests : IAsyncLifetime
{
    private const long Budget = 16L * 1024 * 1024;
    private const int MessageSize = 512 * 1024;
    private readonly string _dir = Path.Combine(Path.GetTempPath(), "halfmsg-outbound-" + Guid.NewGuid().ToString("N"));
    private BrokerEngine _engine = null!;

    public async Task InitializeAsync()
    {
        _engine = await BrokerEngine.OpenAsync(new CoreOptions { DataDir = _dir, QueuesPerTopic = 1 });
        for (int i = 0; i < 4; i++)
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

    private static byte[] Pulls(int count)
    {
        var bytes = new ArrayBufferWriter<byte>();
        for (int i = 1; i <= count; i++)
        {
            var pull = RemotingCommand.Request(RequestCode.PullMessage).Set("consumerGroup", "G").Set("topic", "Big").Set("queueId", 0L)
                .Set("queueOffset", 0L).Set("maxMsgNums", 32L).Set("sysFlag", 0L);
            pull.Opaque = i;
            RemotingFrame.Write(bytes, pull);
        }
        return bytes.WrittenSpan.ToArray();
    }

    /// <summary>Reads every answer to <paramref name="count"/> pulls; fails on a duplicate.</summary>
    private static async Task<Dictionary<int, RemotingCommand>> ReadAnswersAsync(Pipe toClient, int count)
    {
        var answers = new Dictionary<int, RemotingCommand>();
        while (answers.Count < count)
        {
            var result = await toClient.Reader.ReadAsync().AsTask().WaitAsync(TimeSpan.FromSeconds(30));
            var buffer = result.Buffer;
            while (RemotingFrame.TryReadFrame(ref buffer, 1 << 24, out var frame)) Assert.True(answers.TryAdd(frame.Opaque, frame));
            toClient.Reader.AdvanceTo(buffer.Start, buffer.End);
        }
        return answers;
    }

    [Fact]
    public async Task A_connection_that_never_reads_cannot_make_the_broker_hold_more_than_twice_its_budget()
    {
        var server = new RemotingServer(_engine, new RemotingOptions { MaxInFlightBytesPerConnection = Budget }, NullLoggerFactory.Instance);

        // The same pulls on a connection that reads: what the process keeps after them (pools, one-time state) is not
        // the connection's, and goes into the baseline.
        {
            var toServer0 = new Pipe();
            var toClient0 = new Pipe();
            var warm = new RemotingSession(new DuplexPipe(toServer0.Reader, toClient0.Writer), server, null, null, nameServerOnly: false);
            var run0 = warm.RunAsync(CancellationToken.None);
            await toServer0.Writer.WriteAsync(Pulls(100));
            await ReadAnswersAsync(toClient0, 100);
            await toServer0.Writer.CompleteAsync();
            await run0.WaitAsync(TimeSpan.FromSeconds(10));
        }

        var toServer = new Pipe();
        var toClient = new Pipe();
        var session = new RemotingSession(new DuplexPipe(toServer.Reader, toClient.Writer), server, null, null, nameServerOnly: false);
        var run = session.RunAsync(CancellationToken.None);
        long before = GC.GetTotalMemory(forceFullCollection: true);

        // 100 pulls of 4 x 512 KiB: 200 MiB of answers; the client reads none of them.
        await toServer.Writer.WriteAsync(Pulls(100));
        var first = await toClient.Reader.ReadAsync().AsTask().WaitAsync(TimeSpan.FromSeconds(30));
        toClient.Reader.AdvanceTo(first.Buffer.Start); // looked at, nothing taken
        await RemotingBroker.EventuallyAsync(() => Task.FromResult(session.RequestsInProgress), n => n == 0, TimeSpan.FromSeconds(60), "every pull processed");
        // The heap is the whole test process's: what other work still allocates at that moment (a broker of an earlier
        // test class winding down) counts too, and once pushed one look in a stressed CI round past the bound (38 MiB,
        // 2026-12-06). What this connection holds cannot shrink while nothing is read, so the check may look again for a
        // few seconds: a connection that holds more than twice its budget still fails it.
        long held = 0;
        await RemotingBroker.EventuallyAsync(() => Task.FromResult(held = GC.GetTotalMemory(forceFullCollection: true) - before),
            h => h <= 2 * Budget, TimeSpan.FromSeconds(10),
            $"the broker to hold at most twice its budget ({2 * Budget / (1024 * 1024)} MiB) for a connection that reads nothing");
        Assert.True(held <= 2 * Budget, $"the broker holds {held / (1024 * 1024)} MiB for a connection that reads nothing (budget {Budget / (1024 * 1024)} MiB)");
        Assert.True(session.IsAlive);

        // Every pull is answered once the client reads: with messages while they fit the budget, SYSTEM_BUSY past it.
        var answers = await ReadAnswersAsync(toClient, 100);
        Assert.Contains(answers.Values, a => a.Code == ResponseCode.Success && a.Body.Length >= 4 * MessageSize);
        Assert.All(answers.Values, a => Assert.True(a.Code == ResponseCode.Success || (a.Code == ResponseCode.SystemBusy && a.Remark!.StartsWith("[OVERLOAD]")), $"{a.Code} {a.Remark}"));

        await toServer.Writer.CompleteAsync();
        await run.WaitAsync(TimeSpan.FromSeconds(10));
    }

    [Fact]
    public async Task A_connection_whose_output_takes_nothing_for_the_write_stall_timeout_is_closed()
    {
        var server = new RemotingServer(_engine, new RemotingOptions { WriteStallTimeout = TimeSpan.FromMilliseconds(300) }, NullLoggerFactory.Instance);
        var toServer = new Pipe();
        var toClient = new Pipe();
        var session = new RemotingSession(new DuplexPipe(toServer.Reader, toClient.Writer), server, null, null, nameServerOnly: false);
        var run = session.RunAsync(CancellationToken.None);
        await toServer.Writer.WriteAsync(Pulls(1));
        await run.WaitAsync(TimeSpan.FromSeconds(10));
        Assert.False(session.IsAlive);
    }
}
