using System.Globalization;
using HalfMsg.Protocol.Remoting;

namespace HalfMsg.Broker.FrontEnds;

/// <summary>
/// A half's CHECK_IMMUNITY_TIME_IN_SECONDS property, the time before its first check-back that a producer asks for, as
/// both front ends read it: a RocketMQ 4 client sets it among the message's properties, and a RocketMQ 5 client, which
/// has no API for the gRPC <c>orphaned_transaction_recovery_duration</c>, among its user properties (the Apache proxy
/// stores them and its broker reads the property for every half). One reading for both, so a half is checked at the
/// same time whichever protocol sent it; until 2026-12-06 gRPC ignored the property (found by review). The core caps
/// what is read here (<c>CoreOptions.MaxCheckImmunity</c>, 1 h by default).
/// </summary>
internal static class CheckImmunityProperty
{
    /// <summary>A whole number of seconds above zero; null (the transaction timeout applies) for anything else.</summary>
    public static TimeSpan? Parse(string? seconds)
        => int.TryParse(seconds, NumberStyles.Integer, CultureInfo.InvariantCulture, out int secs) && secs > 0 ? TimeSpan.FromSeconds(secs) : null;

    /// <summary>The property's value among <paramref name="properties"/>, parsed as <see cref="Parse"/> does.</summary>
    public static TimeSpan? Of(IReadOnlyDictionary<string, string> properties)
        => Parse(properties.TryGetValue(MessageConst.CheckImmunityTimeInSeconds, out string? value) ? value : null);
}
