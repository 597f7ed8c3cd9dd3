using System.Globalization;
using System.Text;
using System.Text.Json;
using HalfMsg.Protocol.Remoting;

namespace HalfMsg.Fuzz.Capture;

/// <summary>
/// The requests Java's RocketMQ 4 client (MQClientAPIImpl / DefaultMQProducerImpl / DefaultMQPullConsumer) sends, with
/// the same codes and header fields: heartbeats, SEND_MESSAGE_V2 with one-letter headers, half sends and END_TRANSACTION,
/// SEND_BATCH_MESSAGE, PULL_MESSAGE, consumer offsets, and the name server's GET_ROUTEINFO_BY_TOPIC.
/// </summary>
public static class JavaLikeRemoting
{
    private static string S(long v) => v.ToString(CultureInfo.InvariantCulture);

    public static Dictionary<string, string> SendHeader(string group, string topic, string properties, int sysFlag = 0, int queueId = -1)
        => new()
        {
            ["a"] = group, ["b"] = topic, ["c"] = "TBW102", ["d"] = "4", ["e"] = S(queueId), ["f"] = S(sysFlag),
            ["g"] = S(DateTimeOffset.UtcNow.ToUnixTimeMilliseconds()), ["h"] = "0", ["i"] = properties, ["j"] = "0", ["k"] = "false",
        };

    public static string Props(string uniq, string? tag = null, string? keys = null, params (string Key, string Value)[] more)
    {
        var list = new List<KeyValuePair<string, string?>> { new(MessageConst.UniqueKey, uniq), new(MessageConst.Tags, tag), new(MessageConst.Keys, keys), new(MessageConst.WaitStoreMsgOk, "true") };
        list.AddRange(more.Select(m => new KeyValuePair<string, string?>(m.Key, m.Value)));
        return MessageProperties.Encode(list);
    }

    public static string NewUniq() => Guid.NewGuid().ToString("N").ToUpperInvariant();

    public static Task<RemotingCommand> HeartbeatAsync(MiniRemotingClient c, string? producerGroup, string? consumerGroup = null, string? topic = null)
    {
        var body = JsonSerializer.SerializeToUtf8Bytes(new
        {
            clientID = c.ClientId,
            producerDataSet = producerGroup is null ? [] : new[] { new { groupName = producerGroup }, new { groupName = "CLIENT_INNER_PRODUCER" } },
            consumerDataSet = consumerGroup is null ? Array.Empty<object>() : new object[]
            {
                new
                {
                    groupName = consumerGroup, consumeType = "CONSUME_PASSIVELY", messageModel = "CLUSTERING", consumeFromWhere = "CONSUME_FROM_FIRST_OFFSET",
                    subscriptionDataSet = new[] { new { classFilterMode = false, topic, subString = "*", tagsSet = Array.Empty<string>(), codeSet = Array.Empty<int>(), subVersion = 0L, expressionType = "TAG" } },
                    unitMode = false,
                },
            },
        });
        return c.InvokeAsync(RequestCode.HeartBeat, body: body);
    }

    public static Task<RemotingCommand> SendAsync(MiniRemotingClient c, string group, string topic, string body, string? tag = null, int queueId = -1,
        SerializeType type = SerializeType.Json, string? keys = null)
        => c.InvokeAsync(RequestCode.SendMessageV2, SendHeader(group, topic, Props(NewUniq(), tag, keys), 0, queueId), Encoding.UTF8.GetBytes(body), type);

    public static async Task<(string Uniq, RemotingCommand Response)> SendHalfAsync(MiniRemotingClient c, string group, string topic, string body, string? tag = null)
    {
        string uniq = NewUniq();
        string props = Props(uniq, tag, null, (MessageConst.TransactionPrepared, "true"), (MessageConst.ProducerGroup, group));
        var r = await c.InvokeAsync(RequestCode.SendMessageV2, SendHeader(group, topic, props, MessageSysFlag.TransactionPreparedType), Encoding.UTF8.GetBytes(body));
        return (uniq, r);
    }

    public static RemotingCommand EndTransaction(string group, string uniq, string tranStateTableOffset, string offsetMsgId, int commitOrRollback, bool fromCheck)
    {
        OffsetMessageId.TryDecode(offsetMsgId, out _, out long commitLogOffset);
        return RemotingCommand.Request(RequestCode.EndTransaction)
            .Set("producerGroup", group).Set("tranStateTableOffset", tranStateTableOffset).Set("commitLogOffset", commitLogOffset)
            .Set("commitOrRollback", commitOrRollback).Set("fromTransactionCheck", fromCheck).Set("msgId", uniq).Set("transactionId", uniq);
    }

    public static Task<RemotingCommand> SendBatchAsync(MiniRemotingClient c, string group, string topic, params string[] bodies)
    {
        var entries = bodies.Select(b => new BatchMessageCodec.Entry(0, Encoding.UTF8.GetBytes(b), Props(NewUniq(), "batch")));
        var header = SendHeader(group, topic, "", 0, 0);
        header["m"] = "true"; // batch
        return c.InvokeAsync(RequestCode.SendBatchMessage, header, BatchMessageCodec.Encode(entries));
    }

    public static Task<RemotingCommand> PullAsync(MiniRemotingClient c, string group, string topic, int queueId, long offset, SerializeType type = SerializeType.Json, long commitOffset = 0)
        => c.InvokeAsync(new RemotingCommand
        {
            Code = RequestCode.PullMessage, SerializeType = type,
            ExtFields = new()
            {
                ["consumerGroup"] = group, ["topic"] = topic, ["queueId"] = S(queueId), ["queueOffset"] = S(offset), ["maxMsgNums"] = "32",
                ["sysFlag"] = S(PullSysFlag.Subscription | (commitOffset > 0 ? PullSysFlag.CommitOffset : 0)), ["commitOffset"] = S(commitOffset),
                ["suspendTimeoutMillis"] = "0", ["subscription"] = "*", ["subVersion"] = "0", ["expressionType"] = "TAG",
            },
        });

    public static Task<RemotingCommand> UpdateOffsetAsync(MiniRemotingClient c, string group, string topic, int queueId, long offset)
        => c.InvokeAsync(RequestCode.UpdateConsumerOffset, new() { ["consumerGroup"] = group, ["topic"] = topic, ["queueId"] = S(queueId), ["commitOffset"] = S(offset) });

    public static Task<RemotingCommand> QueryOffsetAsync(MiniRemotingClient c, string group, string topic, int queueId)
        => c.InvokeAsync(RequestCode.QueryConsumerOffset, new() { ["consumerGroup"] = group, ["topic"] = topic, ["queueId"] = S(queueId) });

    public static Task<RemotingCommand> MaxOffsetAsync(MiniRemotingClient c, string topic, int queueId)
        => c.InvokeAsync(RequestCode.GetMaxOffset, new() { ["topic"] = topic, ["queueId"] = S(queueId) });

    public static Task<RemotingCommand> RouteAsync(MiniRemotingClient nameServer, string topic)
        => nameServer.InvokeAsync(RequestCode.GetRouteInfoByTopic, new() { ["topic"] = topic });
}
