using System.Collections.Concurrent;
using System.Diagnostics;
using HalfMsg.Broker.Core.Diagnostics;
using HalfMsg.Broker.Core.Model;
using HalfMsg.Broker.Hosting;
using HalfMsg.Client.Tests.Infrastructure;
using HalfMsg.ClientCore.Tracing;
using HalfMsg.ConsumerClient;
using HalfMsg.ProducerClient;
using HalfMsg.TestKit;
using ProducerMessage = HalfMsg.ProducerClient.Message;

namespace HalfMsg.Client.Tests;

/// <summary>The tracing tests attach process-wide <see cref="ActivityListener"/>s: nothing else may run beside them.</summary>
[CollectionDefinition(nameof(TracingCollection), DisableParallelization = true)]
public sealed class TracingCollection;

/// <summary>
/// Spans of a real in-process broker (gRPC on a free 127.0.0.1 port) and of our clients: one trace from the producer's
/// local transaction through the broker to the PushConsumer's handler; a check-back continues the half's trace.
/// </summary>
[Collection(nameof(TracingCollection))]
[Trait("Category", "E2E")]
public sealed class TracingTests : IAsyncLifetime
{
    private readonly string _dataDir = Path.Combine(Path.GetTempPath(), "halfmsg-trace-" + Guid.NewGuid().ToString("N")[..12]);
    private BrokerHost _host = null!;
    private string _endpoint = null!;

    public async Task InitializeAsync()
    {
        int grpc = FreePorts.Next();
        _host = await BrokerHost.StartAsync(["--data-dir", _dataDir, "--bind", "127.0.0.1", "--grpc-port", grpc.ToString(),
            "--http-port", FreePorts.Next().ToString(), "--remoting-port", "0", "--namesrv-port", "0",
            "--transaction-timeout", "500ms", "--transaction-check-interval", "200ms", "--queues-per-topic", "1"]);
        _endpoint = $"127.0.0.1:{grpc}";
    }

    public async Task DisposeAsync()
    {
        await _host.DisposeAsync();
        try { Directory.Delete(_dataDir, true); } catch (IOException) { }
    }

    /// <summary>Collects every stopped span of our three sources.</summary>
    private sealed class SpanCollector : IDisposable
    {
        private readonly ActivityListener _listener;
        public readonly ConcurrentQueue<Activity> Stopped = new();

        public SpanCollector()
        {
            _listener = new ActivityListener
            {
                ShouldListenTo = s => s.Name is BrokerTracing.SourceName or ProducerTracing.SourceName or ConsumerTracing.SourceName,
                Sample = (ref ActivityCreationOptions<ActivityContext> _) => ActivitySamplingResult.AllDataAndRecorded,
                ActivityStopped = a => Stopped.Enqueue(a),
            };
            ActivitySource.AddActivityListener(_listener);
        }

        public List<Activity> Named(string source, string name) =>
            Stopped.Where(a => a.Source.Name == source && a.DisplayName == name).ToList();

        public void Dispose() => _listener.Dispose();
    }

    [Fact]
    public async Task A_transactional_message_is_one_trace_from_the_local_transaction_to_the_push_consumer()
    {
        using var spans = new SpanCollector();
        string topic = E2E.Unique("trace");
        string group = E2E.Unique("g");
        using var db = new SqliteDatabase();
        await using Producer producer = await Producer.StartAsync(ProducerOptions.Default with
        {
            Endpoints = _endpoint, Topics = [topic], BarrierDialect = db.BarrierDialect,
        });
        var handled = new ConcurrentDictionary<string, string?>();
        await using PushConsumer consumer = await PushConsumer.StartAsync(PushConsumerOptions.Default with
        {
            Endpoints = _endpoint,
            ConsumerGroup = group,
            Subscriptions = new Dictionary<string, string> { [topic] = "*" },
            AwaitDuration = TimeSpan.FromSeconds(1),
            Handler = (m, _) =>
            {
                handled[m.MessageId] = Activity.Current?.TraceId.ToHexString() + "|" + m.TraceParent;
                return Task.FromResult(ConsumeResult.Success);
            },
        });

        await using var connection = db.Factory();
        SendReceipt receipt = await producer.ExecuteAsync(connection, new ProducerMessage(topic, "order-1"),
            (tx, _) => E2E.ExecAsync(connection, tx, "CREATE TABLE IF NOT EXISTS orders (id TEXT)"));
        Assert.True(receipt.CommitConfirmed);

        await E2E.EventuallyAsync(() => spans.Named(ConsumerTracing.SourceName, "process " + topic).Count > 0, TimeSpan.FromSeconds(20), "the consumer's process span");

        Activity execute = Assert.Single(spans.Named(ProducerTracing.SourceName, "execute " + topic));
        ActivityTraceId trace = execute.TraceId;
        Activity send = Assert.Single(spans.Named(ProducerTracing.SourceName, "send " + topic));
        Assert.Equal(ActivityKind.Producer, send.Kind);
        Assert.Equal(execute.SpanId, send.ParentSpanId);
        Assert.Equal(receipt.MessageId, send.GetTagItem("messaging.message.id"));
        Assert.Equal("rocketmq", send.GetTagItem("messaging.system"));
        Assert.Equal(topic, send.GetTagItem("messaging.destination.name"));
        Activity end = Assert.Single(spans.Named(ProducerTracing.SourceName, "end_transaction " + topic));
        Assert.Equal(trace, end.TraceId);

        // The broker: the half send is a child of the producer's send span (traceparent property), the decision is in the trace.
        Activity brokerSend = Assert.Single(spans.Named(BrokerTracing.SourceName, "send_half " + topic));
        Assert.Equal(trace, brokerSend.TraceId);
        Assert.Equal(send.SpanId, brokerSend.ParentSpanId);
        Activity brokerEnd = Assert.Single(spans.Stopped, a => a.Source.Name == BrokerTracing.SourceName && a.DisplayName == "end_transaction"
            && (string?)a.GetTagItem("messaging.message.id") == receipt.TransactionId);
        Assert.Equal(trace, brokerEnd.TraceId);
        Assert.Equal(end.SpanId, brokerEnd.ParentSpanId); // EndTransactionRequest.trace_context
        Assert.Equal("commit", brokerEnd.GetTagItem("messaging.rocketmq.transaction.resolution"));

        // The broker's receive links to the message's context.
        Assert.Contains(spans.Named(BrokerTracing.SourceName, "receive " + topic),
            r => r.Links.Any(l => l.Context.TraceId == trace && l.Context.SpanId == send.SpanId));

        // The consumer continues the trace around the handler and exposes the propagated context.
        Activity process = Assert.Single(spans.Named(ConsumerTracing.SourceName, "process " + topic));
        Assert.Equal(ActivityKind.Consumer, process.Kind);
        Assert.Equal(trace, process.TraceId);
        Assert.Equal(send.SpanId, process.ParentSpanId);
        Assert.Equal(group, process.GetTagItem("messaging.rocketmq.client_group"));
        Assert.Equal(trace.ToHexString() + "|" + send.Id, handled[receipt.MessageId]);
    }

    [Fact]
    public async Task A_check_back_for_an_undecided_half_continues_the_halfs_trace()
    {
        using var spans = new SpanCollector();
        string topic = E2E.Unique("trace-check");
        var checker = new FuncChecker(_ => HalfMsg.ProducerClient.TransactionResolution.Commit);
        await using Producer producer = await E2E.ProducerAsync(_endpoint, topic, checker);

        SendReceipt half = await producer.BeginTransaction().SendAsync(new ProducerMessage(topic, "undecided")); // never ended here

        await E2E.EventuallyAsync(() => spans.Named(ProducerTracing.SourceName, "check_transaction " + topic).Count > 0, TimeSpan.FromSeconds(20), "the producer's check span");
        Activity send = Assert.Single(spans.Named(ProducerTracing.SourceName, "send " + topic));
        Activity brokerCheck = Assert.Single(spans.Named(BrokerTracing.SourceName, "check_transaction " + topic));
        Assert.Equal(send.TraceId, brokerCheck.TraceId);
        Assert.Equal(send.SpanId, brokerCheck.ParentSpanId);
        Assert.Equal(half.MessageId, brokerCheck.GetTagItem("messaging.message.id"));
        Assert.Equal(1, brokerCheck.GetTagItem("messaging.rocketmq.transaction.check_number"));
        Activity producerCheck = Assert.Single(spans.Named(ProducerTracing.SourceName, "check_transaction " + topic));
        Assert.Equal(ActivityKind.Consumer, producerCheck.Kind);
        Assert.Equal(send.TraceId, producerCheck.TraceId);

        // The check's Commit decided it: the broker's end_transaction span (source check_back) is there too.
        await E2E.EventuallyAsync(() => spans.Stopped.Any(a => a.Source.Name == BrokerTracing.SourceName && a.DisplayName == "end_transaction"
            && (string?)a.GetTagItem("messaging.message.id") == half.TransactionId), TimeSpan.FromSeconds(10), "the broker's end_transaction span");
    }

    [Fact]
    public async Task Without_a_listener_no_span_is_started_and_no_traceparent_is_written()
    {
        Assert.Null(Activity.Current);
        Assert.False(new ActivitySource(BrokerTracing.SourceName).HasListeners());
        Assert.Null(BrokerTracing.StartSend(new MessageDraft { Topic = "t", MessageId = "m" }));
        Assert.Null(BrokerTracing.StartReceive("t", "g"));

        string topic = E2E.Unique("trace-off");
        await using Producer producer = await E2E.ProducerAsync(_endpoint, topic);
        await using SimpleConsumer consumer = await E2E.ConsumerAsync(_endpoint, topic, E2E.Unique("g"));
        SendReceipt plain = await producer.SendAsync(new ProducerMessage(topic, "plain"));
        var own = new ProducerMessage(topic, "own") { Properties = new Dictionary<string, string> { [TraceContextProperties.TraceParent] = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01" } };
        SendReceipt withOwn = await producer.SendAsync(own);

        List<ReceivedMessage> got = await E2E.DrainAsync(consumer, 2, TimeSpan.FromSeconds(20));
        Assert.Null(Assert.Single(got, m => m.MessageId == plain.MessageId).TraceParent);
        ReceivedMessage ownReceived = Assert.Single(got, m => m.MessageId == withOwn.MessageId);
        Assert.Equal("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01", ownReceived.TraceParent);
        Assert.Equal("0af7651916cd43dd8448eb211c80319c", ownReceived.TraceContext.TraceId.ToHexString());
        Assert.Null(ConsumerTracing.StartProcess(ownReceived, "g"));
    }
}
