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
}
