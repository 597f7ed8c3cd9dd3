using Apache.Rocketmq.V2;
using Grpc.Core;
using Google.Protobuf;
using Google.Protobuf.WellKnownTypes;
using HalfMsg.Broker.Tests.Infrastructure;
using HalfMsg.Protocol.Grpc;
using V2Encoding = Apache.Rocketmq.V2.Encoding;

namespace HalfMsg.Broker.Tests.GrpcV5;

/// <summary>
/// The official C# client's LitePushConsumer (5.2.1) on the wire, against a broker without lite topics: its Telemetry
/// Settings say LITE_PUSH_CONSUMER with a subscription of its bind topic and "*", then it calls SyncLiteSubscription
/// (at start and every 30 s), QueryAssignment for the bind topic (every 5 s) and ReceiveMessage on what it was assigned.
/// Until the evening session of 2026-12-07 it was assigned the bind topic like a push consumer and took and acknowledged
/// every normal message of it, and SyncLiteSubscription answered a bare grpc UNIMPLEMENTED (found by running the official
/// C# client). Now each of its calls is answered UNSUPPORTED with the same text, and the messages stay for other groups.
/// </summary>
public sealed class LitePushConsumerTests(V5BrokerFixture broker) : IClassFixture<V5BrokerFixture>
{
    private readonly string _topic = "lite-bind-" + Guid.NewGuid().ToString("N")[..12];
    private readonly string _group = "lite-g-" + Guid.NewGuid().ToString("N")[..12];

    private Settings ConsumerSettings(ClientType type) => new()
    {
        ClientType = type,
        RequestTimeout = Duration.FromTimeSpan(TimeSpan.FromSeconds(3)),
        Subscription = new Subscription
        {
            Group = new Resource { Name = _group },
            Subscriptions =
            {
                new SubscriptionEntry
                {
                    Topic = new Resource { Name = _topic },
                    Expression = new FilterExpression { Type = FilterType.Tag, Expression = "*" },
                },
            },
        },
        UserAgent = new UA { Language = Language.DotNet, Version = "5.2.1" },
    };

    private Message NormalMessage(string body) => new()
    {
        Topic = new Resource { Name = _topic },
        Body = ByteString.CopyFromUtf8(body),
        SystemProperties = new SystemProperties
        {
            MessageId = "01" + Guid.NewGuid().ToString("N").ToUpperInvariant(),
            MessageType = MessageType.Normal,
            BodyEncoding = V2Encoding.Identity,
            BornTimestamp = Timestamp.FromDateTimeOffset(DateTimeOffset.UtcNow),
            BornHost = "test-host",
        },
    };

    private ReceiveMessageRequest Receive() => new()
    {
        Group = new Resource { Name = _group },
        MessageQueue = new MessageQueue { Topic = new Resource { Name = _topic }, Id = -1 },
        FilterExpression = new FilterExpression { Type = FilterType.Tag, Expression = "*" },
        BatchSize = 32,
        AutoRenew = true,
        LongPollingTimeout = Duration.FromTimeSpan(TimeSpan.FromSeconds(1)),
    };

    /// <summary>Opens the client's Telemetry stream with its Settings and waits for the broker's reply, as the official
    /// clients do before anything else; the stream stays open for the test.</summary>
    private static async Task<AsyncDuplexStreamingCall<TelemetryCommand, TelemetryCommand>> OpenTelemetryAsync(
        GrpcTestClient client, Settings settings)
    {
        var call = client.Duplex<TelemetryCommand, TelemetryCommand>(GrpcMethods.Telemetry, TelemetryCommand.Parser, timeout: Timeout.InfiniteTimeSpan);
        await call.RequestStream.WriteAsync(new TelemetryCommand { Settings = settings });
        Assert.True(await call.ResponseStream.MoveNext());
        Assert.Equal(Code.Ok, call.ResponseStream.Current.Status.Code);
        return call;
    }

    [Fact]
    public async Task Sync_lite_subscription_answers_unsupported_in_the_body_not_grpc_unimplemented()
    {
        using var lite = new GrpcTestClient($"127.0.0.1:{broker.GrpcPort}", "lite-" + Guid.NewGuid().ToString("N")[..8]);
        using var telemetry = await OpenTelemetryAsync(lite, ConsumerSettings(ClientType.LitePushConsumer));

        var sync = await lite.UnaryAsync(GrpcMethods.SyncLiteSubscription, new SyncLiteSubscriptionRequest
        {
            Action = LiteSubscriptionAction.CompleteAdd,
            Topic = new Resource { Name = _topic },
            Group = new Resource { Name = _group },
        }, SyncLiteSubscriptionResponse.Parser);
        Assert.Equal(0, sync.GrpcStatus);
        Assert.Equal(Code.Unsupported, sync.Response!.Status.Code);
        Assert.Contains("lite topics are not supported", sync.Response.Status.Message);
        await telemetry.RequestStream.CompleteAsync();
    }

    [Theory]
    [InlineData(ClientType.LitePushConsumer)]
    [InlineData(ClientType.LiteSimpleConsumer)]
    public async Task A_lite_push_consumer_gets_no_assignment_and_no_message_and_its_bind_topics_messages_stay(ClientType liteType)
    {
        var send = await broker.Client.UnaryAsync(GrpcMethods.SendMessage,
            new SendMessageRequest { Messages = { NormalMessage("normal-1"), NormalMessage("normal-2") } }, SendMessageResponse.Parser);
        Assert.Equal(Code.Ok, send.Response!.Status.Code);

        using var lite = new GrpcTestClient($"127.0.0.1:{broker.GrpcPort}", "lite-" + Guid.NewGuid().ToString("N")[..8]);
        using var telemetry = await OpenTelemetryAsync(lite, ConsumerSettings(liteType));

        // QueryAssignment of the bind topic: no assignment.
        var assignment = await lite.UnaryAsync(GrpcMethods.QueryAssignment, new QueryAssignmentRequest
        {
            Topic = new Resource { Name = _topic },
            Group = new Resource { Name = _group },
            Endpoints = new Endpoints { Scheme = AddressScheme.Ipv4, Addresses = { new Address { Host = "127.0.0.1", Port = broker.GrpcPort } } },
        }, QueryAssignmentResponse.Parser);
        Assert.Equal(0, assignment.GrpcStatus);
        Assert.Equal(Code.Unsupported, assignment.Response!.Status.Code);
        Assert.Empty(assignment.Response.Assignments);

        // ReceiveMessage (were it to receive anyway): the status, no message.
        var received = await lite.ServerStreamAsync(GrpcMethods.ReceiveMessage, Receive(), ReceiveMessageResponse.Parser);
        Assert.Equal(0, received.GrpcStatus);
        Assert.Equal(Code.Unsupported, received.Responses[0].Status.Code);
        Assert.DoesNotContain(received.Responses, r => r.ContentCase == ReceiveMessageResponse.ContentOneofCase.Message);

        // The messages were not taken: a push consumer of the same group (another client) gets both.
        using var push = new GrpcTestClient($"127.0.0.1:{broker.GrpcPort}", "push-" + Guid.NewGuid().ToString("N")[..8]);
        using var pushTelemetry = await OpenTelemetryAsync(push, ConsumerSettings(ClientType.PushConsumer));
        var pushAssignment = await push.UnaryAsync(GrpcMethods.QueryAssignment, new QueryAssignmentRequest
        {
            Topic = new Resource { Name = _topic },
            Group = new Resource { Name = _group },
        }, QueryAssignmentResponse.Parser);
        Assert.Equal(Code.Ok, pushAssignment.Response!.Status.Code);
        var bodies = new List<string>();
        var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(10);
        while (bodies.Count < 2 && DateTime.UtcNow < deadline)
        {
            var got = await push.ServerStreamAsync(GrpcMethods.ReceiveMessage, Receive(), ReceiveMessageResponse.Parser);
            bodies.AddRange(got.Responses.Where(r => r.ContentCase == ReceiveMessageResponse.ContentOneofCase.Message)
                .Select(r => r.Message.Body.ToStringUtf8()));
        }

        Assert.Equal(["normal-1", "normal-2"], bodies.Order());
        await telemetry.RequestStream.CompleteAsync();
        await pushTelemetry.RequestStream.CompleteAsync();
    }
}
