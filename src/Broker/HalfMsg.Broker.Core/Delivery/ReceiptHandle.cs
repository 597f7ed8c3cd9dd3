using System.Globalization;

namespace HalfMsg.Broker.Core.Delivery;

/// <summary>
/// A lease on one delivery of one message to one consumer group. Opaque to clients:
/// <c>v1.{queueId}.{queueOffset}.{leaseId:x16}</c>. The lease id changes on every (re)delivery and every
/// change of invisibility, so an old handle is detectably stale. It is persisted with the delivery record, so
/// handles stay valid across a broker restart; it is a per-process random incarnation (upper 32 bits) plus the
/// process's lease count, so a lease issued but never made durable before a crash cannot be confused with a newer one,
/// and no two leases of one process share an id (the count carries into the upper bits: it never wraps).
/// </summary>
public readonly record struct ReceiptHandle(int QueueId, long QueueOffset, long LeaseId)
{
    public string Encode() => string.Create(CultureInfo.InvariantCulture, $"v1.{QueueId}.{QueueOffset}.{LeaseId:x16}");

    public static bool TryParse(string? text, out ReceiptHandle handle)
    {
        handle = default;
        if (string.IsNullOrEmpty(text) || text.Length > 64 || !text.StartsWith("v1.", StringComparison.Ordinal)) return false;
        var parts = text.AsSpan(3);
        Span<Range> ranges = stackalloc Range[4];
        if (parts.Split(ranges, '.') != 3) return false;
        if (!int.TryParse(parts[ranges[0]], NumberStyles.None, CultureInfo.InvariantCulture, out var q) || q < 0) return false;
        if (!long.TryParse(parts[ranges[1]], NumberStyles.None, CultureInfo.InvariantCulture, out var off) || off < 0) return false;
        if (!long.TryParse(parts[ranges[2]], NumberStyles.AllowHexSpecifier, CultureInfo.InvariantCulture, out var lease)) return false;
        handle = new ReceiptHandle(q, off, lease);
        return true;
    }
}
