using System.Diagnostics;
using HalfMsg.ClientCore.Tracing;

namespace HalfMsg.ConsumerClient;

/// <summary>
/// The consumers' spans: <see cref="ActivitySource"/> <c>HalfMsg.ConsumerClient</c> with <c>process {topic}</c>
/// (Consumer kind) around each <see cref="PushConsumer"/> handler call, a child of the message's <c>traceparent</c>
/// property (see <see cref="ReceivedMessage.TraceParent"/>), so one trace runs from the producer to the handler.
/// </summary>
public static class ConsumerTracing
{
    /// <summary>The <see cref="ActivitySource"/> name to subscribe to.</summary>
    public const string SourceName = "HalfMsg.ConsumerClient";

    internal static readonly ActivitySource Source = new(SourceName, typeof(ConsumerTracing).Assembly.GetName().Version?.ToString());

    /// <summary>Starts a Consumer span for <paramref name="message"/>, parented to the context it carries (null when
    /// nobody listens). SimpleConsumer users may call it around their own processing.</summary>
    public static Activity? StartProcess(ReceivedMessage message, string consumerGroup)
    {
        ArgumentNullException.ThrowIfNull(message);
        if (!Source.HasListeners())
        {
            return null;
        }

        TraceContextProperties.TryExtract(message.Properties, out ActivityContext parent);
        Activity? a = Source.StartActivity("process " + message.Topic, ActivityKind.Consumer, parent);
        if (a is not null)
        {
            a.SetTag("messaging.system", "rocketmq");
            a.SetTag("messaging.operation.name", "process");
            a.SetTag("messaging.destination.name", message.Topic);
            a.SetTag("messaging.message.id", message.MessageId);
            a.SetTag("messaging.rocketmq.client_group", consumerGroup);
            a.SetTag("messaging.rocketmq.message.delivery_attempt", message.DeliveryAttempt);
        }

        return a;
    }
}
