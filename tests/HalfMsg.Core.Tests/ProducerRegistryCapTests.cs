using HalfMsg.Broker.Core.Transactions;
using Xunit.Abstractions;

namespace HalfMsg.Core.Tests;

/// <summary>Memory review (2026-12-05): a producer group's registrations are capped, and finding a group's candidates
/// costs one pass over them.</summary>
public sealed class ProducerRegistryCapTests(ITestOutputHelper output)
{
    [Fact]
    public void A_group_registers_at_most_its_cap_of_producer_connections_and_refuses_more()
    {
        var registry = new ProducerRegistry();
        var refused = new List<(string Group, string ClientId)>();
        registry.RegistrationRefused += (g, c) => refused.Add((g, c));
        var channels = Enumerable.Range(0, ProducerRegistry.MaxChannelsPerGroup).Select(i => new RecordingChannel($"c{i}")).ToList();
        var sw = System.Diagnostics.Stopwatch.StartNew();
        foreach (var c in channels) registry.Register("g", c);
        output.WriteLine($"{channels.Count:N0} registrations: {sw.ElapsedMilliseconds} ms");

        var extra = registry.Register("g", new RecordingChannel("extra"));
        Assert.Equal([("g", "extra")], refused);
        Assert.Equal(1, registry.RefusedRegistrations);
        extra.Dispose(); // what a caller does when its connection ends: nothing of the group goes
        Assert.Equal(ProducerRegistry.MaxChannelsPerGroup, registry.CountLive("g"));
        sw.Restart();
        var candidates = registry.Candidates("g", "c5");
        output.WriteLine($"candidates: {sw.ElapsedMilliseconds} ms");
        Assert.Equal(ProducerRegistry.MaxChannelsPerGroup, candidates.Count);
        Assert.Same(channels[5], candidates[0]);
        Assert.Equal(candidates.Count, candidates.Distinct().Count());

        // A registered connection registering again, or a dead one's successor with its client id, still gets in.
        registry.Register("g", channels[7]);
        channels[8].IsAlive = false;
        registry.Register("g", new RecordingChannel("c8"));
        Assert.Equal(1, registry.RefusedRegistrations);
        // And once one leaves, a new one fits.
        registry.Unregister("g", channels[9]);
        registry.Register("g", new RecordingChannel("late"));
        Assert.Equal(1, registry.RefusedRegistrations);
        Assert.Contains("late", registry.Snapshot()["g"]);
    }
}
