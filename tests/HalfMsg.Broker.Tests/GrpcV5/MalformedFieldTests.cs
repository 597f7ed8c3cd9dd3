using Apache.Rocketmq.V2;
using Google.Protobuf;
using Google.Protobuf.WellKnownTypes;
using HalfMsg.Broker.Tests.Infrastructure;
using HalfMsg.Protocol.Grpc;

namespace HalfMsg.Broker.Tests.GrpcV5;

/// <summary>
/// Out-of-range protobuf Timestamps/Durations are a client's bad request, not a server fault: they must come back as a
/// body status with grpc-status 0 (a non-zero grpc-status is not retried the same way and loses the detail).
/// </summary>
public sealed class MalformedFieldTests(V5BrokerFixture broker) : IClassFixture<V5BrokerFixture>
{
    private readonly GrpcTestClient _client = broker.Client;
    private readonly string _topic = "mf-" + Guid.NewGuid().ToString("N")[..12];
    private readonly string _group = "g-" + Guid.NewGuid().ToString("N")[..12];

    // Seconds and nanos of opposite signs / nanos out of range / beyond year 9999: what the protobuf runtime rejects.
    public static TheoryData<long, int> BadTimestamps() => new() { { 1, -1 }, { 1, 1_000_000_000 }, { 300_000_000_000, 0 } };
    public static TheoryData<long, int> BadDurations() => new() { { 1, -1 }, { 0, 1_000_000_000 }, { 400_000_000_000, 0 } };

    private Message NewMessage() => new()
    {
        Topic = new Resource { Name = _topic },
        Body = ByteString.CopyFromUtf8("x"),
        SystemProperties = new SystemProperties { MessageId = Guid.NewGuid().ToString("N"), MessageType = MessageType.Normal },
    };

    private async Task<SendMessageResponse> SendAsync(Message message)
    {
        var result = await _client.UnaryAsync(GrpcMethods.SendMessage, new SendMessageRequest { Messages = { message } }, SendMessageResponse.Parser);
        Assert.True(result.GrpcStatus == 0, $"grpc-status {result.GrpcStatus}: {result.GrpcMessage}");
        return result.Response!;
    }

    [Theory]
    [MemberData(nameof(BadTimestamps))]
    public async Task Send_with_an_invalid_delivery_timestamp_answers_ILLEGAL_DELIVERY_TIME(long seconds, int nanos)
    {
        Message message = NewMessage();
        message.SystemProperties.MessageType = MessageType.Delay;
        message.SystemProperties.DeliveryTimestamp = new Timestamp { Seconds = seconds, Nanos = nanos };
        Assert.Equal(Code.IllegalDeliveryTime, (await SendAsync(message)).Status.Code);
    }

    [Theory]
    [MemberData(nameof(BadTimestamps))]
    public async Task Send_with_an_invalid_born_timestamp_answers_a_bad_request_code(long seconds, int nanos)
    {
        Message message = NewMessage();
        message.SystemProperties.BornTimestamp = new Timestamp { Seconds = seconds, Nanos = nanos };
        Assert.InRange((int)(await SendAsync(message)).Status.Code, 40000, 40099);
    }

    [Theory]
    [MemberData(nameof(BadDurations))]
    public async Task Send_of_a_transaction_with_an_invalid_recovery_duration_answers_a_bad_request_code(long seconds, int nanos)
    {
        Message message = NewMessage();
        message.SystemProperties.MessageType = MessageType.Transaction;
        message.SystemProperties.OrphanedTransactionRecoveryDuration = new Duration { Seconds = seconds, Nanos = nanos };
        Assert.InRange((int)(await SendAsync(message)).Status.Code, 40000, 40099);
    }

    private ReceiveMessageRequest Receive() => new()
    {
        Group = new Resource { Name = _group },
        MessageQueue = new MessageQueue { Topic = new Resource { Name = _topic } },
        BatchSize = 1,
        InvisibleDuration = Duration.FromTimeSpan(TimeSpan.FromSeconds(10)),
        LongPollingTimeout = Duration.FromTimeSpan(TimeSpan.FromMilliseconds(100)),
    };

    private async Task<Code> ReceiveStatusAsync(ReceiveMessageRequest request)
    {
        var result = await _client.ServerStreamAsync(GrpcMethods.ReceiveMessage, request, ReceiveMessageResponse.Parser);
        Assert.True(result.GrpcStatus == 0, $"grpc-status {result.GrpcStatus}: {result.GrpcMessage}");
        Assert.Equal(ReceiveMessageResponse.ContentOneofCase.DeliveryTimestamp, result.Responses[^1].ContentCase);
        return result.Responses[0].Status.Code;
    }

    [Theory]
    [MemberData(nameof(BadDurations))]
    public async Task Receive_with_an_invalid_invisible_duration_answers_ILLEGAL_INVISIBLE_TIME(long seconds, int nanos)
    {
        ReceiveMessageRequest request = Receive();
        request.InvisibleDuration = new Duration { Seconds = seconds, Nanos = nanos };
        Assert.Equal(Code.IllegalInvisibleTime, await ReceiveStatusAsync(request));
    }

    [Theory]
    [MemberData(nameof(BadDurations))]
    public async Task Receive_with_an_invalid_long_polling_timeout_answers_ILLEGAL_POLLING_TIME(long seconds, int nanos)
    {
        ReceiveMessageRequest request = Receive();
        request.LongPollingTimeout = new Duration { Seconds = seconds, Nanos = nanos };
        Assert.Equal(Code.IllegalPollingTime, await ReceiveStatusAsync(request));
    }

    [Theory]
    [MemberData(nameof(BadDurations))]
    public async Task Change_invisible_duration_with_an_invalid_duration_answers_ILLEGAL_INVISIBLE_TIME(long seconds, int nanos)
    {
        var result = await _client.UnaryAsync(GrpcMethods.ChangeInvisibleDuration, new ChangeInvisibleDurationRequest
        {
            Group = new Resource { Name = _group },
            Topic = new Resource { Name = _topic },
            ReceiptHandle = "whatever",
            InvisibleDuration = new Duration { Seconds = seconds, Nanos = nanos },
        }, ChangeInvisibleDurationResponse.Parser);
        Assert.True(result.GrpcStatus == 0, $"grpc-status {result.GrpcStatus}: {result.GrpcMessage}");
        Assert.Equal(Code.IllegalInvisibleTime, result.Response!.Status.Code);
        Assert.Equal("whatever", result.Response.ReceiptHandle);
    }

    [Fact]
    public async Task A_batch_with_one_invalid_timestamp_answers_per_entry_and_stores_the_good_message_once()
    {
        Message good = NewMessage();
        Message bad = NewMessage();
        bad.SystemProperties.DeliveryTimestamp = new Timestamp { Seconds = 1, Nanos = -1 };
        var result = await _client.UnaryAsync(GrpcMethods.SendMessage, new SendMessageRequest { Messages = { good, bad } }, SendMessageResponse.Parser);

        // Before the fix the whole call failed with INTERNAL after the good message was stored: a retry duplicated it.
        Assert.Equal(0, result.GrpcStatus);
        Assert.Equal(Code.MultipleResults, result.Response!.Status.Code);
        Assert.Equal([Code.Ok, Code.IllegalDeliveryTime], result.Response.Entries.Select(e => e.Status.Code));
    }

    [Fact]
    public async Task A_body_beyond_the_frame_limit_fails_the_call_with_RESOURCE_EXHAUSTED()
    {
        Message message = NewMessage();
        message.Body = ByteString.CopyFrom(new byte[V5BrokerFixture.MaxMessageSize + 1024 * 1024 + 1]);
        var result = await _client.UnaryAsync(GrpcMethods.SendMessage, new SendMessageRequest { Messages = { message } }, SendMessageResponse.Parser);
        Assert.Equal(8, result.GrpcStatus);
    }
}
