using System.Globalization;
using System.Text.Json;
using HalfMsg.Broker.Tests.Infrastructure;
using HalfMsg.Protocol.Remoting;
using static HalfMsg.Broker.Tests.Infrastructure.RemotingBroker;

namespace HalfMsg.Broker.Tests.Remoting;

/// <summary>
/// PULL_MESSAGE with an SQL92 subscription (RocketMQ 4's <c>MessageSelector.bySql</c>), from the pull itself or from the
/// group's heartbeat: only the messages whose properties match are returned, the others are passed over
/// (nextBeginOffset goes past them, as Apache's pull does), and an expression that does not parse is
/// SUBSCRIPTION_PARSE_FAILED with the parser's reason. It was SUBSCRIPTION_PARSE_FAILED for every SQL92 pull.
/// </summary>
[Collection("remoting")]
public sealed class RemotingSqlFilterTests(RemotingBrokerFixture broker)
{
    private static Task<RemotingCommand> PullSqlAsync(RemotingTestClient c, string group, string topic, long offset, string? subscription,
        string? expressionType)
    {
        var header = new Dictionary<string, string>
        {
            ["consumerGroup"] = group, ["topic"] = topic, ["queueId"] = "0", ["queueOffset"] = offset.ToString(CultureInfo.InvariantCulture),
            ["maxMsgNums"] = "32", ["sysFlag"] = (subscription is null ? 0 : PullSysFlag.Subscription).ToString(CultureInfo.InvariantCulture),
            ["commitOffset"] = "0", ["suspendTimeoutMillis"] = "0", ["subVersion"] = "0",
        };
        if (subscription is not null) header["subscription"] = subscription;
        if (expressionType is not null) header["expressionType"] = expressionType;
        return c.InvokeAsync(RequestCode.PullMessage, header);
    }

    private static long NextOffset(RemotingCommand r) => long.Parse(r.Get("nextBeginOffset")!, CultureInfo.InvariantCulture);

    private static async Task<string> SendSixAsync(RemotingTestClient c)
    {
        string topic = Unique("Sql");
        for (int i = 0; i < 6; i++)
            await SendAsync(c, topic, $"m{i}", tag: i % 3 == 0 ? "TagA" : "TagB", queueId: 0, more: [("region", i % 2 == 0 ? "eu" : "us"), ("n", $"{i}")]);
        return topic;
    }

    [Fact]
    public async Task A_pull_with_an_SQL92_subscription_gets_only_matching_messages_and_goes_past_the_others()
    {
        await using var c = await broker.ConnectAsync();
        string topic = await SendSixAsync(c);

        var r = await PullSqlAsync(c, "SqlGroup", topic, 0, "region = 'eu' AND n >= 2", "SQL92");
        Assert.True(r.Code == ResponseCode.Success, $"{r.Code} {r.Remark}");
        var got = StoredMessageCodec.DecodeAll(r.Body.Span);
        Assert.Equal(["m2", "m4"], got.Select(BodyOf));
        Assert.Equal("eu", got[0].Properties["region"]);
        Assert.Equal(6, NextOffset(r)); // past m5, which does not match

        var after = await PullSqlAsync(c, "SqlGroup", topic, NextOffset(r), "region = 'eu' AND n >= 2", "SQL92");
        Assert.True(after.Code == ResponseCode.PullNotFound, $"{after.Code} {after.Remark}");
        Assert.Equal(6, NextOffset(after));

        // The system property TAGS as Apache exposes it, and the type named in lower case.
        var tagged = await PullSqlAsync(c, "SqlGroup", topic, 0, "TAGS = 'TagA'", "sql92");
        Assert.Equal(["m0", "m3"], StoredMessageCodec.DecodeAll(tagged.Body.Span).Select(BodyOf));
    }

    [Fact]
    public async Task A_pull_without_its_subscription_is_filtered_by_the_SQL92_one_its_heartbeat_announced()
    {
        await using var c = await broker.ConnectAsync();
        string topic = await SendSixAsync(c);
        var heartbeat = await c.InvokeAsync(RequestCode.HeartBeat, body: JsonSerializer.SerializeToUtf8Bytes(new
        {
            clientID = c.ClientId,
            consumerDataSet = new[]
            {
                new
                {
                    groupName = "SqlHeartbeatGroup", messageModel = "CLUSTERING",
                    subscriptionDataSet = new[] { new { topic, subString = "region = 'us' AND n > 1", expressionType = "SQL92" } },
                },
            },
        }));
        Assert.True(heartbeat.Code == ResponseCode.Success, $"heartbeat: {heartbeat.Code} {heartbeat.Remark}");

        // As a Java push consumer pulls: no subscription in the pull, the type in its header or not at all.
        foreach (var type in new[] { "SQL92", null })
        {
            var r = await PullSqlAsync(c, "SqlHeartbeatGroup", topic, 0, subscription: null, expressionType: type);
            Assert.True(r.Code == ResponseCode.Success, $"{r.Code} {r.Remark}");
            Assert.Equal(["m3", "m5"], StoredMessageCodec.DecodeAll(r.Body.Span).Select(BodyOf));
        }
    }

    [Fact]
    public async Task An_SQL92_subscription_that_does_not_parse_is_SUBSCRIPTION_PARSE_FAILED_with_the_reason_and_the_broker_serves_on()
    {
        await using var c = await broker.ConnectAsync();
        string topic = await SendSixAsync(c);

        var bad = await PullSqlAsync(c, "SqlGroup", topic, 0, "region = 'eu' AND (n > ", "SQL92");
        Assert.True(bad.Code == ResponseCode.SubscriptionParseFailed, $"{bad.Code} {bad.Remark}");
        Assert.Contains("at position 24", bad.Remark);

        var unknown = await PullSqlAsync(c, "SqlGroup", topic, 0, "x", "CLASS");
        Assert.True(unknown.Code == ResponseCode.SubscriptionParseFailed, $"{unknown.Code} {unknown.Remark}");

        var good = await PullSqlAsync(c, "SqlGroup", topic, 0, "n BETWEEN 1 AND 2", "SQL92");
        Assert.Equal(["m1", "m2"], StoredMessageCodec.DecodeAll(good.Body.Span).Select(BodyOf));
    }

    private static byte[] CheckClientBody(string clientId, string group, string topic, string subString, string? expressionType)
        => JsonSerializer.SerializeToUtf8Bytes(new
        {
            clientId, group,
            subscriptionData = new { topic, subString, expressionType, classFilterMode = false, tagsSet = Array.Empty<string>(), codeSet = Array.Empty<int>(), subVersion = 1L },
        });

    /// <summary>
    /// The Java client's DefaultMQPushConsumer.start() (and DefaultLitePullConsumer.subscribe with a MessageSelector)
    /// calls MQClientInstance.checkClientInBroker for every non-TAG subscription: CHECK_CLIENT_CONFIG (46) with a
    /// CheckClientRequestBody, and any answer but SUCCESS fails start(). It was REQUEST_CODE_NOT_SUPPORTED (found by
    /// review, 2026-12-06): a Java consumer with MessageSelector.bySql could not start.
    /// </summary>
    [Fact]
    public async Task CHECK_CLIENT_CONFIG_is_SUCCESS_for_a_TAG_or_a_parsable_SQL92_subscription_and_SUBSCRIPTION_PARSE_FAILED_with_the_reason_otherwise()
    {
        await using var c = await broker.ConnectAsync();
        string topic = Unique("SqlCheck");

        var sql = await c.InvokeAsync(RequestCode.CheckClientConfig, body: CheckClientBody(c.ClientId, "SqlCheckGroup", topic, "region = 'eu'", "SQL92"));
        Assert.True(sql.Code == ResponseCode.Success, $"{sql.Code} {sql.Remark}");
        var tag = await c.InvokeAsync(RequestCode.CheckClientConfig, body: CheckClientBody(c.ClientId, "SqlCheckGroup", topic, "TagA || TagB", "TAG"));
        Assert.True(tag.Code == ResponseCode.Success, $"{tag.Code} {tag.Remark}");

        var bad = await c.InvokeAsync(RequestCode.CheckClientConfig, body: CheckClientBody(c.ClientId, "SqlCheckGroup", topic, "region = 'eu' AND (n > ", "SQL92"));
        Assert.True(bad.Code == ResponseCode.SubscriptionParseFailed, $"{bad.Code} {bad.Remark}");
        Assert.Contains("at position 24", bad.Remark);
        var unknown = await c.InvokeAsync(RequestCode.CheckClientConfig, body: CheckClientBody(c.ClientId, "SqlCheckGroup", topic, "x", "CLASS"));
        Assert.True(unknown.Code == ResponseCode.SubscriptionParseFailed, $"{unknown.Code} {unknown.Remark}");
    }

    private static async Task HeartbeatAsync(RemotingTestClient c, string group, string topic, string subString, string expressionType, long subVersion)
    {
        var heartbeat = await c.InvokeAsync(RequestCode.HeartBeat, body: JsonSerializer.SerializeToUtf8Bytes(new
        {
            clientID = c.ClientId,
            consumerDataSet = new[]
            {
                new
                {
                    groupName = group, messageModel = "CLUSTERING",
                    subscriptionDataSet = new[] { new { topic, subString, expressionType, subVersion } },
                },
            },
        }));
        Assert.True(heartbeat.Code == ResponseCode.Success, $"heartbeat: {heartbeat.Code} {heartbeat.Remark}");
    }

    /// <summary>
    /// A Java push consumer's pulls carry expressionType=SQL92 but not the expression (postSubscriptionWhenPull is off):
    /// the broker filters by the heartbeat's subscription. When it had none (after a broker restart, until the client's
    /// next heartbeat, up to 30 s; or a refused heartbeat) every message was returned unfiltered, and the Java client
    /// does not filter SQL92 itself (found by review, 2026-12-06). As Apache's, the pull is SUBSCRIPTION_NOT_EXIST now
    /// (the client pulls again 3 s later); a TAG pull without one still reads everything (the Java client filters tags).
    /// </summary>
    [Fact]
    public async Task An_SQL92_pull_without_a_known_subscription_is_SUBSCRIPTION_NOT_EXIST_not_unfiltered()
    {
        await using var c = await broker.ConnectAsync();
        string topic = Unique("SqlNoHb");
        for (int i = 0; i < 4; i++)
            await SendAsync(c, topic, $"m{i}", tag: "T", queueId: 0, more: [("region", i % 2 == 0 ? "eu" : "us")]);

        var r = await PullSqlAsync(c, "SqlNoHeartbeatGroup", topic, 0, subscription: null, expressionType: "SQL92");
        string got = r.Code == ResponseCode.Success ? string.Join(",", StoredMessageCodec.DecodeAll(r.Body.Span).Select(BodyOf)) : "";
        Assert.True(r.Code == ResponseCode.SubscriptionNotExist, $"an SQL92 pull with no subscription known was answered {r.Code} {r.Remark} with {got}");

        var tag = await PullSqlAsync(c, "SqlNoHeartbeatGroup", topic, 0, subscription: null, expressionType: "TAG");
        Assert.True(tag.Code == ResponseCode.Success, $"{tag.Code} {tag.Remark}");
        Assert.Equal(["m0", "m1", "m2", "m3"], StoredMessageCodec.DecodeAll(tag.Body.Span).Select(BodyOf));
    }

    /// <summary>
    /// During a rolling change of a group's selector its members announce different subscriptions: the newest one
    /// (highest subVersion) filters the group's pulls, as Apache keeps it, and a pull newer than any heartbeat the broker
    /// has is SUBSCRIPTION_NOT_LATEST. The first member's, whichever it was, filtered them before (found by review,
    /// 2026-12-06): new instances got messages their SQL92 selector excludes.
    /// </summary>
    [Fact]
    public async Task The_newest_subscription_a_member_announced_filters_the_group_and_a_newer_pull_is_SUBSCRIPTION_NOT_LATEST()
    {
        await using var old = await broker.ConnectAsync();
        await using var updated = await broker.ConnectAsync();
        string topic = await SendSixAsync(old);
        const string group = "SqlRollingGroup";
        await HeartbeatAsync(old, group, topic, "region = 'eu'", "SQL92", subVersion: 1000);
        await HeartbeatAsync(updated, group, topic, "region = 'us'", "SQL92", subVersion: 2000);

        // Each pulls with the version it has: the old instance's pulls are filtered by the newer selector too.
        foreach (var (c, version) in new[] { (old, 1000L), (updated, 2000L) })
        {
            var r = await PullWithVersionAsync(c, group, topic, version);
            Assert.True(r.Code == ResponseCode.Success, $"{r.Code} {r.Remark}");
            Assert.Equal(["m1", "m3", "m5"], StoredMessageCodec.DecodeAll(r.Body.Span).Select(BodyOf));
        }

        var newer = await PullWithVersionAsync(updated, group, topic, subVersion: 3000);
        Assert.True(newer.Code == ResponseCode.SubscriptionNotLatest, $"{newer.Code} {newer.Remark}");
    }

    private static Task<RemotingCommand> PullWithVersionAsync(RemotingTestClient c, string group, string topic, long subVersion)
        => c.InvokeAsync(RequestCode.PullMessage, new Dictionary<string, string>
        {
            ["consumerGroup"] = group, ["topic"] = topic, ["queueId"] = "0", ["queueOffset"] = "0", ["maxMsgNums"] = "32", ["sysFlag"] = "0",
            ["commitOffset"] = "0", ["suspendTimeoutMillis"] = "0", ["subVersion"] = subVersion.ToString(CultureInfo.InvariantCulture), ["expressionType"] = "SQL92",
        });
}
