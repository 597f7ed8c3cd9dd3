using System.Globalization;
using Apache.Rocketmq.V2;
using Google.Protobuf;
using Google.Protobuf.WellKnownTypes;
using HalfMsg.Broker.Tests.Infrastructure;
using HalfMsg.Protocol.Grpc;
using BrokerMessagingService = HalfMsg.Broker.FrontEnds.GrpcV5.MessagingService;
using V2Encoding = Apache.Rocketmq.V2.Encoding;

namespace HalfMsg.Broker.Tests.GrpcV5;

/// <summary>
/// An <c>x-mq-client-id</c> longer than <see cref="BrokerMessagingService.MaxClientIdLength"/> (1,024, as over Remoting)
/// is refused on every call with BAD_REQUEST naming the limit, before a Telemetry session, a half or a lease keeps it.
/// Until the late-night session of 2026-12-07 any length Kestrel let through (about 16 KiB) was kept.
/// </summary>
public sealed class ClientIdLengthTests(V5BrokerFixture broker) : IClassFixture<V5BrokerFixture>
{
    private readonly string _topic = "cid-" + Guid.NewGuid().ToString("N")[..12];

    private static string Id(int length) => "host@1@0@" + new string('x', length - 9);

    private TelemetryCommand ProducerSettings() => new()
    {
        Settings = new Settings { ClientType = ClientType.Producer, Publishing = new Publishing { Topics = { new Resource { Name = _topic } } } },
    };

    private SendMessageRequest Send() => new()
    {
        Messages =
        {
            new Message
            {
                Topic = new Resource { Name = _topic },
                Body = ByteString.CopyFromUtf8("long id"),
                SystemProperties = new SystemProperties
                {
                    MessageId = "01" + Guid.NewGuid().ToString("N").ToUpperInvariant(),
                    MessageType = MessageType.Normal,
                    BodyEncoding = V2Encoding.Identity,
                    BornTimestamp = Timestamp.FromDateTimeOffset(DateTimeOffset.UtcNow),
                },
            },
        },
    };

    [Fact]
    public async Task A_client_id_longer_than_the_limit_is_refused_on_every_call_with_BAD_REQUEST_naming_the_limit()
    {
        using var client = new GrpcTestClient($"127.0.0.1:{broker.GrpcPort}", Id(BrokerMessagingService.MaxClientIdLength + 1));
        string limit = BrokerMessagingService.MaxClientIdLength.ToString(CultureInfo.InvariantCulture);

        var route = await client.UnaryAsync(GrpcMethods.QueryRoute, new QueryRouteRequest { Topic = new Resource { Name = _topic } }, QueryRouteResponse.Parser);
        Assert.Equal(0, route.GrpcStatus);
        Assert.Equal(Code.BadRequest, route.Response!.Status.Code);
        Assert.Contains("x-mq-client-id", route.Response.Status.Message, StringComparison.Ordinal);
        Assert.Contains(limit, route.Response.Status.Message, StringComparison.Ordinal);
        Assert.Empty(route.Response.MessageQueues);

        var sent = await client.UnaryAsync(GrpcMethods.SendMessage, Send(), SendMessageResponse.Parser);
        Assert.Equal(Code.BadRequest, sent.Response!.Status.Code);
        Assert.Empty(sent.Response.Entries);

        var heartbeat = await client.UnaryAsync(GrpcMethods.Heartbeat, new HeartbeatRequest
        {
            Group = new Resource { Name = "g-" + _topic }, ClientType = ClientType.SimpleConsumer,
        }, HeartbeatResponse.Parser);
        Assert.Equal(Code.BadRequest, heartbeat.Response!.Status.Code);

        // The Telemetry stream gets the status alone, no Settings: no session keeps the id.
        var telemetry = await client.ServerStreamAsync(GrpcMethods.Telemetry, ProducerSettings(), TelemetryCommand.Parser);
        var only = Assert.Single(telemetry.Responses);
        Assert.Equal(Code.BadRequest, only.Status.Code);
        Assert.Contains(limit, only.Status.Message, StringComparison.Ordinal);

        Assert.DoesNotContain(broker.Host.Engine.ListTopics(), t => t.Name == _topic);
    }

    [Fact]
    public async Task A_client_id_of_the_limit_is_served()
    {
        using var client = new GrpcTestClient($"127.0.0.1:{broker.GrpcPort}", Id(BrokerMessagingService.MaxClientIdLength));

        var route = await client.UnaryAsync(GrpcMethods.QueryRoute, new QueryRouteRequest { Topic = new Resource { Name = _topic } }, QueryRouteResponse.Parser);
        Assert.Equal(Code.Ok, route.Response!.Status.Code);

        var sent = await client.UnaryAsync(GrpcMethods.SendMessage, Send(), SendMessageResponse.Parser);
        Assert.Equal(Code.Ok, sent.Response!.Status.Code);

        var telemetry = await client.ServerStreamAsync(GrpcMethods.Telemetry, ProducerSettings(), TelemetryCommand.Parser);
        Assert.Equal(0, telemetry.GrpcStatus);
        Assert.Contains(telemetry.Responses, r => r.Settings is { Publishing: not null } && r.Status.Code == Code.Ok);
    }
}
