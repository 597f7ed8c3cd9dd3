using HalfMsg.Broker.Core;
using HalfMsg.Broker.Core.Diagnostics;
using HalfMsg.Broker.Core.Model;
using System.Text;

namespace HalfMsg.Broker.Admin;

/// <summary>
/// Where a message is, from the <see cref="MessageIndex"/> plus the engine's live state: pending or parked half,
/// rolled back, waiting for its delivery time, recalled, on a queue (and, per consumer group, acknowledged / delivered / not yet),
/// or cut by retention.
/// </summary>
public static class MessageLookup
{
    public sealed record GroupState(string Group, string State);

    public sealed record Location(string MessageId, string Topic, string? Tag, IReadOnlyList<string> Keys, DateTimeOffset StoredAt, string Kind,
        string State, int? QueueId, long? QueueOffset, string? TransactionId, string? ProducerGroup, string? Resolution, string? DecidedBy,
        DateTimeOffset? DecidedAt, IReadOnlyList<GroupState> Groups);

    public static Location Locate(BrokerEngine engine, MessageIndex.Entry e)
    {
        string state;
        var groups = new List<GroupState>();
        bool onQueue = e.QueueId >= 0 && e.QueueOffset >= 0;
        if (e.TransactionId is not null && e.Resolution is null)
        {
            var live = engine.FindTransaction(e.TransactionId);
            state = live is null ? "decided (not seen by this index)" : live.Parked ? "parked" : "pending";
        }
        else if (e.Resolution == TransactionResolution.Rollback)
        {
            state = "rolled back";
        }
        else if (e.Recalled)
        {
            state = "recalled (by its producer before its delivery time; never delivered)";
        }
        else if (!onQueue)
        {
            state = "scheduled (delivery time not reached when last seen)";
        }
        else
        {
            if (engine.QueuePositions(e.Topic, e.QueueId, e.QueueOffset) is not { } queue || e.QueueOffset < queue.MinOffset)
            {
                state = "expired (cut by retention)";
            }
            else
            {
                state = e.Resolution == TransactionResolution.Commit ? "committed" : "stored";
                foreach (var q in queue.Groups)
                {
                    // One passed over (its FIFO message group in flight) lies below the group's position, never delivered.
                    groups.Add(new GroupState(q.Group, e.QueueOffset < q.AckedOffset ? "acked"
                        : q.PassedOver ? "not delivered yet (passed over: an earlier message of its message group is in flight)"
                        : e.QueueOffset < q.ConsumedOffset ? "delivered (in flight, or acked out of order)" : "not delivered yet"));
                }
            }
        }
        return new Location(e.MessageId, e.Topic, e.Tag, e.Keys, e.StoredAt, e.Kind.ToString(), state,
            onQueue ? e.QueueId : null, onQueue ? e.QueueOffset : null, e.TransactionId, e.ProducerGroup,
            e.Resolution?.ToString(), e.DecidedBy?.ToString(), e.DecidedAt, groups);
    }

    /// <summary>The stored message itself: headers, properties and the first <see cref="PreviewBytes"/> of the body.</summary>
    public sealed record Preview(string MessageId, string Topic, int? QueueId, long? QueueOffset, string Kind, string? Tag, IReadOnlyList<string> Keys,
        string? TransactionId, DateTimeOffset? BornAt, string? BornHost, DateTimeOffset StoredAt, string? MessageGroup, DateTimeOffset? DeliverAt,
        string? OriginalTopic, IReadOnlyDictionary<string, string> Properties, int BodySize, string BodyEncoding, string BodyPreview, bool BodyTruncated);

    /// <summary>One step of a message's history as the API and dashboard show it (kind in snake case: <c>stored</c>,
    /// <c>half_stored</c>, <c>committed</c>, <c>rolled_back</c>, <c>delivered</c>, <c>acked</c>, <c>lease_changed</c>,
    /// <c>lease_expired</c>, <c>dead_lettered</c>, <c>stored_again</c>, <c>redriven</c>, <c>released</c>, <c>recalled</c>, <c>expired</c>).</summary>
    public sealed record HistoryStep(string Kind, DateTimeOffset? At, string? Group, int? Attempt, string? ClientId, string? Detail);

    /// <summary>The message's history from the index, oldest first; a message retention has cut ends with <c>expired</c>.</summary>
    public static (IReadOnlyList<HistoryStep> Steps, int Dropped) History(BrokerEngine engine, Location location)
    {
        var history = engine.MessageIndex.History(location.MessageId);
        var steps = new List<HistoryStep>();
        foreach (var e in history?.Events ?? [])
            steps.Add(new HistoryStep(KindName(e.Kind), e.At, e.Group, e.Attempt > 0 ? e.Attempt : null, e.ClientId, e.Detail));
        if (location.State.StartsWith("expired", StringComparison.Ordinal))
            steps.Add(new HistoryStep("expired", null, null, null, null, "cut by retention (the queue's minimum offset is past it)"));
        return (steps, history?.Dropped ?? 0);
    }

    private static string KindName(HistoryKind kind) => kind switch
    {
        HistoryKind.Stored => "stored",
        HistoryKind.HalfStored => "half_stored",
        HistoryKind.Committed => "committed",
        HistoryKind.RolledBack => "rolled_back",
        HistoryKind.Delivered => "delivered",
        HistoryKind.Acked => "acked",
        HistoryKind.LeaseChanged => "lease_changed",
        HistoryKind.LeaseExpired => "lease_expired",
        HistoryKind.DeadLettered => "dead_lettered",
        HistoryKind.StoredAgain => "stored_again",
        HistoryKind.Redriven => "redriven",
        HistoryKind.Released => "released",
        HistoryKind.Recalled => "recalled",
        HistoryKind.FilteredOut => "filtered_out",
        _ => kind.ToString().ToLowerInvariant(),
    };

    /// <summary>The answer of <c>GET /api/messages/{id}</c>: the location's fields, <c>history</c> (oldest first) with
    /// <c>historyDropped</c>, and <c>message</c> (null when it can no longer be read: rolled back, expired, scheduled, recalled).</summary>
    public static System.Text.Json.Nodes.JsonObject Detail(BrokerEngine engine, Location location, Preview? message)
    {
        var node = System.Text.Json.JsonSerializer.SerializeToNode(location, System.Text.Json.JsonSerializerOptions.Web)!.AsObject();
        var (steps, dropped) = History(engine, location);
        node["history"] = System.Text.Json.JsonSerializer.SerializeToNode(steps, System.Text.Json.JsonSerializerOptions.Web);
        node["historyDropped"] = dropped;
        node["indexWarming"] = engine.MessageIndex.IsWarming;
        node["message"] = message is null ? null : System.Text.Json.JsonSerializer.SerializeToNode(message, System.Text.Json.JsonSerializerOptions.Web);
        return node;
    }

    /// <summary>Why a message id is not found: the index may still be reading the log after a start.</summary>
    public static string NotFoundReason(BrokerEngine engine, string id) => engine.MessageIndex.IsWarming
        ? $"message '{id}' is not in the message index yet: the index is still being rebuilt from the log after the start ({engine.MessageIndex.RecordsScanned} records read so far); try again shortly"
        : $"message '{id}' is not in the message index (cut by retention, or older than its last {engine.MessageIndex.Capacity} messages)";

    public const int PreviewBytes = 4096;

    /// <summary>Reads the message where the index says it is (a pending half, or a queue position); null when it is gone.</summary>
    public static async Task<Preview?> ReadAsync(BrokerEngine engine, MessageIndex.Entry e, CancellationToken ct)
    {
        StoredMessage? m = null;
        if (e.TransactionId is not null && e.Resolution is null) m = await engine.ReadPendingHalfAsync(e.TransactionId, ct);
        if (m is null && e.QueueId >= 0 && e.QueueOffset >= 0) m = await engine.ReadMessageAsync(e.Topic, e.QueueId, e.QueueOffset, ct);
        if (m is null || m.MessageId != e.MessageId) return null;
        var (encoding, text, truncated) = BodyPreview(m.Body.Span);
        return new Preview(m.MessageId, m.Topic, m.QueueId >= 0 ? m.QueueId : null, m.QueueOffset >= 0 ? m.QueueOffset : null, m.Kind.ToString(), m.Tag, m.Keys,
            m.TransactionId, m.BornTimestampMs > 0 ? UnixTime.ToDateTimeOffset(m.BornTimestampMs) : null, m.BornHost,
            UnixTime.ToDateTimeOffset(m.StoreTimestampMs), m.MessageGroup,
            m.DeliveryTimestampMs is long at ? UnixTime.ToDateTimeOffset(at) : null, m.OriginalTopic,
            m.Properties, m.Body.Length, encoding, text, truncated);
    }

    private static readonly UTF8Encoding StrictUtf8 = new(encoderShouldEmitUTF8Identifier: false, throwOnInvalidBytes: true);

    /// <summary>The first 4 KiB of a body as text when it is UTF-8 without control characters (other than tab and line
    /// breaks), otherwise as hex: 16 bytes a line.</summary>
    public static (string Encoding, string Text, bool Truncated) BodyPreview(ReadOnlySpan<byte> body)
    {
        bool truncated = body.Length > PreviewBytes;
        var head = truncated ? body[..PreviewBytes] : body;
        // A cut may split the last character: drop up to 3 bytes of an incomplete sequence before judging.
        for (int drop = 0; drop <= (truncated ? 3 : 0); drop++)
        {
            try
            {
                string text = StrictUtf8.GetString(head[..(head.Length - drop)]);
                if (text.All(c => !char.IsControl(c) || c is '\t' or '\n' or '\r')) return ("text", text, truncated);
                break;
            }
            catch (DecoderFallbackException)
            {
            }
        }
        var sb = new StringBuilder(head.Length * 3);
        for (int i = 0; i < head.Length; i++)
        {
            if (i > 0) sb.Append(i % 16 == 0 ? '\n' : ' ');
            sb.Append(head[i].ToString("x2", System.Globalization.CultureInfo.InvariantCulture));
        }
        return ("hex", sb.ToString(), truncated);
    }
}
