using HalfMsg.Broker.Core;
using HalfMsg.Broker.Core.Model;
using HalfMsg.Broker.Hosting;
using HalfMsg.Broker.Tests.Admin;
using Microsoft.Extensions.Configuration;

namespace HalfMsg.Broker.Tests.Hosting;

/// <summary>--decision-retention and --max-remembered-decisions: how long and how many decided transaction ids are
/// remembered (<see cref="CoreOptions.DecisionRetention"/>, <see cref="CoreOptions.MaxRememberedDecisions"/>), which had
/// no setting before the evening session of 2026-12-06: at 25,000 transactions a second the million ids last 40 s, and
/// an operator could not keep them longer.</summary>
public sealed class DecisionMemorySettingTests
{
    private static BrokerOptions Bind(params string[] args) => SettingsBinding.Bind(args);

    [Fact]
    public void The_settings_default_to_the_engines_defaults_and_take_their_values()
    {
        Assert.Equal(new CoreOptions().DecisionRetention, Bind().Core.DecisionRetention);
        Assert.Equal(TimeSpan.FromHours(1), Bind().Core.DecisionRetention);
        Assert.Equal(new CoreOptions().MaxRememberedDecisions, Bind().Core.MaxRememberedDecisions);
        Assert.Equal(TimeSpan.FromHours(6), Bind("--decision-retention", "6h").Core.DecisionRetention);
        Assert.Equal(5_000_000, Bind("--max-remembered-decisions=5000000").Core.MaxRememberedDecisions);
    }

    [Theory]
    [InlineData("--decision-retention", "30s")]
    [InlineData("--decision-retention", "8d")]
    [InlineData("--decision-retention", "60")]
    [InlineData("--max-remembered-decisions", "999")]
    [InlineData("--max-remembered-decisions", "many")]
    [InlineData("--max-remembered-decisions", "100000001")]
    public void A_value_out_of_range_is_refused_naming_the_flag(string flag, string value)
    {
        var ex = Assert.Throws<BrokerConfigurationException>(() => Bind(flag, value));
        Assert.Contains(flag, ex.Message);
        Assert.Contains($"'{value}'", ex.Message);
    }
}

/// <summary>The setting reaches the engine of a started host: past the cap the oldest decision is forgotten, and a
/// repeat of it is answered "not found" naming the flags.</summary>
public sealed class DecisionMemoryHostTests() : InProcessAdminHost("decision-memory", "--max-remembered-decisions", "1000", "--decision-retention", "2h")
{
    [Fact]
    public async Task Past_the_configured_count_the_oldest_decision_is_forgotten()
    {
        Assert.Equal(1_000, _host.Engine.Options.MaxRememberedDecisions);
        Assert.Equal(TimeSpan.FromHours(2), _host.Engine.Options.DecisionRetention);
        var ids = new List<string>();
        for (int i = 0; i < 1_001; i++)
        {
            var half = await _host.Engine.SendHalfAsync(new MessageDraft { Topic = "decided-cap", MessageId = $"decided-cap-{i}", Body = new byte[] { 1 } }, "pg", null, null);
            Assert.True(half.IsOk, half.Error.ToString());
            Assert.True((await _host.Engine.EndTransactionAsync(half.TransactionId, null, TransactionResolution.Commit, DecisionSource.Client)).IsOk);
            ids.Add(half.TransactionId);
        }

        var newest = await _host.Engine.EndTransactionAsync(ids[^1], null, TransactionResolution.Commit, DecisionSource.Client);
        Assert.True(newest.IsOk && newest.WasDuplicate, newest.Error.ToString());
        var oldest = await _host.Engine.EndTransactionAsync(ids[0], null, TransactionResolution.Commit, DecisionSource.Client);
        Assert.Equal(BrokerStatus.TransactionNotFound, oldest.Error.Status);
        Assert.Contains("--max-remembered-decisions", oldest.Error.Message);
    }
}
