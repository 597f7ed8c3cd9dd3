using Apache.Rocketmq.V2;
using Google.Protobuf;
using Google.Protobuf.WellKnownTypes;
using HalfMsg.Broker.Tests.Infrastructure;
using HalfMsg.Protocol.Grpc;
using HalfMsg.Protocol.Remoting;
using V2Encoding = Apache.Rocketmq.V2.Encoding;

namespace HalfMsg.Broker.Tests.GrpcV5;

/// <summary>
/// RocketMQ 5.3's RecallMessage over real HTTP/2 with the raw generated messages: a delay message's send answers a
/// recall handle (no other send does), a recall answered OK keeps the message from ever being delivered, and the other
/// answers are the Apache proxy's.
/// </summary>
public sealed class RecallTests(V5BrokerFixture broker) : IClassFixture<V5BrokerFixture>
{
    private readonly GrpcTestClient _client = broker.Client;
    private readonly string _topic = "recall-" + Guid.NewGuid().ToString("N")[..12];
    private readonly string _group = "g-" + Guid.NewGuid().ToString("N")[..12];

    // A delay long enough that the recall is answered before it on a busy machine; the tests wait for a control message
    // due 1 ms later, never for the time itself.
    private static readonly TimeSpan Delay = TimeSpan.FromSeconds(8);

    internal static Message NewMessage(string topic, string body, DateTimeOffset? deliverAt = null)
    {
        var message = new Message
        {
            Topic = new Resource { Name = topic },
            Body = ByteString.CopyFromUtf8(body),
            SystemProperties = new SystemProperties
            {
                MessageId = "01" + Guid.NewGuid().ToString("N").ToUpperInvariant(),
                MessageType = deliverAt is null ? MessageType.Normal : MessageType.Delay,
                BodyEncoding = V2Encoding.Identity,
                BornTimestamp = Timestamp.FromDateTimeOffset(DateTimeOffset.UtcNow),
                BornHost = "test-host",
            },
        };
        if (deliverAt is { } at) message.SystemProperties.DeliveryTimestamp = Timestamp.FromDateTimeOffset(at);
        return message;
    }

    internal static async Task<SendResultEntry> SendAsync(GrpcTestClient client, Message message, IReadOnlyDictionary<string, string>? headers = null)
    {
        var sent = await client.UnaryAsync(GrpcMethods.SendMessage, new SendMessageRequest { Messages = { message } }, SendMessageResponse.Parser, headers);
        Assert.Equal(0, sent.GrpcStatus);
        Assert.Equal(Code.Ok, sent.Response!.Status.Code);
        return Assert.Single(sent.Response.Entries);
    }

    internal static async Task<RecallMessageResponse> RecallAsync(GrpcTestClient client, string topic, string handle, IReadOnlyDictionary<string, string>? headers = null)
    {
        var recalled = await client.UnaryAsync(GrpcMethods.RecallMessage,
            new RecallMessageRequest { Topic = new Resource { Name = topic }, RecallHandle = handle }, RecallMessageResponse.Parser, headers);
        Assert.Equal(0, recalled.GrpcStatus); // an answer in the body, not UNIMPLEMENTED
        return recalled.Response!;
    }

    [Fact]
    public async Task A_delay_messages_send_answers_a_recall_handle_and_a_normal_messages_none()
    {
        var delayed = await SendAsync(_client, NewMessage(_topic, "later", DateTimeOffset.UtcNow + Delay));
        var normal = await SendAsync(_client, NewMessage(_topic, "now"));

        Assert.NotEmpty(delayed.RecallHandle);
        Assert.Empty(normal.RecallHandle);
    }

    [Fact]
    public async Task A_recalled_delay_message_is_never_delivered_and_a_second_recall_is_OK()
    {
        var due = DateTimeOffset.UtcNow + Delay;
        var recalledMessage = NewMessage(_topic, "recalled", due);
        var recalled = await SendAsync(_client, recalledMessage);
        await SendAsync(_client, NewMessage(_topic, "control", due.AddMilliseconds(1)));

        var answer = await RecallAsync(_client, _topic, recalled.RecallHandle);
        Assert.Equal(Code.Ok, answer.Status.Code);
        Assert.Equal(recalledMessage.SystemProperties.MessageId, answer.MessageId);
        // Apache's broker only writes a marker, so a second recall of a message not yet due is OK again.
        Assert.Equal(Code.Ok, (await RecallAsync(_client, _topic, recalled.RecallHandle)).Status.Code);

        // The control is due 1 ms after the recalled one and released after it: once it came, the other would have too.
        var got = await NamespaceTests.ReceiveAllAsync(_client, _topic, _group, 1);
        Assert.Equal(["control"], got.Select(m => m.Body.ToStringUtf8()));
    }

    /// <summary>A producer's send retried after the recall (its first answer lost) stores the message again: accepted,
    /// as Apache's broker accepts it, and never delivered, as Apache's timer drops it at its time. Until 2026-12-06 the
    /// recall took out only the copies waiting when it ran, and this one was delivered (found by review).</summary>
    [Fact]
    public async Task A_send_of_the_recalled_message_after_the_recall_is_accepted_and_never_delivered()
    {
        var due = DateTimeOffset.UtcNow + Delay;
        var recalledMessage = NewMessage(_topic, "recalled", due);
        var recalled = await SendAsync(_client, recalledMessage);
        await SendAsync(_client, NewMessage(_topic, "control", due.AddMilliseconds(1)));
        Assert.Equal(Code.Ok, (await RecallAsync(_client, _topic, recalled.RecallHandle)).Status.Code);

        var retried = await SendAsync(_client, recalledMessage); // same id, topic and delivery time
        Assert.Equal(recalledMessage.SystemProperties.MessageId, retried.MessageId);

        var got = await NamespaceTests.ReceiveAllAsync(_client, _topic, _group, 1);
        Assert.Equal(["control"], got.Select(m => m.Body.ToStringUtf8()));
    }

    [Fact]
    public async Task Recall_answers_as_the_Apache_proxy_for_a_bad_handle_another_topic_and_a_delivered_message()
    {
        var soon = await SendAsync(_client, NewMessage(_topic, "soon", DateTimeOffset.UtcNow.AddMilliseconds(200)));

        var garbage = await RecallAsync(_client, _topic, "not a handle");
        Assert.Equal(Code.InternalServerError, garbage.Status.Code);
        Assert.Contains("recall handle is invalid", garbage.Status.Message);
        Assert.Equal(Code.InternalServerError, (await RecallAsync(_client, _topic, "")).Status.Code);

        var otherTopic = await RecallAsync(_client, _topic + "-other", soon.RecallHandle);
        Assert.Equal(Code.InternalServerError, otherTopic.Status.Code);
        Assert.Contains("topic not match", otherTopic.Status.Message);

        var noTopic = await RecallAsync(_client, "", soon.RecallHandle);
        Assert.Equal(Code.IllegalTopic, noTopic.Status.Code);

        Assert.Equal(["soon"], (await NamespaceTests.ReceiveAllAsync(_client, _topic, _group, 1)).Select(m => m.Body.ToStringUtf8()));
        var delivered = await RecallAsync(_client, _topic, soon.RecallHandle);
        Assert.Equal(Code.InternalServerError, delivered.Status.Code);
        Assert.Contains("timestamp invalid", delivered.Status.Message);
    }

    [Fact]
    public async Task A_handle_is_recalled_only_in_the_namespace_it_was_sent_in()
    {
        using var inA = new GrpcTestClient($"127.0.0.1:{broker.GrpcPort}");
        inA.DefaultHeaders[RocketMqHeaders.Namespace] = "nsA";
        using var inB = new GrpcTestClient($"127.0.0.1:{broker.GrpcPort}");
        inB.DefaultHeaders[RocketMqHeaders.Namespace] = "nsB";
        var due = DateTimeOffset.UtcNow + Delay;
        var recalled = await SendAsync(inA, NewMessage(_topic, "recalled", due));
        await SendAsync(inA, NewMessage(_topic, "control", due.AddMilliseconds(1)));

        // The same topic name in another namespace, or without one, is another topic.
        Assert.Equal(Code.InternalServerError, (await RecallAsync(inB, _topic, recalled.RecallHandle)).Status.Code);
        Assert.Equal(Code.InternalServerError, (await RecallAsync(_client, _topic, recalled.RecallHandle)).Status.Code);
        Assert.Equal(Code.Ok, (await RecallAsync(inA, _topic, recalled.RecallHandle)).Status.Code);

        var got = await NamespaceTests.ReceiveAllAsync(inA, _topic, _group, 1);
        Assert.Equal(["control"], got.Select(m => m.Body.ToStringUtf8()));
    }
}
