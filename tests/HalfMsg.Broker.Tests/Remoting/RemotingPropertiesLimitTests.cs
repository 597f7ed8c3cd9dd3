using System.Globalization;
using Apache.Rocketmq.V2;
using Google.Protobuf;
using Google.Protobuf.WellKnownTypes;
using HalfMsg.Broker.Core.Model;
using HalfMsg.Broker.Tests.Infrastructure;
using HalfMsg.Protocol.Grpc;
using HalfMsg.Protocol.Remoting;
using HalfMsg.TestKit;
using static HalfMsg.Broker.Tests.Infrastructure.RemotingBroker;
using V2Encoding = Apache.Rocketmq.V2.Encoding;

namespace HalfMsg.Broker.Tests.Remoting;

/// <summary>
/// RocketMQ's stored layout gives the properties a 16-bit length (at most 32767 bytes): a message whose properties do
/// not fit is refused at send time on both front ends, and one stored anyway (before the check, or in-process) is
/// pulled without the user properties that do not fit, never blocking its queue.
/// </summary>
[Collection("remoting")]
public sealed class RemotingPropertiesLimitTests(RemotingBrokerFixture broker)
{
    [Fact]
    public async Task Stored_message_with_properties_over_32KiB_is_pulled_with_the_message_after_it()
    {
        string topic = Unique("BigProps");
        string id = Guid.NewGuid().ToString("N").ToUpperInvariant();
        // As a message stored before sends were checked: injected through the engine, which takes up to 64 KiB of metadata.
        var stored = await broker.Host.Engine.SendAsync(new MessageDraft
        {
            Topic = topic, MessageId = id, Tag = "T", Keys = ["k1"], QueueId = 0, Body = "big"u8.ToArray(), BornTimestampMs = 1,
            Properties = new Dictionary<string, string> { ["small"] = "kept", ["huge"] = new string('x', 40_000) },
        });
        Assert.True(stored.IsOk, stored.Error.Message);
        await using var c = await broker.ConnectAsync();
        await SendAsync(c, topic, "after", queueId: 0);

        var pulled = await PullAsync(c, "G", topic, 0, 0);
        Assert.True(pulled.Code == ResponseCode.Success, $"{pulled.Code} {pulled.Remark}");
        var messages = StoredMessageCodec.DecodeAll(pulled.Body.Span);
        Assert.Equal(["big", "after"], messages.Select(BodyOf));
        Assert.Equal("2", pulled.Get("nextBeginOffset"));
        var big = messages[0];
        Assert.Equal(id, big.Properties[MessageConst.UniqueKey]);
        Assert.Equal("T", big.Properties[MessageConst.Tags]);
        Assert.Equal("k1", big.Properties[MessageConst.Keys]);
        Assert.Equal("kept", big.Properties["small"]);
        Assert.False(big.Properties.ContainsKey("huge"));
    }

    [Fact]
    public async Task Remoting_send_whose_properties_exceed_32767_bytes_is_refused_MESSAGE_ILLEGAL()
    {
        await using var c = await broker.ConnectAsync();
        string topic = Unique("BigPropsR");
        // A long KEYS list: 3000 keys of 10 characters, 33,000 bytes once joined.
        string keys = string.Join(' ', Enumerable.Range(0, 3000).Select(i => i.ToString("D10", CultureInfo.InvariantCulture)));
        var r = await c.InvokeAsync(RequestCode.SendMessageV2, SendHeader("PG", topic, Props("T", keys)), "x"u8.ToArray());
        Assert.True(r.Code == ResponseCode.MessageIllegal, $"{r.Code} {r.Remark}");
        Assert.Contains("32767", r.Remark);

        // In a batch too, whose entries carry at most 32767 bytes of properties themselves: an entry without UNIQ_KEY
        // whose KEYS nearly fill that is over the limit once the broker gives it its id. The whole batch is refused.
        string entryProps = MessageProperties.Encode([new(MessageConst.Keys, new string('k', 32_750))]);
        var batch = BatchMessageCodec.Encode([new BatchMessageCodec.Entry(0, "ok"u8.ToArray(), Props("B")),
            new BatchMessageCodec.Entry(0, "big"u8.ToArray(), entryProps)]);
        var b = await c.InvokeAsync(RequestCode.SendBatchMessage, SendHeader("PG", topic, "", 0, 0), batch);
        Assert.True(b.Code == ResponseCode.MessageIllegal && b.Remark!.Contains("32767"), $"{b.Code} {b.Remark}");
        Assert.Equal(ResponseCode.TopicNotExist, (await PullAsync(c, "G", topic, 0, 0)).Code);

        // One just under the limit is taken and pulled whole.
        var fits = await c.InvokeAsync(RequestCode.SendMessageV2, SendHeader("PG", topic, Props("T", null, null, ("p", new string('y', 32_000))), 0, 1),
            "y"u8.ToArray());
        Assert.True(fits.Code == ResponseCode.Success, $"{fits.Code} {fits.Remark}");
        var pulled = await PullAsync(c, "G", topic, 1, 0);
        Assert.Equal(ResponseCode.Success, pulled.Code);
        Assert.Equal(32_000, Assert.Single(StoredMessageCodec.DecodeAll(pulled.Body.Span)).Properties["p"].Length);
    }

    [Fact]
    public async Task Grpc_send_whose_properties_exceed_32767_bytes_in_the_Remoting_layout_is_refused_MESSAGE_PROPERTIES_TOO_LARGE()
    {
        using var client = new GrpcTestClient($"127.0.0.1:{broker.GrpcPort}");
        var message = new Message
        {
            Topic = new Resource { Name = Unique("BigPropsG") },
            Body = ByteString.CopyFromUtf8("g"),
            SystemProperties = new SystemProperties
            {
                MessageId = "01" + Guid.NewGuid().ToString("N").ToUpperInvariant(), MessageType = MessageType.Normal,
                BodyEncoding = V2Encoding.Identity, BornTimestamp = Timestamp.FromDateTimeOffset(DateTimeOffset.UtcNow), BornHost = "test-host",
            },
            // Within the proxy's 16 KiB of user properties, tag and keys (V5MessageChecks), which counts an empty key as
            // nothing; over 32767 bytes in the stored layout, where 20,000 keys take 19,999 separators.
            UserProperties = { ["huge"] = new string('x', 16_000) },
        };
        message.SystemProperties.Keys.AddRange(Enumerable.Repeat(string.Empty, 20_000));
        var sent = await client.UnaryAsync(GrpcMethods.SendMessage, new SendMessageRequest { Messages = { message } }, SendMessageResponse.Parser);
        Assert.Equal(0, sent.GrpcStatus);
        Assert.True(sent.Response!.Status.Code == Code.MessagePropertiesTooLarge && sent.Response.Status.Message.Contains("32767"),
            $"{sent.Response.Status.Code}: {sent.Response.Status.Message}");
    }
}
