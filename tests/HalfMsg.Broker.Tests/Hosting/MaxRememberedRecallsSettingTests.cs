using HalfMsg.Broker.Core;
using HalfMsg.Broker.Core.Model;
using HalfMsg.Broker.Hosting;
using HalfMsg.Broker.Tests.Admin;
using Microsoft.Extensions.Configuration;

namespace HalfMsg.Broker.Tests.Hosting;

/// <summary>--max-remembered-recalls: how many recalls of delay messages are remembered until their delivery time
/// (<see cref="CoreOptions.MaxRememberedRecalls"/>, which had no setting before).</summary>
public sealed class MaxRememberedRecallsSettingTests
{
    private static BrokerOptions Bind(params string[] args) => SettingsBinding.Bind(args);

    [Fact]
    public void The_setting_defaults_to_a_million_and_takes_a_positive_whole_number()
    {
        Assert.Equal(1_000_000, Bind().Core.MaxRememberedRecalls);
        Assert.Equal(new CoreOptions().MaxRememberedRecalls, Bind().Core.MaxRememberedRecalls);
        Assert.Equal(5, Bind("--max-remembered-recalls", "5").Core.MaxRememberedRecalls);
        Assert.Equal(1, Bind("--max-remembered-recalls=1").Core.MaxRememberedRecalls);
    }

    [Theory]
    [InlineData("0")]
    [InlineData("-1")]
    [InlineData("many")]
    [InlineData("1.5")]
    [InlineData("100000001")]
    public void A_value_that_is_not_a_positive_whole_number_is_refused_naming_the_flag(string value)
    {
        var ex = Assert.Throws<BrokerConfigurationException>(() => Bind("--max-remembered-recalls", value));
        Assert.Contains($"--max-remembered-recalls must be a whole number in [1, 100000000], not '{value}'", ex.Message);
    }

    [Fact]
    public async Task A_bad_value_in_the_environment_stops_the_start_with_one_line_and_exit_code_2()
    {
        var run = await BrokerCli.RunAsync([], new Dictionary<string, string> { ["Broker__MaxRememberedRecalls"] = "0" });
        Assert.Equal(2, run.ExitCode);
        Assert.Contains("Broker__MaxRememberedRecalls must be a whole number in [1, 100000000], not '0'", run.StdErr);
        Assert.Single(run.StdErr.Trim().Split('\n'));
    }
}

/// <summary>The setting reaches the engine of a started host: with 1, a second recall waiting at once is refused.</summary>
public sealed class MaxRememberedRecallsHostTests() : InProcessAdminHost("max-recalls", "--max-remembered-recalls", "1")
{
    private async Task<SendResult> SendDelayedAsync(string id, long deliverAt)
    {
        var sent = await _host.Engine.SendAsync(new MessageDraft { Topic = "recall-limit", MessageId = id, Body = new byte[] { 1 }, DeliveryTimestampMs = deliverAt });
        Assert.True(sent.IsOk, sent.Error.ToString());
        return sent;
    }

    [Fact]
    public async Task The_host_engine_remembers_at_most_the_configured_recalls()
    {
        Assert.Equal(1, _host.Engine.Options.MaxRememberedRecalls);
        // Due in an hour: neither comes due, and so neither recall is forgotten, while the test runs.
        long dueAt = DateTimeOffset.UtcNow.AddHours(1).ToUnixTimeMilliseconds();
        var first = await SendDelayedAsync("recall-limit-1", dueAt);
        var second = await SendDelayedAsync("recall-limit-2", dueAt + 1_000);

        var (error, outcome) = await _host.Engine.RecallDelayedAsync("recall-limit", first.LogAddress, dueAt, first.MessageId);
        Assert.True(error.IsOk, error.ToString());
        Assert.Equal(RecallOutcome.Recalled, outcome);
        var (refused, _) = await _host.Engine.RecallDelayedAsync("recall-limit", second.LogAddress, dueAt + 1_000, second.MessageId);
        Assert.Equal(BrokerStatus.TooManyRequests, refused.Status);
        Assert.Contains("--max-remembered-recalls", refused.Message);
    }
}
