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
        var many = Enumerable.Range(0, 10_000).Select(i => ($"topic-{i}", "broker-a", 0)).ToList();
        Assert.Equal(10_000, clients.Lock("g", "c1", many).Count);
        Assert.Equal(10_000, clients.LockCount);

        // Still held within the lease: another client cannot take them.
        clock.Advance(TimeSpan.FromSeconds(30));
        Assert.Empty(clients.Lock("g", "c2", many.Take(10)));

        clock.Advance(RemotingClients.SweepEvery + TimeSpan.FromSeconds(31));
        Assert.Single(clients.Lock("other", "c3", [("T", "broker-a", 1)]));
        Assert.Equal(1, clients.LockCount);
    }
}
