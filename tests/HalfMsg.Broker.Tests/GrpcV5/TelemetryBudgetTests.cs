using HalfMsg.Broker.Core.Model;
using HalfMsg.Broker.Core.Transactions;
using HalfMsg.Broker.FrontEnds.GrpcV5;

namespace HalfMsg.Broker.Tests.GrpcV5;

/// <summary>
/// A check-back carries the whole half, and a Telemetry stream whose queue would pass its byte bound is ended. With a
/// fixed 16 MiB bound and <c>--max-message-size</c> above it, one check for a large half ended every producer's stream
/// of its group, uncounted, on every pass: the producers reconnected, which started the next pass, and neither that
/// half nor the halves behind it were ever checked or parked. The bound now always fits a check for the largest
/// message the broker accepts.
/// </summary>
public sealed class TelemetryBudgetTests
{
    [Theory]
    [InlineData(4)]
    [InlineData(20)]
    [InlineData(40)]
    public void A_check_for_the_largest_accepted_message_fits_an_empty_Telemetry_queue(int maxMessageMiB)
    {
        int maxMessage = maxMessageMiB * 1024 * 1024;
        var options = new GrpcV5Options { MaxReceiveMessageSize = maxMessage + 1024 * 1024 };
        Assert.True(options.TelemetryQueueBudget >= 16 * 1024 * 1024);
        var session = new TelemetrySession("c1", options.TelemetryQueueBudget);
        var check = new CheckBackRequest
        {
            TransactionId = "tx",
            ProducerGroup = "T",
            HalfMessage = new StoredMessage { Topic = "T", MessageId = "01" + Guid.NewGuid().ToString("N").ToUpperInvariant(), Body = new byte[maxMessage] },
        };
        Assert.True(session.TrySendCheck(check));
        Assert.True(session.IsAlive);
    }

    /// <summary>Every topic of a Settings message makes the stream a producer of that group, kept until it ends: at most
    /// as many as a Remoting connection's producer groups, and never a name no topic can have.</summary>
    [Fact]
    public void A_Telemetry_stream_registers_a_bounded_number_of_producer_groups()
    {
        var registry = new ProducerRegistry();
        var session = new TelemetrySession("c1", 16 * 1024 * 1024);
        session.RegisterProducer(Enumerable.Range(0, 1500).Select(i => $"topic-{i}").Append(new string('t', 256)), registry);
        Assert.Equal(HalfMsg.Broker.FrontEnds.Remoting.RemotingSession.MaxProducerGroups, registry.Snapshot().Count);
    }
}

/// <summary>
/// A Telemetry stream registers at most <see cref="HalfMsg.Broker.FrontEnds.Remoting.RemotingSession.MaxProducerGroups"/>
/// producer groups; the topics past the cap get no check-backs over that stream. That used to be silent: now it is a
/// Warning naming the client and the count, once per stream (the client re-sends its Settings every 5 minutes) and
/// rate-limited over all streams. (Review 2026-12-05, gRPC producer side, finding 5.)
/// </summary>
public sealed class TelemetryProducerCapTests : IAsyncLifetime
{
    private readonly string _dir = Path.Combine(Path.GetTempPath(), "halfmsg-cap-" + Guid.NewGuid().ToString("N"));
    private HalfMsg.Broker.Core.BrokerEngine _engine = null!;

    public async Task InitializeAsync()
        => _engine = await HalfMsg.Broker.Core.BrokerEngine.OpenAsync(new HalfMsg.Broker.Core.CoreOptions { DataDir = _dir, QueuesPerTopic = 1 });

    public async Task DisposeAsync()
    {
        await _engine.DisposeAsync();
        try { Directory.Delete(_dir, true); } catch (IOException) { }
    }

    [Fact]
    public void Topics_past_the_cap_are_logged_as_a_warning_naming_the_client_and_the_count()
    {
        var logger = new HalfMsg.TestKit.ListLogger<MessagingService>();
        var service = new MessagingService(_engine, new GrpcV5Options(), logger);
        var session = new TelemetrySession("producer-7", 16 * 1024 * 1024);
        string[] topics = [.. Enumerable.Range(0, 1500).Select(i => $"topic-{i}")];

        service.RegisterPublishing(session, topics);
        service.RegisterPublishing(session, topics); // the 5-minute Settings again: no second line for this stream

        var warning = Assert.Single(logger.Entries, e => e.Level == Microsoft.Extensions.Logging.LogLevel.Warning);
        Assert.Contains("producer-7", warning.Message);
        Assert.Contains("1500", warning.Message);
        Assert.Contains("1024", warning.Message);
        Assert.Equal(HalfMsg.Broker.FrontEnds.Remoting.RemotingSession.MaxProducerGroups, _engine.Producers.Snapshot().Count);

        var small = new TelemetrySession("producer-8", 16 * 1024 * 1024);
        service.RegisterPublishing(small, ["one-topic"]);
        Assert.Single(logger.Entries, e => e.Level == Microsoft.Extensions.Logging.LogLevel.Warning);
    }
}

/// <summary>
/// A Telemetry stream the broker ends because its client does not read it: the writer, parked in a write waiting for
/// HTTP/2 window, used to stay there for as long as the client kept its connection (answering pings, reading nothing),
/// so the call never ended, the session and its queue stayed in memory, and its queued bytes stayed charged to the
/// connection's answer budget: every later receive and pull of that connection found no room, for ever. A session
/// replaced or closed with a writer parked likewise never ended. Now the writer is stopped at once when the client
/// does not read, and otherwise given the answers' write bound, after which the stream is reset (found by review, late
/// on 2026-12-06).
/// </summary>
public sealed class TelemetryEndedWriterTests
{
    /// <summary>A peer that never opens its window: every write waits until it is cancelled.</summary>
    private sealed class ParkedWriter : Grpc.Core.IServerStreamWriter<Apache.Rocketmq.V2.TelemetryCommand>
    {
        public int Started;
        public Grpc.Core.WriteOptions? WriteOptions { get; set; }
        public Task WriteAsync(Apache.Rocketmq.V2.TelemetryCommand message) => WriteAsync(message, CancellationToken.None);
        public Task WriteAsync(Apache.Rocketmq.V2.TelemetryCommand message, CancellationToken ct)
        {
            Interlocked.Increment(ref Started);
            return Task.Delay(Timeout.Infinite, ct);
        }
    }

    private static CheckBackRequest Check(int i) => new()
    {
        TransactionId = "tx" + i,
        ProducerGroup = "T",
        CheckNumber = 1,
        HalfMessage = new StoredMessage { Topic = "T", MessageId = "01" + Guid.NewGuid().ToString("N").ToUpperInvariant(), Body = new byte[256 * 1024] },
    };

    [Fact]
    public async Task A_session_ended_because_its_client_does_not_read_stops_its_writer_and_gives_the_connection_its_bytes_back()
    {
        var connection = new AnswerBudget(4 * 1024 * 1024);
        var session = new TelemetrySession("c1", 2 * 1024 * 1024, connection);
        using var callAborted = new CancellationTokenSource(); // never cancelled: the client stays connected
        var stream = new ParkedWriter();
        Task writer = session.RunWriterAsync(stream, callAborted.Token);
        Assert.True(session.TrySendCheck(Check(0)));
        var bound = System.Diagnostics.Stopwatch.StartNew();
        while (Volatile.Read(ref stream.Started) == 0 && bound.Elapsed < TimeSpan.FromSeconds(30)) await Task.Delay(5);
        Assert.True(stream.Started > 0, "the writer never started its first write");
        int sent = 1;
        while (session.IsAlive)
            if (session.TrySendCheck(Check(sent))) sent++;
        Assert.True(sent > 1);
        Assert.Contains("did not read", session.EndReason);
        Assert.True(connection.Held > 1024 * 1024);

        session.Close(); // as the handler's finally does
        // Within the grace the write under way gets, not the 5 minutes: stopped in its write, the stream is to be reset.
        Assert.False(await session.WhenWriterDoneAsync(TimeSpan.FromMinutes(5), TimeProvider.System));
        Assert.True(writer.IsCompleted);
        Assert.Equal(0, connection.Held);
    }

    [Fact]
    public async Task A_closed_session_whose_writer_stays_parked_past_the_bound_is_stopped_and_its_stream_to_be_reset()
    {
        var connection = new AnswerBudget(4 * 1024 * 1024);
        var session = new TelemetrySession("c1", 16 * 1024 * 1024, connection);
        using var callAborted = new CancellationTokenSource();
        Task writer = session.RunWriterAsync(new ParkedWriter(), callAborted.Token);
        Assert.True(session.TrySendCheck(Check(1)));
        Assert.True(session.TrySendCheck(Check(2)));
        session.End("replaced by a newer Telemetry stream with the same client id"); // not for reading: drained first

        var done = session.WhenWriterDoneAsync(TimeSpan.FromSeconds(2), TimeProvider.System);
        Assert.False(done.IsCompleted); // waits for the writer within the bound
        Assert.True(connection.Held > 0);
        Assert.False(await done);
        Assert.True(writer.IsCompleted);
        Assert.Equal(0, connection.Held);
    }

    [Fact]
    public async Task A_closed_session_whose_client_reads_writes_what_was_queued_and_ends_normally()
    {
        var connection = new AnswerBudget(4 * 1024 * 1024);
        var session = new TelemetrySession("c1", 16 * 1024 * 1024, connection);
        var written = new List<Apache.Rocketmq.V2.TelemetryCommand>();
        var stream = new ListWriter(written);
        Assert.True(session.TrySendCheck(Check(1)));
        Task writer = session.RunWriterAsync(stream, CancellationToken.None);
        session.Close();
        Assert.True(await session.WhenWriterDoneAsync(TimeSpan.FromSeconds(30), TimeProvider.System));
        Assert.Single(written);
        Assert.Equal(0, connection.Held);
    }

    private sealed class ListWriter(List<Apache.Rocketmq.V2.TelemetryCommand> written) : Grpc.Core.IServerStreamWriter<Apache.Rocketmq.V2.TelemetryCommand>
    {
        public Grpc.Core.WriteOptions? WriteOptions { get; set; }
        public Task WriteAsync(Apache.Rocketmq.V2.TelemetryCommand message) { lock (written) written.Add(message); return Task.CompletedTask; }
        public Task WriteAsync(Apache.Rocketmq.V2.TelemetryCommand message, CancellationToken ct) => WriteAsync(message);
    }
}
