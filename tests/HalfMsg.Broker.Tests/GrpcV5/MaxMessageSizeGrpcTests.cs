using Apache.Rocketmq.V2;
using Google.Protobuf;
using Google.Protobuf.WellKnownTypes;
using HalfMsg.Broker.Hosting;
using HalfMsg.Broker.Tests.Infrastructure;
using HalfMsg.Protocol.Grpc;
using V2Encoding = Apache.Rocketmq.V2.Encoding;
using HalfMsg.TestKit;

namespace HalfMsg.Broker.Tests.GrpcV5;

/// <summary>
/// Issue 8, defect 4, through the gRPC front-end: a body of exactly <c>--max-message-size</c> is stored and delivered
/// (before: INTERNAL from "Entry does not fit on page"), one byte more is MESSAGE_BODY_TOO_LARGE, also at the largest
/// allowed setting; a setting beyond that range stops the start naming the flag.
/// </summary>
public sealed class MaxMessageSizeGrpcTests
{
    private static Message NewMessage(string topic, byte[] body) => new()
    {
        Topic = new Resource { Name = topic },
        Body = ByteString.CopyFrom(body),
        SystemProperties = new SystemProperties
        {
            MessageId = "01" + Guid.NewGuid().ToString("N").ToUpperInvariant(),
            MessageType = MessageType.Normal,
            BodyEncoding = V2Encoding.Identity,
            BornTimestamp = Timestamp.FromDateTimeOffset(DateTimeOffset.UtcNow),
            BornHost = "test-host",
        },
    };

    private static async Task RoundTripAtTheLimitAsync(int max, params string[] args)
    {
        string dataDir = Path.Combine(Path.GetTempPath(), "halfmsg-maxgrpc-" + Guid.NewGuid().ToString("N")[..12]);
        int grpc = FreePorts.Next();
        var host = await BrokerHost.StartAsync(["--data-dir", dataDir, "--grpc-port", grpc.ToString(), "--remoting-port", "0", "--namesrv-port", "0", "--http-port", FreePorts.Next().ToString(),
            "--transaction-check-interval", "1h", .. args]);
        try
        {
            using var client = new GrpcTestClient($"127.0.0.1:{grpc}");
            var body = new byte[max];
            new Random(max).NextBytes(body);

            var sent = await client.UnaryAsync(GrpcMethods.SendMessage, new SendMessageRequest { Messages = { NewMessage("max", body) } }, SendMessageResponse.Parser);
            Assert.Equal(0, sent.GrpcStatus);
            Assert.True(sent.Response!.Status.Code == Code.Ok, $"{sent.Response.Status.Code}: {sent.Response.Status.Message}");

            var over = await client.UnaryAsync(GrpcMethods.SendMessage, new SendMessageRequest { Messages = { NewMessage("max", new byte[max + 1]) } }, SendMessageResponse.Parser);
            Assert.Equal(0, over.GrpcStatus);
            Assert.Equal(Code.MessageBodyTooLarge, over.Response!.Status.Code);

            var received = await client.ServerStreamAsync(GrpcMethods.ReceiveMessage, new ReceiveMessageRequest
            {
                Group = new Resource { Name = "g" },
                MessageQueue = new MessageQueue { Topic = new Resource { Name = "max" } },
                FilterExpression = new FilterExpression { Type = FilterType.Tag, Expression = "*" },
                BatchSize = 1,
                InvisibleDuration = Duration.FromTimeSpan(TimeSpan.FromSeconds(30)),
                LongPollingTimeout = Duration.FromTimeSpan(TimeSpan.FromSeconds(5)),
            }, ReceiveMessageResponse.Parser);
            var message = Assert.Single(received.Responses, r => r.ContentCase == ReceiveMessageResponse.ContentOneofCase.Message).Message;
            Assert.Equal(max, message.Body.Length);
            Assert.True(message.Body.Span.SequenceEqual(body));
        }
        finally
        {
            await host.DisposeAsync();
            try { Directory.Delete(dataDir, true); } catch (IOException) { }
        }
    }

    [Fact]
    public Task A_body_of_exactly_the_default_maximum_is_stored_and_one_byte_more_is_message_body_too_large()
        => RoundTripAtTheLimitAsync(4 * 1024 * 1024);

    [Fact]
    public Task At_the_largest_allowed_setting_a_body_of_that_size_is_stored_and_one_byte_more_is_too_large()
        => RoundTripAtTheLimitAsync(64 * 1024 * 1024, "--max-message-size", "64MiB");

    [Theory]
    [InlineData("65MiB")]
    [InlineData("67108865")]
    [InlineData("0")]
    public async Task A_maximum_outside_the_allowed_range_stops_the_start_naming_the_flag(string value)
    {
        var ex = await Assert.ThrowsAsync<BrokerConfigurationException>(() => BrokerHost.StartAsync(["--max-message-size", value]));
        Assert.Contains("--max-message-size", ex.Message);
        Assert.Contains("67108864", ex.Message);
    }
}
