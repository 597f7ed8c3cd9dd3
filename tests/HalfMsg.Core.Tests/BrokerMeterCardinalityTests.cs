using HalfMsg.Broker.Core.Diagnostics;

namespace HalfMsg.Core.Tests;

public sealed class BrokerMeterCardinalityTests
{
    [Fact]
    public void The_per_topic_series_limit_covers_every_topic_and_group_the_broker_allows()
    {
        Assert.Equal(21_000, BrokerMeter.CardinalityLimit(10_000, 10_000));
        Assert.Equal(2_001, BrokerMeter.CardinalityLimit(1, 1_000));
        Assert.Equal(BrokerMeter.MaxCardinalityLimit, BrokerMeter.CardinalityLimit(10_000_000, 10_000_000));
    }
}
