using System.Runtime.CompilerServices;
using Apache.Rocketmq.V2;
using HalfMsg.ClientCore.Transport;

namespace HalfMsg.ProducerClient;

/// <summary>
/// The queues of one route a message of one type may be sent to, with each queue's endpoint. Worked out once per route
/// the session hands out (a route is replaced, never changed, when it is refreshed) and message type, not on every
/// send: filtering the route and parsing endpoints per send cost allocations and CPU on the producer's hot path.
/// </summary>
internal sealed class PublishTargets
{
    private static readonly ConditionalWeakTable<IReadOnlyList<MessageQueue>, PublishTargets?[]> Cache = new();

    private PublishTargets(MessageQueue[] queues, bool noWritableQueue)
    {
        Queues = queues;
        Endpoints = queues.Select(q => Endpoint.FromProto(q.Broker.Endpoints)).ToArray();
        NoWritableQueue = noWritableQueue;
    }

    /// <summary>The queues to send to, in route order (empty: none; see <see cref="NoWritableQueue"/>).</summary>
    public MessageQueue[] Queues { get; }

    /// <summary>The endpoint of each queue in <see cref="Queues"/>.</summary>
    public Endpoint[] Endpoints { get; }

    /// <summary>When <see cref="Queues"/> is empty: true if no queue is writable at all, false if writable queues
    /// exist but none accepts the message type.</summary>
    public bool NoWritableQueue { get; }

    public static PublishTargets For(IReadOnlyList<MessageQueue> route, MessageType type, bool validateType)
    {
        if ((uint)type >= 8)
        {
            return Make(route, type, validateType); // a type this client does not know yet: not cached
        }

        PublishTargets?[] byKind = Cache.GetValue(route, static _ => new PublishTargets?[16]);
        int slot = ((int)type << 1) | (validateType ? 1 : 0);
        PublishTargets? cached = Volatile.Read(ref byKind[slot]);
        if (cached is not null)
        {
            return cached;
        }

        // Two threads may both work it out the first time; either result is the same.
        PublishTargets made = Make(route, type, validateType);
        Volatile.Write(ref byKind[slot], made);
        return made;
    }

    private static PublishTargets Make(IReadOnlyList<MessageQueue> route, MessageType type, bool validateType)
    {
        MessageQueue[] writable = route.Where(q => q.Permission is Permission.Write or Permission.ReadWrite).ToArray();
        if (writable.Length == 0 || !validateType)
        {
            return new PublishTargets(writable, writable.Length == 0);
        }

        return new PublishTargets(writable.Where(q => q.AcceptMessageTypes.Count == 0 || q.AcceptMessageTypes.Contains(type)).ToArray(), false);
    }
}
