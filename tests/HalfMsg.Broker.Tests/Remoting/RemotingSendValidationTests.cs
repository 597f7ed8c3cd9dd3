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
}
