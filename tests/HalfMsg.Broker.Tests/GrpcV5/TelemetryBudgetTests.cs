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
}
