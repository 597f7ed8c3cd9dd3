using Apache.Rocketmq.V2;
using HalfMsg.ProducerClient;

namespace HalfMsg.Client.Tests;

/// <summary>The queues a producer sends a message of one type to, worked out once per route and type.</summary>
public sealed class PublishTargetsTests
{
    private static MessageQueue Queue(int id, Permission permission, int port, params MessageType[] accepts)
    {
        var q = new MessageQueue
        {
            Topic = new Resource { Name = "t" },
            Id = id,
            Permission = permission,
            Broker = new Apache.Rocketmq.V2.Broker { Name = "b", Endpoints = new Endpoints { Addresses = { new Address { Host = "127.0.0.1", Port = port } } } },
        };
        q.AcceptMessageTypes.AddRange(accepts);
        return q;
    }

    private static List<MessageQueue> Route() =>
    [
        Queue(0, Permission.Read, 9000),
        Queue(1, Permission.Write, 9001, MessageType.Normal),
        Queue(2, Permission.ReadWrite, 9002, MessageType.Transaction),
        Queue(3, Permission.ReadWrite, 9003),
    ];

    [Fact]
    public void Writable_queues_are_filtered_by_type_only_when_the_broker_asks_and_each_keeps_its_endpoint()
    {
        var route = Route();
        var tx = PublishTargets.For(route, MessageType.Transaction, validateType: true);
        Assert.Equal([2, 3], tx.Queues.Select(q => q.Id));
        Assert.Equal([9002, 9003], tx.Endpoints.Select(e => e.Port));

        var any = PublishTargets.For(route, MessageType.Transaction, validateType: false);
        Assert.Equal([1, 2, 3], any.Queues.Select(q => q.Id));
        Assert.Equal([9001, 9002, 9003], any.Endpoints.Select(e => e.Port));

        var fifo = PublishTargets.For(route, MessageType.Fifo, validateType: true);
        Assert.Equal([3], fifo.Queues.Select(q => q.Id));
    }

    [Fact]
    public void A_route_and_type_are_worked_out_once_and_a_refreshed_route_anew()
    {
        var route = Route();
        Assert.Same(PublishTargets.For(route, MessageType.Normal, true), PublishTargets.For(route, MessageType.Normal, true));
        Assert.NotSame(PublishTargets.For(route, MessageType.Normal, true), PublishTargets.For(route, MessageType.Normal, false));
        Assert.NotSame(PublishTargets.For(route, MessageType.Normal, true), PublishTargets.For(route, MessageType.Transaction, true));

        // A refresh hands out a new list: its queues count, not the old list's.
        List<MessageQueue> refreshed = [Queue(7, Permission.ReadWrite, 9007)];
        Assert.Equal([7], PublishTargets.For(refreshed, MessageType.Normal, true).Queues.Select(q => q.Id));
    }

    [Fact]
    public void No_writable_queue_and_no_queue_for_the_type_are_told_apart()
    {
        var readOnly = PublishTargets.For([Queue(0, Permission.Read, 9000)], MessageType.Normal, true);
        Assert.Empty(readOnly.Queues);
        Assert.True(readOnly.NoWritableQueue);

        var wrongType = PublishTargets.For([Queue(1, Permission.Write, 9001, MessageType.Normal)], MessageType.Transaction, true);
        Assert.Empty(wrongType.Queues);
        Assert.False(wrongType.NoWritableQueue);
    }
}
