using System.Collections.Concurrent;
using System.Diagnostics;
using HalfMsg.Broker.Core.Diagnostics;
using HalfMsg.Broker.Tests.Infrastructure;
using HalfMsg.Protocol.Remoting;
using static HalfMsg.Broker.Tests.Infrastructure.RemotingBroker;

namespace HalfMsg.Broker.Tests.Remoting;

/// <summary>
/// Trace context over RocketMQ 4 Remoting (as <c>TracingTests</c> checks it for gRPC): SEND continues the
/// <c>traceparent</c> in the message properties; END_TRANSACTION continues the half's trace, or a <c>traceparent</c>
/// ext field when the client sends one. Spans are picked out by message id: other tests run beside these.
/// </summary>
[Collection("remoting")]
public sealed class RemotingTracingTests(RemotingBrokerFixture broker) : IDisposable
{
    private readonly ConcurrentQueue<Activity> _spans = new();
    private readonly ActivityListener _listener = new()
    {
        ShouldListenTo = s => s.Name == BrokerTracing.SourceName,
        Sample = (ref ActivityCreationOptions<ActivityContext> _) => ActivitySamplingResult.AllDataAndRecorded,
    };

    private void Listen()
    {
        _listener.ActivityStopped = a => _spans.Enqueue(a);
        ActivitySource.AddActivityListener(_listener);
    }

    public void Dispose() => _listener.Dispose();

    private Activity Span(string name, string messageId) =>
        _spans.Single(a => a.DisplayName == name && (string?)a.GetTagItem("messaging.message.id") == messageId);

    private static (ActivityTraceId Trace, ActivitySpanId Span, string TraceParent) NewContext()
    {
        var trace = ActivityTraceId.CreateRandom();
        var span = ActivitySpanId.CreateRandom();
        return (trace, span, $"00-{trace}-{span}-01");
    }

    [Fact]
    public async Task A_remoting_transaction_is_one_trace_from_the_half_send_to_the_end_transaction()
    {
        Listen();
        string topic = Unique("TraceTx");
        await using var c = await broker.ConnectAsync();
        var p = new RemotingTransactionProducer(c, Unique("PG"));
        await p.HeartbeatAsync();
        var producer = NewContext();
        var (uniq, sent) = await p.SendHalfAsync(topic, "traced", null, (BrokerTracing.TraceParentProperty, producer.TraceParent));
        Assert.Equal(ResponseCode.Success, sent.Code);
        var commit = await p.EndAsync(uniq, sent.Get("queueOffset")!, sent.Get("msgId")!, MessageSysFlag.TransactionCommitType, fromCheck: false, oneway: false);
        Assert.Equal(ResponseCode.Success, commit!.Code);

        var half = Span("send_half " + topic, uniq);
        Assert.Equal(producer.Trace, half.TraceId);
        Assert.Equal(producer.Span, half.ParentSpanId);
        // END_TRANSACTION has no trace field in RocketMQ 4: the decision continues the half's stored context.
        var end = Span("end_transaction", uniq);
        Assert.Equal(producer.Trace, end.TraceId);
        Assert.Equal("commit", end.GetTagItem("messaging.rocketmq.transaction.resolution"));

        // A normal SEND with a traceparent property is a child of it too.
        string plainId = Guid.NewGuid().ToString("N").ToUpperInvariant();
        var sender = NewContext();
        await SendAsync(c, topic, "plain", uniq: plainId, more: (BrokerTracing.TraceParentProperty, sender.TraceParent));
        var send = Span("send " + topic, plainId);
        Assert.Equal(sender.Trace, send.TraceId);
        Assert.Equal(sender.Span, send.ParentSpanId);
    }

    /// <summary>Review of batch sends (2026-12-06), F3: SEND_BATCH_MESSAGE started no broker span, so a Java producer's
    /// send(List) left each message's traceparent unanswered at the broker, unlike the same messages sent one at a time.</summary>
    [Fact]
    public async Task A_remoting_batch_continues_each_messages_traceparent_in_its_own_send_span()
    {
        Listen();
        string topic = Unique("TraceBatch");
        await using var c = await broker.ConnectAsync();
        var contexts = Enumerable.Range(0, 3).Select(_ => NewContext()).ToList();
        var ids = Enumerable.Range(0, 4).Select(_ => Guid.NewGuid().ToString("N").ToUpperInvariant()).ToList();
        // Three entries with a traceparent each, a fourth with none.
        var entries = ids.Select((id, i) => new BatchMessageCodec.Entry(0, System.Text.Encoding.UTF8.GetBytes($"b{i}"),
            i < 3 ? Props("B", null, id, (BrokerTracing.TraceParentProperty, contexts[i].TraceParent)) : Props("B", null, id)));
        var r = await c.InvokeAsync(RequestCode.SendBatchMessage, SendHeader("PG", topic, "", 0, -1), BatchMessageCodec.Encode(entries));
        Assert.True(r.Code == ResponseCode.Success, $"{r.Code} {r.Remark}");

        var spans = ids.Select(id => Span("send " + topic, id)).ToList();
        for (int i = 0; i < 3; i++)
        {
            Assert.Equal(contexts[i].Trace, spans[i].TraceId);
            Assert.Equal(contexts[i].Span, spans[i].ParentSpanId);
            Assert.Equal(ActivityKind.Server, spans[i].Kind);
        }
        // Siblings, not nested: the untraced entry's span is no child of the batch's other spans.
        Assert.DoesNotContain(spans[3].ParentSpanId, spans.Take(3).Select(s => s.SpanId));
    }

    [Fact]
    public async Task A_traceparent_ext_field_on_END_TRANSACTION_is_the_decision_spans_parent()
    {
        Listen();
        string topic = Unique("TraceExt");
        await using var c = await broker.ConnectAsync();
        string group = Unique("PG");
        var p = new RemotingTransactionProducer(c, group);
        await p.HeartbeatAsync();
        var (uniq, sent) = await p.SendHalfAsync(topic, "untraced");
        Assert.True(OffsetMessageId.TryDecode(sent.Get("msgId")!, out _, out long commitLogOffset));
        var decision = NewContext();
        var cmd = RemotingCommand.Request(RequestCode.EndTransaction)
            .Set("producerGroup", group)
            .Set("tranStateTableOffset", sent.Get("queueOffset")!)
            .Set("commitLogOffset", commitLogOffset)
            .Set("commitOrRollback", MessageSysFlag.TransactionRollbackType)
            .Set("fromTransactionCheck", false)
            .Set("msgId", uniq)
            .Set("transactionId", uniq)
            .Set(BrokerTracing.TraceParentProperty, decision.TraceParent);
        var r = await c.InvokeAsync(cmd);
        Assert.Equal(ResponseCode.Success, r.Code);
        var end = Span("end_transaction", uniq);
        Assert.Equal(decision.Trace, end.TraceId);
        Assert.Equal(decision.Span, end.ParentSpanId);
    }
}

/// <summary>Remoting consumers as group members on the admin API: listed after HEART_BEAT, gone when they leave.</summary>
[Collection("remoting")]
public sealed class RemotingMembersTests(RemotingBrokerFixture broker)
{
    [Fact]
    public async Task A_remoting_consumer_is_a_group_member_until_its_connection_closes()
    {
        string group = Unique("CG");
        using var http = new HttpClient { BaseAddress = new Uri($"http://127.0.0.1:{broker.HttpPort}") };
        string clientId;
        await using (var c = await broker.ConnectAsync())
        {
            clientId = "remoting-member@" + Guid.NewGuid().ToString("N")[..8];
            var body = System.Text.Json.JsonSerializer.SerializeToUtf8Bytes(new
            {
                clientID = clientId,
                producerDataSet = Array.Empty<object>(),
                consumerDataSet = new[] { new { groupName = group, messageModel = "CLUSTERING", subscriptionDataSet = new[] { new { topic = Unique("T"), subString = "*" } } } },
            });
            Assert.Equal(ResponseCode.Success, (await c.InvokeAsync(RequestCode.HeartBeat, body: body)).Code);
            var answer = await System.Net.Http.Json.HttpClientJsonExtensions.GetFromJsonAsync<System.Text.Json.JsonElement>(http, $"/api/groups/{Uri.EscapeDataString(group)}");
            var member = Assert.Single(answer.GetProperty("members").EnumerateArray());
            Assert.Equal(clientId, member.GetProperty("clientId").GetString());
            Assert.Equal("Remoting", member.GetProperty("protocol").GetString());
        }
        // The connection closed: the member leaves (the broker notices the close asynchronously).
        var deadline = DateTime.UtcNow.AddSeconds(60);
        while ((await http.GetAsync($"/api/groups/{Uri.EscapeDataString(group)}")).StatusCode != System.Net.HttpStatusCode.NotFound)
        {
            Assert.True(DateTime.UtcNow < deadline, "the member was not removed after its connection closed");
            await Task.Delay(50);
        }
    }
}
