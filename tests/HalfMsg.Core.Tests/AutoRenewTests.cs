using HalfMsg.Broker.Core;
using HalfMsg.Broker.Core.Model;

namespace HalfMsg.Core.Tests;

/// <summary>
/// A push consumer of the official clients receives with <c>auto_renew</c> and no lease length, and counts on the
/// broker (RocketMQ's proxy) to extend the lease while it processes and is connected: a listener that takes longer than
/// the lease must not see its message handed to another consumer, and its ack with the handle it got must succeed.
/// </summary>
public sealed class AutoRenewTests
{
    private static readonly TimeSpan Lease = TimeSpan.FromSeconds(10);

    private static async Task<DeliveredMessage> ReceiveOneAsync(EngineHarness h, string clientId, bool autoRenew, string topic = "t")
    {
        var r = await h.Engine.ReceiveAsync(new ReceiveRequest
        {
            ConsumerGroup = "g", Topic = topic, BatchSize = 1, InvisibleDuration = Lease, ClientId = clientId, AutoRenew = autoRenew,
        });
        Assert.True(r.IsOk, r.Error.ToString());
        return Assert.Single(r.Messages);
    }

    private static async Task<int> VisibleToAnotherConsumerAsync(EngineHarness h, string topic = "t")
    {
        var r = await h.Engine.ReceiveAsync(new ReceiveRequest { ConsumerGroup = "g", Topic = topic, BatchSize = 32, InvisibleDuration = Lease, ClientId = "other" });
        return r.Messages.Count;
    }

    private static async Task<EngineHarness> StartWithOneMessageAsync(Func<CoreOptions, CoreOptions>? configure = null)
    {
        var h = await EngineHarness.StartAsync(configure);
        await h.SendNormalAsync("t", "slow work");
        return h;
    }

    [Fact]
    public async Task A_push_consumers_lease_is_extended_while_it_is_active_and_its_first_handle_still_acks()
    {
        await using var h = await StartWithOneMessageAsync();
        h.Engine.Consumers.Seen("g", "push-1", "gRPC");
        var m = await ReceiveOneAsync(h, "push-1", autoRenew: true);

        for (int i = 0; i < 6; i++) // a minute of processing, six leases long
        {
            h.Clock.Advance(Lease);
            h.Engine.Consumers.Seen("g", "push-1", "gRPC"); // its heartbeats
            h.Engine.RunSweep();
            Assert.Equal(0, await VisibleToAnotherConsumerAsync(h));
        }

        Assert.Equal(6, h.Engine.Metrics.LeasesRenewed);
        Assert.True((await h.Engine.AckAsync("g", "t", m.ReceiptHandle)).IsOk);
        h.Clock.Advance(Lease * 2);
        h.Engine.RunSweep();
        Assert.Equal(0, await VisibleToAnotherConsumerAsync(h));
        Assert.Equal(6, h.Engine.Metrics.LeasesRenewed);
    }

    [Fact]
    public async Task An_ack_between_the_lease_end_and_the_next_sweep_is_accepted()
    {
        await using var h = await StartWithOneMessageAsync();
        h.Engine.Consumers.Seen("g", "push-1", "gRPC");
        var m = await ReceiveOneAsync(h, "push-1", autoRenew: true);
        h.Clock.Advance(Lease); // the lease ends now; the sweep has not run
        Assert.True((await h.Engine.AckAsync("g", "t", m.ReceiptHandle)).IsOk);
        h.Clock.Advance(Lease * 2);
        h.Engine.RunSweep();
        Assert.Equal(0, await VisibleToAnotherConsumerAsync(h));
    }

    [Fact]
    public async Task Without_auto_renew_the_lease_ends_as_asked()
    {
        await using var h = await StartWithOneMessageAsync();
        h.Engine.Consumers.Seen("g", "simple-1", "gRPC");
        var m = await ReceiveOneAsync(h, "simple-1", autoRenew: false);
        h.Clock.Advance(Lease);
        h.Engine.RunSweep();
        Assert.Equal(1, await VisibleToAnotherConsumerAsync(h));
        Assert.False((await h.Engine.AckAsync("g", "t", m.ReceiptHandle)).IsOk);
        Assert.Equal(0, h.Engine.Metrics.LeasesRenewed);
    }

    [Fact]
    public async Task A_consumer_that_left_is_not_renewed_for()
    {
        await using var h = await StartWithOneMessageAsync();
        h.Engine.Consumers.Seen("g", "push-1", "gRPC");
        await ReceiveOneAsync(h, "push-1", autoRenew: true);
        h.Engine.Consumers.Left("g", "push-1"); // gone from the members without its leases released
        // No longer a member (forgotten, or a producer that never received): a termination does not walk the leases.
        Assert.Equal(0, h.Engine.ClientLeft(null, "push-1"));
        h.Clock.Advance(TimeSpan.FromSeconds(1));
        h.Engine.RunSweep();
        Assert.Equal(0, await VisibleToAnotherConsumerAsync(h));
        h.Clock.Advance(Lease - TimeSpan.FromSeconds(1));
        h.Engine.RunSweep();
        Assert.Equal(1, await VisibleToAnotherConsumerAsync(h));
    }

    private static async Task<IReadOnlyList<DeliveredMessage>> ReceiveAsync(EngineHarness h, string group, string clientId, bool autoRenew, int batch = 32)
    {
        h.Engine.Consumers.Seen(group, clientId, "gRPC");
        var r = await h.Engine.ReceiveAsync(new ReceiveRequest
        {
            ConsumerGroup = group, Topic = "t", BatchSize = batch, InvisibleDuration = Lease, ClientId = clientId, AutoRenew = autoRenew,
        });
        Assert.True(r.IsOk || r.Error.Status == BrokerStatus.MessageNotFound, r.Error.ToString());
        return r.Messages;
    }

    [Fact]
    public async Task A_push_consumer_that_leaves_hands_its_messages_on_a_second_later_and_an_ack_in_that_second_holds()
    {
        await using var h = await EngineHarness.StartAsync();
        await h.SendNormalAsync("t", "acked as it leaves");
        await h.SendNormalAsync("t", "prefetched, never processed");
        var held = await ReceiveAsync(h, "g", "push-1", autoRenew: true);
        Assert.Equal(2, held.Count);

        Assert.Equal(2, h.Engine.ClientLeft("g", "push-1")); // NotifyClientTermination
        Assert.Equal(2, h.Engine.Metrics.LeasesReleased);
        h.Clock.Advance(TimeSpan.FromMilliseconds(999));
        h.Engine.RunSweep();
        Assert.Empty(await ReceiveAsync(h, "g", "push-2", autoRenew: true));
        Assert.True((await h.Engine.AckAsync("g", "t", held[0].ReceiptHandle)).IsOk);

        h.Clock.Advance(TimeSpan.FromMilliseconds(1));
        h.Engine.RunSweep();
        var again = Assert.Single(await ReceiveAsync(h, "g", "push-2", autoRenew: true));
        Assert.Equal(held[1].Message.MessageId, again.Message.MessageId);
        Assert.Equal(2, again.DeliveryAttempt);
        Assert.Equal(0, h.Engine.Metrics.LeasesRenewed);
    }

    private static async Task SendManyAsync(EngineHarness h, int count)
    {
        for (int i = 0; i < count; i += 256)
        {
            var drafts = Enumerable.Range(i, Math.Min(256, count - i)).Select(n => h.Draft("t", $"m{n}")).ToList();
            Assert.All(await h.Engine.SendBatchAsync(drafts), r => Assert.True(r.Error.IsOk, r.Error.ToString()));
        }
    }

    [Fact]
    public async Task A_termination_looks_at_the_leaving_clients_own_leases_not_at_every_lease_of_its_group()
    {
        // A client can receive and terminate in a loop: each termination used to walk every in-flight lease of its
        // groups under the engine lock.
        await using var h = await EngineHarness.StartAsync();
        await SendManyAsync(h, 1_002);
        int held = 0;
        while (held < 1_000) held += (await ReceiveAsync(h, "g", "simple-1", autoRenew: false, batch: Math.Min(32, 1_000 - held))).Count;
        Assert.Equal(2, (await ReceiveAsync(h, "g", "push-1", autoRenew: true, batch: 2)).Count);

        var before = h.Engine.RenewedLeasesForTests.Examined;
        Assert.Equal(2, h.Engine.ClientLeft("g", "push-1"));
        Assert.InRange(h.Engine.RenewedLeasesForTests.Examined - before, 2, 2);
        h.Clock.Advance(TimeSpan.FromSeconds(1));
        h.Engine.RunSweep();
        Assert.Equal(2, (await ReceiveAsync(h, "g", "push-2", autoRenew: false)).Count); // push-1's two, handed on
    }

    [Fact]
    public async Task The_table_of_renewed_leases_stays_bounded_while_a_push_consumer_acks_for_ever()
    {
        await using var h = await EngineHarness.StartAsync();
        const int messages = 9_000;
        await SendManyAsync(h, messages);
        int maxEntries = 0, acked = 0;
        while (acked < messages)
        {
            var got = await ReceiveAsync(h, "g", "push-1", autoRenew: true);
            Assert.NotEmpty(got);
            Assert.All(await h.Engine.AckBatchAsync("g", "t", got.Select(m => m.ReceiptHandle).ToList()), e => Assert.True(e.IsOk, e.ToString()));
            acked += got.Count;
            maxEntries = Math.Max(maxEntries, h.Engine.RenewedLeasesForTests.Entries);
        }
        // Every ack leaves a stale entry; the table is pruned past 2 x live + 4,096 (live: at most one receive's 32).
        Assert.InRange(maxEntries, 1, 2 * 32 + ConsumerGroupsSlack + 1);
        Assert.Equal(0, h.Engine.ClientLeft(null, "push-1"));
        Assert.Equal(0, h.Engine.RenewedLeasesForTests.Entries);
    }

    private const int ConsumerGroupsSlack = 4096;

    [Fact]
    public async Task Leaving_releases_only_that_clients_renewed_leases_in_the_groups_it_left()
    {
        await using var h = await EngineHarness.StartAsync();
        for (int i = 0; i < 3; i++) await h.SendNormalAsync("t", $"m{i}");
        Assert.Single(await ReceiveAsync(h, "g", "push-1", autoRenew: true, batch: 1));
        Assert.Single(await ReceiveAsync(h, "g", "push-1", autoRenew: false, batch: 1)); // a receive that asked for a lease length
        Assert.Single(await ReceiveAsync(h, "g", "push-2", autoRenew: true, batch: 1));
        Assert.Single(await ReceiveAsync(h, "g2", "push-1", autoRenew: true, batch: 1));

        Assert.Equal(0, h.Engine.ClientLeft("g3", "push-1"));
        Assert.Equal(0, h.Engine.ClientLeft("g", "push-3"));
        Assert.Equal(0, h.Engine.ClientLeft("g", ""));
        Assert.Equal(1, h.Engine.ClientLeft("g", "push-1"));
        Assert.Equal(0, h.Engine.ClientLeft("g", "push-1")); // already released
        Assert.Equal(1, h.Engine.ClientLeft(null, "push-1")); // every group: g2's lease

        h.Clock.Advance(TimeSpan.FromSeconds(1));
        h.Engine.RunSweep();
        Assert.Equal(2, Assert.Single(await ReceiveAsync(h, "g", "push-9", autoRenew: false)).DeliveryAttempt);
        Assert.Equal(2, Assert.Single(await ReceiveAsync(h, "g2", "push-9", autoRenew: false, batch: 1)).DeliveryAttempt);
        h.Clock.Advance(Lease - TimeSpan.FromSeconds(1)); // the other leases end as leased; push-2's is renewed
        h.Engine.RunSweep();
        Assert.Equal(2, Assert.Single(await ReceiveAsync(h, "g", "push-9", autoRenew: false)).DeliveryAttempt);
        Assert.Equal(1, h.Engine.Metrics.LeasesRenewed);
        Assert.Equal(2, h.Engine.Metrics.LeasesReleased);
    }

    [Fact]
    public async Task A_consumer_not_seen_for_the_timeout_is_not_renewed_for()
    {
        await using var h = await StartWithOneMessageAsync(o => o with { AutoRenewClientTimeout = TimeSpan.FromSeconds(25) });
        h.Engine.Consumers.Seen("g", "push-1", "gRPC");
        await ReceiveOneAsync(h, "push-1", autoRenew: true);
        h.Clock.Advance(Lease); // seen 10 s ago: renewed
        h.Engine.RunSweep();
        h.Clock.Advance(Lease); // 20 s ago: renewed
        h.Engine.RunSweep();
        Assert.Equal(0, await VisibleToAnotherConsumerAsync(h));
        h.Clock.Advance(Lease); // 30 s ago: gone quiet (a crashed process)
        h.Engine.RunSweep();
        Assert.Equal(2, h.Engine.Metrics.LeasesRenewed);
        Assert.Equal(1, await VisibleToAnotherConsumerAsync(h));
    }

    [Fact]
    public async Task Renewal_stops_at_the_limit_after_a_nack_and_for_a_later_consumer_that_does_not_ask()
    {
        await using var h = await StartWithOneMessageAsync(o => o with { MaxAutoRenew = TimeSpan.FromSeconds(25), MaxDeliveryAttempts = 5 });
        h.Engine.Consumers.Seen("g", "push-1", "gRPC");
        await ReceiveOneAsync(h, "push-1", autoRenew: true);
        h.Clock.Advance(Lease); // renewed to 20 s
        h.Engine.RunSweep();
        h.Clock.Advance(Lease); // renewed to 25 s, the limit
        h.Engine.RunSweep();
        Assert.Equal(0, await VisibleToAnotherConsumerAsync(h));
        h.Clock.Advance(TimeSpan.FromSeconds(5));
        h.Engine.Consumers.Seen("g", "push-1", "gRPC");
        h.Engine.RunSweep();
        Assert.Equal(2, h.Engine.Metrics.LeasesRenewed);

        // Delivered again to push-2, which nacks it (the push consumer's retry): the lease ends when the nack says.
        h.Engine.Consumers.Seen("g", "push-2", "gRPC");
        var again = await ReceiveOneAsync(h, "push-2", autoRenew: true);
        Assert.Equal(2, again.DeliveryAttempt);
        var nack = await h.Engine.ChangeInvisibleDurationAsync("g", "t", again.ReceiptHandle, TimeSpan.FromSeconds(1));
        Assert.True(nack.IsOk);
        h.Clock.Advance(TimeSpan.FromSeconds(1));
        h.Engine.RunSweep();
        Assert.Equal(2, h.Engine.Metrics.LeasesRenewed);

        // Then to a simple consumer: not renewed for push-2, which is still active.
        var third = await ReceiveOneAsync(h, "simple-1", autoRenew: false);
        Assert.Equal(3, third.DeliveryAttempt);
        h.Clock.Advance(Lease);
        h.Engine.Consumers.Seen("g", "push-2", "gRPC");
        h.Engine.RunSweep();
        Assert.Equal(2, h.Engine.Metrics.LeasesRenewed);
        Assert.Equal(1, await VisibleToAnotherConsumerAsync(h));
    }
}
