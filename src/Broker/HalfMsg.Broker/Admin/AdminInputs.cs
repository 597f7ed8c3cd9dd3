using System.Globalization;
using HalfMsg.Broker.Core;

namespace HalfMsg.Broker.Admin;

/// <summary>
/// The admin API's query-string parsers, kept apart from the endpoints so they can be fuzzed (issue 13). None throws:
/// a value that does not parse makes the endpoint answer 400.
/// </summary>
public static class AdminInputs
{
    /// <summary><c>from</c> of POST /api/groups/{group}/start: earliest (or empty), latest, Unix milliseconds or an ISO-8601 time.</summary>
    public static bool TryParseStartFrom(string? from, out GroupStartFrom mode, out long atMs)
    {
        atMs = 0;
        switch (from?.ToLowerInvariant())
        {
            case null or "" or "earliest": mode = GroupStartFrom.Earliest; return true;
            case "latest": mode = GroupStartFrom.Latest; return true;
        }
        mode = GroupStartFrom.Timestamp;
        if (long.TryParse(from, NumberStyles.Integer, CultureInfo.InvariantCulture, out long ms)) { atMs = ms; return true; }
        if (TryParseTime(from, out atMs)) return true;
        return false;
    }

    /// <summary><c>mode</c> of POST /api/groups/{group}/order: orderly, concurrent or default (case-insensitive); no
    /// empty default, since a missing mode is more likely a mistake than a wish to clear the group's.</summary>
    public static bool TryParseOrder(string? mode, out GroupOrder order)
    {
        switch (mode?.ToLowerInvariant())
        {
            case "orderly": order = GroupOrder.Orderly; return true;
            case "concurrent": order = GroupOrder.Concurrent; return true;
            case "default": order = GroupOrder.NotConfigured; return true;
        }
        order = GroupOrder.NotConfigured;
        return false;
    }

    /// <summary>The admin API's name of an order mode (what <see cref="TryParseOrder"/> reads).</summary>
    public static string OrderName(GroupOrder order) => order switch
    {
        GroupOrder.Orderly => "orderly",
        GroupOrder.Concurrent => "concurrent",
        _ => "default",
    };

    /// <summary>The name of a <c>--default-group-order</c> value (what the setting reads).</summary>
    public static string DefaultOrderName(DefaultGroupOrder order) => order == DefaultGroupOrder.Concurrent ? "concurrent" : "message-group";

    /// <summary>How a group with this configured mode is served, by name: the mode itself when one is configured, else
    /// the broker's <c>--default-group-order</c> (GET /api/groups/{group}'s <c>effectiveOrder</c>).</summary>
    public static string EffectiveOrderName(GroupOrder order, DefaultGroupOrder defaultOrder)
        => order == GroupOrder.NotConfigured ? DefaultOrderName(defaultOrder) : OrderName(order);

    /// <summary>The order mode as the dashboard (and, from the API's fields, <c>halfmsg group lag</c>) shows it: orderly,
    /// concurrent, or for a group not configured "default (message-group)" / "default (concurrent)", the broker's
    /// <c>--default-group-order</c> in brackets.</summary>
    public static string OrderShown(GroupOrder order, DefaultGroupOrder defaultOrder)
        => order == GroupOrder.NotConfigured ? $"default ({DefaultOrderName(defaultOrder)})" : OrderName(order);

    /// <summary><c>to</c> of POST /api/groups/{group}/reset-offset: null for earliest/latest (or empty), else a time in Unix ms.</summary>
    public static bool TryParseResetTo(string? to, out long? atMs)
    {
        atMs = null;
        switch (to)
        {
            case null or "" or "earliest" or "latest": return true;
        }
        if (long.TryParse(to, NumberStyles.Integer, CultureInfo.InvariantCulture, out long ms) && ms >= 0) { atMs = ms; return true; }
        if (TryParseTime(to, out long t)) { atMs = t; return true; }
        return false;
    }

    private static bool TryParseTime(string? text, out long unixMs)
    {
        unixMs = 0;
        if (!DateTimeOffset.TryParse(text, CultureInfo.InvariantCulture, DateTimeStyles.AssumeUniversal, out var t)) return false;
        unixMs = t.ToUnixTimeMilliseconds();
        return true;
    }
}
