using System.Net.Http.Json;
using System.Text.Json;
using Apache.Rocketmq.V2;
using TransactionResolution = HalfMsg.Broker.Core.Model.TransactionResolution;
using Google.Protobuf.WellKnownTypes;
using HalfMsg.Broker.Core.Model;
using HalfMsg.Broker.Tests.Infrastructure;
using HalfMsg.Protocol.Grpc;

namespace HalfMsg.Broker.Tests.Admin;

/// <summary>A message's delivery history and a group's members through the admin API, against a real in-process host.</summary>
public sealed class MessageHistoryTests() : InProcessAdminHost("history")
{
    private const string Topic = "history-orders";

    private async Task<JsonElement> Message(string id) => await _http.GetFromJsonAsync<JsonElement>($"/api/messages/{id}");

    private static List<JsonElement> Steps(JsonElement message) => message.GetProperty("history").EnumerateArray().ToList();

    private static string Kinds(JsonElement message) => string.Join(",", Steps(message).Select(s => s.GetProperty("kind").GetString()));

    private static string? Str(JsonElement e, string name) => e.GetProperty(name).ValueKind == JsonValueKind.String ? e.GetProperty(name).GetString() : null;

    [Fact]
    public async Task The_history_shows_the_decision_each_delivery_with_its_consumer_lease_expiry_a_nack_and_the_ack()
    {
        var engine = _host.Engine;
        Assert.True((await engine.SendHalfAsync(new MessageDraft { Topic = Topic, MessageId = "h-1", Body = new byte[] { 1 } }, "history-producers", null, null)).IsOk);
        Assert.True((await engine.EndTransactionAsync("h-1", null, TransactionResolution.Commit, DecisionSource.Operator)).IsOk);

        // Attempt 1 by client A with a 1 s lease that runs out (the host's sweeper expires it); attempt 2 by client B.
        var first = await engine.ReceiveAsync(new ReceiveRequest { ConsumerGroup = "history-consumers", Topic = Topic, InvisibleDuration = TimeSpan.FromSeconds(1), ClientId = "client-A" });
        Assert.Equal(1, Assert.Single(first.Messages).DeliveryAttempt);
        var second = await engine.ReceiveAsync(new ReceiveRequest
        {
            ConsumerGroup = "history-consumers", Topic = Topic, InvisibleDuration = TimeSpan.FromSeconds(30), LongPollTimeout = TimeSpan.FromSeconds(60), ClientId = "client-B",
        });
        Assert.Equal(2, Assert.Single(second.Messages).DeliveryAttempt);
        // Client B nacks (the lease ends now); attempt 3 is acknowledged.
        Assert.True((await engine.ChangeInvisibleDurationAsync("history-consumers", Topic, second.Messages[0].ReceiptHandle, TimeSpan.Zero)).Error.IsOk);
        var third = await engine.ReceiveAsync(new ReceiveRequest { ConsumerGroup = "history-consumers", Topic = Topic, LongPollTimeout = TimeSpan.FromSeconds(60), ClientId = "client-B" });
        Assert.Equal(3, Assert.Single(third.Messages).DeliveryAttempt);
        Assert.True((await engine.AckAsync("history-consumers", Topic, third.Messages[0].ReceiptHandle)).IsOk);

        var message = await Message("h-1");
        Assert.Equal("half_stored,committed,delivered,lease_expired,delivered,lease_changed,lease_expired,delivered,acked", Kinds(message));
        var steps = Steps(message);
        Assert.Contains("by an operator", Str(steps[1], "detail"));
        Assert.Equal(("client-A", 1), (Str(steps[2], "clientId"), steps[2].GetProperty("attempt").GetInt32()));
        Assert.Equal(("client-B", 2), (Str(steps[4], "clientId"), steps[4].GetProperty("attempt").GetInt32()));
        Assert.Equal(3, steps[7].GetProperty("attempt").GetInt32());
        Assert.All(steps.Skip(2), s => Assert.Equal("history-consumers", Str(s, "group")));
        // Live steps carry their time, in order.
        var times = steps.Select(s => s.GetProperty("at").GetDateTimeOffset()).ToList();
        Assert.Equal(times.Order(), times);
        Assert.Equal(0, message.GetProperty("historyDropped").GetInt32());
    }

    [Fact]
    public async Task A_dead_lettered_message_shows_the_dead_letter_and_its_redrive_and_is_delivered_again()
    {
        var engine = _host.Engine;
        Assert.True((await engine.SendAsync(new MessageDraft { Topic = Topic, MessageId = "h-dlq", Body = new byte[] { 2 } })).IsOk);
        var got = await engine.ReceiveAsync(new ReceiveRequest { ConsumerGroup = "history-dlq", Topic = Topic, ClientId = "client-C" });
        Assert.True((await engine.ForwardToDeadLetterAsync("history-dlq", Topic, Assert.Single(got.Messages).ReceiptHandle)).IsOk);
        var redrive = await _http.PostAsync("/api/dlq/history-dlq/redrive", null);
        Assert.True(redrive.IsSuccessStatusCode, await redrive.Content.ReadAsStringAsync());
        var again = await engine.ReceiveAsync(new ReceiveRequest { ConsumerGroup = "history-dlq", Topic = Topic, LongPollTimeout = TimeSpan.FromSeconds(30), ClientId = "client-C" });
        Assert.Equal("h-dlq", Assert.Single(again.Messages).Message.MessageId);

        var message = await Message("h-dlq");
        Assert.Equal("stored,delivered,dead_lettered,stored_again,redriven,delivered", Kinds(message));
        var steps = Steps(message);
        Assert.Contains("%DLQ%history-dlq", Str(steps[2], "detail"));
        Assert.Contains(Topic, Str(steps[4], "detail"));
        // The internal re-drive cursor's own deliveries and acks are not the message's history.
        Assert.DoesNotContain(steps, s => Str(s, "group")?.StartsWith("%REDRIVE%", StringComparison.Ordinal) == true);
    }

    [Fact]
    public async Task Grpc_consumers_are_listed_as_group_members_and_name_themselves_in_the_delivery_history()
    {
        Assert.True((await _host.Engine.SendAsync(new MessageDraft { Topic = "history-grpc", MessageId = "h-grpc", Body = new byte[] { 3 } })).IsOk);
        using var client = new GrpcTestClient($"127.0.0.1:{_grpcPort}", "history-simple-consumer-1");
        var heartbeat = await client.UnaryAsync(GrpcMethods.Heartbeat,
            new HeartbeatRequest { Group = new Resource { Name = "history-grpc-group" }, ClientType = ClientType.SimpleConsumer }, HeartbeatResponse.Parser);
        Assert.Equal(Code.Ok, heartbeat.Response!.Status.Code);
        var received = await client.ServerStreamAsync(GrpcMethods.ReceiveMessage, new ReceiveMessageRequest
        {
            Group = new Resource { Name = "history-grpc-group" },
            MessageQueue = new MessageQueue { Topic = new Resource { Name = "history-grpc" } },
            FilterExpression = new FilterExpression { Type = FilterType.Tag, Expression = "*" },
            BatchSize = 1,
            InvisibleDuration = Duration.FromTimeSpan(TimeSpan.FromSeconds(30)),
            LongPollingTimeout = Duration.FromTimeSpan(TimeSpan.FromSeconds(5)),
        }, ReceiveMessageResponse.Parser);
        Assert.Single(received.Responses, r => r.ContentCase == ReceiveMessageResponse.ContentOneofCase.Message);

        var group = await _http.GetFromJsonAsync<JsonElement>("/api/groups/history-grpc-group");
        var member = Assert.Single(group.GetProperty("members").EnumerateArray());
        Assert.Equal("history-simple-consumer-1", member.GetProperty("clientId").GetString());
        Assert.Equal("gRPC", member.GetProperty("protocol").GetString());
        Assert.True(DateTimeOffset.UtcNow - member.GetProperty("lastSeen").GetDateTimeOffset() < TimeSpan.FromMinutes(1));
        var delivered = Steps(await Message("h-grpc")).Single(s => s.GetProperty("kind").GetString() == "delivered");
        Assert.Equal("history-simple-consumer-1", Str(delivered, "clientId"));

        // A client that says it terminates leaves the list.
        var bye = await client.UnaryAsync(GrpcMethods.NotifyClientTermination,
            new NotifyClientTerminationRequest { Group = new Resource { Name = "history-grpc-group" } }, NotifyClientTerminationResponse.Parser);
        Assert.Equal(Code.Ok, bye.Response!.Status.Code);
        Assert.Equal(0, (await _http.GetFromJsonAsync<JsonElement>("/api/groups/history-grpc-group")).GetProperty("members").GetArrayLength());
    }
}
