using HalfMsg.Broker.Core.Transactions;
using Xunit.Abstractions;

namespace HalfMsg.Core.Tests;

/// <summary>
/// <see cref="ProducerRegistry.ChannelCount"/>, kept as producers come and go so that the dashboard, the
/// <c>halfmsg_producers_connected</c> gauge and the index sizes count the registry without copying it, always equals
/// what the registry lists: across connects, disconnects, a reconnect that replaces a dead channel of its client id,
/// dead channels a check pass drops, a second registration of one channel, refusals at a full group, and many threads
/// at once.
/// </summary>
public sealed class ProducerRegistryCountTests(ITestOutputHelper output)
{
    private static void AssertCountIsTheListing(ProducerRegistry registry, string context)
    {
        int listed = registry.Snapshot().Values.Sum(c => c.Length);
        var listing = registry.Listing(int.MaxValue, int.MaxValue);
        Assert.True(listed == registry.ChannelCount, $"{context}: counted {registry.ChannelCount}, listed {listed}");
        Assert.Equal(listed, listing.ChannelCount);
        Assert.Equal(listed, listing.Groups.Values.Sum(c => c.Length));
    }

    [Fact]
    public void The_count_equals_the_listing_through_every_way_a_producer_comes_and_goes()
    {
        int seed = Environment.TickCount;
        output.WriteLine($"seed {seed}");
        var random = new Random(seed);
        var registry = new ProducerRegistry();
        var live = new List<(string Group, RecordingChannel Channel, IDisposable Registration)>();
        AssertCountIsTheListing(registry, "empty");
        for (int step = 0; step < 5_000; step++)
        {
            string group = $"g{random.Next(6)}";
            string clientId = $"c{random.Next(20)}";
            switch (random.Next(7))
            {
                case 0 or 1: // a connection
                    var channel = new RecordingChannel(clientId);
                    live.Add((group, channel, registry.Register(group, channel)));
                    break;
                case 2 when live.Count > 0: // a disconnect (sometimes disposed twice)
                    int i = random.Next(live.Count);
                    live[i].Registration.Dispose();
                    if (random.Next(4) == 0) live[i].Registration.Dispose();
                    live.RemoveAt(i);
                    break;
                case 3 when live.Count > 0: // a connection dies silently; its client id may reconnect and replace it
                    var dying = live[random.Next(live.Count)];
                    dying.Channel.IsAlive = false;
                    if (random.Next(2) == 0)
                    {
                        var again = new RecordingChannel(dying.Channel.ClientId);
                        live.Add((dying.Group, again, registry.Register(dying.Group, again)));
                    }
                    break;
                case 4: // a check pass drops the group's dead channels
                    registry.Candidates(group, clientId);
                    break;
                case 5 when live.Count > 0: // the same channel registered again (in its group or another)
                    var known = live[random.Next(live.Count)];
                    string into = random.Next(2) == 0 ? known.Group : group;
                    live.Add((into, known.Channel, registry.Register(into, known.Channel)));
                    break;
                case 6: // an explicit unregister of something perhaps not registered
                    registry.Unregister(group, new RecordingChannel(clientId));
                    break;
            }
            AssertCountIsTheListing(registry, $"step {step}");
        }
        foreach (var (_, _, registration) in live) registration.Dispose();
        AssertCountIsTheListing(registry, "all gone");
        Assert.Equal(0, registry.ChannelCount);
    }

    [Fact]
    public void A_refused_registration_is_not_counted()
    {
        var registry = new ProducerRegistry();
        var registrations = new List<IDisposable>();
        for (int i = 0; i < ProducerRegistry.MaxChannelsPerGroup + 5; i++) registrations.Add(registry.Register("full", new RecordingChannel($"c{i}")));
        Assert.Equal(5, registry.RefusedRegistrations);
        Assert.Equal(ProducerRegistry.MaxChannelsPerGroup, registry.ChannelCount);
        AssertCountIsTheListing(registry, "full group");
        foreach (var r in registrations) r.Dispose();
        Assert.Equal(0, registry.ChannelCount);
    }

    [Fact]
    public async Task Many_threads_connecting_and_disconnecting_at_once_leave_the_count_right()
    {
        var registry = new ProducerRegistry();
        using var stop = new CancellationTokenSource();
        var reader = Task.Run(() =>
        {
            // Read while they change it: never below zero, never above what can be registered.
            while (!stop.IsCancellationRequested) Assert.InRange(registry.ChannelCount, 0, 8 * 2_000);
        });
        var kept = await Task.WhenAll(Enumerable.Range(0, 8).Select(t => Task.Run(() =>
        {
            var mine = new List<IDisposable>();
            for (int i = 0; i < 2_000; i++)
            {
                mine.Add(registry.Register($"g{i % 3}", new RecordingChannel($"t{t}-{i}")));
                if (i % 3 == 0) { mine[^1].Dispose(); mine.RemoveAt(mine.Count - 1); }
                if (i % 97 == 0) registry.Candidates($"g{i % 3}", null);
            }
            return mine;
        })));
        AssertCountIsTheListing(registry, "all connected");
        Assert.Equal(kept.Sum(m => m.Count), registry.ChannelCount);
        await Task.WhenAll(kept.Select(mine => Task.Run(() => { foreach (var r in mine) r.Dispose(); })));
        await stop.CancelAsync();
        await reader;
        AssertCountIsTheListing(registry, "all gone");
        Assert.Equal(0, registry.ChannelCount);
    }
}
