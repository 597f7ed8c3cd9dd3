using Apache.Rocketmq.V2;
using Grpc.Core;
using HalfMsg.Broker.Core.Model;
using HalfMsg.Broker.Core.Transactions;
using HalfMsg.Broker.FrontEnds.GrpcV5;

namespace HalfMsg.Broker.Tests.GrpcV5;

/// <summary>
/// A Telemetry stream's queued commands are charged to their connection's budget of unsent answers and each must be
/// released exactly once: when written, or when the writer stops and drops what is left. A command queued while the
/// stream was ending raced the writer's stop (found by review, 2026-12-07): queued in the instant between the end for
/// not reading and the close, after the writer had already given back what it held, it stayed charged until the
/// connection closed (the check counted as sent, never written); charged just before the writer gave everything back
/// and then refused by the closed queue, it was released twice, leaving the budget below zero. The seams of
/// <see cref="TelemetrySession"/> force each order; a command that comes too late is refused (the core offers the check
/// to another producer instance) and nothing stays charged.
/// </summary>
public sealed class TelemetryEndRaceTests
{
    /// <summary>A peer whose writes wait until the test opens its window (or the call is cancelled).</summary>
    private sealed class GatedWriter : IServerStreamWriter<TelemetryCommand>
    {
        private readonly TaskCompletionSource _window = new(TaskCreationOptions.RunContinuationsAsynchronously);
        public readonly TaskCompletionSource FirstWriteStarted = new(TaskCreationOptions.RunContinuationsAsynchronously);
        public int Written;
        public WriteOptions? WriteOptions { get; set; }
        public Task WriteAsync(TelemetryCommand message) => WriteAsync(message, CancellationToken.None);

        public async Task WriteAsync(TelemetryCommand message, CancellationToken ct)
        {
            FirstWriteStarted.TrySetResult();
            await _window.Task.WaitAsync(ct).ConfigureAwait(false);
            Interlocked.Increment(ref Written);
        }

        public void OpenWindow() => _window.TrySetResult();
    }

    private static CheckBackRequest Check(int i) => new()
    {
        TransactionId = "tx" + i,
        ProducerGroup = "T",
        CheckNumber = 1,
        HalfMessage = new StoredMessage { Topic = "T", MessageId = "01" + Guid.NewGuid().ToString("N").ToUpperInvariant(), Body = new byte[256 * 1024] },
    };

    /// <summary>Waits for the writer to finish, whatever its outcome (a cancelled write ends it with an exception).</summary>
    private static void WaitForWriter(Task writer)
        => Assert.True(((IAsyncResult)writer).AsyncWaitHandle.WaitOne(TimeSpan.FromSeconds(30)), "the writer did not stop");

    private static async Task<(AnswerBudget Connection, TelemetrySession Session, GatedWriter Stream, Task Writer)> StartAsync(CancellationToken callAborted)
    {
        var connection = new AnswerBudget(4 * 1024 * 1024);
        var session = new TelemetrySession("c1", 2 * 1024 * 1024, connection);
        var stream = new GatedWriter();
        Task writer = session.RunWriterAsync(stream, callAborted);
        Assert.True(session.TrySendCheck(Check(0)));
        await stream.FirstWriteStarted.Task.WaitAsync(TimeSpan.FromSeconds(30));
        return (connection, session, stream, writer);
    }

    /// <summary>The end for not reading told the writer to stop; the writer finished its write, met the stop and gave
    /// back what it held; then, before the stream was closed, another command (a check of another pass, the Settings
    /// re-push) was queued. It was charged and queued behind a writer that had already stopped: never written, never
    /// released, and counted by the core as a check sent.</summary>
    [Fact]
    public async Task A_command_queued_after_the_writer_stopped_and_before_the_close_is_refused_and_leaves_nothing_charged()
    {
        var (connection, session, stream, writer) = await StartAsync(CancellationToken.None);
        bool? late = null;
        long heldAfterLate = -1;
        session.AfterStopRequestedForTests = () =>
        {
            session.AfterStopRequestedForTests = null;
            stream.OpenWindow(); // the write under way finishes; the writer meets the stop and drops the rest
            WaitForWriter(writer);
            late = session.TrySendCheck(Check(99));
            heldAfterLate = connection.Held;
        };

        int sent = 1;
        while (session.IsAlive)
            if (session.TrySendCheck(Check(sent))) sent++;
        Assert.Contains("did not read", session.EndReason);
        session.Close(); // as the handler's finally does
        Assert.True(await session.WhenWriterDoneAsync(TimeSpan.FromMinutes(5), TimeProvider.System));

        Assert.Equal(1, stream.Written);
        Assert.Equal(0, connection.Held);
        Assert.Equal(0, heldAfterLate);
        Assert.False(late, "a check queued behind a stopped writer was taken as sent: it is never written");
        // The connection's whole budget is free again for its receives and its next Telemetry stream.
        Assert.True(connection.TryTake(connection.Limit));
    }

    /// <summary>A command was charged to the connection while the stream ended (for not reading, or because the client
    /// went away) and its writer stopped, giving back what it held, that command's bytes included; the command then found
    /// the queue closed and gave its bytes back a second time.</summary>
    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public async Task A_command_charged_while_the_stream_ends_and_its_writer_stops_is_released_once(bool clientGone)
    {
        using var callAborted = new CancellationTokenSource();
        var (connection, session, stream, writer) = await StartAsync(callAborted.Token);
        Assert.True(session.TrySendCheck(Check(1)));
        Assert.True(session.TrySendCheck(Check(2)));
        long minHeld = long.MaxValue;
        session.BeforeQueueForTests = () =>
        {
            session.BeforeQueueForTests = null;
            if (clientGone)
            {
                callAborted.Cancel(); // the write under way fails: the writer ends the session and stops
            }
            else
            {
                session.End("the client did not read its Telemetry stream", stopWriting: true);
                stream.OpenWindow();
            }
            WaitForWriter(writer);
            minHeld = Math.Min(minHeld, connection.Held);
        };

        bool late = session.TrySendCheck(Check(3));
        minHeld = Math.Min(minHeld, connection.Held);
        session.Close();
        await session.WhenWriterDoneAsync(TimeSpan.FromMinutes(5), TimeProvider.System);

        Assert.False(late);
        Assert.False(session.IsAlive);
        Assert.True(minHeld >= 0, $"the connection's budget went to {minHeld} bytes: a command's bytes were released twice");
        Assert.Equal(0, connection.Held);
        // Not above its limit either: a later stream of the connection is charged from zero.
        var next = new TelemetrySession("c2", 2 * 1024 * 1024, connection);
        Assert.True(next.TrySendCheck(Check(4)));
        Assert.Equal(next.QueuedBytes, connection.Held);
    }

    /// <summary>The check pass met the stream in that same instant (a Settings re-push ended it for not reading on
    /// another thread): the check was taken as sent to a writer that had stopped, so it was never written and the half
    /// waited a whole check interval. Refused now, it goes to the group's other instance in the same pass.</summary>
    [Fact]
    public async Task A_check_sent_between_the_end_for_not_reading_and_the_close_goes_to_another_instance()
    {
        string dir = Path.Combine(Path.GetTempPath(), "halfmsg-endrace-" + Guid.NewGuid().ToString("N")[..12]);
        var clock = new HalfMsg.TestKit.ManualClock();
        var engine = await HalfMsg.Broker.Core.BrokerEngine.OpenAsync(new HalfMsg.Broker.Core.CoreOptions
        {
            DataDir = dir, QueuesPerTopic = 1, SegmentSizeBits = 22, MemorySizeBits = 23,
            TransactionTimeout = TimeSpan.FromSeconds(6), TransactionCheckInterval = TimeSpan.FromSeconds(30),
        }, clock, startBackgroundLoops: false);
        try
        {
            var (connection, ending, stream, writer) = await StartAsync(CancellationToken.None);
            Assert.True(ending.TrySendCheck(Check(1))); // queued behind the write under way
            var other = new TelemetrySession("other", 2 * 1024 * 1024, new AnswerBudget(4 * 1024 * 1024));
            var written = new List<TelemetryCommand>();
            Task otherWriter = other.RunWriterAsync(new ListWriter(written), CancellationToken.None);
            ending.RegisterProducer(["orders"], engine.Producers);
            other.RegisterProducer(["orders"], engine.Producers);
            var sent = await engine.SendHalfAsync(new MessageDraft
            {
                Topic = "orders", MessageId = "01" + Guid.NewGuid().ToString("N").ToUpperInvariant(), Body = "half"u8.ToArray(),
                BornTimestampMs = clock.GetUtcNow().ToUnixTimeMilliseconds(), BornHost = "test",
            }, "orders", "c1", null); // the origin instance, the ending stream, is asked first
            Assert.True(sent.IsOk, sent.Error.ToString());
            clock.Advance(TimeSpan.FromSeconds(7));

            int checksSent = -1;
            ending.AfterStopRequestedForTests = () =>
            {
                ending.AfterStopRequestedForTests = null;
                stream.OpenWindow();
                WaitForWriter(writer);
                checksSent = Task.Run(() => engine.RunCheckPassAsync()).GetAwaiter().GetResult();
            };
            ending.End("the client did not read its Telemetry stream", stopWriting: true);
            ending.Close();
            await ending.WhenWriterDoneAsync(TimeSpan.FromMinutes(5), TimeProvider.System);

            Assert.Equal(1, checksSent);
            var half = engine.FindTransaction(sent.TransactionId);
            Assert.NotNull(half);
            Assert.Equal(1, half.Checks);
            // The other instance's writer writes what is queued at once (a refused check would sit in no queue at all).
            var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(10);
            while (DateTime.UtcNow < deadline)
            {
                lock (written) if (written.Count > 0) break;
                await Task.Delay(5);
            }
            TelemetryCommand check;
            lock (written) check = Assert.Single(written);
            Assert.Equal(sent.TransactionId, check.RecoverOrphanedTransactionCommand.TransactionId);
            Assert.Equal(0, connection.Held);
            other.Close();
            Assert.True(await other.WhenWriterDoneAsync(TimeSpan.FromSeconds(30), TimeProvider.System));
            await otherWriter;
        }
        finally
        {
            await engine.DisposeAsync();
            try { Directory.Delete(dir, true); } catch (IOException) { }
        }
    }

    private sealed class ListWriter(List<TelemetryCommand> written) : IServerStreamWriter<TelemetryCommand>
    {
        public WriteOptions? WriteOptions { get; set; }
        public Task WriteAsync(TelemetryCommand message) { lock (written) written.Add(message); return Task.CompletedTask; }
        public Task WriteAsync(TelemetryCommand message, CancellationToken ct) => WriteAsync(message);
    }
}
