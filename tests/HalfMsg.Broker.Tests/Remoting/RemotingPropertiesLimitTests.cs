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

    /// <summary>
    /// What the broker adds after the send counts at send time. Until 2026-12-06 the check counted the properties as
    /// sent, up to 32767 bytes: a message just under that was accepted, and its send-back (RETRY_TOPIC, ORIGIN_MESSAGE_ID)
    /// was pulled from the retry topic without the user properties that no longer fitted (logged). Now the room for them
    /// is kept: a message just under the old limit is refused, and the largest one accepted is pulled whole after a
    /// send-back, from a topic of the longest name (the longest RETRY_TOPIC).
    /// </summary>
    [Fact]
    public async Task A_message_accepted_at_send_keeps_its_properties_after_a_send_back_and_one_without_room_for_them_is_refused()
    {
        await using var c = await broker.ConnectAsync();
        string topic = Unique("Room").PadRight(127, 'r');
        string group = Unique("G");
        string id = Guid.NewGuid().ToString("N").ToUpperInvariant(); // 32 characters
        // Sent: UNIQ_KEY=<id> (8 + 32 + 2 bytes with the separators) and p=<value> (1 + n + 2). Added by a send-back:
        // RETRY_TOPIC=<topic> (11 + 127 + 2) and ORIGIN_MESSAGE_ID=<id> (17 + 32 + 2).
        int largest = StoredMessageCodec.MaxPropertiesBytes - 140 - 51 - 45;
        Task<RemotingCommand> Send(int n, string? uniq = null)
            => c.InvokeAsync(RequestCode.SendMessageV2, SendHeader("PG", topic, Props(null, null, uniq, ("p", new string('p', n))), 0, 0), "x"u8.ToArray());

        foreach (int n in new[] { StoredMessageCodec.MaxPropertiesBytes - 45 - 10, largest + 1 }) // just under the old limit; one byte over the new
        {
            var refused = await Send(n);
            Assert.True(refused.Code == ResponseCode.MessageIllegal && refused.Remark!.Contains("32767"), $"{n}: {refused.Code} {refused.Remark}");
        }

        var fits = await Send(largest, id);
        Assert.True(fits.Code == ResponseCode.Success, $"{fits.Code} {fits.Remark}");
        Assert.True(OffsetMessageId.TryDecode(fits.Get("msgId"), out _, out long physical));
        var back = await broker.Host.Engine.SendBackAsync(group, physical, 1, 16, topic); // due after 1 s
        Assert.True(back.Error.IsOk, back.Error.Message);
        var retried = Assert.Single(await EventuallyAsync(() => PullAllAsync(c, group, back.Topic!, queues: 1), l => l.Count == 1,
            TimeSpan.FromSeconds(30), "the sent-back message in the retry topic"));
        Assert.Equal(largest, retried.Properties["p"].Length);
        Assert.Equal(topic, retried.Properties[MessageConst.RetryTopic]);
        Assert.Equal(id, retried.Properties[MessageConst.OriginMessageId]);
    }

    /// <summary>
    /// As above for a half, whose check-back adds TRAN_MSG, PGROUP (its producer group, here 200 characters),
    /// __transactionId__ and TRANSACTION_CHECK_TIMES: until 2026-12-06 a half just under 32767 bytes of properties was checked back without its user
    /// properties that no longer fitted, so the producer's check listener decided on a message missing them.
    /// </summary>
    [Fact]
    public async Task A_half_accepted_at_send_is_checked_back_with_all_its_properties_and_one_without_room_for_them_is_refused()
    {
        await using var c = await broker.ConnectAsync();
        string group = Unique("PG").PadRight(200, 'g');
        var producer = new RemotingTransactionProducer(c, group);
        await producer.HeartbeatAsync();
        string topic = Unique("HalfRoom");
        // Sent: UNIQ_KEY=<id> (8 + 32 + 2) and p=<value> (1 + n + 2); TRAN_MSG and PGROUP are the broker's to write. Added
        // by a check-back: TRAN_MSG=true (8 + 4 + 2), PGROUP=<group> (6 + 200 + 2), __transactionId__=<id> (17 + 32 + 2),
        // TRANSACTION_CHECK_TIMES=<n> (23 + room for any int, 10, + 2).
        int largest = StoredMessageCodec.MaxPropertiesBytes - 14 - 208 - 51 - 35 - 45;

        foreach (int n in new[] { StoredMessageCodec.MaxPropertiesBytes - 45 - 10, largest + 1 })
        {
            var (_, refused) = await producer.SendHalfAsync(topic, "x", null, ("p", new string('p', n)));
            Assert.True(refused.Code == ResponseCode.MessageIllegal && refused.Remark!.Contains("32767"), $"{n}: {refused.Code} {refused.Remark}");
        }

        var (uniq, sent) = await producer.SendHalfAsync(topic, "x", null, ("p", new string('p', largest)));
        Assert.True(sent.Code == ResponseCode.Success, $"{sent.Code} {sent.Remark}");
        var (_, checkedBack) = await producer.AnswerCheckAsync(MessageSysFlag.TransactionRollbackType, TimeSpan.FromSeconds(30));
        Assert.Equal(uniq, checkedBack.Properties[MessageConst.UniqueKey]);
        Assert.Equal(largest, checkedBack.Properties["p"].Length);
        Assert.Equal(group, checkedBack.Properties[MessageConst.ProducerGroup]);
        Assert.Equal(uniq, checkedBack.Properties[MessageConst.TransactionId]);
        Assert.Equal("1", checkedBack.Properties[MessageConst.TransactionCheckTimes]);
    }
}
