using Apache.Rocketmq.V2;

namespace HalfMsg.Protocol.Grpc;

/// <summary>
/// How a HalfMsgBroker says what it is: the <c>user_agent</c> of its Settings reply on Telemetry (the official clients
/// read only the backoff, metric and publishing/subscription parts of that reply, and the Apache proxy echoes the
/// client's own). Our clients use features of ours, such as several halves in one SendMessage, only when they see it.
/// </summary>
public static class BrokerAgent
{
    /// <summary>The platform a HalfMsgBroker reports.</summary>
    public const string Platform = "HalfMsgBroker";

    /// <summary>The user agent a HalfMsgBroker puts in its Settings replies.</summary>
    public static UA Create(string version) => new()
    {
        Language = Language.DotNet,
        Version = version,
        Platform = Platform,
        Hostname = Environment.MachineName,
    };

    /// <summary>True when a Settings reply came from a HalfMsgBroker.</summary>
    public static bool IsHalfMsgBroker(Settings? settings) => settings?.UserAgent?.Platform == Platform;
}
