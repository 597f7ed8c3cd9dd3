namespace HalfMsg.Broker.Core.Model;

/// <summary>How a message behaves on delivery. Mirrors apache.rocketmq.v2.MessageType.</summary>
public enum MessageKind : byte
{
    Normal = 1,
    Fifo = 2,
    Delay = 3,
    Transaction = 4,
}

/// <summary>What a producer asks the broker to store. Front-ends build it from their wire format.</summary>
public sealed class MessageDraft
{
    public required string Topic { get; init; }
    /// <summary>The client's message id (RocketMQ UNIQ_KEY). Opaque; returned unchanged on delivery.</summary>
    public required string MessageId { get; init; }
    public string? Tag { get; init; }
    public IReadOnlyList<string> Keys { get; init; } = [];
    public IReadOnlyDictionary<string, string> Properties { get; init; } = EmptyProperties;
    public ReadOnlyMemory<byte> Body { get; init; }
    public long BornTimestampMs { get; init; }
    public string? BornHost { get; init; }
    /// <summary>FIFO message group (RocketMQ sharding key); messages of one group are delivered in order, one at a time per consumer group.</summary>
    public string? MessageGroup { get; init; }
    /// <summary>Deliver no earlier than this time (Unix ms). Null = now.</summary>
    public long? DeliveryTimestampMs { get; init; }
    /// <summary>A queue the client asked for; null or negative lets the broker pick. A queue the topic does not have is
    /// refused (<see cref="BrokerStatus.BadRequest"/>). A Remoting send names its queue (RocketMQ 4's
    /// MessageQueueSelector orders by it); a gRPC send never does (its queue_id is not read, as the Apache proxy does).</summary>
    public int? QueueId { get; init; }
    /// <summary>RocketMQ 4's user flag (Java's <c>Message.getFlag()</c>), given back as it was sent; 0 for none and for
    /// every gRPC message, whose protocol has no such field.</summary>
    public int Flag { get; init; }

    public static readonly IReadOnlyDictionary<string, string> EmptyProperties = new Dictionary<string, string>();
}

/// <summary>A message as stored and delivered.</summary>
public sealed class StoredMessage
{
    public required string Topic { get; init; }
    public int QueueId { get; init; }
    public long QueueOffset { get; init; }
    public required string MessageId { get; init; }
    public string? TransactionId { get; init; }
    public string? Tag { get; init; }
    public IReadOnlyList<string> Keys { get; init; } = [];
    public IReadOnlyDictionary<string, string> Properties { get; init; } = MessageDraft.EmptyProperties;
    public ReadOnlyMemory<byte> Body { get; init; }
    public long BornTimestampMs { get; init; }
    public string? BornHost { get; init; }
    public long StoreTimestampMs { get; init; }
    public string? MessageGroup { get; init; }
    public long? DeliveryTimestampMs { get; init; }
    public MessageKind Kind { get; init; }
    /// <summary>For a dead-lettered copy: the topic it came from.</summary>
    public string? OriginalTopic { get; init; }
    /// <summary>RocketMQ 4's user flag (<see cref="MessageDraft.Flag"/>); 0 for none.</summary>
    public int Flag { get; init; }
}

/// <summary>A message handed to a consumer: the message plus its lease.</summary>
public sealed class DeliveredMessage
{
    public required StoredMessage Message { get; init; }
    public required string ReceiptHandle { get; init; }
    /// <summary>1 on first delivery, +1 on each redelivery.</summary>
    public int DeliveryAttempt { get; init; }
    public long InvisibleUntilMs { get; init; }
}

public readonly record struct SendResult(BrokerError Error, string MessageId, int QueueId, long QueueOffset)
{
    public bool IsOk => Error.IsOk;
    /// <summary>Log address of the stored record (RocketMQ's commit log offset, for the offset msg id), also of a delayed
    /// message, which has no queue position yet; -1 when not stored or not known.</summary>
    public long LogAddress { get; init; } = -1;
}

public readonly record struct SendHalfResult(BrokerError Error, string MessageId, string TransactionId)
{
    public bool IsOk => Error.IsOk;
}

public enum TransactionResolution : byte
{
    Unknown = 0,
    Commit = 1,
    Rollback = 2,
}

/// <summary>Who decided: the producer on its own, the producer answering a check-back, or an operator.</summary>
public enum DecisionSource : byte
{
    Client = 1,
    CheckBack = 2,
    Operator = 3,
}

/// <summary>One half for <c>BrokerEngine.SendHalvesAsync</c>: what <c>SendHalfAsync</c> takes.</summary>
public sealed record HalfDraft(MessageDraft Message, string ProducerGroup, string? ClientId, TimeSpan? CheckImmunity);

/// <summary>One decision for <c>BrokerEngine.EndTransactionsAsync</c>: what <c>EndTransactionAsync</c> takes, plus the
/// W3C trace parent the caller's request carried (null for none) and the topic the caller names the half's (null for
/// none: RocketMQ 4's END_TRANSACTION and an operator carry none). A named topic must be the half's own, as stored
/// (a gRPC namespace's <c>&lt;ns&gt;%&lt;name&gt;</c>), or the decision finds no half: so a client of one namespace cannot
/// decide another namespace's transaction. A caller in a namespace that names no topic gives its namespace's prefix
/// (<c>&lt;ns&gt;%</c>) as <paramref name="TopicPrefix"/>: the half's topic must begin with it. A transaction already
/// decided is told only to a caller of its namespace: <paramref name="Namespace"/> when given ("" for none; RocketMQ 4's
/// END_TRANSACTION gives its producer group's), else the named topic's or the prefix's; with none of them, any.</summary>
// CheckToken: the check token of the half a check-back answer is for, as the check carried it (CheckBackRequest.CheckToken;
// the Remoting tranStateTableOffset), or null when the answer carries none (older or other clients, a producer's own
// decision): an answer naming another half of the id is refused.
public readonly record struct DecisionRequest(string TransactionId, string? MessageId, TransactionResolution Resolution, DecisionSource Source,
    string? TraceParent = null, string? Topic = null, string? TopicPrefix = null, string? Namespace = null, long? CheckToken = null);

public readonly record struct DecisionResult(BrokerError Error, TransactionResolution Outcome, bool WasDuplicate)
{
    public bool IsOk => Error.IsOk;
}

/// <summary>What a half message's transaction needs to identify it to a producer during a check-back.</summary>
public sealed class CheckBackRequest
{
    public required string TransactionId { get; init; }
    public required string ProducerGroup { get; init; }
    public required StoredMessage HalfMessage { get; init; }
    /// <summary>How many checks were issued for this half, including this one.</summary>
    public int CheckNumber { get; init; }
    /// <summary>Names this half, not its id (the address it was stored at; never changed by retention): a front-end
    /// sends it in a field the producer echoes in its answer, and passes the echo back as
    /// <see cref="DecisionRequest.CheckToken"/>. -1 when not known.</summary>
    public long CheckToken { get; init; } = -1;
    /// <summary>When the half's previous check was sent (0 for none): what the half's last check time goes back to if
    /// this one is given back unwritten (<see cref="BrokerEngine.ReturnUnsentChecksAsync(string, IReadOnlyList{CheckBackRequest}, CancellationToken)"/>).</summary>
    public long PreviousCheckAtMs { get; init; }
    /// <summary>Names this check in this process (from 1, set by the check pass; 0 for none): a check given back unwritten
    /// is undone only while it is its half's last sent one (<see cref="BrokerEngine.ReturnUnsentChecksAsync(string, IReadOnlyList{CheckBackRequest}, CancellationToken)"/>).</summary>
    public long Sequence { get; init; }
}

public sealed record ReceiveRequest
{
    public required string ConsumerGroup { get; init; }
    public required string Topic { get; init; }
    /// <summary>Tag expression: <c>*</c>, empty, or <c>TagA || TagB</c>.</summary>
    public string? TagExpression { get; init; }
    /// <summary>
    /// An SQL92 property filter (gRPC <c>FilterType.SQL</c>), parsed by the caller, besides the tag expression (a caller
    /// gives one or the other). The properties are not in the engine's queue index, so messages are leased as usual,
    /// read, and those that do not match are settled for the group (acknowledged by the broker, never delivered to it).
    /// </summary>
    public Delivery.SqlFilter? SqlFilter { get; init; }
    public int BatchSize { get; init; } = 32;
    public TimeSpan InvisibleDuration { get; init; } = TimeSpan.FromSeconds(60);
    /// <summary>How long to wait for a message when none is available. Zero = return at once.</summary>
    public TimeSpan LongPollTimeout { get; init; }
    /// <summary>The consumer's client id where the protocol tells it (gRPC); shown in a message's delivery history.</summary>
    public string? ClientId { get; init; }
    /// <summary>
    /// A push consumer's receive (gRPC <c>auto_renew</c>): the broker extends each lease at its expiry while the
    /// client (<see cref="ClientId"/>) stays active, up to <see cref="CoreOptions.MaxAutoRenew"/>, as RocketMQ's proxy
    /// does. The client acks with the receipt handle it got; a ChangeInvisibleDuration (a nack) ends the renewal.
    /// </summary>
    public bool AutoRenew { get; init; }
    /// <summary>
    /// Room for the answer, asked before each message is leased with the size of its stored record. A message it
    /// refuses is not leased, nor anything after it; a receive refused before its first message returns
    /// <see cref="BrokerStatus.TooManyRequests"/> at once instead of long-polling (the caller waits for room).
    /// Null: no bound but <see cref="CoreOptions.ReceiveByteBudget"/>. Called under the engine's lock: must not block.
    /// </summary>
    public IDeliveryAllowance? Allowance { get; init; }
    /// <summary>
    /// The broker's own re-drive, reading a dead-letter topic with its cursor (<see cref="BrokerEngine.IsInternalGroup"/>).
    /// Only the engine sets it: a client's receive under a cursor's name is refused, because cursors are not counted
    /// toward <see cref="CoreOptions.MaxConsumerGroups"/> and a cursor's progress records which dead letters were put back.
    /// </summary>
    internal bool RedriveCursor { get; init; }
    /// <summary>
    /// A re-drive's continuation (<see cref="BrokerEngine.RedriveDeadLettersAsync"/>): expired leases are offered again
    /// only while the next in line was leased before this lease id; the ones after it (the letters the earlier calls of
    /// the same re-drive left) wait for a re-drive without one. Null: every expired lease is offered, as for a client.
    /// </summary>
    internal long? RedriveLeasedBefore { get; init; }
}

/// <summary>Bytes a receive's caller can still hold for its answer (see <see cref="ReceiveRequest.Allowance"/>).</summary>
public interface IDeliveryAllowance
{
    /// <summary>Takes room for <paramref name="bytes"/> more; false (nothing taken) when there is none.</summary>
    bool TryTake(long bytes);

    /// <summary>Gives back room taken for a message that is not in the answer after all (an SQL filter rejected it once
    /// it was read). Called outside the engine's lock.</summary>
    void Return(long bytes);
}

public readonly record struct ReceiveResult(BrokerError Error, IReadOnlyList<DeliveredMessage> Messages)
{
    public bool IsOk => Error.IsOk;

    /// <summary>For a re-drive's receive (<see cref="ReceiveRequest.RedriveCursor"/>) only: the messages it leased but
    /// could not read (a damaged record), each as its queue offset and receipt handle. A client's receive leaves them
    /// leased for their invisible duration; the re-drive counts them as not re-driven and releases them.</summary>
    internal IReadOnlyList<(long Offset, string ReceiptHandle)>? Unreadable { get; init; }
}

public readonly record struct ChangeInvisibleResult(BrokerError Error, string? ReceiptHandle, long InvisibleUntilMs)
{
    public bool IsOk => Error.IsOk;
}
