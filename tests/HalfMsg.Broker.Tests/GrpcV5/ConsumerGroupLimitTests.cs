using Apache.Rocketmq.V2;
using Google.Protobuf;
using Google.Protobuf.WellKnownTypes;
using HalfMsg.Broker.Hosting;
using HalfMsg.Broker.Tests.Infrastructure;
using HalfMsg.Protocol.Grpc;
using HalfMsg.Protocol.Remoting;
using HalfMsg.TestKit;
using V2Encoding = Apache.Rocketmq.V2.Encoding;

namespace HalfMsg.Broker.Tests.GrpcV5;

/// <summary>
/// Review delivery #1 at the front ends: with <c>--max-consumer-groups</c> reached, a gRPC receive naming a new group
/// is FORBIDDEN and a Remoting pull or offset commit naming one is SUBSCRIPTION_GROUP_NOT_EXIST, each with a remark naming the
/// setting; known groups go on, and the broker keeps running.
/// </summary>
public sealed class ConsumerGroupLimitTests
{
    private static ReceiveMessageRequest Receive(string group, string topic) => new()
    {
        Group = new Resource { Name = group },
        MessageQueue = new MessageQueue { Topic = new Resource { Name = topic } },
        FilterExpression = new FilterExpression { Type = FilterType.Tag, Expression = "*" },
        BatchSize = 4,
        InvisibleDuration = Duration.FromTimeSpan(TimeSpan.FromSeconds(30)),
        LongPollingTimeout = Duration.FromTimeSpan(TimeSpan.FromSeconds(5)),
    };

    [Fact]
    public async Task Past_the_limit_a_new_group_is_refused_on_both_protocols_with_the_setting_named()
    {
        string dataDir = Path.Combine(Path.GetTempPath(), "halfmsg-groups-" + Guid.NewGuid().ToString("N")[..12]);
        int grpc = FreePorts.Next(), remoting = FreePorts.Next();
        var host = await BrokerHost.StartAsync(["--data-dir", dataDir, "--grpc-port", grpc.ToString(), "--remoting-port", remoting.ToString(), "--namesrv-port", "0",
            "--http-port", FreePorts.Next().ToString(), "--transaction-check-interval", "1h", "--max-consumer-groups", "1"]);
        try
        {
            using var client = new GrpcTestClient($"127.0.0.1:{grpc}");
            var message = new Message
            {
                Topic = new Resource { Name = "orders" },
                Body = ByteString.CopyFromUtf8("m"),
                SystemProperties = new SystemProperties
                {
                    MessageId = "01" + Guid.NewGuid().ToString("N").ToUpperInvariant(), MessageType = MessageType.Normal,
                    BodyEncoding = V2Encoding.Identity, BornTimestamp = Timestamp.FromDateTimeOffset(DateTimeOffset.UtcNow), BornHost = "test-host",
                },
            };
            var sent = await client.UnaryAsync(GrpcMethods.SendMessage, new SendMessageRequest { Messages = { message } }, SendMessageResponse.Parser);
            Assert.Equal(Code.Ok, sent.Response!.Status.Code);

            var first = await client.ServerStreamAsync(GrpcMethods.ReceiveMessage, Receive("billing", "orders"), ReceiveMessageResponse.Parser);
            Assert.Single(first.Responses, r => r.ContentCase == ReceiveMessageResponse.ContentOneofCase.Message);

            var refused = await client.ServerStreamAsync(GrpcMethods.ReceiveMessage, Receive("audit", "orders"), ReceiveMessageResponse.Parser);
            var status = Assert.Single(refused.Responses, r => r.ContentCase == ReceiveMessageResponse.ContentOneofCase.Status).Status;
            Assert.Equal(Code.Forbidden, status.Code);
            Assert.Contains("--max-consumer-groups", status.Message);

            await using var pull = await RemotingTestClient.ConnectAsync(remoting);
            var commit = await pull.InvokeAsync(RequestCode.UpdateConsumerOffset, new Dictionary<string, string>
            {
                ["consumerGroup"] = "reports", ["topic"] = "orders", ["queueId"] = "0", ["commitOffset"] = "1",
            });
            Assert.Equal(ResponseCode.SubscriptionGroupNotExist, commit.Code);
            Assert.Contains("--max-consumer-groups", commit.Remark);
            var pulled = await RemotingBroker.PullAsync(pull, "reports", "orders", 0, 0);
            Assert.Equal(ResponseCode.SubscriptionGroupNotExist, pulled.Code);
            Assert.Contains("--max-consumer-groups", pulled.Remark);

            // The known group goes on.
            var again = await client.ServerStreamAsync(GrpcMethods.ReceiveMessage, Receive("billing", "orders"), ReceiveMessageResponse.Parser);
            Assert.DoesNotContain(again.Responses, r => r.ContentCase == ReceiveMessageResponse.ContentOneofCase.Status && r.Status.Code == Code.Forbidden);
        }
        finally
        {
            await host.DisposeAsync();
            try { Directory.Delete(dataDir, true); } catch (IOException) { }
        }
    }
}
