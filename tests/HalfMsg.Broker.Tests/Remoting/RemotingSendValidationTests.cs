using System.IO.Compression;
using System.Text;
using HalfMsg.Broker.Tests.Infrastructure;
using HalfMsg.Protocol.Remoting;
using static HalfMsg.Broker.Tests.Infrastructure.RemotingBroker;

namespace HalfMsg.Broker.Tests.Remoting;

/// <summary>Remoting sends: compressed bodies, batch entry properties, the offset msgId of a delayed send (review 2026-12-05, remsend).</summary>
[Collection("remoting")]
public sealed class RemotingSendValidationTests(RemotingBrokerFixture broker)
{
    private static readonly byte[] Raw = Encoding.UTF8.GetBytes(string.Concat(Enumerable.Range(0, 2000).Select(i => i.ToString())));

    private static byte[] Zlib(byte[] raw)
    {
        var ms = new MemoryStream();
        using (var z = new ZLibStream(ms, CompressionLevel.Optimal, leaveOpen: true)) z.Write(raw);
        return ms.ToArray();
    }

    [Theory]
    [InlineData("0", null)]
    [InlineData(null, "false")]
    [InlineData("0", "FALSE")]
    public async Task A_batch_entry_with_delay_level_0_or_TRAN_MSG_false_is_accepted(string? delay, string? tran)
    {
        await using var c = await broker.ConnectAsync();
        string topic = Unique("BatchD0");
        var more = new List<(string, string)>();
        if (delay is not null) more.Add((MessageConst.DelayLevel, delay));
        if (tran is not null) more.Add((MessageConst.TransactionPrepared, tran));
        // msg.setDelayTimeLevel(0) puts DELAY=0; MessageBatch.generateFromList only refuses a level > 0.
        var body = BatchMessageCodec.Encode(Enumerable.Range(0, 2).Select(i =>
            new BatchMessageCodec.Entry(0, Encoding.UTF8.GetBytes($"b{i}"), Props("B", null, null, [.. more]))));
        var r = await c.InvokeAsync(RequestCode.SendBatchMessage, SendHeader("PG", topic, "", 0, 1), body);
        Assert.True(r.Code == ResponseCode.Success, $"{r.Code} {r.Remark}");
        Assert.Equal(["b0", "b1"], (await PullAllAsync(c, "G", topic)).Select(BodyOf).Order());
    }

    [Theory]
    [InlineData(MessageConst.DelayLevel, "1")]
    [InlineData(MessageConst.TransactionPrepared, "true")]
    [InlineData(MessageConst.TransactionPrepared, "True")]
    public async Task A_batch_entry_that_is_delayed_or_a_half_is_still_refused(string key, string value)
    {
        await using var c = await broker.ConnectAsync();
        string topic = Unique("BatchBad");
        var body = BatchMessageCodec.Encode(Enumerable.Range(0, 2).Select(i =>
            new BatchMessageCodec.Entry(0, Encoding.UTF8.GetBytes($"b{i}"), Props("B", null, null, (key, value)))));
        var r = await c.InvokeAsync(RequestCode.SendBatchMessage, SendHeader("PG", topic, "", 0, 1), body);
        Assert.True(r.Code == ResponseCode.MessageIllegal, $"{r.Code} {r.Remark}");
    }

    [Fact]
    public async Task The_offset_msg_id_of_a_delayed_send_finds_the_message()
    {
        await using var c = await broker.ConnectAsync();
        string topic = Unique("DelayId");
        var sent = await SendAsync(c, topic, "later", "T", 0, null, (MessageConst.DelayLevel, "3"));
        Assert.True(OffsetMessageId.TryDecode(sent.Get("msgId"), out _, out long offset));
        var r = await c.InvokeAsync(RemotingCommand.Request(RequestCode.ViewMessageById).Set("offset", offset));
        Assert.True(r.Code == ResponseCode.Success, $"offset {offset}: {r.Code} {r.Remark}");
        Assert.Equal("later", BodyOf(Assert.Single(StoredMessageCodec.DecodeAll(r.Body.Span))));
    }

    [Fact]
    public async Task A_truncated_zlib_body_is_refused_not_stored_short()
    {
        await using var c = await broker.ConnectAsync();
        var full = Zlib(Raw);
        // Cut in the deflate data, and cut in the Adler-32 trailer (the inflated bytes are then all there).
        foreach (int length in new[] { full.Length / 2, full.Length - 1, full.Length - 4 })
        {
            string topic = Unique("ZTrunc");
            var r = await c.InvokeAsync(RequestCode.SendMessageV2, SendHeader("PG", topic, Props("T"), MessageSysFlag.Compressed, 0), full[..length]);
            if (r.Code == ResponseCode.Success)
            {
                var got = Assert.Single(await PullAllAsync(c, "G", topic));
                Assert.Fail($"{length} of {full.Length} bytes: stored {got.Body.Length} of {Raw.Length} bytes");
            }
            Assert.True(r.Code == ResponseCode.MessageIllegal, $"{length} of {full.Length} bytes: {r.Code} {r.Remark}");
        }
    }

    [Fact]
    public async Task A_whole_zlib_body_is_stored_inflated()
    {
        await using var c = await broker.ConnectAsync();
        string topic = Unique("ZWhole");
        var r = await c.InvokeAsync(RequestCode.SendMessageV2, SendHeader("PG", topic, Props("T"), MessageSysFlag.Compressed, 0), Zlib(Raw));
        Assert.True(r.Code == ResponseCode.Success, $"{r.Code} {r.Remark}");
        Assert.Equal(Raw, Assert.Single(await PullAllAsync(c, "G", topic)).Body);
    }

    [Fact]
    public async Task A_zlib_body_whose_checksum_does_not_match_is_refused()
    {
        await using var c = await broker.ConnectAsync();
        string topic = Unique("ZSum");
        var bad = Zlib(Raw);
        bad[^1] ^= 0x55; // Adler-32 trailer
        var r = await c.InvokeAsync(RequestCode.SendMessageV2, SendHeader("PG", topic, Props("T"), MessageSysFlag.Compressed, 0), bad);
        Assert.True(r.Code == ResponseCode.MessageIllegal, $"{r.Code} {r.Remark}");
    }

    /// <summary>
    /// A send naming a queue the topic does not have (a MessageQueueSelector producer whose route is stale: the topic was
    /// deleted and made again with fewer queues) is refused as Apache's broker refuses it (msgCheck: INVALID_PARAMETER
    /// since 5.3.2, SYSTEM_ERROR before), with the queue and the topic's count in the remark. Until 2026-12-06 it was
    /// answered SUCCESS and stored round-robin on another queue: the producer's per-key order was lost without a word.
    /// </summary>
    [Theory]
    [InlineData(RequestCode.SendMessage)]
    [InlineData(RequestCode.SendMessageV2)]
    public async Task A_send_to_a_queue_the_topic_does_not_have_is_refused_naming_the_queue_and_the_count(int code)
    {
        await using var c = await broker.ConnectAsync();
        string topic = Unique("NoQueue");
        await SendAsync(c, topic, "first", "T", 3); // the fixture's topics have 4 queues: 3 is the last

        var header = SendHeader("PG", topic, Props("T"), 0, 4);
        var r = await c.InvokeAsync(code, code == RequestCode.SendMessageV2 ? header : V1(header), Encoding.UTF8.GetBytes("stray"));

        Assert.True(r.Code == ResponseCode.InvalidParameter, $"{r.Code} {r.Remark} queueId={r.Get("queueId")}");
        Assert.Contains("queue 4", r.Remark, StringComparison.Ordinal);
        Assert.Contains("4 queues", r.Remark, StringComparison.Ordinal);
        Assert.Equal(["first"], (await PullAllAsync(c, "G", topic)).Select(BodyOf));
    }

    /// <summary>SEND_MESSAGE's header under its own field names (SendMessageRequestHeader), not V2's one-letter ones.</summary>
    private static Dictionary<string, string> V1(Dictionary<string, string> v2) => new()
    {
        ["producerGroup"] = v2["a"], ["topic"] = v2["b"], ["defaultTopic"] = v2["c"], ["defaultTopicQueueNums"] = v2["d"], ["queueId"] = v2["e"],
        ["sysFlag"] = v2["f"], ["bornTimestamp"] = v2["g"], ["flag"] = v2["h"], ["properties"] = v2["i"], ["reconsumeTimes"] = v2["j"], ["unitMode"] = v2["k"],
    };

    [Fact]
    public async Task A_batch_for_a_queue_the_topic_does_not_have_is_refused_whole()
    {
        await using var c = await broker.ConnectAsync();
        string topic = Unique("NoQueueB");
        var body = BatchMessageCodec.Encode(Enumerable.Range(0, 2).Select(i => new BatchMessageCodec.Entry(0, Encoding.UTF8.GetBytes($"b{i}"), Props("B"))));

        var r = await c.InvokeAsync(RequestCode.SendBatchMessage, SendHeader("PG", topic, "", 0, 9), body);

        Assert.True(r.Code == ResponseCode.InvalidParameter, $"{r.Code} {r.Remark}");
        Assert.Contains("queue 9", r.Remark, StringComparison.Ordinal);
        Assert.Empty(await PullAllAsync(c, "G", topic));
    }

    /// <summary>A half keeps its queue until its commit: a queue the topic does not have is refused at the half's send,
    /// not found at the commit (where the message could only go to another queue).</summary>
    [Fact]
    public async Task A_half_for_a_queue_the_topic_does_not_have_is_refused_at_its_send()
    {
        await using var c = await broker.ConnectAsync();
        string topic = Unique("NoQueueH");
        string uniq = Guid.NewGuid().ToString("N").ToUpperInvariant();
        var props = Props("T", null, uniq, (MessageConst.TransactionPrepared, "true"), (MessageConst.ProducerGroup, "PGH"));

        var r = await c.InvokeAsync(RequestCode.SendMessageV2, SendHeader("PGH", topic, props, MessageSysFlag.TransactionPreparedType, 6), Encoding.UTF8.GetBytes("tx"));

        Assert.True(r.Code == ResponseCode.InvalidParameter, $"{r.Code} {r.Remark}");
        Assert.Contains("queue 6", r.Remark, StringComparison.Ordinal);
        Assert.Null(broker.Host.Engine.FindTransaction(uniq));
    }
}
