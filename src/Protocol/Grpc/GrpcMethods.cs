namespace HalfMsg.Protocol.Grpc;

/// <summary>
/// HTTP/2 <c>:path</c> values of the <c>apache.rocketmq.v2.MessagingService</c> RPCs
/// (gRPC path format: <c>/{package}.{Service}/{Method}</c>).
/// </summary>
public static class GrpcMethods
{
    /// <summary>Fully-qualified service name.</summary>
    public const string ServiceName = "apache.rocketmq.v2.MessagingService";

    private const string Prefix = "/" + ServiceName + "/";

    /// <summary>Unary: topic route lookup.</summary>
    public const string QueryRoute = Prefix + "QueryRoute";
    /// <summary>Unary: client keep-alive.</summary>
    public const string Heartbeat = Prefix + "Heartbeat";
    /// <summary>Unary: publish (normal, FIFO, delay, transactional half) messages.</summary>
    public const string SendMessage = Prefix + "SendMessage";
    /// <summary>Unary: consumer queue assignment.</summary>
    public const string QueryAssignment = Prefix + "QueryAssignment";
    /// <summary>Server streaming: POP-style receive.</summary>
    public const string ReceiveMessage = Prefix + "ReceiveMessage";
    /// <summary>Unary: acknowledge received messages.</summary>
    public const string AckMessage = Prefix + "AckMessage";
    /// <summary>Unary: move a message to the dead letter queue.</summary>
    public const string ForwardMessageToDeadLetterQueue = Prefix + "ForwardMessageToDeadLetterQueue";
    /// <summary>Server streaming: offset-based pull.</summary>
    public const string PullMessage = Prefix + "PullMessage";
    /// <summary>Unary: commit a consumer offset.</summary>
    public const string UpdateOffset = Prefix + "UpdateOffset";
    /// <summary>Unary: read a committed consumer offset.</summary>
    public const string GetOffset = Prefix + "GetOffset";
    /// <summary>Unary: resolve an offset by policy/timestamp.</summary>
    public const string QueryOffset = Prefix + "QueryOffset";
    /// <summary>Unary: commit or roll back a half message.</summary>
    public const string EndTransaction = Prefix + "EndTransaction";
    /// <summary>Bidirectional streaming: settings and server-initiated commands (e.g. transaction checks).</summary>
    public const string Telemetry = Prefix + "Telemetry";
    /// <summary>Unary: client shutdown notification.</summary>
    public const string NotifyClientTermination = Prefix + "NotifyClientTermination";
    /// <summary>Unary: extend/shorten a received message's invisibility.</summary>
    public const string ChangeInvisibleDuration = Prefix + "ChangeInvisibleDuration";
    /// <summary>Unary: recall a not-yet-delivered delay message.</summary>
    public const string RecallMessage = Prefix + "RecallMessage";
    /// <summary>Unary: lite push consumer subscription sync.</summary>
    public const string SyncLiteSubscription = Prefix + "SyncLiteSubscription";

    /// <summary>All method paths, in service declaration order.</summary>
    public static IReadOnlyList<string> All { get; } =
    [
        QueryRoute, Heartbeat, SendMessage, QueryAssignment, ReceiveMessage, AckMessage,
        ForwardMessageToDeadLetterQueue, PullMessage, UpdateOffset, GetOffset, QueryOffset,
        EndTransaction, Telemetry, NotifyClientTermination, ChangeInvisibleDuration,
        RecallMessage, SyncLiteSubscription,
    ];
}
