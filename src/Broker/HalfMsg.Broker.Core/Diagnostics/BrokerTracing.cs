using System.Diagnostics;
using HalfMsg.Broker.Core.Model;

namespace HalfMsg.Broker.Core.Diagnostics;

/// <summary>
/// The broker's spans (issue 12): one <see cref="ActivitySource"/> named <c>HalfMsg.Broker</c>; span names <c>send {topic}</c>,
/// <c>send_half {topic}</c>, <c>end_transaction</c>, <c>check_transaction {topic}</c>, <c>receive {topic}</c>, <c>pull {topic}</c>. W3C trace context travels
/// in the message properties <c>traceparent</c> / <c>tracestate</c> (what the producer wrote); the send span is its child,
/// a check-back span is a child of the half's context, a receive span links to each delivered message's context.
/// Every entry point returns null at once when nobody listens, so the hooks cost a branch.
/// </summary>
public static class BrokerTracing
{
    public const string SourceName = "HalfMsg.Broker";
    public const string TraceParentProperty = "traceparent";
    public const string TraceStateProperty = "tracestate";

    public static readonly ActivitySource Source = new(SourceName, typeof(BrokerTracing).Assembly.GetName().Version?.ToString());

    /// <summary>The context the producer wrote into the properties, if any and well-formed.</summary>
    public static bool TryGetContext(IReadOnlyDictionary<string, string> properties, out ActivityContext context)
    {
        context = default;
        if (!properties.TryGetValue(TraceParentProperty, out var tp) || string.IsNullOrEmpty(tp)) return false;
        properties.TryGetValue(TraceStateProperty, out var ts);
        return ActivityContext.TryParse(tp, ts, isRemote: true, out context);
    }

    /// <summary>Span around a normal/FIFO/delay send (<paramref name="half"/> false) or a half send.</summary>
    public static Activity? StartSend(MessageDraft msg, bool half = false, string? producerGroup = null)
    {
        if (!Source.HasListeners()) return null;
        TryGetContext(msg.Properties, out var parent);
        var a = Source.StartActivity(half ? "send_half " + msg.Topic : "send " + msg.Topic, ActivityKind.Server, parent);
        if (a is null) return null;
        SetCommon(a, msg.Topic, "publish");
        a.SetTag("messaging.message.id", msg.MessageId);
        if (producerGroup is not null) a.SetTag("messaging.rocketmq.client_group", producerGroup);
        a.SetTag("messaging.rocketmq.message.type", half ? "transaction" : msg.MessageGroup is not null ? "fifo" : msg.DeliveryTimestampMs is not null ? "delay" : "normal");
        return a;
    }

    /// <summary>Records a send's outcome on its span.</summary>
    public static void EndSend(Activity? a, BrokerError error)
    {
        if (a is null) return;
        if (!error.IsOk) a.SetStatus(ActivityStatusCode.Error, error.Status.ToString());
    }

    private static readonly AsyncLocal<ActivityContext> RemoteParent = new();

    /// <summary>
    /// A front end hands the trace context its protocol carried for the call (gRPC <c>EndTransactionRequest.trace_context</c>)
    /// to the engine call that follows in the same async flow; ignored when nobody listens or it does not parse.
    /// </summary>
    public static void SetRemoteParent(string? traceParent)
    {
        if (string.IsNullOrEmpty(traceParent) || !Source.HasListeners()) return;
        if (ActivityContext.TryParse(traceParent, null, isRemote: true, out var ctx)) RemoteParent.Value = ctx;
    }

    /// <summary>Span around a commit/rollback: a child of the context the front end set (<see cref="SetRemoteParent"/>),
    /// else of the current activity (the request's) if any.</summary>
    public static Activity? StartEndTransaction(string transactionId, TransactionResolution resolution, DecisionSource source)
    {
        if (!Source.HasListeners()) return null;
        var a = Source.StartActivity("end_transaction", ActivityKind.Server, RemoteParent.Value);
        if (a is null) return null;
        a.SetTag("messaging.system", "rocketmq");
        a.SetTag("messaging.operation.name", "end_transaction");
        a.SetTag("messaging.message.id", transactionId);
        a.SetTag("messaging.rocketmq.transaction.resolution", resolution.ToString().ToLowerInvariant());
        a.SetTag("messaging.rocketmq.transaction.source", source.ToString().ToLowerInvariant());
        return a;
    }

    /// <summary>Span for one check-back sent to a producer: a child of the half's trace context (the producer's send).</summary>
    public static Activity? StartCheckBack(CheckBackRequest request)
    {
        if (!Source.HasListeners()) return null;
        TryGetContext(request.HalfMessage.Properties, out var parent);
        var a = Source.StartActivity("check_transaction " + request.HalfMessage.Topic, ActivityKind.Client, parent);
        if (a is null) return null;
        SetCommon(a, request.HalfMessage.Topic, "check");
        a.SetTag("messaging.message.id", request.HalfMessage.MessageId);
        a.SetTag("messaging.rocketmq.client_group", request.ProducerGroup);
        a.SetTag("messaging.rocketmq.transaction.check_number", request.CheckNumber);
        return a;
    }

    /// <summary>Span for one receive call of a consumer group.</summary>
    public static Activity? StartReceive(string topic, string consumerGroup, string operation = "receive")
    {
        if (!Source.HasListeners()) return null;
        var a = Source.StartActivity(operation + " " + topic, ActivityKind.Server);
        if (a is null) return null;
        SetCommon(a, topic, operation);
        if (consumerGroup.Length > 0) a.SetTag("messaging.rocketmq.client_group", consumerGroup);
        return a;
    }

    /// <summary>Links a receive span to each delivered message's trace context and records the batch size.</summary>
    public static void EndReceive(Activity? a, BrokerError error, IReadOnlyList<DeliveredMessage> messages)
    {
        if (a is null) return;
        a.SetTag("messaging.batch.message_count", messages.Count);
        foreach (var m in messages)
            if (TryGetContext(m.Message.Properties, out var ctx))
                a.AddLink(new ActivityLink(ctx, new ActivityTagsCollection { ["messaging.message.id"] = m.Message.MessageId }));
        if (!error.IsOk && error.Status != BrokerStatus.MessageNotFound) a.SetStatus(ActivityStatusCode.Error, error.Status.ToString());
    }

    /// <summary>As <see cref="EndReceive(Activity?, BrokerError, IReadOnlyList{DeliveredMessage})"/> for a pull by offset.</summary>
    public static void EndPull(Activity? a, IReadOnlyList<PulledMessage> messages)
    {
        if (a is null) return;
        a.SetTag("messaging.batch.message_count", messages.Count);
        foreach (var m in messages)
            if (TryGetContext(m.Message.Properties, out var ctx))
                a.AddLink(new ActivityLink(ctx, new ActivityTagsCollection { ["messaging.message.id"] = m.Message.MessageId }));
    }

    private static void SetCommon(Activity a, string topic, string operation)
    {
        a.SetTag("messaging.system", "rocketmq");
        a.SetTag("messaging.operation.name", operation);
        a.SetTag("messaging.destination.name", topic);
    }
}
