using HalfMsg.Broker.Hosting;
using Microsoft.Extensions.Configuration;

namespace HalfMsg.Broker.Tests.Hosting;

/// <summary>
/// A duration refused for its bounds says the bounds as they can be written back. Until the late-night session of
/// 2026-12-07 the upper bound was shown in whole days and the lower one in milliseconds, so <c>--grpc-retry-delays
/// "1s 13h"</c> was refused as "at most 1d" (12 h rounded up, though 13 h is under a day) and <c>--decision-retention
/// 30s</c> as "at least 60000 ms" (found by a new user's pass over the README).
/// </summary>
public sealed class DurationBoundMessageTests
{
    [Theory]
    [InlineData("--grpc-retry-delays", "1s 13h", "must be a duration of at least 0 and at most 12h", "not '13h'")]
    [InlineData("--decision-retention", "30s", "must be a duration of at least 1m and at most 7d", "not '30s'")]
    [InlineData("--transaction-check-interval", "5ms", "must be a duration of at least 10ms and at most 24d", "not '5ms'")]
    [InlineData("--remoting-write-timeout", "25d", "must be a duration of at least 100ms and at most 24d", "not '25d'")]
    [InlineData("--transaction-timeout", "-1s", "must be a duration of at least 0:", "not '-1s'")]
    public void A_duration_out_of_bounds_names_the_bounds_in_units_it_can_be_written_in(string flag, string value, string bounds, string echo)
    {
        var config = new ConfigurationBuilder().AddInMemoryCollection(BrokerConfiguration.ParseCommandLine([flag, value])).Build();
        var ex = Assert.Throws<BrokerConfigurationException>(() => BrokerConfiguration.Bind(config));
        Assert.Contains($"{flag} {bounds}", ex.Message, StringComparison.Ordinal);
        Assert.Contains(echo, ex.Message, StringComparison.Ordinal);
    }

    [Theory]
    [InlineData(0L, "0")]
    [InlineData(10 * TimeSpan.TicksPerMillisecond, "10ms")]
    [InlineData(1500 * TimeSpan.TicksPerMillisecond, "1500ms")]
    [InlineData(90 * TimeSpan.TicksPerSecond, "90s")]
    [InlineData(TimeSpan.TicksPerMinute, "1m")]
    [InlineData(12 * TimeSpan.TicksPerHour, "12h")]
    [InlineData(36 * TimeSpan.TicksPerHour, "36h")]
    [InlineData(24 * TimeSpan.TicksPerDay, "24d")]
    [InlineData(1, "00:00:00.0000001")]
    public void A_bound_is_shown_in_its_largest_whole_unit_and_reads_back_as_itself(long ticks, string shown)
    {
        var bound = TimeSpan.FromTicks(ticks);
        Assert.Equal(shown, BrokerConfiguration.FormatDuration(bound));
        Assert.True(BrokerConfiguration.TryParseDuration(shown, out var back));
        Assert.Equal(bound, back);
    }
}
