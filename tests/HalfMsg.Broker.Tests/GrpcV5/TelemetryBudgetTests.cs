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
