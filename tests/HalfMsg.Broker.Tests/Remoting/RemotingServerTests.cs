using System.Buffers.Binary;
using System.Globalization;
using System.Text;
using System.Text.Json;
using HalfMsg.Broker.Tests.Infrastructure;
using HalfMsg.Protocol.Remoting;
using static HalfMsg.Broker.Tests.Infrastructure.RemotingBroker;

namespace HalfMsg.Broker.Tests.Remoting;

[CollectionDefinition("remoting")]
public sealed class RemotingCollection : ICollectionFixture<RemotingBrokerFixture>;

/// <summary>Listener, session and name server: framing, failure tiers, routes.</summary>
[Collection("remoting")]
public sealed class RemotingServerTests(RemotingBrokerFixture broker)
{
    [Fact]
    public async Task Unknown_code_answers_REQUEST_CODE_NOT_SUPPORTED_with_the_opaque_and_the_connection_stays()
    {
        await using var c = await broker.ConnectAsync();
        var r = await c.InvokeAsync(new RemotingCommand { Code = 9999, Opaque = 424242 });
        Assert.Equal(ResponseCode.RequestCodeNotSupported, r.Code);
        Assert.Equal(424242, r.Opaque);
        Assert.True(r.IsResponse);
        Assert.Contains("9999", r.Remark);
        var again = await c.InvokeAsync(RequestCode.GetBrokerClusterInfo);
        Assert.Equal(ResponseCode.Success, again.Code);
    }

    [Fact]
    public async Task Oversized_declared_length_closes_the_connection_before_the_body_is_sent()
    {
        await using var c = await broker.ConnectAsync();
        var prefix = new byte[8];
        BinaryPrimitives.WriteInt32BigEndian(prefix, 16 * 1024 * 1024 + 1);
        await c.SendRawAsync(prefix);
        await c.Closed.WaitAsync(TimeSpan.FromSeconds(10));
    }

    [Fact]
    public async Task Garbage_json_header_closes_the_connection()
    {
        await using var c = await broker.ConnectAsync();
        byte[] header = "{not json"u8.ToArray();
        var frame = new byte[8 + header.Length];
        BinaryPrimitives.WriteInt32BigEndian(frame, 4 + header.Length);
        BinaryPrimitives.WriteInt32BigEndian(frame.AsSpan(4), header.Length);
        header.CopyTo(frame, 8);
        await c.SendRawAsync(frame);
        await c.Closed.WaitAsync(TimeSpan.FromSeconds(10));
    }

    [Fact]
    public async Task A_request_with_a_ROCKETMQ_binary_header_is_answered_in_the_binary_encoding()
    {
        await using var c = await broker.ConnectAsync();
        var req = RemotingCommand.Request(RequestCode.GetBrokerClusterInfo);
        req.SerializeType = SerializeType.RocketMq;
        var r = await c.InvokeAsync(req);
        Assert.Equal(ResponseCode.Success, r.Code);
        Assert.Equal(SerializeType.RocketMq, r.SerializeType);
    }

    [Fact]
    public async Task A_one_way_request_gets_no_answer_but_takes_effect()
    {
        await using var c = await broker.ConnectAsync();
        string topic = Unique("Oneway");
        await SendAsync(c, topic, "x", queueId: 0);
        var update = RemotingCommand.Request(RequestCode.UpdateConsumerOffset)
            .Set("consumerGroup", "G1").Set("topic", topic).Set("queueId", 0L).Set("commitOffset", 1L);
        await c.SendOnewayAsync(update);
        var query = RemotingCommand.Request(RequestCode.QueryConsumerOffset).Set("consumerGroup", "G1").Set("topic", topic).Set("queueId", 0L);
        var r = await EventuallyAsync(() => c.InvokeAsync(RemotingCommand.Request(RequestCode.QueryConsumerOffset, new(query.ExtFields!))),
            r => r.Get("offset") == "1", TimeSpan.FromSeconds(10), "the one-way offset update");
        Assert.Empty(c.Unmatched);
    }

    [Fact]
    public async Task Name_server_routes_a_topic_to_the_remoting_port_and_answers_on_both_ports()
    {
        string topic = Unique("Route");
        foreach (int port in new[] { broker.NameServerPort, broker.RemotingPort })
        {
            await using var ns = await RemotingTestClient.ConnectAsync(port);
            var r = await ns.InvokeAsync(RequestCode.GetRouteInfoByTopic, new() { ["topic"] = topic });
            Assert.Equal(ResponseCode.Success, r.Code);
            using var route = JsonDocument.Parse(r.Body);
            var broker0 = route.RootElement.GetProperty("brokerDatas")[0];
            Assert.Equal($"127.0.0.1:{broker.RemotingPort}", broker0.GetProperty("brokerAddrs").GetProperty("0").GetString());
            var queues = route.RootElement.GetProperty("queueDatas")[0];
            Assert.Equal(4, queues.GetProperty("writeQueueNums").GetInt32());
            Assert.Equal(6, queues.GetProperty("perm").GetInt32());
            Assert.Equal(broker0.GetProperty("brokerName").GetString(), queues.GetProperty("brokerName").GetString());
        }
    }

    [Fact]
    public async Task Name_server_answers_the_TBW102_template_route_cluster_info_and_topic_list()
    {
        await using var ns = await RemotingTestClient.ConnectAsync(broker.NameServerPort);
        var tbw = await ns.InvokeAsync(RequestCode.GetRouteInfoByTopic, new() { ["topic"] = "TBW102" });
        Assert.Equal(ResponseCode.Success, tbw.Code);
        using (var route = JsonDocument.Parse(tbw.Body))
            Assert.Equal(7, route.RootElement.GetProperty("queueDatas")[0].GetProperty("perm").GetInt32());

        var cluster = await ns.InvokeAsync(RequestCode.GetBrokerClusterInfo);
        using (var doc = JsonDocument.Parse(cluster.Body))
        {
            var names = doc.RootElement.GetProperty("clusterAddrTable").GetProperty("DefaultCluster");
            Assert.Equal(1, names.GetArrayLength());
        }

        await using var c = await broker.ConnectAsync();
        string topic = Unique("Listed");
        var created = await c.InvokeAsync(RequestCode.UpdateAndCreateTopic, new() { ["topic"] = topic, ["readQueueNums"] = "4", ["writeQueueNums"] = "4", ["perm"] = "6" });
        Assert.Equal(ResponseCode.Success, created.Code);
        var list = await ns.InvokeAsync(RequestCode.GetAllTopicListFromNameServer);
        using var topics = JsonDocument.Parse(list.Body);
        Assert.Contains(topic, topics.RootElement.GetProperty("topicList").EnumerateArray().Select(e => e.GetString()));
    }

    [Fact]
    public async Task Name_server_port_refuses_broker_requests()
    {
        await using var ns = await RemotingTestClient.ConnectAsync(broker.NameServerPort);
        var r = await ns.InvokeAsync(RequestCode.SendMessageV2, SendHeader("PG", Unique("T"), Props()), "x"u8.ToArray());
        Assert.Equal(ResponseCode.RequestCodeNotSupported, r.Code);
    }

    [Fact]
    public async Task Illegal_topic_route_is_TOPIC_NOT_EXIST()
    {
        await using var ns = await RemotingTestClient.ConnectAsync(broker.NameServerPort);
        var r = await ns.InvokeAsync(RequestCode.GetRouteInfoByTopic, new() { ["topic"] = "bad topic!" });
        Assert.Equal(ResponseCode.TopicNotExist, r.Code);
    }

    [Fact]
    public async Task Missing_required_header_field_is_answered_like_Java()
    {
        await using var c = await broker.ConnectAsync();
        var r = await c.InvokeAsync(RequestCode.SendMessageV2, new() { ["a"] = "PG" }, "x"u8.ToArray());
        Assert.Equal(ResponseCode.SystemError, r.Code);
        Assert.Equal("the custom field <topic> is null", r.Remark);
    }

    [Fact]
    public async Task A_two_MiB_message_crosses_the_transport_read_buffer_and_comes_back_intact()
    {
        await using var c = await broker.ConnectAsync();
        string topic = Unique("Big");
        var body = new byte[2 * 1024 * 1024];
        new Random(7).NextBytes(body);
        var r = await c.InvokeAsync(RequestCode.SendMessageV2, SendHeader("PG", topic, Props(), 0, 1), body);
        Assert.Equal(ResponseCode.Success, r.Code);
        var pulled = await PullAsync(c, "GBig", topic, 1, 0);
        var m = Assert.Single(StoredMessageCodec.DecodeAll(pulled.Body.Span));
        Assert.Equal(body, m.Body);
    }
}
