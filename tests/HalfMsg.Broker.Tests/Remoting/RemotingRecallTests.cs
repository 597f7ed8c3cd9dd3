using System.Buffers.Text;
using System.Globalization;
using System.Text;
using Code = Apache.Rocketmq.V2.Code;
using HalfMsg.Broker.Tests.GrpcV5;
using HalfMsg.Broker.Tests.Infrastructure;
using HalfMsg.Protocol.Grpc;
using HalfMsg.Protocol.Remoting;
using static HalfMsg.Broker.Tests.Infrastructure.RemotingBroker;

namespace HalfMsg.Broker.Tests.Remoting;

/// <summary>
/// RocketMQ 5.3.1+'s recall of a timer message over Remoting, as DefaultMQProducer.recallMessage sends it: the send of a
/// timer message answers <c>recallHandle</c> (SendMessageResponseHeader), and RECALL_MESSAGE (370) takes it back.
/// </summary>
[Collection("remoting")]
public sealed class RemotingRecallTests(RemotingBrokerFixture broker)
{
    // A delay long enough that the recall is answered before it on a busy machine; the tests wait for a control message
    // due 1 ms later, never for the time itself.
    private const long DelayMs = 8_000;

    private static long NowMs => DateTimeOffset.UtcNow.ToUnixTimeMilliseconds();

    private static string Uniq() => Guid.NewGuid().ToString("N").ToUpperInvariant();

    private static string Ms(long value) => value.ToString(CultureInfo.InvariantCulture);

    /// <summary>A timer message (TIMER_DELIVER_MS, what Java's Message.setDeliverTimeMs sets).</summary>
    private static Task<RemotingCommand> SendTimerAsync(RemotingTestClient c, string topic, string body, long deliverAtMs, string? uniq = null)
        => SendAsync(c, topic, body, uniq: uniq ?? Uniq(), more: (MessageConst.TimerDeliverMs, Ms(deliverAtMs)));

    private static Task<RemotingCommand> RecallAsync(RemotingTestClient c, string topic, string handle)
        => c.InvokeAsync(RequestCode.RecallMessage, new() { ["producerGroup"] = "PG", ["topic"] = topic, ["recallHandle"] = handle });

    /// <summary>The bodies on the topic's queues once the control message (due 1 ms after the recalled ones, so released
    /// after them) is there: a recalled message that was going to be delivered would be among them.</summary>
    /// <remarks>A pass over the queues is not a snapshot: a pass that read one queue just before the release and the
    /// control's queue just after it missed a message released with the control (seen under load on 2026-12-06, and
    /// every time with a 300 ms pause between queues). So once a pass saw the control, a whole pass more is read.</remarks>
    private static async Task<List<string>> PulledOnceControlCameAsync(RemotingTestClient c, string topic)
    {
        await EventuallyAsync(() => PullAllAsync(c, "RclPuller", topic), m => m.Any(x => BodyOf(x) == "control"),
            TimeSpan.FromSeconds(60), $"the control message on {topic}");
        var got = await PullAllAsync(c, "RclPuller", topic);
        return got.Select(BodyOf).Order(StringComparer.Ordinal).ToList();
    }

    /// <summary>Apache's RecallMessageHandle.decodeHandle: base64url of "v1 topic brokerName timestamp messageId".</summary>
    private static string[] Decode(string handle) => Encoding.UTF8.GetString(Base64Url.DecodeFromChars(handle.TrimEnd('='))).Split(' ');

    [Fact]
    public async Task A_timer_messages_send_answers_a_recall_handle_in_Apaches_form_and_other_sends_none()
    {
        await using var c = await broker.ConnectAsync();
        string topic = Unique("RclSend"), uniq = Uniq();
        long due = NowMs + DelayMs;

        var timer = await SendTimerAsync(c, topic, "later", due, uniq);
        string? handle = timer.Get("recallHandle");
        Assert.False(string.IsNullOrEmpty(handle), "no recallHandle in the send response");
        string[] parts = Decode(handle!);
        Assert.True(parts.Length >= 5, $"{parts.Length} fields");
        Assert.Equal(("v1", topic, Ms(due), uniq), (parts[0], parts[1], parts[3], parts[4]));

        var bySeconds = await SendAsync(c, topic, "in a minute", more: (MessageConst.TimerDelaySec, "60"));
        Assert.False(string.IsNullOrEmpty(bySeconds.Get("recallHandle")));

        // As Apache's broker: none for a message that does not wait, for a DELAY level (never a timer message there),
        // for a timer message whose time has passed, and for one sent to a %RETRY% topic.
        Assert.Null((await SendAsync(c, topic, "now")).Get("recallHandle"));
        Assert.Null((await SendAsync(c, topic, "level", more: (MessageConst.DelayLevel, "3"))).Get("recallHandle"));
        Assert.Null((await SendTimerAsync(c, topic, "past", NowMs - 1_000)).Get("recallHandle"));
        Assert.Null((await SendTimerAsync(c, "%RETRY%" + Unique("RclGroup"), "retry", NowMs + DelayMs)).Get("recallHandle"));
    }

    [Fact]
    public async Task A_recalled_timer_message_is_never_delivered_and_a_second_recall_is_SUCCESS()
    {
        await using var c = await broker.ConnectAsync();
        string topic = Unique("RclOk"), uniq = Uniq();
        long due = NowMs + DelayMs;
        string handle = (await SendTimerAsync(c, topic, "recalled", due, uniq)).Get("recallHandle")!;
        await SendTimerAsync(c, topic, "control", due + 1);

        var recalled = await RecallAsync(c, topic, handle);
        Assert.True(recalled.Code == ResponseCode.Success, $"{recalled.Code} {recalled.Remark}");
        Assert.Equal(uniq, recalled.Get("msgId"));
        Assert.Equal("DefaultRegion", recalled.Get(MessageConst.MsgRegion));
        // Apache's broker only writes a marker, so a second recall of a message not yet due is SUCCESS again.
        var again = await RecallAsync(c, topic, handle);
        Assert.Equal((ResponseCode.Success, uniq), (again.Code, again.Get("msgId")));

        Assert.Equal(["control"], await PulledOnceControlCameAsync(c, topic));
    }

    /// <summary>
    /// A send retried after the recall (the same UNIQ_KEY and TIMER_DELIVER_MS, its first answer lost) is answered
    /// SEND_OK, as Apache's broker answers it, and never delivered, as Apache's timer drops it at its time. Until
    /// 2026-12-06 the recall took out only the copies waiting when it ran, and this one was delivered (found by review).
    /// </summary>
    [Fact]
    public async Task A_send_of_the_recalled_timer_message_after_the_recall_is_SEND_OK_and_never_delivered()
    {
        await using var c = await broker.ConnectAsync();
        string topic = Unique("RclLater"), uniq = Uniq();
        long due = NowMs + DelayMs;
        string handle = (await SendTimerAsync(c, topic, "recalled", due, uniq)).Get("recallHandle")!;
        await SendTimerAsync(c, topic, "control", due + 1);
        var recalled = await RecallAsync(c, topic, handle);
        Assert.True(recalled.Code == ResponseCode.Success, $"{recalled.Code} {recalled.Remark}");

        var retried = await SendTimerAsync(c, topic, "recalled", due, uniq);
        Assert.True(retried.Code == ResponseCode.Success, $"{retried.Code} {retried.Remark}");

        Assert.Equal(["control"], await PulledOnceControlCameAsync(c, topic));
    }

    /// <summary>
    /// A producer retries a send whose answer timed out with the same message (its UNIQ_KEY and TIMER_DELIVER_MS), and
    /// the broker stores it twice; the producer holds the retry's handle. Until 2026-12-06 the recall took out the retry's
    /// copy only, and the first was delivered. As in Apache's broker, whose recall matches by id, neither is now.
    /// </summary>
    [Fact]
    public async Task A_recall_with_a_retried_sends_handle_keeps_both_stored_copies_from_delivery()
    {
        await using var c = await broker.ConnectAsync();
        string topic = Unique("RclCopies"), uniq = Uniq();
        long due = NowMs + DelayMs;
        await SendTimerAsync(c, topic, "recalled", due, uniq);
        string retried = (await SendTimerAsync(c, topic, "recalled", due, uniq)).Get("recallHandle")!;
        await SendTimerAsync(c, topic, "same time", due);
        await SendTimerAsync(c, topic, "control", due + 1);

        var recalled = await RecallAsync(c, topic, retried);
        Assert.True(recalled.Code == ResponseCode.Success, $"{recalled.Code} {recalled.Remark}");
        Assert.Equal(uniq, recalled.Get("msgId"));

        Assert.Equal(["control", "same time"], await PulledOnceControlCameAsync(c, topic));
    }

    [Fact]
    public async Task Recall_answers_as_Apaches_broker_for_missing_fields_a_missing_topic_a_bad_handle_another_topic_and_a_delivered_message()
    {
        await using var c = await broker.ConnectAsync();
        string topic = Unique("RclBad"), other = Unique("RclOther"), uniq = Uniq();
        await SendAsync(c, other, "elsewhere");
        long due = NowMs + 300;
        string handle = (await SendTimerAsync(c, topic, "soon", due, uniq)).Get("recallHandle")!;

        // @CFNotNull fields: the Java broker fails to decode the header.
        var noTopic = await c.InvokeAsync(RequestCode.RecallMessage, new() { ["producerGroup"] = "PG", ["recallHandle"] = handle });
        Assert.Equal(ResponseCode.SystemError, noTopic.Code);
        var noHandle = await c.InvokeAsync(RequestCode.RecallMessage, new() { ["producerGroup"] = "PG", ["topic"] = topic });
        Assert.Equal(ResponseCode.SystemError, noHandle.Code);

        // The topic is looked up before the handle is read.
        Assert.Equal(ResponseCode.TopicNotExist, (await RecallAsync(c, Unique("RclNone"), "not a handle")).Code);

        var garbage = await RecallAsync(c, topic, "not a handle");
        Assert.Equal(ResponseCode.IllegalOperation, garbage.Code);
        Assert.Contains("recall handle is invalid", garbage.Remark);
        // Apache's own form (five fields) and our form naming another broker are not this broker's handles.
        string[] parts = Decode(handle);
        Assert.Equal(ResponseCode.IllegalOperation, (await RecallAsync(c, topic, Encode(string.Join(' ', parts[..5])))).Code);
        parts[2] = "broker-elsewhere";
        Assert.Equal(ResponseCode.IllegalOperation, (await RecallAsync(c, topic, Encode(string.Join(' ', parts)))).Code);

        var otherTopic = await RecallAsync(c, other, handle);
        Assert.Equal(ResponseCode.IllegalOperation, otherTopic.Code);
        Assert.Contains("topic not match", otherTopic.Remark);

        await EventuallyAsync(() => PullAllAsync(c, "RclPuller", topic), m => m.Any(x => BodyOf(x) == "soon"), TimeSpan.FromSeconds(60), "the delivery");
        var delivered = await RecallAsync(c, topic, handle);
        Assert.Equal(ResponseCode.IllegalOperation, delivered.Code);
        Assert.Contains("timestamp invalid", delivered.Remark);
    }

    [Fact]
    public async Task A_handle_from_a_gRPC_send_is_recalled_over_Remoting_and_one_from_a_Remoting_send_over_gRPC_in_its_namespace()
    {
        await using var c = await broker.ConnectAsync();
        using var grpc = new GrpcTestClient($"127.0.0.1:{broker.GrpcPort}");
        using var grpcInNs = new GrpcTestClient($"127.0.0.1:{broker.GrpcPort}");
        grpcInNs.DefaultHeaders[RocketMqHeaders.Namespace] = "nsRcl";
        string topic = Unique("RclX"), wrapped = "nsRcl%" + topic;
        var due = DateTimeOffset.UtcNow.AddMilliseconds(DelayMs);

        var fromGrpcMessage = RecallTests.NewMessage(topic, "recalled over Remoting", due);
        var fromGrpc = await RecallTests.SendAsync(grpc, fromGrpcMessage);
        string fromRemoting = (await SendTimerAsync(c, topic, "recalled over gRPC", due.ToUnixTimeMilliseconds())).Get("recallHandle")!;
        await SendTimerAsync(c, topic, "control", due.ToUnixTimeMilliseconds() + 1);
        var inNs = await RecallTests.SendAsync(grpcInNs, RecallTests.NewMessage(topic, "recalled in its namespace", due));
        await RecallTests.SendAsync(grpcInNs, RecallTests.NewMessage(topic, "control", due.AddMilliseconds(1)));

        var overRemoting = await RecallAsync(c, topic, fromGrpc.RecallHandle);
        Assert.True(overRemoting.Code == ResponseCode.Success, $"{overRemoting.Code} {overRemoting.Remark}");
        Assert.Equal(fromGrpcMessage.SystemProperties.MessageId, overRemoting.Get("msgId"));
        Assert.Equal(Code.Ok, (await RecallTests.RecallAsync(grpc, topic, fromRemoting)).Status.Code);
        // A Remoting client wraps its namespace into the topic itself: the handle names the wrapped topic.
        Assert.Equal(ResponseCode.IllegalOperation, (await RecallAsync(c, topic, inNs.RecallHandle)).Code);
        Assert.Equal(ResponseCode.Success, (await RecallAsync(c, wrapped, inNs.RecallHandle)).Code);

        Assert.Equal(["control"], await PulledOnceControlCameAsync(c, topic));
        Assert.Equal(["control"], await PulledOnceControlCameAsync(c, wrapped));
    }

    [Fact]
    public async Task Recalls_over_both_protocols_are_counted_per_topic_in_halfmsg_messages_recalled_total_once_each()
    {
        await using var c = await broker.ConnectAsync();
        using var grpc = new GrpcTestClient($"127.0.0.1:{broker.GrpcPort}");
        using var http = new HttpClient { BaseAddress = new Uri($"http://127.0.0.1:{broker.HttpPort}") };
        string topic = Unique("RclMetric"), quiet = Unique("RclQuiet");
        long due = NowMs + 60_000;
        string overRemoting = (await SendTimerAsync(c, topic, "one", due)).Get("recallHandle")!;
        string overGrpc = (await SendTimerAsync(c, topic, "two", due)).Get("recallHandle")!;
        await SendTimerAsync(c, quiet, "kept", due);

        Assert.Equal(ResponseCode.Success, (await RecallAsync(c, topic, overRemoting)).Code);
        Assert.Equal(ResponseCode.Success, (await RecallAsync(c, topic, overRemoting)).Code); // a repeat: nothing more recalled
        Assert.Equal(Code.Ok, (await RecallTests.RecallAsync(grpc, topic, overGrpc)).Status.Code);
        Assert.Equal(ResponseCode.IllegalOperation, (await RecallAsync(c, topic, "not a handle")).Code);

        string text = await http.GetStringAsync("/metrics");
        Assert.Contains("# TYPE halfmsg_messages_recalled_total counter", text);
        var samples = System.Text.RegularExpressions.Regex.Matches(text, @"^halfmsg_messages_recalled_total\{(?<labels>[^}]*)\} (?<value>\S+)",
                System.Text.RegularExpressions.RegexOptions.Multiline)
            .Where(m => m.Groups["labels"].Value.Contains($"topic=\"{topic}\"", StringComparison.Ordinal))
            .Select(m => m.Groups["value"].Value).ToList();
        Assert.Equal(["2"], samples);
        Assert.DoesNotContain($"halfmsg_messages_recalled_total{{topic=\"{quiet}\"", text);
    }

    private static string Encode(string raw) => Base64Url.EncodeToString(Encoding.UTF8.GetBytes(raw));

    /// <summary>A handle as <paramref name="handle"/>, naming the broker <paramref name="brokerName"/>.</summary>
    private static string Renamed(string handle, string brokerName)
    {
        string[] parts = Decode(handle);
        parts[2] = brokerName;
        return Encode(string.Join(' ', parts));
    }

    /// <summary>The broker names in a topic's Remoting route (brokerDatas and queueDatas) and gRPC route (QueryRoute).</summary>
    internal static async Task<(string[] Remoting, string[] Grpc)> RouteBrokerNamesAsync(RemotingTestClient c, GrpcTestClient grpc, string topic)
    {
        var remoting = await c.InvokeAsync(RequestCode.GetRouteInfoByTopic, new() { ["topic"] = topic });
        Assert.Equal(ResponseCode.Success, remoting.Code);
        using var route = System.Text.Json.JsonDocument.Parse(remoting.Body);
        string[] remotingNames = route.RootElement.GetProperty("brokerDatas").EnumerateArray()
            .Concat(route.RootElement.GetProperty("queueDatas").EnumerateArray())
            .Select(b => b.GetProperty("brokerName").GetString()!).ToArray();
        var queried = await grpc.UnaryAsync(GrpcMethods.QueryRoute,
            new Apache.Rocketmq.V2.QueryRouteRequest { Topic = new Apache.Rocketmq.V2.Resource { Name = topic } }, Apache.Rocketmq.V2.QueryRouteResponse.Parser);
        Assert.Equal(Code.Ok, queried.Response!.Status.Code);
        string[] grpcNames = queried.Response.MessageQueues.Select(q => q.Broker.Name).ToArray();
        Assert.NotEmpty(remotingNames);
        Assert.NotEmpty(grpcNames);
        return (remotingNames, grpcNames);
    }

    /// <summary>
    /// One broker name: the recall handles of both protocols' sends name the broker the routes of both protocols name.
    /// Until 2026-12-06 the gRPC routes and every recall handle named it <c>halfmsg-broker</c> and the Remoting routes
    /// <c>broker-a</c>, so a Remoting client's recallMessage found the handle's broker in none of its routes (found by
    /// review).
    /// </summary>
    [Fact]
    public async Task Recall_handles_of_both_protocols_name_the_broker_that_the_routes_of_both_protocols_name()
    {
        await using var c = await broker.ConnectAsync();
        using var grpc = new GrpcTestClient($"127.0.0.1:{broker.GrpcPort}");
        string topic = Unique("RclName");
        var due = DateTimeOffset.UtcNow.AddMilliseconds(DelayMs);
        string fromRemoting = (await SendTimerAsync(c, topic, "over Remoting", due.ToUnixTimeMilliseconds())).Get("recallHandle")!;
        string fromGrpc = (await RecallTests.SendAsync(grpc, RecallTests.NewMessage(topic, "over gRPC", due))).RecallHandle;

        var (remotingRoute, grpcRoute) = await RouteBrokerNamesAsync(c, grpc, topic);
        string name = Assert.Single(remotingRoute.Distinct());
        Assert.Equal("broker-a", name); // the default, Apache's sample configuration's name
        Assert.Equal([name], grpcRoute.Distinct());
        Assert.Equal(name, Decode(fromRemoting)[2]);
        Assert.Equal(name, Decode(fromGrpc)[2]);
    }

    /// <summary>Handles a broker issued before it had one name named it <c>halfmsg-broker</c>: after the upgrade they
    /// still recall their messages over both protocols; a handle naming any other broker is refused.</summary>
    [Fact]
    public async Task A_handle_naming_the_old_broker_name_still_recalls_and_one_naming_another_broker_is_refused()
    {
        await using var c = await broker.ConnectAsync();
        using var grpc = new GrpcTestClient($"127.0.0.1:{broker.GrpcPort}");
        string topic = Unique("RclOld");
        long due = NowMs + DelayMs;
        string one = (await SendTimerAsync(c, topic, "old name over Remoting", due)).Get("recallHandle")!;
        string two = (await SendTimerAsync(c, topic, "old name over gRPC", due)).Get("recallHandle")!;
        string three = (await SendTimerAsync(c, topic, "another broker's", due)).Get("recallHandle")!;
        await SendTimerAsync(c, topic, "control", due + 1);

        var elsewhere = await RecallAsync(c, topic, Renamed(three, "broker-b"));
        Assert.Equal(ResponseCode.IllegalOperation, elsewhere.Code);
        Assert.Contains("recall handle is invalid", elsewhere.Remark);
        Assert.Equal(Code.InternalServerError, (await RecallTests.RecallAsync(grpc, topic, Renamed(three, "broker-b"))).Status.Code);

        var overRemoting = await RecallAsync(c, topic, Renamed(one, "halfmsg-broker"));
        Assert.True(overRemoting.Code == ResponseCode.Success, $"{overRemoting.Code} {overRemoting.Remark}");
        Assert.Equal(Code.Ok, (await RecallTests.RecallAsync(grpc, topic, Renamed(two, "halfmsg-broker"))).Status.Code);

        Assert.Equal(["another broker's", "control"], await PulledOnceControlCameAsync(c, topic));
    }
}
