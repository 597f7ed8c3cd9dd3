namespace HalfMsg.Protocol.Grpc;

/// <summary>gRPC metadata (HTTP/2 headers) that RocketMQ 5 clients attach to every call.</summary>
public static class RocketMqHeaders
{
    /// <summary>Protocol version; clients send <see cref="ProtocolValue"/>.</summary>
    public const string Protocol = "x-mq-protocol";

    /// <summary>Value of <see cref="Protocol"/>.</summary>
    public const string ProtocolValue = "v2";

    /// <summary>Client instance id; required (missing → <c>Code.CLIENT_ID_REQUIRED</c>). Also keys the Telemetry session.</summary>
    public const string ClientId = "x-mq-client-id";

    /// <summary>Request time in <see cref="MqSignature.DateTimeFormat"/>; the signed data.</summary>
    public const string DateTime = "x-mq-date-time";

    /// <summary>Per-request id (UUID) for tracing.</summary>
    public const string RequestId = "x-mq-request-id";

    /// <summary>SDK language, e.g. <c>JAVA</c>, <c>NODE_JS</c>, <c>DOT_NET</c>.</summary>
    public const string Language = "x-mq-language";

    /// <summary>SDK version.</summary>
    public const string ClientVersion = "x-mq-client-version";

    /// <summary>Resource namespace configured on the client.</summary>
    public const string Namespace = "x-mq-namespace";

    /// <summary>Credentials in <see cref="MqSignature"/> format, present when the client has an access key.</summary>
    public const string Authorization = "authorization";

    /// <summary>Optional STS session token.</summary>
    public const string SessionToken = "x-mq-session-token";

    /// <summary>Our own header, sent only by the HalfMsgBroker .NET clients: <see cref="DigestCrc32"/> asks a HalfMsgBroker
    /// for the body digest of received messages as a CRC32 (a twentieth of an MD5's cost on both sides), which these clients
    /// verify in decimal or hex. Without it the broker sends MD5, the one form every official client verifies.</summary>
    public const string AcceptDigest = "x-halfmsg-accept-digest";

    /// <summary>Value of <see cref="AcceptDigest"/>.</summary>
    public const string DigestCrc32 = "crc32";
}
