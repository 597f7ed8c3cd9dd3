using Apache.Rocketmq.V2;
using Grpc.Core;
using Status = Apache.Rocketmq.V2.Status;

namespace HalfMsg.Broker.FrontEnds.GrpcV5;

internal sealed partial class MessagingService
{
    /// <summary>
    /// What a lite consumer is told: this broker has no lite topics (LITE and PRIORITY sends are refused too,
    /// <see cref="V5MessageChecks.TypeRefusal"/>). UNSUPPORTED, which the Java and C# clients raise as their
    /// UnsupportedException with this text.
    /// </summary>
    internal const string LiteUnsupportedMessage =
        "lite topics are not supported by this broker: a LitePushConsumer gets no assignment and no message; " +
        "consume its bind topic with a PushConsumer or SimpleConsumer";

    /// <summary>
    /// SyncLiteSubscription, which the official Java and C# LitePushConsumers call at start and every 30 s: UNSUPPORTED
    /// in the body, as every business error is answered. Until the evening session of 2026-12-07 it answered grpc-status
    /// UNIMPLEMENTED with no detail, which the C# client logs as a bare RpcException every 30 s (found by running the
    /// official C# client 5.2.1).
    /// </summary>
    public override Task<SyncLiteSubscriptionResponse> SyncLiteSubscription(SyncLiteSubscriptionRequest request, ServerCallContext context)
        => Task.FromResult(new SyncLiteSubscriptionResponse { Status = V5Status.Of(Code.Unsupported, LiteUnsupportedMessage) });

    /// <summary>
    /// UNSUPPORTED for a call from a client whose Telemetry Settings said LITE_PUSH_CONSUMER or LITE_SIMPLE_CONSUMER, null
    /// otherwise (a lite simple consumer, as the official Python client has, would take normal messages the same way). The official
    /// C# LitePushConsumer subscribes its bind topic with "*" as a push consumer does, and this broker's topics are all
    /// normal ones: it was assigned the bind topic and took and acknowledged every normal message of it, handing them to
    /// a listener written for lite topics, until the evening session of 2026-12-07 (found by running the official C#
    /// client 5.2.1). QueryAssignment and ReceiveMessage refuse it now, so it consumes nothing.
    /// </summary>
    private Status? LiteRefusal(ServerCallContext context)
        => _sessions.Find(ClientId(context)) is { ClientType: ClientType.LitePushConsumer or ClientType.LiteSimpleConsumer }
            ? V5Status.Of(Code.Unsupported, LiteUnsupportedMessage)
            : null;
}
