using System.Buffers.Text;
using System.Globalization;
using System.Text;

namespace HalfMsg.Broker.FrontEnds.GrpcV5;

/// <summary>
/// The recall handle a delay message's send answers with (<c>SendResultEntry.recall_handle</c>) and RecallMessage takes
/// back. Opaque to clients (the gRPC clients pass it through unread); laid out as Apache's <c>RecallMessageHandle</c>
/// v1 (base64url of <c>v1 topic brokerName deliverAtMs messageId</c>, space-separated) so that a reader of that format
/// finds the topic, time and message id where it expects them, followed by what makes it ours: the log address the
/// message was sent at. A message id is the client's choice and may repeat; that address is never used twice, and
/// retention's moves of the body do not change it (the engine follows them), so the handle names one message, also
/// after any restart.
/// </summary>
internal readonly record struct V5RecallHandle(string Topic, long DeliverAtMs, string MessageId, long SentAt)
{
    private const string Version = "v1";
    private const char Separator = ' ';

    public string Encode(string brokerName)
    {
        string raw = string.Join(Separator, Version, Topic, brokerName, DeliverAtMs.ToString(CultureInfo.InvariantCulture), MessageId,
            SentAt.ToString(CultureInfo.InvariantCulture));
        return Base64Url.EncodeToString(Encoding.UTF8.GetBytes(raw));
    }

    /// <summary>False for anything this broker did not issue in this form (wrong base64url, version, field count or
    /// numbers, or another broker's name). A handle naming <see cref="BrokerNames.Legacy"/>, the name every handle
    /// carried before the broker had one name (<see cref="BrokerNames"/>), is this broker's too: it may have been issued
    /// before an upgrade, for a message that still waits.</summary>
    public static bool TryDecode(string handle, string brokerName, out V5RecallHandle decoded)
    {
        decoded = default;
        if (string.IsNullOrEmpty(handle) || handle.Length > MaxLength) return false;
        byte[] bytes;
        try
        {
            // With or without padding, as Java's URL decoder reads Apache's handles.
            bytes = Base64Url.DecodeFromChars(handle.TrimEnd('='));
        }
        catch (FormatException)
        {
            return false;
        }

        string raw;
        try
        {
            raw = new UTF8Encoding(false, throwOnInvalidBytes: true).GetString(bytes);
        }
        catch (DecoderFallbackException)
        {
            return false;
        }

        // The message id is the client's and may hold the separator: it is everything between the time and the address.
        string[] parts = raw.Split(Separator);
        if (parts.Length < 6 || parts[0] != Version || (parts[2] != brokerName && parts[2] != BrokerNames.Legacy)) return false;
        if (!long.TryParse(parts[3], NumberStyles.None, CultureInfo.InvariantCulture, out long deliverAt)
            || !long.TryParse(parts[^1], NumberStyles.None, CultureInfo.InvariantCulture, out long sentAt))
            return false;
        string messageId = string.Join(Separator, parts, 4, parts.Length - 5);
        if (parts[1].Length == 0 || messageId.Length == 0) return false;
        decoded = new V5RecallHandle(parts[1], deliverAt, messageId, sentAt);
        return true;
    }

    /// <summary>Longest handle read: a topic name (127), a message id within the metadata limit, numbers; far more than that is not ours.</summary>
    private const int MaxLength = 128 * 1024;
}
