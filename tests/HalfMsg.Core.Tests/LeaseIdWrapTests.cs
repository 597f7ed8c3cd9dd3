using HalfMsg.Broker.Core;
using HalfMsg.Broker.Core.Delivery;
using HalfMsg.Broker.Core.Model;

namespace HalfMsg.Core.Tests;

/// <summary>
/// Lease ids are (a random incarnation &lt;&lt; 32) plus the run's lease count. Until 2026-12-07 the count was a 32-bit
/// counter or-ed into the low half: after 2^32 leases in one run (about two days at 25,000 deliveries a second) it
/// wrapped to 0 and the run handed out its first ids again. A handle of a lease that had ended then matched a new lease
/// of the same message, lease ids no longer ordered leases as they were taken (a re-drive's continuation), and an id
/// taken before the wrap no longer counted as this run's. Now the count carries into the high half: ids keep growing.
/// </summary>
public sealed class LeaseIdWrapTests
{
    private static long LeaseIdOf(DeliveredMessage m) => ReceiptHandle.TryParse(m.ReceiptHandle, out var handle) ? handle.LeaseId : throw new FormatException(m.ReceiptHandle);

    /// <summary>
    /// A consumer's lease runs out and, exactly 2^32 leases later, the message is leased again: the first consumer's
    /// late ack must be refused as stale. Before the fix the new lease had the very same id (the same handle), and the
    /// late ack was taken for the new consumer's: the message was acknowledged while the new consumer still worked on it.
    /// </summary>
    [Fact]
    public async Task A_handle_whose_lease_ran_out_does_not_match_a_lease_taken_2_pow_32_leases_later()
    {
        await using var h = await EngineHarness.StartAsync();
        await h.SendNormalAsync("events", "job");
        var first = Assert.Single(await h.ReceiveAsync("g", "events", batch: 1, invisible: TimeSpan.FromSeconds(1)));
        h.Clock.Advance(TimeSpan.FromSeconds(2));
        h.Engine.RunSweep();

        h.Engine.LeasesTakenForTests += (1L << 32) - 1;
        var second = Assert.Single(await h.ReceiveAsync("g", "events", batch: 1));
        Assert.Equal(2, second.DeliveryAttempt);
        Assert.NotEqual(first.ReceiptHandle, second.ReceiptHandle);
        Assert.True(LeaseIdOf(second) > LeaseIdOf(first), $"{LeaseIdOf(second):x16} after {LeaseIdOf(first):x16}");

        var late = await h.Engine.AckAsync("g", "events", first.ReceiptHandle);
        Assert.Equal(BrokerStatus.InvalidReceiptHandle, late.Status);
        Assert.True((await h.Engine.AckAsync("g", "events", second.ReceiptHandle)).IsOk);
    }

    /// <summary>
    /// Leases taken on either side of the run's 2^32nd: their ids grow in the order they were taken, each counts as
    /// this run's, and they survive a restart from the checkpoint and one from the log alone (the ids are stored as
    /// they always were, 64 bits: the state recovered is the live one and the handles still ack).
    /// </summary>
    [Theory]
    [InlineData(true)]
    [InlineData(false)]
    public async Task Lease_ids_keep_growing_past_the_2_pow_32nd_lease_and_survive_a_restart(bool fromCheckpoint)
    {
        await using var h = await EngineHarness.StartAsync();
        for (int i = 0; i < 6; i++) await h.SendNormalAsync("events", $"job {i}");
        h.Engine.LeasesTakenForTests = (1L << 32) - 3;
        var got = new List<DeliveredMessage>();
        for (int i = 0; i < 6; i++) got.Add(Assert.Single(await h.ReceiveAsync("g", "events", batch: 1, invisible: TimeSpan.FromMinutes(5))));

        var ids = got.Select(LeaseIdOf).ToArray();
        for (int i = 1; i < ids.Length; i++) Assert.True(ids[i] > ids[i - 1], $"lease {i}: {ids[i]:x16} after {ids[i - 1]:x16}");
        foreach (long id in ids) Assert.True(h.Engine.IsLeaseOfThisRunForTests(id), $"{id:x16} is not of this run");
        Assert.False(h.Engine.IsLeaseOfThisRunForTests(ids[^1] + 1)); // not handed out yet
        Assert.False(h.Engine.IsLeaseOfThisRunForTests(ids[0] - (1L << 32)));

        string live = h.Engine.DescribeState();
        if (fromCheckpoint) await h.Engine.CheckpointAsync();
        await h.Engine.DisposeAsync();
        if (!fromCheckpoint)
            foreach (var f in Directory.GetFiles(Path.Combine(h.DataDir, "checkpoints"), "checkpoint-*.bin")) File.Delete(f);
        await h.RestartAfterDeletedCheckpointAsync();
        States.AssertSame(live, h.Engine.DescribeState(), fromCheckpoint ? "checkpoint" : "log");
        foreach (var m in got) Assert.True((await h.Engine.AckAsync("g", "events", m.ReceiptHandle)).IsOk, m.ReceiptHandle);
    }

    /// <summary>The id layout is the one older builds wrote and read for a run's first 2^32 leases (handles they issued,
    /// records and checkpoints they wrote read as before); the 2^32nd carries into the high half instead of wrapping.</summary>
    [Fact]
    public void The_first_ids_of_a_run_have_the_old_layout_and_the_count_carries_into_the_high_half()
    {
        var groups = new ConsumerGroups();
        long first = groups.NextLeaseId();
        Assert.Equal(1u, (uint)first);
        int incarnation = (int)(first >> 32);
        Assert.InRange(incarnation, 1, int.MaxValue);
        groups.LeasesTakenForTests = uint.MaxValue;
        Assert.Equal(((long)incarnation + 1) << 32, groups.NextLeaseId());
        Assert.True(groups.IsOfThisRun(first));
        Assert.True(groups.IsOfThisRun(((long)incarnation << 32) | uint.MaxValue));
    }
}
