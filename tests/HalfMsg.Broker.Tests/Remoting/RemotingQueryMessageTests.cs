using System.Globalization;
using HalfMsg.Broker.Tests.Infrastructure;
using HalfMsg.Protocol.Remoting;
using static HalfMsg.Broker.Tests.Infrastructure.RemotingBroker;

namespace HalfMsg.Broker.Tests.Remoting;

/// <summary>
/// QUERY_MESSAGE (12), as <c>mqadmin queryMsgByKey</c> (and Java's <c>queryMessage</c>/<c>viewMessage(topic, msgId)</c>,
/// with <c>_UNIQUE_KEY_QUERY</c>) send it: answered from the message index the admin API's key look-up uses, with the
/// messages in the stored layout. Until 2026-12-06 it was REQUEST_CODE_NOT_SUPPORTED.
/// </summary>
[Collection("remoting")]
public sealed class RemotingQueryMessageTests(RemotingBrokerFixture broker)
{
    private static Task<RemotingCommand> QueryAsync(RemotingTestClient c, string topic, string key, int maxNum = 32, long begin = 0,
        long end = long.MaxValue, bool uniqueKey = false)
        => c.InvokeAsync(RequestCode.QueryMessage, new()
        {
            ["topic"] = topic, ["key"] = key, ["maxNum"] = maxNum.ToString(CultureInfo.InvariantCulture),
            ["beginTimestamp"] = begin.ToString(CultureInfo.InvariantCulture), ["endTimestamp"] = end.ToString(CultureInfo.InvariantCulture),
            ["_UNIQUE_KEY_QUERY"] = uniqueKey ? "true" : "false",
        });

    private static async Task<RemotingCommand> SendKeyedAsync(RemotingTestClient c, string topic, string body, string keys, string uniq)
    {
        var r = await c.InvokeAsync(RequestCode.SendMessageV2, SendHeader("PG", topic, Props("TagQ", keys, uniq), 0, 1), System.Text.Encoding.UTF8.GetBytes(body));
        Assert.True(r.Code == ResponseCode.Success, $"send failed: {r.Code} {r.Remark}");
        return r;
    }

    private static string Uniq() => Guid.NewGuid().ToString("N").ToUpperInvariant();

    [Fact]
    public async Task Messages_are_found_by_key_in_their_topic_in_the_stored_layout_at_their_offset_msg_ids()
    {
        await using var c = await broker.ConnectAsync();
        string topic = Unique("QryA"), other = Unique("QryB"), key = Unique("order");
        var first = await SendKeyedAsync(c, topic, "one", key, Uniq());
        var second = await SendKeyedAsync(c, topic, "two", $"x {key}", Uniq());
        await SendKeyedAsync(c, other, "elsewhere", key, Uniq());
        await SendKeyedAsync(c, topic, "unrelated", "other-key", Uniq());

        // The index is read from the log after a start; these messages are live, but the fixture may have just restarted.
        var r = await EventuallyAsync(() => QueryAsync(c, topic, key), q => q.Code == ResponseCode.Success, TimeSpan.FromSeconds(30), "the key in the index");
        Assert.NotNull(r.Get("indexLastUpdateTimestamp"));
        Assert.NotNull(r.Get("indexLastUpdatePhyoffset"));
        var found = StoredMessageCodec.DecodeAll(r.Body.Span);
        Assert.Equal(["one", "two"], found.Select(BodyOf));
        Assert.All(found, m => Assert.Equal((topic, 1), (m.Topic, m.QueueId)));
        Assert.Equal([first.Get("msgId"), second.Get("msgId")], found.Select(m => OffsetMessageId.Encode(m.StoreHost, m.PhysicalOffset)));
        Assert.Equal($"x {key}", found[1].Properties[MessageConst.Keys]);

        // maxNum: the newest.
        var newest = await QueryAsync(c, topic, key, maxNum: 1);
        Assert.Equal(["two"], StoredMessageCodec.DecodeAll(newest.Body.Span).Select(BodyOf));
    }

    [Fact]
    public async Task A_unique_key_query_finds_the_message_by_its_UNIQ_KEY()
    {
        await using var c = await broker.ConnectAsync();
        string topic = Unique("QryU"), uniq = Uniq();
        await SendKeyedAsync(c, topic, "by id", "k", uniq);
        var r = await EventuallyAsync(() => QueryAsync(c, topic, uniq, uniqueKey: true), q => q.Code == ResponseCode.Success, TimeSpan.FromSeconds(30), "the id in the index");
        var m = Assert.Single(StoredMessageCodec.DecodeAll(r.Body.Span));
        Assert.Equal(("by id", uniq), (BodyOf(m), m.Properties[MessageConst.UniqueKey]));
        // Of another topic it is not found.
        Assert.Equal(ResponseCode.QueryNotFound, (await QueryAsync(c, Unique("QryZ"), uniq, uniqueKey: true)).Code);
    }

    /// <summary>RocketMQ's index files hold a message's UNIQ_KEY beside its keys, so `mqadmin queryMsgByKey` with a message
    /// id finds the message too; until 2026-12-06 only the unique-key query did here.</summary>
    [Fact]
    public async Task A_plain_key_query_also_finds_a_message_by_its_UNIQ_KEY_once()
    {
        await using var c = await broker.ConnectAsync();
        string topic = Unique("QryK"), uniq = Uniq();
        await SendKeyedAsync(c, topic, "by id as key", "k", uniq);
        await SendKeyedAsync(c, topic, "keyed with the id", uniq, Uniq());
        var r = await EventuallyAsync(() => QueryAsync(c, topic, uniq), q => q.Code == ResponseCode.Success
            && StoredMessageCodec.DecodeAll(q.Body.Span).Count == 2, TimeSpan.FromSeconds(30), "both in the index");
        // In store-time order; two messages stored in the same millisecond may come either way.
        Assert.Equal(["by id as key", "keyed with the id"], StoredMessageCodec.DecodeAll(r.Body.Span).Select(BodyOf).Order(StringComparer.Ordinal));
    }

    [Fact]
    public async Task An_unknown_key_or_a_time_range_without_the_message_is_QUERY_NOT_FOUND()
    {
        await using var c = await broker.ConnectAsync();
        string topic = Unique("QryN"), key = Unique("k");
        await SendKeyedAsync(c, topic, "now", key, Uniq());
        await EventuallyAsync(() => QueryAsync(c, topic, key), q => q.Code == ResponseCode.Success, TimeSpan.FromSeconds(30), "the key in the index");

        var unknown = await QueryAsync(c, topic, Unique("nokey"));
        Assert.Equal(ResponseCode.QueryNotFound, unknown.Code);
        Assert.False(string.IsNullOrEmpty(unknown.Remark));
        long hourAgo = DateTimeOffset.UtcNow.AddHours(-1).ToUnixTimeMilliseconds();
        Assert.Equal(ResponseCode.QueryNotFound, (await QueryAsync(c, topic, key, begin: 0, end: hourAgo)).Code);
    }

    /// <summary>Apache finds a message sent back once in its topic (its IndexFile entry is topic#key of the original).
    /// Until 2026-12-06 the index answered from where the message was stored last (%RETRY%group after a send-back), so
    /// queryMsgByKey, queryMsgByUniqueKey and viewMessage(topic, uniqKey) said QUERY_NOT_FOUND for its topic (found by review).</summary>
    [Fact]
    public async Task A_message_sent_back_once_is_still_found_by_key_and_UNIQ_KEY_in_its_topic()
    {
        await using var c = await broker.ConnectAsync();
        string topic = Unique("QrySb"), key = Unique("order"), uniq = Uniq();
        var sent = await SendKeyedAsync(c, topic, "failing", key, uniq);
        await EventuallyAsync(() => QueryAsync(c, topic, key), q => q.Code == ResponseCode.Success, TimeSpan.FromSeconds(30), "the key in the index");

        Assert.True(OffsetMessageId.TryDecode(sent.Get("msgId"), out _, out long physical));
        var back = await c.InvokeAsync(RequestCode.ConsumerSendMsgBack, new()
        {
            ["group"] = Unique("GQ"), ["offset"] = physical.ToString(CultureInfo.InvariantCulture), ["delayLevel"] = "3", ["originTopic"] = topic,
            ["originMsgId"] = sent.Get("msgId")!, ["maxReconsumeTimes"] = "16",
        });
        Assert.True(back.Code == ResponseCode.Success, $"{back.Code} {back.Remark}");

        var byKey = await QueryAsync(c, topic, key);
        var byUniq = await QueryAsync(c, topic, uniq, uniqueKey: true);
        Assert.True(byKey.Code == ResponseCode.Success && byUniq.Code == ResponseCode.Success,
            $"after one send-back: by key {byKey.Code} {byKey.Remark}; by UNIQ_KEY {byUniq.Code} {byUniq.Remark}");
    }
}
