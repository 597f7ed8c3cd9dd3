using System.Globalization;

namespace HalfMsg.Protocol.Grpc;

/// <summary>
/// The check token of a gRPC check-back (a HalfMsgBroker extension, since the afternoon session of 2026-12-07). A
/// transaction id is taken again once its decision is forgotten, and a check-back answer names the id alone: a late
/// answer to the check of an EARLIER half of the id would decide the new half. Over Remoting the check carries the half's
/// token in <c>tranStateTableOffset</c>, which the Java client echoes; a RecoverOrphanedTransactionCommand has no such
/// field, so the token rides in its <c>transaction_id</c>: <c>&lt;transaction id&gt;~ck&lt;token&gt;</c> (decimal,
/// non-negative). The official clients echo that field verbatim in their EndTransaction and give their checker a
/// MessageView without it; our ProducerClient opts in with <see cref="AcceptHeader"/> and strips the suffix before its
/// checker sees the id. The id before the suffix is always the half's message id (a HalfMsgBroker's transaction id is
/// its half's message id), which the check's message and the answer's <c>message_id</c> carry: so the suffix is told
/// from a client-chosen id that merely looks like one.
/// </summary>
public static class CheckTokenIds
{
    /// <summary>Sent by our ProducerClient on its calls: it strips the token from a check's transaction id before its
    /// checker sees it, and echoes the whole id. Older brokers ignore it.</summary>
    public const string AcceptHeader = "x-halfmsg-check-token";

    /// <summary>Value of <see cref="AcceptHeader"/>.</summary>
    public const string AcceptValue = "1";

    /// <summary>Between the transaction id and the token.</summary>
    public const string Separator = "~ck";

    /// <summary>What <see cref="Parse"/> found.</summary>
    public enum Kind
    {
        /// <summary>No token: the id is the transaction id.</summary>
        None,

        /// <summary>A token after the transaction id.</summary>
        Token,

        /// <summary>The suffix is there but what follows it is not a token.</summary>
        Malformed,
    }

    /// <summary>The transaction id a check sends: <paramref name="transactionId"/> with <paramref name="token"/>.</summary>
    public static string Make(string transactionId, long token)
        => transactionId + Separator + token.ToString(CultureInfo.InvariantCulture);

    /// <summary>
    /// Splits <paramref name="id"/> (a check's or an answer's transaction id) given the half's message id
    /// <paramref name="messageId"/>: a token only when <paramref name="id"/> is that message id followed by
    /// <see cref="Separator"/>. With no message id the last <see cref="Separator"/> splits it (callers that can, check
    /// first that the whole id is not a transaction of its own).
    /// </summary>
    public static Kind Parse(string id, string? messageId, out string transactionId, out long token)
    {
        transactionId = id;
        token = -1;
        int at;
        if (!string.IsNullOrEmpty(messageId))
        {
            if (id.Length <= messageId.Length || !id.StartsWith(messageId, StringComparison.Ordinal)
                || string.CompareOrdinal(id, messageId.Length, Separator, 0, Separator.Length) != 0)
            {
                return Kind.None;
            }

            at = messageId.Length;
        }
        else
        {
            at = id.LastIndexOf(Separator, StringComparison.Ordinal);
            if (at <= 0)
            {
                return Kind.None;
            }
        }

        ReadOnlySpan<char> digits = id.AsSpan(at + Separator.Length);
        if (digits.Length is 0 or > 19 || !long.TryParse(digits, NumberStyles.None, CultureInfo.InvariantCulture, out long value))
        {
            return string.IsNullOrEmpty(messageId) ? Kind.None : Kind.Malformed;
        }

        transactionId = id[..at];
        token = value;
        return Kind.Token;
    }

    /// <summary>The transaction id without its token (the whole id when it has none): what a checker is given.</summary>
    public static string Strip(string id, string? messageId)
        => Parse(id, messageId, out string transactionId, out _) == Kind.Token ? transactionId : id;
}
