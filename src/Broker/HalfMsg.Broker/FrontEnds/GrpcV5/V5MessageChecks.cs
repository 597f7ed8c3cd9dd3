using Apache.Rocketmq.V2;
using HalfMsg.Protocol.Remoting;

namespace HalfMsg.Broker.FrontEnds.GrpcV5;

/// <summary>
/// What the Apache proxy refuses in a published message's properties, tag, keys and message group, with its codes
/// (its SendMessageActivity and GrpcValidator; our own rules, written from their behaviour). Only for gRPC sends: a
/// RocketMQ 4 (Remoting) client legitimately sends the system properties, and its send path does not come here (nor
/// do the count and size limits below: a RocketMQ 4 broker has none, only the stored layout's 32767 bytes).
/// </summary>
internal static class V5MessageChecks
{
    /// <summary>A message group of this many UTF-8 bytes or more is refused (the proxy's default maxMessageGroupSize).</summary>
    public const int MaxMessageGroupBytes = 64;

    /// <summary>
    /// More user properties than this is refused, MESSAGE_PROPERTIES_TOO_LARGE (the proxy's default userPropertyMaxNum).
    /// The proxy makes it a setting; here it is fixed at that default, so what the proxy takes by default is taken here.
    /// </summary>
    public const int MaxUserProperties = 128;

    /// <summary>
    /// More UTF-8 bytes than this in the user properties' keys and values, the tag and the message keys together is
    /// refused, MESSAGE_PROPERTIES_TOO_LARGE (the proxy's default maxUserPropertySize, 16 KiB, counted as it counts:
    /// no separators, no system properties). Fixed at that default, as <see cref="MaxUserProperties"/>. Before these two
    /// limits only the stored layout's 32767 bytes (still checked after them) applied here: a message the proxy refuses
    /// was stored, and an application tested against this broker failed against RocketMQ.
    /// </summary>
    public const int MaxUserPropertyBytes = 16 * 1024;

    /// <summary>Longest tag, in characters, as the core allows it (<c>BrokerEngine.ValidateDraft</c>).</summary>
    public const int MaxTagLength = 255;

    /// <summary>
    /// Property names RocketMQ itself gives meaning to, which a user property may not take (the proxy answers
    /// ILLEGAL_MESSAGE_PROPERTY_KEY, "property is used by system"): exactly the names the proxy reserves, no more, so
    /// what a client sends to the Apache proxy is accepted here too (a first version also refused CHECK_IMMUNITY_TIME_IN_SECONDS,
    /// __transactionId__, TRANSACTION_CHECK_TIMES and __SHARDINGKEY, which the proxy stores; found by review). Stored as user properties they would be taken for the
    /// broker's own: RECONSUME_TIME as the reconsume count (the first send-back dead-letters), RETRY_TOPIC as a retried
    /// message's origin, TAGS and KEYS as the tag and keys a Remoting consumer sees, DELAY and TIMER_* as a delay.
    /// Exact, case-sensitive names, as RocketMQ compares them.
    /// </summary>
    public static readonly IReadOnlySet<string> ReservedPropertyNames = new HashSet<string>(StringComparer.Ordinal)
    {
        // Tag, keys and message id, as Remoting clients and consumers read them.
        MessageConst.Tags, MessageConst.Keys, MessageConst.UniqueKey, "EXTEND_UNIQ_INFO",
        // Retry and dead-letter bookkeeping.
        MessageConst.RetryTopic, MessageConst.ReconsumeTime, MessageConst.MaxReconsumeTimes, MessageConst.OriginMessageId,
        "CONSUME_START_TIME", "DUP_INFO",
        // Where a delayed, retried or half message really belongs.
        MessageConst.RealTopic, MessageConst.RealQueueId,
        // Delay.
        MessageConst.DelayLevel, MessageConst.TimerDeliverMs, MessageConst.TimerDelaySec, MessageConst.TimerDelayMs,
        "TIMER_ENQUEUE_MS", "TIMER_DEQUEUE_MS", "TIMER_ROLL_TIMES", "TIMER_OUT_MS", "TIMER_DEL_UNIQKEY", "TIMER_DELAY_LEVEL",
        // Transactions.
        MessageConst.TransactionPrepared, MessageConst.ProducerGroup, "TRAN_PREPARED_QUEUE_OFFSET",
        // Dead letters' origin and the stored CRC.
        "DLQ_ORIGIN_TOPIC", "DLQ_ORIGIN_MESSAGE_ID", "__CRC32#",
        // Store and send flags.
        MessageConst.WaitStoreMsgOk, MessageConst.MsgRegion, MessageConst.TraceOn, MessageConst.MinOffset, MessageConst.MaxOffset,
        "BUYER_ID", "TRANSFER_FLAG", "CORRECTION_FLAG", "MQ2_FLAG", "INSTANCE_ID", "MSG_TYPE", "CLUSTER",
        "INNER_MULTI_QUEUE_OFFSET", "__BORNHOST", "BORN_TIMESTAMP",
        // Request-reply.
        "CORRELATION_ID", "REPLY_TO_CLIENT", "TTL", "ARRIVE_TIME", "PUSH_REPLY_TIME",
        // Pop consumption.
        "POP_CK", "POP_CK_OFFSET", "1ST_POP_TIME",
    };

    /// <summary>
    /// MESSAGE_PROPERTY_CONFLICT_WITH_TYPE, naming the type, for a LITE or PRIORITY message (or one naming a lite topic),
    /// as the proxy answers a type its topic does not accept (DefaultTopicMessageTypeValidator); null otherwise. The Java
    /// client 5.1+ types a message with a lite topic LITE and one with a priority PRIORITY, and checks the route only when
    /// Settings say validate_message_type. Until 2026-12-06 both were answered OK and stored as NORMAL, the lite topic and
    /// priority dropped: no lite consumer would ever get them and every consumer of the topic did (found by review).
    /// </summary>
    public static Status? TypeRefusal(SystemProperties sp)
    {
        if (sp.MessageType is MessageType.Lite or MessageType.Priority || sp.HasLiteTopic)
        {
            string type = sp.MessageType is MessageType.Lite or MessageType.Priority ? sp.MessageType.ToString().ToUpperInvariant() : "LITE";
            return V5Status.Of(Code.MessagePropertyConflictWithType,
                $"{type} messages are not supported: no topic of this broker accepts them (routes accept NORMAL, FIFO, DELAY and TRANSACTION)");
        }

        return null;
    }

    /// <summary>Null when the message may be stored; otherwise the status the proxy would answer with.</summary>
    public static Status? Refusal(Message message)
    {
        // Counted before any property is looked at, as the proxy does.
        if (message.UserProperties.Count > MaxUserProperties)
        {
            return V5Status.Of(Code.MessagePropertiesTooLarge, $"too many user properties, max is {MaxUserProperties}");
        }

        long propertyBytes = 0;
        foreach (var (key, value) in message.UserProperties)
        {
            if (ReservedPropertyNames.Contains(key))
            {
                return V5Status.Of(Code.IllegalMessagePropertyKey, $"property is used by system: {key}");
            }

            // \u0001 and \u0002 separate the properties of the stored (Remoting) layout: a user value could forge others.
            if (HasControlCharacter(key))
            {
                return V5Status.Of(Code.IllegalMessagePropertyKey, "the key of a property cannot contain control characters");
            }

            if (HasControlCharacter(value))
            {
                return V5Status.Of(Code.IllegalMessagePropertyKey, $"the value of property '{key}' cannot contain control characters");
            }

            propertyBytes += System.Text.Encoding.UTF8.GetByteCount(key) + System.Text.Encoding.UTF8.GetByteCount(value);
        }

        SystemProperties sp = message.SystemProperties;
        string tag = sp.Tag; // "" when unset: no tag
        if (tag.Length > 0)
        {
            if (string.IsNullOrWhiteSpace(tag))
            {
                return V5Status.Of(Code.IllegalMessageTag, "tag cannot be only whitespace");
            }

            if (tag.Contains('|', StringComparison.Ordinal))
            {
                return V5Status.Of(Code.IllegalMessageTag, "tag cannot contain '|'");
            }

            if (HasControlCharacter(tag))
            {
                return V5Status.Of(Code.IllegalMessageTag, "tag cannot contain control characters");
            }

            if (tag.Length > MaxTagLength)
            {
                return V5Status.Of(Code.IllegalMessageTag, $"tag must be at most {MaxTagLength} characters");
            }

            propertyBytes += System.Text.Encoding.UTF8.GetByteCount(tag);
        }

        foreach (string key in sp.Keys)
        {
            // An empty key is let through, as the proxy does.
            if (key.Length > 0 && string.IsNullOrWhiteSpace(key))
            {
                return V5Status.Of(Code.IllegalMessageKey, "key cannot be only whitespace");
            }

            if (HasControlCharacter(key))
            {
                return V5Status.Of(Code.IllegalMessageKey, "key cannot contain control characters");
            }

            propertyBytes += System.Text.Encoding.UTF8.GetByteCount(key);
        }

        // After the properties, tag and keys were checked one by one, before the message group, in the proxy's order.
        if (propertyBytes > MaxUserPropertyBytes)
        {
            return V5Status.Of(Code.MessagePropertiesTooLarge,
                $"the total size of user properties, tag and keys is too large ({propertyBytes} bytes in UTF-8), max is {MaxUserPropertyBytes}");
        }

        string group = sp.MessageGroup; // "" when unset: no group
        if (group.Length > 0)
        {
            if (string.IsNullOrWhiteSpace(group))
            {
                return V5Status.Of(Code.IllegalMessageGroup, "message group cannot be only whitespace");
            }

            if (System.Text.Encoding.UTF8.GetByteCount(group) >= MaxMessageGroupBytes)
            {
                return V5Status.Of(Code.IllegalMessageGroup, $"message group must be shorter than {MaxMessageGroupBytes} bytes (UTF-8)");
            }

            if (HasControlCharacter(group))
            {
                return V5Status.Of(Code.IllegalMessageGroup, "message group cannot contain control characters");
            }
        }

        return null;
    }

    /// <summary>U+0000–U+001F and U+007F–U+009F, the characters Java's <c>Character.isISOControl</c> matches.</summary>
    private static bool HasControlCharacter(string s)
    {
        foreach (char c in s)
        {
            if (char.IsControl(c))
            {
                return true;
            }
        }

        return false;
    }
}
