using System.Globalization;
using HalfMsg.Broker.Core;
using HalfMsg.Broker.FrontEnds.GrpcV5;
using HalfMsg.Broker.Hosting;
using HalfMsg.Broker.Tests.Infrastructure;
using HalfMsg.Protocol.Remoting;
using HalfMsg.TestKit;
using static HalfMsg.Broker.Tests.Infrastructure.RemotingBroker;

namespace HalfMsg.Broker.Tests.Remoting;

/// <summary>
/// The user <c>flag</c> of a RocketMQ 4 message (Java's <c>Message.getFlag()</c>): taken from the send header (V1
/// <c>flag</c>, V2 <c>h</c>), kept across a restart, and given back in the stored layout's FLAG field by every answer
/// that carries a message (pull, VIEW_MESSAGE_BY_ID, CHECK_TRANSACTION_STATE, a send-back's retry or dead letter, a
/// re-drive). Until 2026-12-06 it
/// was dropped at the send and every consumer read 0.
/// </summary>
public sealed class RemotingFlagTests : IAsyncLifetime
{
    private readonly string _dir = Path.Combine(Path.GetTempPath(), "halfmsg-flag-" + Guid.NewGuid().ToString("N")[..12]);
    private readonly int _port = FreePorts.Next();
    private BrokerHost _host = null!;

    private string[] Args =>
    [
        "--data-dir", _dir, "--grpc-port", FreePorts.Next().ToString(CultureInfo.InvariantCulture),
        "--http-port", FreePorts.Next().ToString(CultureInfo.InvariantCulture), "--remoting-port", _port.ToString(CultureInfo.InvariantCulture),
        "--namesrv-port", "0", "--queues-per-topic", "2", "--transaction-check-interval", "1s", "--transaction-timeout", "1s",
    ];

    public async Task InitializeAsync() => _host = await BrokerHost.StartAsync(Args);

    public async Task DisposeAsync()
    {
        await _host.DisposeAsync();
        try { Directory.Delete(_dir, recursive: true); } catch (IOException) { }
    }

    private static async Task<RemotingCommand> SendWithFlagAsync(RemotingTestClient c, string topic, string body, int flag, int queueId = 0)
    {
        var header = SendHeader("PG", topic, Props("TagF", "k1", null, ("color", "red")), 0, queueId);
        header["h"] = flag.ToString(CultureInfo.InvariantCulture);
        var r = await c.InvokeAsync(RequestCode.SendMessageV2, header, System.Text.Encoding.UTF8.GetBytes(body));
        Assert.True(r.Code == ResponseCode.Success, $"send failed: {r.Code} {r.Remark}");
        return r;
    }

    [Fact]
    public async Task The_flag_of_a_V2_send_is_pulled_and_viewed_by_id_and_survives_a_restart_without_showing_as_a_property()
    {
        string topic = Unique("Flag");
        long physical;
        await using (var c = await RemotingTestClient.ConnectAsync(_port))
        {
            var sent = await SendWithFlagAsync(c, topic, "flagged", 7);
            await SendWithFlagAsync(c, topic, "plain", 0);
            Assert.True(OffsetMessageId.TryDecode(sent.Get("msgId"), out _, out physical));

            var pulled = StoredMessageCodec.DecodeAll((await PullAsync(c, "G", topic, 0, 0)).Body.Span);
            Assert.Equal([("flagged", 7), ("plain", 0)], pulled.Select(m => (BodyOf(m), m.Flag)));
            // The flag is a field, not a property: the client sees its own properties and the broker's, nothing more.
            Assert.Equal(["KEYS", "TAGS", "UNIQ_KEY", "color"], pulled[0].Properties.Keys.Order(StringComparer.Ordinal));

            var viewed = await c.InvokeAsync(RemotingCommand.Request(RequestCode.ViewMessageById).Set("offset", physical));
            Assert.Equal(7, Assert.Single(StoredMessageCodec.DecodeAll(viewed.Body.Span)).Flag);
        }

        // Nor do gRPC consumers, the admin API or the dashboard, which show the stored properties, see it.
        var stored = await _host.Engine.ReadMessageAtAsync(physical);
        Assert.NotNull(stored);
        Assert.Equal(["color"], stored.Properties.Keys);
        Assert.Equal(["color"], V5MessageConverter.ToMessage(stored).UserProperties.Keys);

        await _host.DisposeAsync();
        _host = await BrokerHost.StartAsync(Args);
        await using var after = await RemotingTestClient.ConnectAsync(_port);
        var again = StoredMessageCodec.DecodeAll((await PullAsync(after, "G", topic, 0, 0)).Body.Span);
        Assert.Equal([7, 0], again.Select(m => m.Flag));
    }

    [Fact]
    public async Task The_flag_of_a_V1_send_and_of_a_batch_entry_is_pulled()
    {
        await using var c = await RemotingTestClient.ConnectAsync(_port);
        string topic = Unique("FlagV1");
        var r = await c.InvokeAsync(RequestCode.SendMessage, new()
        {
            ["producerGroup"] = "PG", ["topic"] = topic, ["defaultTopic"] = "TBW102", ["defaultTopicQueueNums"] = "4", ["queueId"] = "1",
            ["sysFlag"] = "0", ["bornTimestamp"] = "1", ["flag"] = "-3", ["properties"] = Props("V1"),
        }, "v1"u8.ToArray());
        Assert.Equal(ResponseCode.Success, r.Code);
        // A batch entry carries its own flag (MessageDecoder.encodeMessage writes it per message).
        var batch = BatchMessageCodec.Encode([new BatchMessageCodec.Entry(11, "b0"u8.ToArray(), Props("B")), new BatchMessageCodec.Entry(0, "b1"u8.ToArray(), Props("B"))]);
        Assert.Equal(ResponseCode.Success, (await c.InvokeAsync(RequestCode.SendBatchMessage, SendHeader("PG", topic, "", 0, 1), batch)).Code);

        var pulled = StoredMessageCodec.DecodeAll((await PullAsync(c, "G", topic, 1, 0)).Body.Span);
        Assert.Equal([("v1", -3), ("b0", 11), ("b1", 0)], pulled.Select(m => (BodyOf(m), m.Flag)));
    }

    [Fact]
    public async Task A_sent_back_message_keeps_its_flag_in_the_retry_topic()
    {
        await using var c = await RemotingTestClient.ConnectAsync(_port);
        string topic = Unique("FlagBack");
        string group = Unique("CG");
        var sent = await SendWithFlagAsync(c, topic, "again", 42);
        Assert.True(OffsetMessageId.TryDecode(sent.Get("msgId"), out _, out long physical));
        var back = await c.InvokeAsync(RequestCode.ConsumerSendMsgBack, new()
        {
            ["group"] = group, ["offset"] = physical.ToString(CultureInfo.InvariantCulture), ["delayLevel"] = "1", ["originTopic"] = topic,
            ["originMsgId"] = sent.Get("msgId")!, ["maxReconsumeTimes"] = "16",
        });
        Assert.True(back.Code == ResponseCode.Success, $"{back.Code} {back.Remark}");
        var pulled = await EventuallyAsync(() => PullAsync(c, group, BrokerEngine.RetryPrefix + group, 0, 0), p => p.Code == ResponseCode.Success,
            TimeSpan.FromSeconds(30), "the retry in queue 0");
        var m = Assert.Single(StoredMessageCodec.DecodeAll(pulled.Body.Span));
        Assert.Equal(("again", 42, 1), (BodyOf(m), m.Flag, m.ReconsumeTimes));

        // Straight to the dead-letter topic (delay level -1): the flag goes along.
        Assert.True(OffsetMessageId.TryDecode(sent.Get("msgId"), out _, out physical));
        var dead = await _host.Engine.SendBackAsync(group, physical, -1, 16, topic);
        Assert.True(dead.Error.IsOk, dead.Error.Message);
        var dlq = await PullAllAsync(c, group, BrokerEngine.DeadLetterPrefix + group, queues: 1);
        Assert.Equal(42, Assert.Single(dlq).Flag);

        // An operator's re-drive stores the dead letter again in the retry topic: still with its flag.
        var redrive = await _host.Engine.RedriveDeadLettersAsync(group, null, 100);
        Assert.True(redrive.Error.IsOk, redrive.Error.ToString());
        Assert.Equal(1, redrive.Redriven);
        var retried = await EventuallyAsync(() => PullAsync(c, group, BrokerEngine.RetryPrefix + group, 0, 1), p => p.Code == ResponseCode.Success,
            TimeSpan.FromSeconds(30), "the re-driven message in the retry topic");
        var redriven = Assert.Single(StoredMessageCodec.DecodeAll(retried.Body.Span));
        Assert.Equal(("again", 42), (BodyOf(redriven), redriven.Flag));
    }

    [Fact]
    public async Task A_half_is_checked_back_with_its_flag_and_delivered_with_it_after_the_commit()
    {
        await using var c = await RemotingTestClient.ConnectAsync(_port);
        string group = Unique("TPG");
        var producer = new RemotingTransactionProducer(c, group);
        await producer.HeartbeatAsync();
        string topic = Unique("FlagTx");
        string uniq = Guid.NewGuid().ToString("N").ToUpperInvariant();
        // As RemotingTransactionProducer.SendHalfAsync sends a half, with a flag.
        var header = SendHeader(group, topic, MessageProperties.Encode(
        [
            new(MessageConst.UniqueKey, uniq), new(MessageConst.TransactionPrepared, "true"), new(MessageConst.ProducerGroup, group),
        ]), MessageSysFlag.TransactionPreparedType, 0);
        header["h"] = "5";
        var half = await c.InvokeAsync(RequestCode.SendMessageV2, header, "tx"u8.ToArray());
        Assert.True(half.Code == ResponseCode.Success, $"{half.Code} {half.Remark}");

        // No decision was sent: the broker asks the sending connection (--transaction-timeout 1s).
        var check = await c.NextServerRequestAsync(RequestCode.CheckTransactionState, TimeSpan.FromSeconds(30));
        var checkedMessage = Assert.Single(StoredMessageCodec.DecodeAll(check.Body.Span));
        Assert.Equal((uniq, 5), (checkedMessage.Properties[MessageConst.UniqueKey], checkedMessage.Flag));

        await producer.EndAsync(uniq, half, MessageSysFlag.TransactionCommitType);
        var pulled = await EventuallyAsync(() => PullAsync(c, "G", topic, 0, 0), p => p.Code == ResponseCode.Success, TimeSpan.FromSeconds(30), "the committed message");
        Assert.Equal(5, Assert.Single(StoredMessageCodec.DecodeAll(pulled.Body.Span)).Flag);
    }
}
