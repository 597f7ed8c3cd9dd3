namespace HalfMsg.Broker.FrontEnds;

/// <summary>
/// The broker's one name (<c>--broker-name</c>, RocketMQ's brokerName): both front-ends put it in routes (gRPC
/// QueryRoute and QueryAssignment, Remoting GET_ROUTEINFO_BY_TOPIC and cluster info), Remoting in consume stats, queue
/// locks and END_TRANSACTION's answer, and every recall handle names it, whichever protocol issued it. Until 2026-12-06
/// the gRPC front-end named the broker <see cref="Legacy"/> while the Remoting one named it <c>broker-a</c>, and a
/// Remoting client got recall handles naming a broker its routes never mentioned: Java's recallMessage looks the
/// handle's broker up in its routes and only then falls back to the topic's (found by review).
/// </summary>
public static class BrokerNames
{
    /// <summary>Apache's sample configuration's name, and what the Remoting routes always said: Remoting clients (their
    /// queue identities, broadcast consumers' local offsets, mqadmin's <c>-b</c>) see no change. gRPC clients refresh
    /// their routes every 30 s and take the new name then.</summary>
    public const string Default = "broker-a";

    /// <summary>The name gRPC routes and every recall handle carried before there was one name. Handles naming it are still
    /// accepted, so an upgrade does not refuse the handles a running broker issued before it.</summary>
    public const string Legacy = "halfmsg-broker";

    /// <summary>Longest name accepted (a topic's longest, 127).</summary>
    public const int MaxLength = 127;

    /// <summary>Letters, digits, <c>-</c>, <c>_</c> and <c>.</c>: a recall handle separates its fields with spaces, and
    /// the name goes unescaped into JSON keys and mqadmin's output.</summary>
    public static bool IsValid(string name)
        => name.Length is > 0 and <= MaxLength && name.All(c => char.IsAsciiLetterOrDigit(c) || c is '-' or '_' or '.');
}
