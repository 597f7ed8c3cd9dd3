using System.Diagnostics;

namespace HalfMsg.ClientCore.Tracing;

/// <summary>
/// W3C trace context carried in a message's user properties (<c>traceparent</c>, <c>tracestate</c>), as the
/// OpenTelemetry instrumentation of RocketMQ 5 clients does: the producer writes it, the broker and the consumers
/// continue the trace from it.
/// </summary>
public static class TraceContextProperties
{
    /// <summary>The property holding the W3C <c>traceparent</c> header value.</summary>
    public const string TraceParent = "traceparent";

    /// <summary>The property holding the W3C <c>tracestate</c> header value.</summary>
    public const string TraceState = "tracestate";

    /// <summary>The <c>messaging.system</c> attribute value of every client span.</summary>
    internal const string MessagingSystem = "rocketmq";

    /// <summary>Parses the trace context in <paramref name="properties"/>; false when absent or malformed.</summary>
    public static bool TryExtract(IReadOnlyDictionary<string, string> properties, out ActivityContext context)
    {
        ArgumentNullException.ThrowIfNull(properties);
        context = default;
        if (!properties.TryGetValue(TraceParent, out string? tp) || string.IsNullOrEmpty(tp))
        {
            return false;
        }

        properties.TryGetValue(TraceState, out string? ts);
        return ActivityContext.TryParse(tp, ts, isRemote: true, out context);
    }

    /// <summary>Writes <paramref name="activity"/>'s context into <paramref name="target"/> unless
    /// <paramref name="userProperties"/> already carries a <c>traceparent</c> (the user's own wins).</summary>
    internal static void Inject(Activity? activity, IReadOnlyDictionary<string, string> userProperties, IDictionary<string, string> target)
    {
        if (activity is null || userProperties.ContainsKey(TraceParent) || activity.IdFormat != ActivityIdFormat.W3C)
        {
            return;
        }

        target[TraceParent] = activity.Id!;
        if (!string.IsNullOrEmpty(activity.TraceStateString))
        {
            target[TraceState] = activity.TraceStateString;
        }
    }
}
