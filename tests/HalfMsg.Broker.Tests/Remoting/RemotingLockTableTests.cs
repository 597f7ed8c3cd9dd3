using HalfMsg.Broker.FrontEnds.Remoting;
using HalfMsg.TestKit;

namespace HalfMsg.Broker.Tests.Remoting;

/// <summary>
/// LOCK_BATCH_MQ takes any group, topic and queue a client names, so the lock table must not keep what it was told
/// for good: a lock ends 60 s after it was last taken (RocketMQ's lease), and ended locks are swept.
/// </summary>
public sealed class RemotingLockTableTests
{
    [Fact]
    public void Ended_locks_are_swept_so_the_table_does_not_keep_what_clients_named()
    {
        var clock = new ManualClock();
        var clients = new RemotingClients(null!, clock);
        var many = Enumerable.Range(0, 4_000).Select(i => ($"topic-{i}", "broker-a", 0)).ToList();
        Assert.Equal(4_000, clients.Lock("g", "c1", many).Count);
        Assert.Equal(4_000, clients.LockCount);

        // Still held within the lease: another client cannot take them.
        clock.Advance(TimeSpan.FromSeconds(30));
        Assert.Empty(clients.Lock("g", "c2", many.Take(10)));

        clock.Advance(RemotingClients.SweepEvery + TimeSpan.FromSeconds(31));
        Assert.Single(clients.Lock("other", "c3", [("T", "broker-a", 1)]));
        Assert.Equal(1, clients.LockCount);
    }

    /// <summary>A connection holds a bounded number of locks; its ended ones make room again.</summary>
    [Fact]
    public void A_connection_holds_at_most_its_cap_of_locks()
    {
        var clock = new ManualClock();
        var clients = new RemotingClients(null!, clock, maxLocksPerOwner: 3);
        var owner = new object();
        var five = Enumerable.Range(0, 5).Select(i => ("T", "broker-a", i)).ToList();
        Assert.Equal(3, clients.Lock("g", "c1", five, owner).Count);
        // Renewing a held lock is not a new one; another connection has its own cap.
        Assert.Equal(3, clients.Lock("g", "c1", five.Take(3), owner).Count);
        Assert.Equal(2, clients.Lock("g", "c2", five.Skip(3), new object()).Count);

        clock.Advance(TimeSpan.FromSeconds(61));
        Assert.Equal(3, clients.Lock("g", "c1", Enumerable.Range(10, 5).Select(i => ("T", "broker-a", i)), owner).Count);
    }

    /// <summary>The table is swept of ended locks when it grows, not only once a minute.</summary>
    [Fact]
    public void A_growing_lock_table_is_swept_before_the_minute_is_up()
    {
        var clock = new ManualClock();
        var clients = new RemotingClients(null!, clock, maxLocksPerOwner: 100_000);
        static IEnumerable<(string, string, int)> Queues(string topic, int n) => Enumerable.Range(0, n).Select(i => (topic, "broker-a", i));
        clients.Lock("g", "c1", Queues("First", 1));                   // sweeps; the next timed sweep is a minute later
        clock.Advance(TimeSpan.FromSeconds(1));
        clients.Lock("g", "c1", Queues("A", RemotingClients.MinLockSweepSize));
        clock.Advance(TimeSpan.FromSeconds(59));
        clients.Lock("g", "c1", Queues("Second", 1));                  // timed sweep: the A locks have not ended yet
        clock.Advance(TimeSpan.FromSeconds(2));                        // now they have; the next timed sweep is 58 s away
        int big = 2 * (RemotingClients.MinLockSweepSize + 2);
        clients.Lock("g", "c1", Queues("B", big));
        clients.Lock("g", "c1", Queues("Last", 1));                    // the table passed twice its size after the last sweep
        Assert.Equal(big + 2, clients.LockCount);                      // B, Second and Last; First and A were swept
    }
}
