using System.Text.Json;
using HalfMsg.Broker.Core;
using HalfMsg.Protocol.Remoting;

namespace HalfMsg.Broker.FrontEnds.Remoting;

// HEART_BEAT (34) and UNREGISTER_CLIENT (35).
internal sealed partial class RemotingDispatcher
{
    private readonly HalfMsg.Broker.FrontEnds.GrpcV5.LogRateLimiter RetryTopicRefusals = new(perMinute: 5, TimeProvider.System);

    /// <summary>The producer group every Java/Node client instance creates for itself; it never sends halves.</summary>
    private const string ClientInnerProducerGroup = "CLIENT_INNER_PRODUCER";

    /// <summary>
    /// Body: HeartbeatData JSON (<c>clientID</c>, <c>producerDataSet[{groupName}]</c>, <c>consumerDataSet[{groupName,
    /// messageModel, subscriptionDataSet[{topic, subString, expressionType, subVersion}]}]</c>). Each producer group makes this
    /// connection one of the group's check-back channels (shared with gRPC producers of the same group); each CLUSTERING
    /// consumer group gets its <c>%RETRY%&lt;group&gt;</c> topic and a membership entry.
    /// </summary>
    private RemotingCommand HeartBeat(RemotingSession session, RemotingCommand request)
    {
        using var body = ParseBody(request);
        if (body is null || body.RootElement.ValueKind != JsonValueKind.Object)
            return Error(request, ResponseCode.SystemError, "heartbeat body is not HeartbeatData JSON");
        var root = body.RootElement;
        string? id = Str(root, "clientID");
        // Refused whole, before anything is registered: a group registered under the connection's previous id would
        // answer with that id while the client believes its own.
        if (RemotingClients.ClientIdRefusal("clientID", id) is { } tooLong) return Error(request, ResponseCode.SystemError, tooLong);
        if (id is not null) session.SetClientId(id);

        if (root.TryGetProperty("producerDataSet", out var producers) && producers.ValueKind == JsonValueKind.Array)
        {
            foreach (var p in producers.EnumerateArray())
            {
                string? group = Str(p, "groupName");
                if (!string.IsNullOrEmpty(group) && group != ClientInnerProducerGroup) session.RegisterProducer(group);
            }
        }

        if (root.TryGetProperty("consumerDataSet", out var consumers) && consumers.ValueKind == JsonValueKind.Array)
        {
            int refused = 0;
            string? firstRefusal = null;
            foreach (var c in consumers.EnumerateArray())
            {
                string? group = Str(c, "groupName");
                if (string.IsNullOrEmpty(group)) continue;
                var subscriptions = new Dictionary<string, SubscriptionData>(StringComparer.Ordinal);
                if (c.TryGetProperty("subscriptionDataSet", out var subs) && subs.ValueKind == JsonValueKind.Array)
                    foreach (var s in subs.EnumerateArray())
                    {
                        if (Str(s, "topic") is not { } topic) continue;
                        // The type goes with the expression: a pull that does not repeat its subscription is filtered by it.
                        // The version tells the newest of the members' subscriptions, and a pull newer than it (PullMessage.cs).
                        subscriptions[topic] = new SubscriptionData(Str(s, "subString") ?? "*", Str(s, "expressionType"),
                            s.TryGetProperty("subVersion", out var v) && v.ValueKind == JsonValueKind.Number && v.TryGetInt64(out long version) ? version : 0);
                        if (subscriptions.Count > RemotingClients.MaxSubscriptionsPerGroup) break; // refused below: the rest is not read
                    }
                // A group past the connection's cap, with an invalid name or too many subscriptions is left out (as
                // producer groups past theirs), logged; the rest of the heartbeat is served.
                if (server.Clients.Refusal(session, group, subscriptions) is { } why)
                {
                    refused++;
                    firstRefusal ??= why;
                    continue;
                }
                if (Str(c, "messageModel") != "BROADCASTING")
                {
                    var err = Engine.EnsureTopic(BrokerEngine.RetryPrefix + group);
                    // Without it the group's send-backs fail and its consumers hold failed messages (the queue's offset
                    // stops there): say so, at most a few times a minute (a heartbeat comes every 30 s per client).
                    if (!err.IsOk && RetryTopicRefusals.TryEnter(out long suppressed))
                        Logger.LogWarning("Retry topic of consumer group {Group} not created ({Suppressed} more not logged): {Error}", group, suppressed, err);
                }
                server.Clients.RegisterConsumer(session, group, session.ClientId, subscriptions);
                Engine.Consumers.Seen(group, session.ClientId, "Remoting", session.RemoteEndPoint.ToString());
            }
            if (refused > 0) server.Clients.LogRefused(session, refused, firstRefusal!);
        }
        return Ok(request);
    }

    private RemotingCommand UnregisterClient(RemotingSession session, RemotingCommand request)
    {
        if (request.Get("producerGroup") is { Length: > 0 } pg) session.UnregisterProducer(pg);
        if (request.Get("consumerGroup") is { Length: > 0 } cg)
        {
            server.Clients.UnregisterConsumer(session, cg);
            Engine.Consumers.Left(cg, session.ClientId);
        }
        return Ok(request);
    }

    /// <summary>A string property, or null when absent, not a string, or not text (an escaped lone surrogate: GetString throws).</summary>
    private static string? Str(JsonElement e, string name)
    {
        if (!e.TryGetProperty(name, out var v) || v.ValueKind != JsonValueKind.String) return null;
        try
        {
            return v.GetString();
        }
        catch (InvalidOperationException)
        {
            return null;
        }
    }
}
