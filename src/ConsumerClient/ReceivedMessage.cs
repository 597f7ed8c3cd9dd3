using Apache.Rocketmq.V2;
using HalfMsg.ClientCore;
using HalfMsg.ClientCore.Tracing;
using HalfMsg.ClientCore.Transport;
using HalfMsg.Protocol.Identifiers;

namespace HalfMsg.ConsumerClient;

/// <summary>A message received from the broker. Acknowledge it with <see cref="AckAsync"/>, or postpone its redelivery
/// with <see cref="ChangeInvisibleDurationAsync"/>; otherwise it is redelivered once its invisible duration ends.</summary>
public sealed class ReceivedMessage
{
    private readonly ConsumerCore _owner;
    private volatile string _receiptHandle;

    internal ReceivedMessage(ConsumerCore owner, Endpoint endpoint, Apache.Rocketmq.V2.Message m)
    {
        _owner = owner;
        Endpoint = endpoint;
        SystemProperties sp = m.SystemProperties ?? new SystemProperties();
        Topic = m.Topic?.Name ?? string.Empty;
        MessageId = sp.MessageId;
        Body = m.Body.Memory;
        Tag = sp.HasTag ? sp.Tag : null;
        // Most messages carry neither keys nor user properties: no empty copies of them per message.
        Keys = sp.Keys.Count == 0 ? [] : [.. sp.Keys];
        Properties = m.UserProperties.Count == 0
            ? System.Collections.ObjectModel.ReadOnlyDictionary<string, string>.Empty
            : new Dictionary<string, string>(m.UserProperties);
        DeliveryAttempt = sp.HasDeliveryAttempt ? sp.DeliveryAttempt : 1;
        MessageGroup = sp.HasMessageGroup ? sp.MessageGroup : null;
        BornTimestamp = sp.BornTimestamp?.ToDateTimeOffset();
        _receiptHandle = sp.HasReceiptHandle ? sp.ReceiptHandle : string.Empty;
        ReceivedAtMs = Environment.TickCount64;

        // Same check as the official clients: a digest mismatch marks the message corrupted (it is still returned).
        IsCorrupted = !BodyDigest.Matches(sp.BodyDigest, m.Body.Span);
    }

    /// <summary>Topic.</summary>
    public string Topic { get; }

    /// <summary>Message id (stable across redeliveries: the key for idempotent consumption).</summary>
    public string MessageId { get; }

    /// <summary>Payload.</summary>
    public ReadOnlyMemory<byte> Body { get; }

    /// <summary>Tag, if any.</summary>
    public string? Tag { get; }

    /// <summary>Keys.</summary>
    public IReadOnlyList<string> Keys { get; }

    /// <summary>User properties.</summary>
    public IReadOnlyDictionary<string, string> Properties { get; }

    /// <summary>The W3C <c>traceparent</c> the producer propagated in the message properties (null if none): the parent
    /// for a span of your own around processing (or use <see cref="ConsumerTracing.StartProcess"/>).</summary>
    public string? TraceParent => Properties.TryGetValue(TraceContextProperties.TraceParent, out string? tp) ? tp : null;

    /// <summary>The propagated trace context parsed from <see cref="TraceParent"/> (and <c>tracestate</c>), or default.</summary>
    public System.Diagnostics.ActivityContext TraceContext =>
        TraceContextProperties.TryExtract(Properties, out System.Diagnostics.ActivityContext c) ? c : default;

    /// <summary>1 on the first delivery, +1 per redelivery.</summary>
    public int DeliveryAttempt { get; internal set; }

    /// <summary>FIFO message group, if any.</summary>
    public string? MessageGroup { get; }

    /// <summary>When the producer created the message.</summary>
    public DateTimeOffset? BornTimestamp { get; }

    /// <summary>True when the body does not match the broker's body digest (CRC32, MD5 or SHA1).</summary>
    public bool IsCorrupted { get; }

    /// <summary>The current receipt handle (replaced by <see cref="ChangeInvisibleDurationAsync"/>).</summary>
    public string ReceiptHandle => _receiptHandle;

    internal Endpoint Endpoint { get; }

    /// <summary>When the message was received (<see cref="Environment.TickCount64"/>): its first lease runs from about then.</summary>
    internal long ReceivedAtMs { get; }

    /// <summary>Body as UTF-8 text.</summary>
    public string BodyAsString() => System.Text.Encoding.UTF8.GetString(Body.Span);

    /// <summary>Acknowledges the message: it will not be delivered to this group again.</summary>
    /// <exception cref="BadRequestException">INVALID_RECEIPT_HANDLE: the invisible duration ended (the message may be
    /// redelivered) or it was already acknowledged.</exception>
    public Task AckAsync(CancellationToken cancellationToken = default) => _owner.AckAsync(this, cancellationToken);

    /// <summary>Makes the message invisible for <paramref name="invisibleDuration"/> from now (zero: redeliver now, with
    /// delivery attempt + 1). The receipt handle is replaced by the broker's new one.</summary>
    public async Task ChangeInvisibleDurationAsync(TimeSpan invisibleDuration, CancellationToken cancellationToken = default)
    {
        string handle = await _owner.ChangeInvisibleDurationAsync(this, invisibleDuration, cancellationToken).ConfigureAwait(false);
        if (!string.IsNullOrEmpty(handle))
        {
            _receiptHandle = handle;
        }
    }
}
