using System.Globalization;
using System.IO.Compression;
using System.Net;
using System.Text;
using HalfMsg.Broker.Core;
using HalfMsg.Broker.Core.Model;
using HalfMsg.Protocol.Remoting;

namespace HalfMsg.Broker.FrontEnds.Remoting;

/// <summary>Between RocketMQ 4 messages (properties string, sysFlag, stored layout) and the core's message model.</summary>
internal static class RemotingMessageConverter
{
    /// <summary>Properties the broker interprets; they are not stored as user properties (the core keeps them as fields).</summary>
    private static readonly HashSet<string> Interpreted = new(StringComparer.Ordinal)
    {
        MessageConst.Tags, MessageConst.Keys, MessageConst.UniqueKey, MessageConst.DelayLevel, MessageConst.TransactionPrepared,
        MessageConst.ProducerGroup, MessageConst.WaitStoreMsgOk, MessageConst.MsgRegion, MessageConst.TraceOn,
        MessageConst.TimerDeliverMs, MessageConst.TimerDelaySec, MessageConst.TimerDelayMs, MessageConst.CheckImmunityTimeInSeconds,
        MessageConst.TransactionId, BrokerEngine.ReconsumeTimesProperty, MessageConst.MinOffset, MessageConst.MaxOffset,
    };

    /// <summary>Inflates a compressed body (zlib, RFC 1950, the only codec ali-ons and Java 4.x use); null when invalid or too large.</summary>
    public static byte[]? Inflate(ReadOnlyMemory<byte> body, int sysFlag, int maxSize, out string? error)
        => Inflate(body, sysFlag, maxSize, null, out error, out _);

    /// <summary>
    /// As <see cref="Inflate(ReadOnlyMemory{byte}, int, int, out string?)"/>, asking <paramref name="charge"/> for every
    /// chunk of inflated bytes before it is kept; null with <paramref name="overloaded"/> when a charge is refused.
    /// </summary>
    public static byte[]? Inflate(ReadOnlyMemory<byte> body, int sysFlag, int maxSize, Func<int, bool>? charge, out string? error, out bool overloaded)
    {
        error = null;
        overloaded = false;
        int type = sysFlag & MessageSysFlag.CompressionTypeMask;
        if (type != 0 && type != MessageSysFlag.CompressionZlib)
        {
            error = "only zlib-compressed bodies are supported (sysFlag compression type " + (type >> 8) + ")";
            return null;
        }
        try
        {
            using var input = new MemoryStream(body.ToArray());
            using var z = new ZLibStream(input, CompressionMode.Decompress);
            using var output = new MemoryStream();
            var buffer = new byte[81920];
            int n;
            while ((n = z.Read(buffer)) > 0)
            {
                if (output.Length + n > maxSize) { error = $"inflated body exceeds {maxSize} bytes"; return null; }
                if (charge is not null && !charge(n))
                {
                    error = "[OVERLOAD]inflated request bodies on this connection exceed its in-flight byte limit";
                    overloaded = true;
                    return null;
                }
                output.Write(buffer, 0, n);
            }
            // A body cut short inflates without an error to what it holds: refused, not stored short.
            if (!CompressedBodyTrailer.ZlibEnded(body.Span, output.GetBuffer().AsSpan(0, (int)output.Length)))
            {
                error = "body is flagged compressed but its zlib data is cut short (it does not end with the Adler-32 of the inflated bytes)";
                return null;
            }
            return output.ToArray();
        }
        catch (InvalidDataException)
        {
            error = "body is flagged compressed but is not valid zlib data";
            return null;
        }
    }

    /// <summary>Builds a draft from a Remoting send. Delay: <c>DELAY</c> level (RocketMQ's 18 levels), or the 5.x timer
    /// properties. <paramref name="flag"/> is the message's user flag (the send header's, or a batch entry's own).</summary>
    public static MessageDraft ToDraft(string topic, Dictionary<string, string> props, ReadOnlyMemory<byte> body, long bornTimestamp,
        IPEndPoint bornHost, int queueId, int reconsumeTimes, long nowMs, int flag = 0)
    {
        props.TryGetValue(MessageConst.Tags, out var tag);
        // ali-ons stringifies a missing tag as the literal "null".
        if (tag is "" or "null") tag = null;
        string[] keys = props.TryGetValue(MessageConst.Keys, out var k) ? k.Split(' ', StringSplitOptions.RemoveEmptyEntries) : [];
        string id = props.TryGetValue(MessageConst.UniqueKey, out var u) && u.Length > 0 ? u : NewUniqueKey();
        long? deliverAt = null;
        if (props.TryGetValue(MessageConst.TimerDeliverMs, out var tms) && long.TryParse(tms, out long at)) deliverAt = at;
        else if (props.TryGetValue(MessageConst.TimerDelaySec, out var ts) && long.TryParse(ts, out long sec)) deliverAt = nowMs + sec * 1000;
        else if (props.TryGetValue(MessageConst.TimerDelayMs, out var tdm) && long.TryParse(tdm, out long ms)) deliverAt = nowMs + ms;
        else if (props.TryGetValue(MessageConst.DelayLevel, out var lv) && int.TryParse(lv, out int level) && level > 0)
            deliverAt = nowMs + (long)BrokerEngine.DelayLevels[Math.Min(level, BrokerEngine.DelayLevels.Length) - 1].TotalMilliseconds;
        var stored = new Dictionary<string, string>(StringComparer.Ordinal);
        foreach (var (key, value) in props)
            if (!Interpreted.Contains(key)) stored[key] = value;
        if (reconsumeTimes > 0) stored[BrokerEngine.ReconsumeTimesProperty] = reconsumeTimes.ToString(CultureInfo.InvariantCulture);
        return new MessageDraft
        {
            Topic = topic, MessageId = id, Tag = tag, Keys = keys, Properties = stored, Body = body, BornTimestampMs = bornTimestamp,
            BornHost = bornHost.ToString(), DeliveryTimestampMs = deliverAt, QueueId = queueId >= 0 ? queueId : null, Flag = flag,
        };
    }

    /// <summary>
    /// Why <paramref name="d"/> may not be stored: its properties, as <see cref="ToWire"/> writes them (user properties
    /// plus TAGS, KEYS and UNIQ_KEY), with what the broker may add to them later (<see cref="BrokerAddedBytes"/>), would
    /// take more than the stored layout's 32767 bytes, so no Remoting consumer or checked producer could be given it
    /// whole; null when they fit. Both front ends ask at send time, as RocketMQ refuses such a message
    /// (PROPERTIES_SIZE_EXCEEDED, MESSAGE_ILLEGAL). <paramref name="half"/>: a half message, checked back in that layout;
    /// <paramref name="producerGroup"/>: its group, when the caller knows it (else the longest is assumed).
    /// </summary>
    public static string? StoredPropertiesRefusal(MessageDraft d, bool half, string? producerGroup)
    {
        long added = BrokerAddedBytes(d, half, producerGroup);
        long limit = StoredMessageCodec.MaxPropertiesBytes - added;
        long bytes = Pair(MessageConst.UniqueKey, d.MessageId);
        if (d.Tag is not null) bytes += Pair(MessageConst.Tags, d.Tag);
        if (d.Keys.Count > 0)
        {
            bytes += Encoding.UTF8.GetByteCount(MessageConst.Keys) + 2 + d.Keys.Count - 1;
            foreach (var key in d.Keys)
            {
                bytes += Encoding.UTF8.GetByteCount(key);
                if (bytes > limit) break;
            }
        }
        foreach (var (k, v) in d.Properties)
        {
            if (bytes > limit) break;
            // ToWire leaves these out or writes its own value in their place.
            if (k is BrokerEngine.ReconsumeTimesProperty or MessageConst.UniqueKey || (k == MessageConst.Tags && d.Tag is not null)
                || (k == MessageConst.Keys && d.Keys.Count > 0)) continue;
            bytes += Pair(k, v);
        }
        return bytes <= limit ? null
            : $"the message's properties (keys, tag, id and user properties) take more than {limit} bytes encoded: RocketMQ's " +
              $"stored message layout holds {StoredMessageCodec.MaxPropertiesBytes}, of which {added} are kept for what the broker adds " +
              (half ? "when it checks the transaction or a consumer sends the message back" : "when a consumer sends the message back");
    }

    /// <summary>
    /// The most bytes the broker adds to a message's properties in the stored layout after its send: a send-back
    /// (<see cref="BrokerEngine.SendBackAsync"/>) stores it again with RETRY_TOPIC (its topic, at most 127 bytes) and
    /// ORIGIN_MESSAGE_ID (its id), unless it has them already, and a pull of the retry (or dead-letter) topic carries them;
    /// a half's check-back adds TRAN_MSG, PGROUP, __transactionId__ (its id) and TRANSACTION_CHECK_TIMES (the check's
    /// number, room for any int). Until 2026-12-06 the send-time check left them out, so a message accepted near the
    /// limit lost user properties there (logged, cut by
    /// <see cref="StoredMessageCodec.Encode(RemotingMessage, out IReadOnlyList{string})"/>, system ones first).
    /// </summary>
    internal static long BrokerAddedBytes(MessageDraft d, bool half, string? producerGroup)
    {
        long sendBack = (d.Properties.ContainsKey(MessageConst.RetryTopic) ? 0 : Encoding.UTF8.GetByteCount(MessageConst.RetryTopic) + MaxTopicBytes + 2)
            + (d.Properties.ContainsKey(MessageConst.OriginMessageId) ? 0 : Pair(MessageConst.OriginMessageId, d.MessageId));
        if (!half) return sendBack;
        long checkBack = Pair(MessageConst.TransactionPrepared, "true") + Pair(MessageConst.TransactionId, d.MessageId)
            + Pair(MessageConst.TransactionCheckTimes, MaxCheckNumber)
            + (producerGroup is null ? Encoding.UTF8.GetByteCount(MessageConst.ProducerGroup) + MaxProducerGroupLength + 2 : Pair(MessageConst.ProducerGroup, producerGroup));
        // A check-back carries the half; once committed, it is an ordinary message that may be sent back.
        return Math.Max(sendBack, checkBack);
    }

    /// <summary>Longest topic the stored layout writes (one length byte, V1), in bytes; the engine's names are ASCII.</summary>
    private const int MaxTopicBytes = 127;
    /// <summary>The longest check number a check-back may carry (the check limit is an int).</summary>
    private static readonly string MaxCheckNumber = int.MaxValue.ToString(CultureInfo.InvariantCulture);
    /// <summary>Longest producer group the engine takes (<c>IsValidName(group, 255)</c>; ASCII).</summary>
    private const int MaxProducerGroupLength = 255;

    private static long Pair(string k, string v) => Encoding.UTF8.GetByteCount(k) + Encoding.UTF8.GetByteCount(v) + 2;

    /// <summary>A 32-hex UNIQ_KEY for a message whose client set none (ali-ons never does).</summary>
    public static string NewUniqueKey() => Guid.NewGuid().ToString("N").ToUpperInvariant();

    /// <summary>The stored-message record of a message, as pulls, check-backs and look-ups (by offset id, by key) carry it, its user flag included.</summary>
    public static RemotingMessage ToWire(StoredMessage m, long physicalOffset, int reconsumeTimes, IPEndPoint storeHost, int queueId, long queueOffset)
    {
        var props = new Dictionary<string, string>(StringComparer.Ordinal);
        foreach (var (k, v) in m.Properties)
            if (k != BrokerEngine.ReconsumeTimesProperty) props[k] = v;
        if (m.Tag is not null) props[MessageConst.Tags] = m.Tag;
        if (m.Keys.Count > 0) props[MessageConst.Keys] = string.Join(' ', m.Keys);
        props[MessageConst.UniqueKey] = m.MessageId;
        return new RemotingMessage
        {
            Topic = m.Topic, QueueId = queueId, QueueOffset = queueOffset, PhysicalOffset = physicalOffset, SysFlag = 0, Flag = m.Flag,
            BornTimestamp = m.BornTimestampMs, BornHost = ParseHost(m.BornHost), StoreTimestamp = m.StoreTimestampMs, StoreHost = storeHost,
            ReconsumeTimes = reconsumeTimes, Body = m.Body.ToArray(), Properties = props,
        };
    }

    private static IPEndPoint ParseHost(string? host)
    {
        if (host is not null && IPEndPoint.TryParse(host, out var ep) && ep.Address.AddressFamily == System.Net.Sockets.AddressFamily.InterNetwork) return ep;
        return new IPEndPoint(IPAddress.Loopback, 0);
    }
}
