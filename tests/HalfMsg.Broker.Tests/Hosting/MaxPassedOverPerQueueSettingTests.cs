using HalfMsg.Broker.Core;
using HalfMsg.Broker.Hosting;
using HalfMsg.Broker.Tests.Admin;

namespace HalfMsg.Broker.Tests.Hosting;

/// <summary>--max-passed-over-per-queue: how many messages of a busy FIFO message group the pick passes over per queue
/// (<see cref="CoreOptions.MaxPassedOverPerQueue"/>); 0 holds the whole queue, as before 2026-12-07.</summary>
public sealed class MaxPassedOverPerQueueSettingTests
{
    private static BrokerOptions Bind(params string[] args) => SettingsBinding.Bind(args);

    [Fact]
    public void The_setting_defaults_to_the_cores_bound_and_takes_zero_or_a_positive_whole_number()
    {
        Assert.Equal(1024, Bind().Core.MaxPassedOverPerQueue);
        Assert.Equal(new CoreOptions().MaxPassedOverPerQueue, Bind().Core.MaxPassedOverPerQueue);
        Assert.Equal(0, Bind("--max-passed-over-per-queue", "0").Core.MaxPassedOverPerQueue);
        Assert.Equal(7, Bind("--max-passed-over-per-queue=7").Core.MaxPassedOverPerQueue);
    }

    [Theory]
    [InlineData("-1")]
    [InlineData("many")]
    [InlineData("1000001")]
    public void A_value_out_of_range_is_refused_naming_the_flag(string value)
    {
        var ex = Assert.Throws<BrokerConfigurationException>(() => Bind("--max-passed-over-per-queue", value));
        Assert.Contains($"--max-passed-over-per-queue must be a whole number in [0, 1000000], not '{value}'", ex.Message);
    }
}
