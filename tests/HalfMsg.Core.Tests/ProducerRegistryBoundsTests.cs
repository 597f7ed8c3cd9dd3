using System.Reflection;
using HalfMsg.Broker.Core.Transactions;
using Xunit.Abstractions;

namespace HalfMsg.Core.Tests;

/// <summary>Memory review (2026-12-05): the producer registry holds nothing of groups that left.</summary>
public sealed class ProducerRegistryBoundsTests(ITestOutputHelper output)
{
    private static int RoundRobinEntries(ProducerRegistry registry)
        => ((Dictionary<string, int>)typeof(ProducerRegistry).GetField("_roundRobin", BindingFlags.NonPublic | BindingFlags.Instance)!.GetValue(registry)!).Count;

    /// <summary>Producer groups come and go (fresh group names per deployment, or a client naming new ones); once a
    /// group has no live producer the registry must hold nothing of it.</summary>
    [Fact]
    public void A_producer_group_that_left_keeps_no_round_robin_entry()
    {
        var registry = new ProducerRegistry();
        for (int i = 0; i < 10_000; i++)
        {
            string group = $"pg-{Guid.NewGuid():N}";
            using (registry.Register(group, new RecordingChannel($"client-{i}")))
                Assert.Single(registry.Candidates(group, null)); // a check pass asked for this group's producers
        }
        Assert.Empty(registry.Snapshot());
        output.WriteLine($"groups live: 0, round-robin entries: {RoundRobinEntries(registry)}");
        Assert.Equal(0, RoundRobinEntries(registry));
    }

    [Fact]
    public void A_group_whose_producers_died_keeps_no_round_robin_entry_once_a_check_finds_none()
    {
        var registry = new ProducerRegistry();
        var channel = new RecordingChannel("c1");
        registry.Register("g", channel);
        Assert.Single(registry.Candidates("g", null));
        channel.IsAlive = false;
        Assert.Empty(registry.Candidates("g", null));
        Assert.Equal(0, RoundRobinEntries(registry));
    }
}
