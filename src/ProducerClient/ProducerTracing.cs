using System.Diagnostics;
using HalfMsg.ClientCore.Tracing;

namespace HalfMsg.ProducerClient;

/// <summary>
/// The producer's spans: <see cref="ActivitySource"/> <c>HalfMsg.ProducerClient</c> with <c>send {topic}</c> (Producer
/// kind; its context goes into the message's <c>traceparent</c> property), <c>execute {topic}</c> around
/// <see cref="Producer.ExecuteAsync(System.Data.Common.DbConnection, Message, Func{System.Data.Common.DbTransaction, CancellationToken, Task}, CancellationToken)"/>
/// (half send, local transaction, commit), <c>end_transaction {topic}</c> and <c>check_transaction {topic}</c> (a
/// check-back answered, parented to the half's <c>traceparent</c>).
/// </summary>
public static class ProducerTracing
{
    /// <summary>The <see cref="ActivitySource"/> name to subscribe to.</summary>
    public const string SourceName = "HalfMsg.ProducerClient";

    internal static readonly ActivitySource Source = new(SourceName, typeof(ProducerTracing).Assembly.GetName().Version?.ToString());

    internal static Activity? StartSend(Message message, bool transactional, string? group)
    {
        if (!Source.HasListeners())
        {
            return null;
        }

        Activity? a = Source.StartActivity("send " + message.Topic, ActivityKind.Producer);
        if (a is not null)
        {
            Common(a, message.Topic, "publish", group);
            a.SetTag("messaging.rocketmq.message.type", transactional ? "transaction"
                : message.MessageGroup is not null ? "fifo" : message.DeliveryTimestamp is not null ? "delay" : "normal");
            if (message.Tag is { } tag)
            {
                a.SetTag("messaging.rocketmq.message.tag", tag);
            }
        }

        return a;
    }

    internal static Activity? StartInternal(string operation, string topic, string? group, ActivityKind kind = ActivityKind.Internal, ActivityContext parent = default)
    {
        if (!Source.HasListeners())
        {
            return null;
        }

        Activity? a = Source.StartActivity(operation + " " + topic, kind, parent);
        if (a is not null)
        {
            Common(a, topic, operation, group);
        }

        return a;
    }

    internal static void Fail(Activity? a, Exception ex)
    {
        if (a is null)
        {
            return;
        }

        a.SetStatus(ActivityStatusCode.Error, ex.Message);
        a.SetTag("error.type", ex.GetType().FullName);
    }

    private static void Common(Activity a, string topic, string operation, string? group)
    {
        a.SetTag("messaging.system", TraceContextProperties.MessagingSystem);
        a.SetTag("messaging.operation.name", operation);
        a.SetTag("messaging.destination.name", topic);
        if (!string.IsNullOrEmpty(group))
        {
            a.SetTag("messaging.rocketmq.client_group", group);
        }
    }
}
