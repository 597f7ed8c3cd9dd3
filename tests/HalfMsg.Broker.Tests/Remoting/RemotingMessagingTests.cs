using System.Globalization;
using System.IO.Compression;
using System.Text;
using System.Text.Json;
using HalfMsg.Broker.Tests.Infrastructure;
using HalfMsg.Protocol.Remoting;
using static HalfMsg.Broker.Tests.Infrastructure.RemotingBroker;

namespace HalfMsg.Broker.Tests.Remoting;

/// <summary>Producers and pull consumers over Remoting against the in-process broker.</summary>
[Collection("remoting")]
public sealed class RemotingMessagingTests(RemotingBrokerFixture broker)
{
    private static long L(string? s) => long.Parse(s!, CultureInfo.InvariantCulture);

    [Fact]
    public async Task Sent_message_is_pulled_in_the_stored_layout_with_uniq_key_tag_keys_and_its_offset_msg_id()
    {
        await using var c = await broker.ConnectAsync();
        string topic = Unique("Send");
        var uniq = "0A0000050000000000000000000000" + "01";
        var sent = await c.InvokeAsync(RequestCode.SendMessageV2, SendHeader("PG", topic, Props("TagA", "k1 k2", uniq, ("color", "blue")), 0, 2),
            "hello"u8.ToArray());
        Assert.Equal(ResponseCode.Success, sent.Code);
        Assert.Equal("2", sent.Get("queueId"));
        Assert.Equal("0", sent.Get("queueOffset"));
        Assert.Equal("DefaultRegion", sent.Get("MSG_REGION"));
        Assert.True(OffsetMessageId.TryDecode(sent.Get("msgId"), out var host, out long physical));
        Assert.Equal(broker.RemotingPort, host.Port);

        var pulled = await PullAsync(c, "G", topic, 2, 0);
        Assert.Equal(ResponseCode.Success, pulled.Code);
        Assert.Equal(("1", "0", "1"), (pulled.Get("nextBeginOffset"), pulled.Get("minOffset"), pulled.Get("maxOffset")));
        var m = Assert.Single(StoredMessageCodec.DecodeAll(pulled.Body.Span));
        Assert.Equal((topic, 2, 0L, physical), (m.Topic, m.QueueId, m.QueueOffset, m.PhysicalOffset));
        Assert.Equal("hello", BodyOf(m));
        Assert.Equal(uniq, m.Properties[MessageConst.UniqueKey]);
        Assert.Equal("TagA", m.Properties[MessageConst.Tags]);
        Assert.Equal("k1 k2", m.Properties[MessageConst.Keys]);
        Assert.Equal("blue", m.Properties["color"]);
        Assert.Equal(sent.Get("msgId"), OffsetMessageId.Encode(m.StoreHost, m.PhysicalOffset));
    }

    [Fact]
    public async Task V1_send_header_names_are_accepted_as_well_as_V2_letters()
    {
        await using var c = await broker.ConnectAsync();
        string topic = Unique("V1");
        var r = await c.InvokeAsync(RequestCode.SendMessage, new()
        {
            ["producerGroup"] = "PG", ["topic"] = topic, ["defaultTopic"] = "TBW102", ["defaultTopicQueueNums"] = "4", ["queueId"] = "3",
            ["sysFlag"] = "0", ["bornTimestamp"] = "1", ["flag"] = "0", ["properties"] = Props("V1"),
        }, "v1"u8.ToArray());
        Assert.Equal(ResponseCode.Success, r.Code);
        Assert.Equal("3", r.Get("queueId"));
    }

    [Fact]
    public async Task Zlib_compressed_body_is_stored_inflated()
    {
        await using var c = await broker.ConnectAsync();
        string topic = Unique("Zlib");
        byte[] plain = Encoding.UTF8.GetBytes(new string('z', 10_000));
        var ms = new MemoryStream();
        using (var z = new ZLibStream(ms, CompressionLevel.Fastest, leaveOpen: true)) z.Write(plain);
        var r = await c.InvokeAsync(RequestCode.SendMessageV2, SendHeader("PG", topic, Props(), MessageSysFlag.Compressed, 0), ms.ToArray());
        Assert.Equal(ResponseCode.Success, r.Code);
        var m = Assert.Single(StoredMessageCodec.DecodeAll((await PullAsync(c, "G", topic, 0, 0)).Body.Span));
        Assert.Equal(plain, m.Body);
        Assert.Equal(0, m.SysFlag & MessageSysFlag.Compressed);

        var bad = await c.InvokeAsync(RequestCode.SendMessageV2, SendHeader("PG", topic, Props(), MessageSysFlag.Compressed, 0), "not zlib"u8.ToArray());
        Assert.Equal(ResponseCode.MessageIllegal, bad.Code);
    }

    [Fact]
    public async Task Batch_messages_land_in_one_queue_in_order_with_one_offset_msg_id_each()
    {
        await using var c = await broker.ConnectAsync();
        string topic = Unique("Batch");
        var body = BatchMessageCodec.Encode(Enumerable.Range(0, 3).Select(i => new BatchMessageCodec.Entry(0, Encoding.UTF8.GetBytes($"b{i}"), Props("B"))));
        var r = await c.InvokeAsync(RequestCode.SendBatchMessage, SendHeader("PG", topic, "", 0, 1), body);
        Assert.Equal(ResponseCode.Success, r.Code);
        Assert.Equal(3, r.Get("msgId")!.Split(',').Length);
        var got = StoredMessageCodec.DecodeAll((await PullAsync(c, "G", topic, 1, 0)).Body.Span);
        Assert.Equal(["b0", "b1", "b2"], got.Select(BodyOf));
        Assert.Equal([0L, 1L, 2L], got.Select(m => m.QueueOffset));
    }

    /// <summary>Review edges #8: as RocketMQ, a batch counts as one message against the size limit (its encoded body), so
    /// a 16 MiB frame cannot carry hundreds of thousands of tiny messages. The Java client refuses such a batch itself.</summary>
    [Fact]
    public async Task A_batch_whose_body_exceeds_the_largest_message_is_MESSAGE_ILLEGAL_and_stores_nothing()
    {
        await using var c = await broker.ConnectAsync();
        string topic = Unique("BigBatch");
        int limit = broker.Host.Engine.Options.MaxMessageSize;
        byte[] part = new byte[limit / 4];
        var body = BatchMessageCodec.Encode(Enumerable.Range(0, 4).Select(_ => new BatchMessageCodec.Entry(0, part, Props("B"))));
        Assert.InRange(body.Length, limit + 1, 2 * limit);         // each message alone is well within the limit
        var r = await c.InvokeAsync(RequestCode.SendBatchMessage, SendHeader("PG", topic, "", 0, 1), body);
        Assert.Equal(ResponseCode.MessageIllegal, r.Code);
        Assert.Contains("batch", r.Remark);
        Assert.Equal(ResponseCode.Success, (await SendAsync(c, topic, "after", "B", 1)).Code);
        var got = StoredMessageCodec.DecodeAll((await PullAsync(c, "G", topic, 1, 0)).Body.Span);
        Assert.Equal(["after"], got.Select(BodyOf));               // nothing of the refused batch was stored
    }

    [Fact]
    public async Task Pull_filters_by_tag_and_moves_past_filtered_messages()
    {
        await using var c = await broker.ConnectAsync();
        string topic = Unique("Tags");
        await SendAsync(c, topic, "a", "TagA", 0);
        await SendAsync(c, topic, "b", "TagB", 0);
        await SendAsync(c, topic, "c", "TagC", 0);
        var r = await PullAsync(c, "G", topic, 0, 0, "TagA || TagC");
        Assert.Equal(["a", "c"], StoredMessageCodec.DecodeAll(r.Body.Span).Select(BodyOf));
        Assert.Equal("3", r.Get("nextBeginOffset"));
        var none = await PullAsync(c, "G", topic, 0, 0, "TagZ");
        Assert.Equal(ResponseCode.PullNotFound, none.Code);
        Assert.Equal("3", none.Get("nextBeginOffset"));
    }

    [Fact]
    public async Task Parked_pull_is_woken_by_a_new_message_long_before_its_suspend_timeout()
    {
        await using var consumer = await broker.ConnectAsync();
        await using var producer = await broker.ConnectAsync();
        string topic = Unique("Long");
        await SendAsync(producer, topic, "first", queueId: 0);
        var parked = PullAsync(consumer, "G", topic, 0, 1, suspendMs: 60_000);
        // Not a pause: a later request on the same connection answered. The session dispatches its frames in order, and a
        // pull takes its look and parks (or is answered) before the dispatch returns, so an answer to the pull would have
        // come before this one.
        var later = await consumer.InvokeAsync(RemotingCommand.Request(RequestCode.GetMaxOffset).Set("topic", topic).Set("queueId", 0L));
        Assert.Equal("1", later.Get("offset"));
        Assert.True(consumer.PendingRequests == 1, "the pull must be parked while the queue has nothing new");
        Assert.False(parked.IsCompleted, "the pull must be parked while the queue has nothing new");
        var started = DateTime.UtcNow;
        await SendAsync(producer, topic, "second", queueId: 0);
        var r = await parked.WaitAsync(TimeSpan.FromSeconds(20));
        Assert.Equal(ResponseCode.Success, r.Code);
        Assert.Equal("second", BodyOf(Assert.Single(StoredMessageCodec.DecodeAll(r.Body.Span))));
        Assert.True(DateTime.UtcNow - started < TimeSpan.FromSeconds(20));
    }

    [Fact]
    public async Task Pull_at_a_bad_offset_is_OFFSET_MOVED_and_an_empty_queue_is_NOT_FOUND_with_all_offset_fields()
    {
        await using var c = await broker.ConnectAsync();
        string topic = Unique("Moved");
        await SendAsync(c, topic, "x", queueId: 0);
        var moved = await PullAsync(c, "G", topic, 0, 99);
        Assert.Equal(ResponseCode.PullOffsetMoved, moved.Code);
        Assert.Equal("1", moved.Get("nextBeginOffset"));
        var empty = await PullAsync(c, "G", topic, 1, 0);
        Assert.Equal(ResponseCode.PullNotFound, empty.Code);
        Assert.Equal(("0", "0", "0", "0"), (empty.Get("nextBeginOffset"), empty.Get("minOffset"), empty.Get("maxOffset"), empty.Get("suggestWhichBrokerId")));
    }

    [Fact]
    public async Task A_pull_of_the_check_max_topic_is_NO_PERMISSION_with_a_remark_that_points_to_the_admin_API()
    {
        // Review 2026-12-02, transactions, finding 4: parked halves are still pending, so their topic is never read.
        await using var c = await broker.ConnectAsync();
        var refused = await PullAsync(c, "G", "TRANS_CHECK_MAX_TIME_TOPIC", 0, 0);
        Assert.Equal(ResponseCode.NoPermission, refused.Code);
        Assert.Contains("/api/transactions/parked", refused.Remark);
    }

    [Fact]
    public async Task Delay_level_1_message_is_invisible_until_due_then_pullable()
    {
        await using var c = await broker.ConnectAsync();
        string topic = Unique("Delay");
        await SendAsync(c, topic, "later", queueId: 0, more: (MessageConst.DelayLevel, "1"));
        var early = await PullAsync(c, "G", topic, 0, 0);
        Assert.Equal(ResponseCode.PullNotFound, early.Code);
        var got = await EventuallyAsync(() => PullAllAsync(c, "G", topic), l => l.Count == 1, TimeSpan.FromSeconds(15), "the delayed message");
        Assert.Equal("later", BodyOf(got[0]));
    }

    [Fact]
    public async Task Offsets_commit_query_min_max_and_search_by_timestamp()
    {
        await using var c = await broker.ConnectAsync();
        string topic = Unique("Off");
        Dictionary<string, string> H(params (string K, string V)[] kv) => kv.ToDictionary(x => x.K, x => x.V);

        await SendAsync(c, topic, "m0", queueId: 0);
        long between = DateTimeOffset.UtcNow.ToUnixTimeMilliseconds();
        await EventuallyAsync(() => Task.FromResult(DateTimeOffset.UtcNow.ToUnixTimeMilliseconds()), t => t > between + 1, TimeSpan.FromSeconds(1), "clock tick");
        between = DateTimeOffset.UtcNow.ToUnixTimeMilliseconds();
        await SendAsync(c, topic, "m1", queueId: 0);

        // A brand-new group on a queue that starts at 0 starts at 0.
        var q0 = await c.InvokeAsync(RequestCode.QueryConsumerOffset, H(("consumerGroup", "New"), ("topic", topic), ("queueId", "0")));
        Assert.Equal((ResponseCode.Success, "0"), (q0.Code, q0.Get("offset")));
        var strict = await c.InvokeAsync(RequestCode.QueryConsumerOffset, H(("consumerGroup", "New"), ("topic", topic), ("queueId", "0"), ("setZeroIfNotFound", "false")));
        Assert.Equal(ResponseCode.QueryNotFound, strict.Code);

        var upd = await c.InvokeAsync(RequestCode.UpdateConsumerOffset, H(("consumerGroup", "G"), ("topic", topic), ("queueId", "0"), ("commitOffset", "2")));
        Assert.Equal(ResponseCode.Success, upd.Code);
        Assert.Equal("2", (await c.InvokeAsync(RequestCode.QueryConsumerOffset, H(("consumerGroup", "G"), ("topic", topic), ("queueId", "0")))).Get("offset"));

        Assert.Equal("2", (await c.InvokeAsync(RequestCode.GetMaxOffset, H(("topic", topic), ("queueId", "0")))).Get("offset"));
        Assert.Equal("0", (await c.InvokeAsync(RequestCode.GetMinOffset, H(("topic", topic), ("queueId", "0")))).Get("offset"));
        var search = await c.InvokeAsync(RequestCode.SearchOffsetByTimestamp, H(("topic", topic), ("queueId", "0"), ("timestamp", between.ToString(CultureInfo.InvariantCulture))));
        Assert.Equal("1", search.Get("offset"));

        // PULL_MESSAGE with COMMIT_OFFSET commits as a side effect.
        await PullAsync(c, "G2", topic, 0, 1, commitOffset: 1);
        Assert.Equal("1", (await c.InvokeAsync(RequestCode.QueryConsumerOffset, H(("consumerGroup", "G2"), ("topic", topic), ("queueId", "0")))).Get("offset"));
    }

    [Fact]
    public async Task Send_back_goes_to_the_retry_topic_with_reconsume_times_and_to_the_DLQ_after_the_maximum()
    {
        await using var c = await broker.ConnectAsync();
        string topic = Unique("Retry");
        string group = Unique("CG");
        await SendAsync(c, topic, "fail-me", "T", 0);
        var m = Assert.Single(StoredMessageCodec.DecodeAll((await PullAsync(c, group, topic, 0, 0)).Body.Span));

        var back = await c.InvokeAsync(RemotingCommand.Request(RequestCode.ConsumerSendMsgBack)
            .Set("offset", m.PhysicalOffset).Set("group", group).Set("delayLevel", 1L).Set("originTopic", topic).Set("maxReconsumeTimes", 1L));
        Assert.Equal(ResponseCode.Success, back.Code);
        string retry = "%RETRY%" + group;
        var retried = await EventuallyAsync(() => PullAllAsync(c, group, retry), l => l.Count == 1, TimeSpan.FromSeconds(15), "the retry message");
        var r = retried[0];
        Assert.Equal(("fail-me", 1, topic), (BodyOf(r), r.ReconsumeTimes, r.Properties["RETRY_TOPIC"]));
        Assert.Equal(m.Properties[MessageConst.UniqueKey], r.Properties[MessageConst.UniqueKey]);

        // Second failure: reconsumeTimes 1 >= maxReconsumeTimes 1 → dead letter.
        var back2 = await c.InvokeAsync(RemotingCommand.Request(RequestCode.ConsumerSendMsgBack)
            .Set("offset", r.PhysicalOffset).Set("group", group).Set("delayLevel", 0L).Set("originTopic", topic).Set("maxReconsumeTimes", 1L));
        Assert.Equal(ResponseCode.Success, back2.Code);
        var dead = await PullAllAsync(c, group, "%DLQ%" + group, queues: 1);
        Assert.Equal("fail-me", BodyOf(Assert.Single(dead)));
    }

    /// <summary>
    /// Review 2026-12-02 (delivery) #8: a message the consumer sent back past its maximum is stored in
    /// <c>%DLQ%&lt;group&gt;</c> with its origin only in RETRY_TOPIC; the re-drive skipped it and acked it on its
    /// cursor, so no re-drive ever brought it back. It now goes to the group's retry topic, which the group's
    /// consumers pull, with its reconsume count reset.
    /// </summary>
    [Fact]
    public async Task A_message_sent_back_to_the_DLQ_is_redriven_to_the_groups_retry_topic()
    {
        await using var c = await broker.ConnectAsync();
        string topic = Unique("Redrive");
        string group = Unique("CG");
        await SendAsync(c, topic, "dead-then-back", "T", 0);
        var m = Assert.Single(StoredMessageCodec.DecodeAll((await PullAsync(c, group, topic, 0, 0)).Body.Span));
        var back = await c.InvokeAsync(RemotingCommand.Request(RequestCode.ConsumerSendMsgBack)
            .Set("offset", m.PhysicalOffset).Set("group", group).Set("delayLevel", 0L).Set("originTopic", topic).Set("maxReconsumeTimes", 0L));
        Assert.Equal(ResponseCode.Success, back.Code);
        Assert.Single(await EventuallyAsync(() => PullAllAsync(c, group, "%DLQ%" + group, queues: 1), l => l.Count == 1, TimeSpan.FromSeconds(15), "the dead letter"));

        var redrive = await broker.Host.Engine.RedriveDeadLettersAsync(group, null, 100);
        Assert.True(redrive.Error.IsOk, redrive.Error.ToString());
        Assert.Equal((1, 0), (redrive.Redriven, redrive.Skipped));

        var retried = await EventuallyAsync(() => PullAllAsync(c, group, "%RETRY%" + group), l => l.Count == 1, TimeSpan.FromSeconds(15), "the re-driven message");
        var r = retried[0];
        Assert.Equal(("dead-then-back", 0, topic), (BodyOf(r), r.ReconsumeTimes, r.Properties["RETRY_TOPIC"]));
        Assert.Equal(m.Properties[MessageConst.UniqueKey], r.Properties[MessageConst.UniqueKey]);
        var second = await broker.Host.Engine.RedriveDeadLettersAsync(group, null, 100);
        Assert.Equal((0, 0), (second.Redriven, second.Skipped));
    }

    [Fact]
    public async Task Send_back_of_an_offset_that_is_no_message_is_refused()
    {
        await using var c = await broker.ConnectAsync();
        var r = await c.InvokeAsync(RemotingCommand.Request(RequestCode.ConsumerSendMsgBack).Set("offset", 3L).Set("group", "G").Set("delayLevel", 0L));
        Assert.NotEqual(ResponseCode.Success, r.Code);
    }

    [Fact]
    public async Task Consumer_heartbeats_make_the_group_list_and_a_joining_member_notifies_the_others()
    {
        string group = Unique("CG");
        string topic = Unique("Members");
        await using var a = await broker.ConnectAsync();
        await using var b = await broker.ConnectAsync();
        byte[] Heartbeat(RemotingTestClient c) => JsonSerializer.SerializeToUtf8Bytes(new
        {
            clientID = c.ClientId,
            producerDataSet = Array.Empty<object>(),
            consumerDataSet = new[]
            {
                new
                {
                    groupName = group, consumeType = "CONSUME_PASSIVELY", messageModel = "CLUSTERING", consumeFromWhere = "CONSUME_FROM_LAST_OFFSET",
                    subscriptionDataSet = new[] { new { topic, subString = "*" } }, unitMode = false,
                },
            },
        });
        Assert.Equal(ResponseCode.Success, (await a.InvokeAsync(RequestCode.HeartBeat, body: Heartbeat(a))).Code);
        Assert.Equal(ResponseCode.Success, (await b.InvokeAsync(RequestCode.HeartBeat, body: Heartbeat(b))).Code);
        var notice = await a.NextServerRequestAsync(RequestCode.NotifyConsumerIdsChanged, TimeSpan.FromSeconds(10));
        Assert.Equal(group, notice.Get("consumerGroup"));
        Assert.True(notice.IsOneway);

        var list = await a.InvokeAsync(RemotingCommand.Request(RequestCode.GetConsumerListByGroup).Set("consumerGroup", group));
        using var doc = JsonDocument.Parse(list.Body);
        Assert.Equal(new[] { a.ClientId, b.ClientId }.Order(StringComparer.Ordinal), doc.RootElement.GetProperty("consumerIdList").EnumerateArray().Select(e => e.GetString()));

        // The retry topic of a clustering group is routable.
        var route = await a.InvokeAsync(RequestCode.GetRouteInfoByTopic, new() { ["topic"] = "%RETRY%" + group });
        Assert.Equal(ResponseCode.Success, route.Code);
    }

    [Fact]
    public async Task A_queue_locked_by_one_client_is_not_locked_for_another_until_unlocked()
    {
        string group = Unique("Ord");
        string topic = Unique("OrdT");
        await using var c = await broker.ConnectAsync();
        await SendAsync(c, topic, "x"); // only queues that exist are locked
        byte[] Body(string client) => JsonSerializer.SerializeToUtf8Bytes(new
        {
            consumerGroup = group, clientId = client, mqSet = new[] { new { topic, brokerName = "broker-a", queueId = 0 } },
        });
        int Locked(RemotingCommand r) { using var d = JsonDocument.Parse(r.Body); return d.RootElement.GetProperty("lockOKMQSet").GetArrayLength(); }
        Assert.Equal(1, Locked(await c.InvokeAsync(RequestCode.LockBatchMq, body: Body("A"))));
        Assert.Equal(0, Locked(await c.InvokeAsync(RequestCode.LockBatchMq, body: Body("B"))));
        Assert.Equal(ResponseCode.Success, (await c.InvokeAsync(RequestCode.UnlockBatchMq, body: Body("A"))).Code);
        Assert.Equal(1, Locked(await c.InvokeAsync(RequestCode.LockBatchMq, body: Body("B"))));
    }
}

/// <summary>State that must come back through a checkpoint (graceful restart writes one and replays nothing after it).</summary>
[Collection("remoting")]
public sealed class RemotingCheckpointTests(RemotingBrokerFixture broker)
{
    [Fact]
    public async Task Committed_pull_offsets_come_back_from_the_checkpoint_after_a_graceful_restart()
    {
        string topic = Unique("Ckpt");
        await using (var c = await broker.ConnectAsync())
        {
            await SendAsync(c, topic, "x", queueId: 1);
            var upd = await c.InvokeAsync(RemotingCommand.Request(RequestCode.UpdateConsumerOffset)
                .Set("consumerGroup", "CG").Set("topic", topic).Set("queueId", 1L).Set("commitOffset", 1L));
            Assert.Equal(ResponseCode.Success, upd.Code);
        }
        await broker.RestartAsync();
        Assert.True(broker.Host.Engine.LastCheckpointAddress > 0, "the graceful stop must have written a checkpoint");
        await using var after = await broker.ConnectAsync();
        var q = await after.InvokeAsync(RemotingCommand.Request(RequestCode.QueryConsumerOffset).Set("consumerGroup", "CG").Set("topic", topic).Set("queueId", 1L));
        Assert.Equal((ResponseCode.Success, "1"), (q.Code, q.Get("offset")));
    }
}

[Collection("remoting")]
public sealed class RemotingRetrySendTests(RemotingBrokerFixture broker)
{
    [Fact]
    public async Task A_retry_topic_send_at_its_maximum_reconsume_times_is_redirected_to_the_DLQ()
    {
        await using var c = await broker.ConnectAsync();
        string group = Unique("CG");
        var h = SendHeader("PG", "%RETRY%" + group, Props("T"), 0, 0);
        h["j"] = "3";
        h["l"] = "3";
        var r = await c.InvokeAsync(RequestCode.SendMessageV2, h, "to-dlq"u8.ToArray());
        Assert.Equal(ResponseCode.Success, r.Code);
        Assert.Equal("to-dlq", BodyOf(Assert.Single(await PullAllAsync(c, "V", "%DLQ%" + group, queues: 1))));

        var below = SendHeader("PG", "%RETRY%" + group, Props("T"), 0, 0);
        below["j"] = "2";
        below["l"] = "3";
        Assert.Equal(ResponseCode.Success, (await c.InvokeAsync(RequestCode.SendMessageV2, below, "retry-again"u8.ToArray())).Code);
        var retried = await PullAllAsync(c, "V", "%RETRY%" + group);
        Assert.Equal(("retry-again", 2), (BodyOf(Assert.Single(retried)), retried[0].ReconsumeTimes));
    }
}

[Collection("remoting")]
public sealed class RemotingConsumeStatsTests(RemotingBrokerFixture broker)
{
    [Fact]
    public async Task Consume_stats_list_broker_and_committed_offsets_per_queue_in_fastjsons_map_encoding()
    {
        await using var c = await broker.ConnectAsync();
        string topic = Unique("Stats");
        string group = Unique("CG");
        await SendAsync(c, topic, "a", queueId: 2);
        await SendAsync(c, topic, "b", queueId: 2);
        await c.InvokeAsync(RemotingCommand.Request(RequestCode.UpdateConsumerOffset).Set("consumerGroup", group).Set("topic", topic).Set("queueId", 2L).Set("commitOffset", 1L));
        var r = await c.InvokeAsync(RemotingCommand.Request(RequestCode.GetConsumeStats).Set("consumerGroup", group));
        Assert.Equal(ResponseCode.Success, r.Code);
        string body = System.Text.Encoding.UTF8.GetString(r.Body.Span);
        Assert.Equal($"{{\"consumeTps\":0.0,\"offsetTable\":{{{{\"brokerName\":\"broker-a\",\"queueId\":2,\"topic\":\"{topic}\"}}:" +
            "{\"brokerOffset\":2,\"consumerOffset\":1,\"lastTimestamp\":0,\"pullOffset\":1}}}", body);
    }
}

[Collection("remoting")]
public sealed class RemotingDeleteTopicTests(RemotingBrokerFixture broker)
{
    [Fact]
    public async Task Delete_topic_as_mqadmin_sends_it_removes_the_topic_from_the_broker_and_the_topic_list()
    {
        await using var c = await broker.ConnectAsync();
        await using var ns = await RemotingTestClient.ConnectAsync(broker.NameServerPort);
        string topic = Unique("Del");
        await SendAsync(c, topic, "x", queueId: 0);
        Assert.Equal(ResponseCode.Success, (await c.InvokeAsync(RemotingCommand.Request(RequestCode.DeleteTopicInBroker).Set("topic", topic))).Code);
        Assert.Equal(ResponseCode.Success, (await ns.InvokeAsync(RemotingCommand.Request(RequestCode.DeleteTopicInNameSrv).Set("topic", topic))).Code);
        using var list = JsonDocument.Parse((await ns.InvokeAsync(RequestCode.GetAllTopicListFromNameServer)).Body);
        Assert.DoesNotContain(topic, list.RootElement.GetProperty("topicList").EnumerateArray().Select(e => e.GetString()));
        Assert.Equal("0", (await c.InvokeAsync(RemotingCommand.Request(RequestCode.GetMaxOffset).Set("topic", topic).Set("queueId", 0L))).Get("offset"));
        // mqadmin deletes from every broker; a second delete is not an error.
        Assert.Equal(ResponseCode.Success, (await c.InvokeAsync(RemotingCommand.Request(RequestCode.DeleteTopicInBroker).Set("topic", topic))).Code);
        Assert.Equal(ResponseCode.NoPermission, (await c.InvokeAsync(RemotingCommand.Request(RequestCode.DeleteTopicInBroker).Set("topic", "%DLQ%G"))).Code);
    }
}

[Collection("remoting")]
public sealed class RemotingViewMessageTests(RemotingBrokerFixture broker)
{
    [Fact]
    public async Task A_message_is_found_by_its_offset_msg_id_and_a_bogus_offset_is_an_error()
    {
        await using var c = await broker.ConnectAsync();
        string topic = Unique("View");
        var sent = await SendAsync(c, topic, "look-me-up", "TagV", 0);
        Assert.True(OffsetMessageId.TryDecode(sent.Get("msgId"), out _, out long offset));
        var r = await c.InvokeAsync(RemotingCommand.Request(RequestCode.ViewMessageById).Set("offset", offset));
        Assert.Equal(ResponseCode.Success, r.Code);
        var m = Assert.Single(StoredMessageCodec.DecodeAll(r.Body.Span));
        Assert.Equal((topic, "look-me-up", "TagV", offset), (m.Topic, BodyOf(m), m.Properties[MessageConst.Tags], m.PhysicalOffset));

        var bogus = await c.InvokeAsync(RemotingCommand.Request(RequestCode.ViewMessageById).Set("offset", offset + 3));
        Assert.Equal(ResponseCode.SystemError, bogus.Code);
    }
}
