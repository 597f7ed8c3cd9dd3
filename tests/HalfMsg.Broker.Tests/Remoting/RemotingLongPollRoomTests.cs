using System.Buffers;
using System.Diagnostics;
using System.IO.Pipelines;
using HalfMsg.Broker.Core;
using HalfMsg.Broker.FrontEnds.Remoting;
using HalfMsg.Broker.Tests.Infrastructure;
using HalfMsg.Protocol.Remoting;
using Microsoft.Extensions.Logging.Abstractions;

namespace HalfMsg.Broker.Tests.Remoting;

/// <summary>
/// A Remoting long poll (PULL_MESSAGE with SUSPEND) that finds messages but no room for its answer, on its connection's
/// in-flight budget or on the broker's budget of pulled bytes, waits for room until its suspend time ends, as a gRPC
/// pull does (<see cref="GrpcV5.PullAnswerBudgetTests"/>), and only then answers SYSTEM_BUSY. Until 2026-12-06 it
/// answered SYSTEM_BUSY at once. It waits only on the budget that refused it, for its first message's size: room freed
/// on the other budget does not make it read again. A pull without SUSPEND still answers SYSTEM_BUSY at once
/// (<see cref="RemotingPullBudgetTests"/>).
/// </summary>
public sealed class RemotingLongPollRoomTests : IAsyncLifetime
{
    private const long Budget = 2L * 1024 * 1024;
    private const int MessageSize = 256 * 1024;
    private readonly string _dir = Path.Combine(Path.GetTempPath(), "halfmsg-pollroom-" + Guid.NewGuid().ToString("N"));
    private BrokerEngine _engine = null!;
    private readonly List<(Pipe ToServer, Pipe ToClient, Task Run)> _sessions = [];

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
        foreach (var (toServer, toClient, run) in _sessions)
        {
            await toServer.Writer.CompleteAsync();
            await toClient.Reader.CompleteAsync();
            await run.WaitAsync(TimeSpan.FromSeconds(10));
        }
        await _engine.DisposeAsync();
        try { Directory.Delete(_dir, true); } catch (IOException) { }
    }

    private (RemotingSession Session, Pipe ToServer, Pipe ToClient) Open(RemotingServer server)
    {
        var toServer = new Pipe();
        var toClient = new Pipe();
        var session = new RemotingSession(new DuplexPipe(toServer.Reader, toClient.Writer), server, null, null, nameServerOnly: false);
        _sessions.Add((toServer, toClient, session.RunAsync(CancellationToken.None)));
        return (session, toServer, toClient);
    }

    /// <summary>A long poll of group G on queue 0 of Big from offset 0, parked up to <paramref name="suspendMs"/>.</summary>
    private static byte[] LongPoll(long suspendMs, int opaque)
    {
        var bytes = new ArrayBufferWriter<byte>();
        var pull = RemotingCommand.Request(RequestCode.PullMessage).Set("consumerGroup", "G").Set("topic", "Big").Set("queueId", 0L)
            .Set("queueOffset", 0L).Set("maxMsgNums", 32L).Set("sysFlag", (long)PullSysFlag.Suspend).Set("suspendTimeoutMillis", suspendMs);
        pull.Opaque = opaque;
        RemotingFrame.Write(bytes, pull);
        return bytes.WrittenSpan.ToArray();
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

    private static bool Answered(Pipe toClient)
    {
        if (!toClient.Reader.TryRead(out var result)) return false;
        toClient.Reader.AdvanceTo(result.Buffer.Start); // examined nothing: ReadOneAsync reads it later
        return !result.Buffer.IsEmpty;
    }

    [Fact]
    public async Task A_long_poll_on_a_full_connection_waits_for_room_and_answers_its_messages_once_room_is_freed()
    {
        var server = new RemotingServer(_engine, new RemotingOptions { MaxInFlightBytesPerConnection = Budget }, NullLoggerFactory.Instance);
        var (session, toServer, toClient) = Open(server);
        session.ChargeInFlight(Budget); // an answer the client has not read yet holds the connection's whole budget
        var clock = Stopwatch.StartNew();
        await toServer.Writer.WriteAsync(LongPoll(20_000, 1));
        await RemotingBroker.EventuallyAsync(() => Task.FromResult(server.PullLooks), n => n == 1, TimeSpan.FromSeconds(30), "the pull to look");
        // A bounded window for a negative check: before the fix the answer (SYSTEM_BUSY) was written at once, within it.
        await Task.Delay(300);
        Assert.False(Answered(toClient), "a long poll without room was answered at once");

        session.ChargeInFlight(-Budget); // the client read that answer
        var answer = await ReadOneAsync(toClient);
        Assert.True(answer.Code == ResponseCode.Success, $"{answer.Code} {answer.Remark}");
        Assert.True(clock.Elapsed < TimeSpan.FromSeconds(15), $"answered after {clock.Elapsed}, not when room was freed");
        Assert.Equal(4, StoredMessageCodec.DecodeAll(answer.Body.Span).Count);
        Assert.Equal(2, server.PullLooks);
    }

    [Fact]
    public async Task A_long_poll_that_never_gets_room_answers_SYSTEM_BUSY_when_its_suspend_time_ends()
    {
        var server = new RemotingServer(_engine, new RemotingOptions { MaxInFlightBytesPerConnection = Budget }, NullLoggerFactory.Instance);
        var (session, toServer, toClient) = Open(server);
        session.ChargeInFlight(Budget);
        var clock = Stopwatch.StartNew();
        await toServer.Writer.WriteAsync(LongPoll(800, 1));
        var answer = await ReadOneAsync(toClient);
        Assert.True(clock.Elapsed >= TimeSpan.FromMilliseconds(700), $"answered after {clock.Elapsed.TotalMilliseconds} ms of a long poll of 800 ms");
        Assert.True(answer.Code == ResponseCode.SystemBusy && answer.Remark!.StartsWith("[OVERLOAD]", StringComparison.Ordinal), $"{answer.Code} {answer.Remark}");
        Assert.Equal(1, server.PullLooks);
        session.ChargeInFlight(-Budget);
    }

    /// <summary>Answers flushed to other connections release the broker's budget, not this connection's: the waiting
    /// pull does not read again for them.</summary>
    [Fact]
    public async Task A_long_poll_waiting_for_its_connections_room_is_not_woken_by_the_brokers()
    {
        var server = new RemotingServer(_engine, new RemotingOptions { MaxInFlightBytesPerConnection = Budget }, NullLoggerFactory.Instance);
        var (session, toServer, toClient) = Open(server);
        var (other, _, _) = Open(server);
        session.ChargeInFlight(Budget);
        await toServer.Writer.WriteAsync(LongPoll(20_000, 1));
        await RemotingBroker.EventuallyAsync(() => Task.FromResult(server.PullLooks), n => n == 1, TimeSpan.FromSeconds(30), "the pull to look");
        for (int i = 0; i < 20; i++)
        {
            // Another connection's answer is built and flushed. The pause lets a pull woken by the release look again.
            server.ChargePull(other, 100_000);
            server.ChargePull(other, -100_000);
            await Task.Delay(10);
        }
        Assert.Equal(1, server.PullLooks);
        Assert.False(Answered(toClient));

        session.ChargeInFlight(-Budget);
        var answer = await ReadOneAsync(toClient);
        Assert.True(answer.Code == ResponseCode.Success, $"{answer.Code} {answer.Remark}");
        Assert.Equal(2, server.PullLooks);
    }

    /// <summary>The broker's budget refused (other connections hold more than twice it, so not even the share of a
    /// connection that holds none is left): the pull waits on that budget, and is answered once it has room.</summary>
    [Fact]
    public async Task A_long_poll_without_room_on_the_brokers_budget_waits_for_it()
    {
        var server = new RemotingServer(_engine, new RemotingOptions { MaxPullBytes = Budget }, NullLoggerFactory.Instance);
        var (_, toServer, toClient) = Open(server);
        var (other, _, _) = Open(server);
        server.ChargePull(other, 2 * Budget); // unread answers of another connection
        await toServer.Writer.WriteAsync(LongPoll(20_000, 1));
        await RemotingBroker.EventuallyAsync(() => Task.FromResult(server.PullLooks), n => n == 1, TimeSpan.FromSeconds(30), "the pull to look");
        // A bounded window for a negative check: before the fix the answer (SYSTEM_BUSY) was written at once, within it.
        await Task.Delay(300);
        Assert.False(Answered(toClient), "a long poll without room was answered at once");

        server.ChargePull(other, -2 * Budget); // they were read
        var answer = await ReadOneAsync(toClient);
        Assert.True(answer.Code == ResponseCode.Success, $"{answer.Code} {answer.Remark}");
        Assert.Equal(2, server.PullLooks);
    }

    /// <summary>A pull that does not wait (no SUSPEND) makes nothing to wait on, and a long poll whose wait ended leaves
    /// nothing registered: as for the gRPC pull, idle refusals must not pile up in memory.</summary>
    [Fact]
    public async Task Pulls_that_do_not_wait_leave_nothing_registered_on_the_budgets()
    {
        var server = new RemotingServer(_engine, new RemotingOptions { MaxInFlightBytesPerConnection = Budget }, NullLoggerFactory.Instance);
        var (session, toServer, toClient) = Open(server);
        session.ChargeInFlight(Budget);
        for (int i = 1; i <= 200; i++)
        {
            await toServer.Writer.WriteAsync(RemotingPullBudgetTests.Pull("Big", 0, i));
            var busy = await ReadOneAsync(toClient);
            Assert.True(busy.Code == ResponseCode.SystemBusy, $"{busy.Code} {busy.Remark}");
        }
        Assert.Null(session.InFlightReleased.PendingForTests);
        Assert.Null(server.PullReleased.PendingForTests);

        await toServer.Writer.WriteAsync(LongPoll(300, 1000));
        var answer = await ReadOneAsync(toClient);
        Assert.True(answer.Code == ResponseCode.SystemBusy, $"{answer.Code} {answer.Remark}");
        // The answer's flush may have pulsed (and dropped) the task since: either way nothing waits on it.
        if (session.InFlightReleased.PendingForTests is { } pending) Assert.Equal(0, TaskContinuations.Count(pending));
        session.ChargeInFlight(-Budget);
    }
}
