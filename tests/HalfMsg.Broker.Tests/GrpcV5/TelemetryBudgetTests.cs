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
