using Apache.Rocketmq.V2;
using Grpc.Core;
using HalfMsg.Broker.Core;
using HalfMsg.Protocol.Grpc;
using Status = Apache.Rocketmq.V2.Status;

namespace HalfMsg.Broker.FrontEnds.GrpcV5;

/// <summary>
/// <c>x-mq-namespace</c>: a client configured with a namespace sends it on every call, and its topics and consumer
/// groups live in the broker as <c>&lt;namespace&gt;%&lt;name&gt;</c>, which is how RocketMQ names them inside the
/// broker, and what a RocketMQ 4 client configured with that namespace sends over Remoting (it wraps the names itself).
/// So two namespaces may use the same topic and group names without meeting, and one namespace over gRPC and over
/// Remoting meets the same topics. Names going back to the client (routes, assignments, delivered and checked-back
/// messages) lose the prefix again and carry the namespace in <c>resource_namespace</c>.
/// </summary>
/// <remarks>
/// The header decides, not a request's <c>resource_namespace</c>: the Node client sets that field only in some places
/// (reference, "Namespace caveat") but sends the header on every call. Retry and dead-letter names keep their prefix in
/// front (<c>%DLQ%ns%group</c>), as RocketMQ's do. Without the header nothing changes: names are used as sent.
/// </remarks>
internal static class V5Namespace
{
    /// <summary>
    /// Longest namespace accepted: with the separator it leaves one character of a 127-character topic name. Apache's
    /// proxy and clients set no limit of the namespace's own; the name it wraps must be a valid topic or group
    /// (TopicValidator, 127 characters for a topic), which our engine checks too, so a longer namespace could name no
    /// topic at all. Until 2026-12-06 it was 64 characters, stricter than Apache: a client with a longer namespace,
    /// whose names fit, was refused over gRPC and served over Remoting.
    /// </summary>
    public const int MaxLength = 127 - 2;

    private static readonly string[] Prefixes = [BrokerEngine.RetryPrefix, BrokerEngine.DeadLetterPrefix];

    /// <summary>The call's namespace ("" when it has none).</summary>
    public static string Of(ServerCallContext context)
        => context.GetHttpContext().Request.Headers[RocketMqHeaders.Namespace].FirstOrDefault() ?? string.Empty;

    /// <summary>Null when <paramref name="ns"/> is absent or valid; otherwise the BAD_REQUEST to answer with.</summary>
    public static Status? Check(string ns)
    {
        if (ns.Length == 0) return null;
        if (ns.Length > MaxLength || !ns.All(IsAllowed))
            return V5Status.Of(Code.BadRequest,
                $"x-mq-namespace '{Printable(ns)}' is not a valid namespace (1-{MaxLength} characters of [A-Za-z0-9_|-])");
        return null;
    }

    /// <summary>The broker's name of <paramref name="name"/> as the client in <paramref name="ns"/> means it.</summary>
    public static string Wrap(string ns, string name)
    {
        if (ns.Length == 0 || name.Length == 0) return name;
        string prefix = PrefixOf(name);
        string rest = name[prefix.Length..];
        // Already wrapped (a client that wraps by itself, as RocketMQ 4's do): leave it, as RocketMQ does.
        if (IsIn(ns, rest)) return name;
        return string.Concat(prefix, ns, "%", rest);
    }

    /// <summary>A resource named by the broker's <paramref name="stored"/> name, as a client in <paramref name="ns"/> sees it.</summary>
    public static Resource Resource(string ns, string stored)
    {
        (bool inNamespace, string name) = Unwrap(ns, stored);
        return new Resource { Name = name, ResourceNamespace = inNamespace ? ns : string.Empty };
    }

    /// <summary>The broker's <paramref name="stored"/> name without <paramref name="ns"/>'s prefix, when it has it.</summary>
    public static string Name(string ns, string stored) => Unwrap(ns, stored).Name;

    private static (bool InNamespace, string Name) Unwrap(string ns, string stored)
    {
        if (ns.Length == 0) return (false, stored);
        string prefix = PrefixOf(stored);
        string rest = stored[prefix.Length..];
        if (IsIn(ns, rest)) return (true, string.Concat(prefix, rest.AsSpan(ns.Length + 1)));
        return (false, stored);
    }

    /// <summary><paramref name="name"/> (without a retry or dead-letter prefix) begins with <c>ns%</c>.</summary>
    private static bool IsIn(string ns, string name)
        => name.Length > ns.Length && name.StartsWith(ns, StringComparison.Ordinal) && name[ns.Length] == '%';

    private static string PrefixOf(string name)
    {
        foreach (string prefix in Prefixes)
        {
            if (name.StartsWith(prefix, StringComparison.Ordinal)) return prefix;
        }

        return string.Empty;
    }

    /// <summary>
    /// RocketMQ's name characters (<c>[%|a-zA-Z0-9_-]</c>) without '%', which ends the namespace in a wrapped name
    /// (<see cref="IsIn"/>), and without '.', which RocketMQ names do not have. '|' is allowed: Aliyun-style instance
    /// namespaces (<c>MQ_INST_1|tenant</c>) have it, and a RocketMQ 4 client with one is served over Remoting and by the
    /// Apache proxy; until 2026-12-06 it was BAD_REQUEST over gRPC (found by review). A '|' cannot make two names meet:
    /// the namespace still ends at the first '%', and a re-drive cursor (<c>%REDRIVE%&lt;group&gt;|&lt;topic&gt;</c>),
    /// whose name another group's may equal, only reads its own group's dead-letter topic.
    /// </summary>
    private static bool IsAllowed(char c) => c is (>= 'a' and <= 'z') or (>= 'A' and <= 'Z') or (>= '0' and <= '9') or '_' or '-' or '|';

    private static string Printable(string ns) => ns.Length <= MaxLength + 16 ? ns : ns[..(MaxLength + 16)] + "…";
}
