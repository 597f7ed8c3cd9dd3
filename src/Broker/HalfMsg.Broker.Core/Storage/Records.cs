using HalfMsg.Broker.Core.Model;

namespace HalfMsg.Broker.Core.Storage;

// One type per record kind. Each has its payload layout drawn above it (after the 8-byte envelope of RecordHeader),
// exactly one Write and exactly one Read, so a field is added in one place and the compiler checks the rest.
// Notation: vi = zig-zag LEB128 varint (i32/i64), u = unsigned LEB128, s = string (u length+1, 0 = null, UTF-8),
// b = byte, B = byte string (u length + bytes). Reads throw InvalidDataException on truncation BEFORE the caller
// applies anything: a damaged record changes no state.

/// <summary>
/// The fields every stored message body shares (MessageStored and HalfStored end with them).
/// <code>
/// s topic | s messageId | s tag | u nKeys, nKeys × s | u nProps, nProps × (s key, s value) | vi bornMs | s bornHost
/// | vi storeMs | s messageGroup | vi deliverAtMs (0 = none) | B body
/// </code>
/// Keys, properties and body are kept as raw slices: replay only needs the header fields and never copies a body.
/// A message's RocketMQ 4 user flag (<see cref="MessageDraft.Flag"/>), when not 0, is one more property under
/// <see cref="FlagProperty"/>: records without it (all written before 2026-12-06) read as flag 0, and the layout is
/// unchanged, so no new record version is needed.
/// </summary>
public ref struct MessageFields
{
    /// <summary>
    /// The property that holds the flag in the record. No client can send this name: a RocketMQ 4 properties string
    /// cannot carry \u0001 in a key (it separates a name from its value) and gRPC refuses keys with control characters.
    /// Taken out of the properties when the record is read back (<see cref="Properties(out int)"/>), so no reader of
    /// <see cref="StoredMessage.Properties"/> (consumers of either protocol, the admin API, the dashboard) sees it.
    /// </summary>
    public const string FlagProperty = "\u0001FLAG";

    public string Topic;
    public string MessageId;
    public string? Tag;
    public ReadOnlySpan<byte> KeysRaw;
    public ReadOnlySpan<byte> PropertiesRaw;
    public long BornMs;
    public string? BornHost;
    public long StoreMs;
    public string? MessageGroup;
    public long DeliverAtMs;
    public ReadOnlySpan<byte> Body;

    public static void Write(RecordWriter w, MessageDraft m, long storeMs)
        => w.Str(m.Topic).Str(m.MessageId).Str(m.Tag).StrList(m.Keys)
            .StrMap(m.Properties, FlagProperty, m.Flag != 0 ? m.Flag.ToString(System.Globalization.CultureInfo.InvariantCulture) : null)
            .I64(m.BornTimestampMs).Str(m.BornHost)
            .I64(storeMs).Str(m.MessageGroup).I64(m.DeliveryTimestampMs ?? 0).Bytes(m.Body.Span);

    public static MessageFields Read(scoped ref RecordReader r)
    {
        var f = new MessageFields { Topic = r.Str() ?? throw Bad("topic"), MessageId = r.Str() ?? throw Bad("message id"), Tag = r.Str() };
        f.KeysRaw = r.SkipStrList();
        f.PropertiesRaw = r.SkipStrMap();
        f.BornMs = r.I64();
        f.BornHost = r.Str();
        f.StoreMs = r.I64();
        f.MessageGroup = r.Str();
        f.DeliverAtMs = r.I64();
        f.Body = r.Bytes();
        return f;
    }

    public readonly IReadOnlyList<string> Keys()
    {
        var r = new RecordReader(KeysRaw);
        return r.StrList();
    }

    /// <summary>The properties, without <see cref="FlagProperty"/>.</summary>
    public readonly IReadOnlyDictionary<string, string> Properties() => Properties(out _);

    /// <summary>The properties, without <see cref="FlagProperty"/>, and the flag it held (0 when none).</summary>
    public readonly IReadOnlyDictionary<string, string> Properties(out int flag)
    {
        var r = new RecordReader(PropertiesRaw);
        var map = r.StrMap();
        flag = 0;
        if (map is Dictionary<string, string> own && own.Remove(FlagProperty, out var value))
        {
            int.TryParse(value, System.Globalization.NumberStyles.Integer, System.Globalization.CultureInfo.InvariantCulture, out flag);
            if (own.Count == 0) return MessageDraft.EmptyProperties;
        }
        return map;
    }

    private static InvalidDataException Bad(string field) => new($"stored message has no {field}");
}

/// <summary>A topic was created. <code>s topic | vi queueCount</code></summary>
public readonly record struct TopicCreatedRecord(string Topic, int Queues)
{
    public void Write(RecordWriter w) => w.Begin(RecordKind.TopicCreated).Str(Topic).I32(Queues);
    public static TopicCreatedRecord Read(scoped ref RecordReader r)
    {
        string topic = r.Str() ?? throw new InvalidDataException("topic is null");
        int queues = r.I32();
        if (queues is < 1 or > 1024) throw new InvalidDataException($"queue count {queues} is out of range");
        return new(topic, queues);
    }
}

/// <summary>
/// An existing topic now has <see cref="Queues"/> queues, more than before (mqadmin updateTopic, the admin API): the
/// queues it had keep their entries, the new ones start empty. <code>s topic | vi queueCount</code>
/// A kind of its own rather than a second <see cref="TopicCreatedRecord"/>: a TopicCreated for a topic that exists is
/// passed over (by builds before this record, silently), while a broker that does not know this kind reports the
/// record as damaged where it stands, before the first message of a new queue fails to apply.
/// </summary>
public readonly record struct TopicQueuesGrownRecord(string Topic, int Queues)
{
    public void Write(RecordWriter w) => w.Begin(RecordKind.TopicQueuesGrown).Str(Topic).I32(Queues);
    public static TopicQueuesGrownRecord Read(scoped ref RecordReader r)
    {
        string topic = r.Str() ?? throw new InvalidDataException("topic is null");
        int queues = r.I32();
        if (queues is < 2 or > 1024) throw new InvalidDataException($"queue count {queues} is out of range");
        return new(topic, queues);
    }
}

/// <summary>
/// A normal, FIFO or delay message. Offset -1 = delayed (waits in the delay index, queued by a later QueueEntryAdded).
/// <code>
/// vi queueId | vi offset | vi previousAddress (legacy, always -1) | b kind | s transactionId | s queueTopic (legacy, null)
/// | vi requestedQueue | MessageFields
/// </code>
/// </summary>
public ref struct MessageStoredRecord
{
    public int QueueId;
    public long Offset;
    public MessageKind Kind;
    public string? TransactionId;
    public int RequestedQueue;
    public MessageFields Message;

    public static void Write(RecordWriter w, int queueId, long offset, MessageKind kind, int requestedQueue, MessageDraft m, long storeMs)
        => WriteFields(w.Begin(RecordKind.MessageStored), queueId, offset, kind, requestedQueue, m, storeMs);

    /// <summary>The payload alone (also the tail of <see cref="RedrivenStoredRecord"/>).</summary>
    internal static void WriteFields(RecordWriter w, int queueId, long offset, MessageKind kind, int requestedQueue, MessageDraft m, long storeMs)
    {
        w.I32(queueId).I64(offset).I64(-1).Byte((byte)kind).Str(null).Str(null).I32(requestedQueue);
        MessageFields.Write(w, m, storeMs);
    }

    public static MessageStoredRecord Read(scoped ref RecordReader r)
    {
        var rec = new MessageStoredRecord { QueueId = r.I32(), Offset = r.I64() };
        long previous = r.I64();
        rec.Kind = (MessageKind)r.Byte();
        rec.TransactionId = r.Str();
        string? queueTopic = r.Str();
        // Version 1 retention re-appended bodies as MessageStored with a previous address; BodyRelocated replaced it.
        if (previous != -1 || queueTopic is not null) throw new InvalidDataException("legacy relocated MessageStored record");
        rec.RequestedQueue = r.I32();
        rec.Message = MessageFields.Read(ref r);
        return rec;
    }
}

/// <summary>
/// A half (prepared) message.
/// <code>
/// s transactionId | s producerGroup | s originClientId | vi checkImmunityMs | vi checkCount | vi nextCheckAtMs
/// | b parked | vi requestedQueue | MessageFields
/// </code>
/// </summary>
public ref struct HalfStoredRecord
{
    public string TransactionId;
    public string ProducerGroup;
    public string? OriginClientId;
    public long CheckImmunityMs;
    public int CheckCount;
    public long NextCheckAtMs;
    public bool Parked;
    public int RequestedQueue;
    public MessageFields Message;

    public static void Write(RecordWriter w, string txId, string producerGroup, string? clientId, long immunityMs, int requestedQueue, MessageDraft m, long storeMs)
    {
        w.Begin(RecordKind.HalfStored).Str(txId).Str(producerGroup).Str(clientId).I64(immunityMs).I32(0).I64(0).Bool(false).I32(requestedQueue);
        MessageFields.Write(w, m, storeMs);
    }

    public static HalfStoredRecord Read(scoped ref RecordReader r) => new()
    {
        TransactionId = r.Str() ?? throw new InvalidDataException("transaction id is null"),
        ProducerGroup = r.Str() ?? throw new InvalidDataException("producer group is null"),
        OriginClientId = r.Str(),
        CheckImmunityMs = r.I64(),
        CheckCount = r.I32(),
        NextCheckAtMs = r.I64(),
        Parked = r.Bool(),
        RequestedQueue = r.I32(),
        Message = MessageFields.Read(ref r),
    };
}

/// <summary>
/// Commit or rollback. A commit due now carries the queue position it takes (explicit, never derived on replay);
/// queue -1 = rollback, or a commit whose delivery time lies ahead (it enters the delay index).
/// <code>s transactionId | b resolution | b source | vi atMs | vi queueId | vi offset [| s namespace]</code>
/// <para><c>namespace</c>, the namespace of the half's topic ("" for none), is written since the afternoon session of
/// 2026-12-07, at the end, so builds before read the record as before: a replay that no longer has the half (the log
/// alone after a retention cut took its record) still remembers the decision in its namespace, as the live broker
/// did. Null in records written before (the decision's namespace is then not known, as one loaded from a checkpoint
/// written before decisions kept it).</para>
/// </summary>
public readonly record struct TxDecidedRecord(string TransactionId, TransactionResolution Resolution, DecisionSource Source, long AtMs, int QueueId, long Offset,
    string? Namespace = null)
{
    public void Write(RecordWriter w)
    {
        var fields = w.Begin(RecordKind.TxDecided).Str(TransactionId).Byte((byte)Resolution).Byte((byte)Source).I64(AtMs).I32(QueueId).I64(Offset);
        if (Namespace is not null) fields.Str(Namespace);
    }

    public static TxDecidedRecord Read(scoped ref RecordReader r)
    {
        var rec = new TxDecidedRecord(r.Str() ?? throw new InvalidDataException("transaction id is null"), (TransactionResolution)r.Byte(), (DecisionSource)r.Byte(), r.I64(), r.I32(), r.I64(),
            r.End ? null : r.Str() ?? throw new InvalidDataException("namespace is null"));
        if (rec.Resolution is not (TransactionResolution.Commit or TransactionResolution.Rollback)) throw new InvalidDataException($"resolution {rec.Resolution} is not a decision");
        return rec;
    }
}

/// <summary>A check-back was sent. <code>s transactionId | vi checkCount | vi atMs | vi nextCheckAtMs</code></summary>
public readonly record struct TxCheckedRecord(string TransactionId, int CheckCount, long AtMs, long NextCheckAtMs)
{
    public void Write(RecordWriter w) => w.Begin(RecordKind.TxChecked).Str(TransactionId).I32(CheckCount).I64(AtMs).I64(NextCheckAtMs);
    public static TxCheckedRecord Read(scoped ref RecordReader r) => new(r.Str() ?? throw new InvalidDataException("transaction id is null"), r.I32(), r.I64(), r.I64());
}

/// <summary>The half reached the check limit. <code>s transactionId | vi atMs | vi offset in TRANS_CHECK_MAX_TIME_TOPIC</code></summary>
public readonly record struct TxParkedRecord(string TransactionId, long AtMs, long SystemOffset)
{
    public void Write(RecordWriter w) => w.Begin(RecordKind.TxParked).Str(TransactionId).I64(AtMs).I64(SystemOffset);
    public static TxParkedRecord Read(scoped ref RecordReader r) => new(r.Str() ?? throw new InvalidDataException("transaction id is null"), r.I64(), r.I64());
}

/// <summary>An operator resumed checks. <code>s transactionId | vi atMs</code></summary>
public readonly record struct TxResumedRecord(string TransactionId, long AtMs)
{
    public void Write(RecordWriter w) => w.Begin(RecordKind.TxResumed).Str(TransactionId).I64(AtMs);
    public static TxResumedRecord Read(scoped ref RecordReader r) => new(r.Str() ?? throw new InvalidDataException("transaction id is null"), r.I64());
}

/// <summary>A lease was handed out. <code>s group | s topic | vi queueId | vi offset | vi attempt | vi invisibleUntilMs | vi leaseId</code></summary>
/// <remarks>
/// Attempt <see cref="PassedOverAttempt"/> (0; a delivery's attempts start at 1), with UntilMs and LeaseId 0: not a
/// delivery, but an offset a group served by message group passed over because its FIFO message group was in flight
/// (since 2026-12-07). Like a delivery it finishes the offsets the group passed before it (filtered out), and takes the
/// group's position past it, but it leaves the offset itself waiting (<see cref="GroupQueueState.PassedOver"/>), so a
/// later delivery of the queue does not finish it on replay. A build before it reads the record as a delivery whose
/// lease has already ended: the message is delivered again, never lost.
/// </remarks>
public readonly record struct DeliveredRecord(string Group, string Topic, int QueueId, long Offset, int Attempt, long UntilMs, long LeaseId)
{
    /// <summary>The attempt of a record that passes an offset over (see the remarks).</summary>
    public const int PassedOverAttempt = 0;

    /// <summary>The record that passes over (group, topic, queue, offset): see the remarks.</summary>
    public static DeliveredRecord PassedOver(string group, string topic, int queueId, long offset) => new(group, topic, queueId, offset, PassedOverAttempt, 0, 0);

    public bool IsPassedOver => Attempt == PassedOverAttempt;

    public void Write(RecordWriter w) => w.Begin(RecordKind.Delivered).Str(Group).Str(Topic).I32(QueueId).I64(Offset).I32(Attempt).I64(UntilMs).I64(LeaseId);
    public static DeliveredRecord Read(scoped ref RecordReader r) => new(ReadName(ref r), ReadName(ref r), r.I32(), r.I64(), r.I32(), r.I64(), r.I64());
    internal static string ReadName(scoped ref RecordReader r) => r.Str() ?? throw new InvalidDataException("name is null");
}

/// <summary>
/// A consumer acknowledged. <code>s group | s topic | vi queueId | vi offset</code>
/// With <paramref name="FilteredOut"/> (<see cref="RecordHeader.FilteredOutFlag"/> in the envelope, the payload
/// unchanged): an SQL-filtered receive settled a message that does not match the group's expression, never handed out.
/// Applied as any ack; only the message index tells it apart. The flag is in the envelope so that a version before it
/// (2026-12-06), which ignores the flags, reads the record as the plain ack it wrote before.
/// </summary>
public readonly record struct AckedRecord(string Group, string Topic, int QueueId, long Offset, bool FilteredOut = false)
{
    public void Write(RecordWriter w)
        => w.Begin(RecordKind.Acked, FilteredOut ? RecordHeader.FilteredOutFlag : (ushort)0).Str(Group).Str(Topic).I32(QueueId).I64(Offset);
    public static AckedRecord Read(scoped ref RecordReader r) => new(DeliveredRecord.ReadName(ref r), DeliveredRecord.ReadName(ref r), r.I32(), r.I64());
}

/// <summary>A lease changed. <code>s group | s topic | vi queueId | vi offset | vi invisibleUntilMs | vi leaseId</code></summary>
public readonly record struct InvisibilityChangedRecord(string Group, string Topic, int QueueId, long Offset, long UntilMs, long LeaseId)
{
    public void Write(RecordWriter w) => w.Begin(RecordKind.InvisibilityChanged).Str(Group).Str(Topic).I32(QueueId).I64(Offset).I64(UntilMs).I64(LeaseId);
    public static InvisibilityChangedRecord Read(scoped ref RecordReader r) => new(DeliveredRecord.ReadName(ref r), DeliveredRecord.ReadName(ref r), r.I32(), r.I64(), r.I64(), r.I64());
}

/// <summary>
/// A message left a group for <c>%DLQ%group</c>. <code>s group | s topic | vi queueId | vi offset | vi dlqOffset [| vi atMs]</code>
/// <para><c>atMs</c>, when the message entered the dead-letter topic (its search by time goes by it, as Apache's by a dead
/// letter's own store time), is written since late on 2026-12-06, at the end, so builds before read the record as before;
/// null in records written before.</para>
/// </summary>
public readonly record struct DeadLetteredRecord(string Group, string Topic, int QueueId, long Offset, long DlqOffset, long? AtMs = null)
{
    public void Write(RecordWriter w)
    {
        var fields = w.Begin(RecordKind.DeadLettered).Str(Group).Str(Topic).I32(QueueId).I64(Offset).I64(DlqOffset);
        if (AtMs is { } at) fields.I64(at);
    }

    public static DeadLetteredRecord Read(scoped ref RecordReader r) => new(DeliveredRecord.ReadName(ref r), DeliveredRecord.ReadName(ref r), r.I32(), r.I64(), r.I64(),
        r.End ? null : r.I64());
}

/// <summary>
/// An existing body entered a queue (delay release).
/// <code>vi bodyAddress | s topic | vi queueId | vi offset | s tag | s messageGroup [| vi atMs [| vi committedAt]]</code>
/// <para><c>atMs</c>, when the release put the message into its queue (its search by time goes by it: a release can come
/// well after the due time, when the sweeper is behind or the broker was down then), is written since 2026-12-07, at the
/// end, so builds before read the record as before (they stop before it); null in records written before, whose search
/// falls back to the due time.</para>
/// <para><c>committedAt</c>, for the release of a committed delayed transactional message, the address of its commit's
/// record (since later on 2026-12-07, after <c>atMs</c>, which every release writes; builds before stop before it): a
/// replay of the log alone that no longer holds the commit (a retention cut passed it, not the release) knows the entry
/// is a released committed message (DelayIndex.NoteReleasedCommit), as the live broker and a checkpoint do. Null
/// otherwise, and in records written before.</para>
/// </summary>
public readonly record struct QueueEntryAddedRecord(long BodyAddress, string Topic, int QueueId, long Offset, string? Tag, string? MessageGroup, long? AtMs = null,
    long? CommittedAt = null)
{
    public void Write(RecordWriter w)
    {
        var fields = w.Begin(RecordKind.QueueEntryAdded).I64(BodyAddress).Str(Topic).I32(QueueId).I64(Offset).Str(Tag).Str(MessageGroup);
        if (AtMs is { } at)
        {
            fields.I64(at);
            if (CommittedAt is { } committed) fields.I64(committed);
        }
    }

    public static QueueEntryAddedRecord Read(scoped ref RecordReader r)
    {
        var rec = new QueueEntryAddedRecord(r.I64(), DeliveredRecord.ReadName(ref r), r.I32(), r.I64(), r.Str(), r.Str());
        if (r.End) return rec;
        long at = r.I64();
        return rec with { AtMs = at, CommittedAt = r.End ? null : r.I64() };
    }
}

/// <summary>
/// A re-drive put a lease group's dead letter back onto the topic it left, as a new entry for that group only: the
/// group receives it as a new message (delivery attempt 1), other groups and pulls pass over it. The entry points at
/// the dead letter's body, so nothing is copied. The message id and time are for the message index.
/// <code>
/// vi bodyAddress | vi size | s topic | vi queueId | vi offset | s tag | s messageGroup | s group | s messageId | vi atMs
/// </code>
/// </summary>
public readonly record struct RedrivenRecord(long BodyAddress, int Size, string Topic, int QueueId, long Offset, string? Tag, string? MessageGroup,
    string Group, string MessageId, long AtMs)
{
    public void Write(RecordWriter w) => WriteFields(w.Begin(RecordKind.Redriven));

    /// <summary>The payload alone (also the head of <see cref="RedrivenAckedRecord"/>).</summary>
    internal RecordWriter WriteFields(RecordWriter w) => w.I64(BodyAddress).I32(Size).Str(Topic).I32(QueueId).I64(Offset).Str(Tag)
        .Str(MessageGroup).Str(Group).Str(MessageId).I64(AtMs);

    public static RedrivenRecord Read(scoped ref RecordReader r) => new(r.I64(), r.I32(), DeliveredRecord.ReadName(ref r), r.I32(), r.I64(), r.Str(), r.Str(),
        DeliveredRecord.ReadName(ref r), DeliveredRecord.ReadName(ref r), r.I64());
}

/// <summary>
/// The acknowledgements a re-drive's put-back carries in its own record (<see cref="RedrivenAckedRecord"/>,
/// <see cref="RedrivenStoredRecord"/>): the dead letter at <c>deadLetterTopic/queueId/offset</c> is acknowledged for
/// the re-drive cursor that leased it and finished for its sibling cursor (null: the sibling's name would be too long,
/// so there is none), each as an <see cref="AckedRecord"/> would.
/// <code>s cursor | s sibling (null = none) | s deadLetterTopic | vi queueId | vi offset</code>
/// </summary>
public readonly record struct RedriveAcks(string Cursor, string? Sibling, string DeadLetterTopic, int QueueId, long Offset)
{
    public RecordWriter Write(RecordWriter w) => w.Str(Cursor).Str(Sibling).Str(DeadLetterTopic).I32(QueueId).I64(Offset);

    public static RedriveAcks Read(scoped ref RecordReader r)
        => new(DeliveredRecord.ReadName(ref r), r.Str(), DeliveredRecord.ReadName(ref r), r.I32(), r.I64());

    public AckedRecord CursorAck => new(Cursor, DeadLetterTopic, QueueId, Offset);
    public AckedRecord? SiblingAck => Sibling is null ? null : new AckedRecord(Sibling, DeadLetterTopic, QueueId, Offset);
}

/// <summary>
/// A re-drive put a lease group's dead letter back onto its topic (as <see cref="RedrivenRecord"/>) and acknowledged it
/// in the dead-letter topic for the cursor and its sibling (<see cref="RedriveAcks"/>), in one record, so that a crash
/// keeps all of it or none: as separate records, a crash could keep the put-back without the acknowledgements, and the
/// next re-drive put the dead letter back a second time. (Logs written before this record existed hold the separate
/// records; replay reads them as before.)
/// <code>RedrivenRecord payload | RedriveAcks</code>
/// </summary>
public readonly record struct RedrivenAckedRecord(RedrivenRecord Put, RedriveAcks Acks)
{
    public void Write(RecordWriter w) => Acks.Write(Put.WriteFields(w.Begin(RecordKind.RedrivenAcked)));

    public static RedrivenAckedRecord Read(scoped ref RecordReader r)
    {
        var put = RedrivenRecord.Read(ref r);
        return new(put, RedriveAcks.Read(ref r));
    }
}

/// <summary>
/// A re-drive stored a Remoting consumer's dead letter again in its group's retry topic (a message body, as
/// <see cref="MessageStoredRecord"/>) and acknowledged it in the dead-letter topic for the cursor and its sibling
/// (<see cref="RedriveAcks"/>), in one record, for the same reason as <see cref="RedrivenAckedRecord"/>. Its address is
/// the stored message's body address, so every reader of bodies reads this kind too.
/// <code>RedriveAcks | MessageStoredRecord payload</code>
/// </summary>
public ref struct RedrivenStoredRecord
{
    public RedriveAcks Acks;
    public MessageStoredRecord Stored;

    public static void Write(RecordWriter w, RedriveAcks acks, int queueId, long offset, MessageKind kind, int requestedQueue, MessageDraft m, long storeMs)
        => MessageStoredRecord.WriteFields(acks.Write(w.Begin(RecordKind.RedrivenStored)), queueId, offset, kind, requestedQueue, m, storeMs);

    public static RedrivenStoredRecord Read(scoped ref RecordReader r)
    {
        var acks = RedriveAcks.Read(ref r);
        return new RedrivenStoredRecord { Acks = acks, Stored = MessageStoredRecord.Read(ref r) };
    }
}

/// <summary>
/// Retention moved a live body (a pending half, a delayed message, or a queue entry that entered its queue after the
/// cut point) from below the cut to the tail. The original record is carried whole, so a read of the new address
/// yields the same message; the record names every reference it moves, so replay and the live path update exactly
/// the same places.
/// <code>
/// vi previousAddress | s halfTransactionId (null = none) | b delayed | u n, n × (s topic, vi queueId, vi offset)
/// | B original record (envelope + payload, checksum included)
/// [ | vi sentAt | vi sendOrder | vi checkCount | vi lastCheckAtMs | vi nextCheckAtMs | b parked | vi parkedAtMs | n × vi visibleAt ]
/// </code>
/// <para>The trailing part (since the evening session of 2026-12-07; absent in records written before, which builds
/// before read without it): what the moved references held when the move was written (<see cref="RelocatedState"/>),
/// so that a replay of the log alone after a cut, which no longer has the original record nor the records after it
/// that the cut took (check-backs, parks, the commit that put a queue entry there), re-creates them as they were.</para>
/// </summary>
public ref struct BodyRelocatedRecord
{
    public long PreviousAddress;
    public string? HalfTransactionId;
    public bool Delayed;
    public List<(string Topic, int QueueId, long Offset)> QueueRefs;
    public ReadOnlySpan<byte> Original;
    /// <summary>Null in records written before the evening session of 2026-12-07.</summary>
    public RelocatedState? State;

    public static void Write(RecordWriter w, long previous, string? halfTx, bool delayed, IReadOnlyList<(string Topic, int QueueId, long Offset)> queueRefs, ReadOnlySpan<byte> original,
        RelocatedState? moved = null)
    {
        w.Begin(RecordKind.BodyRelocated).I64(previous).Str(halfTx).Bool(delayed).U64((ulong)queueRefs.Count);
        foreach (var (t, q, o) in queueRefs) w.Str(t).I32(q).I64(o);
        w.Bytes(original);
        if (moved is not { } state) return; // as written before the evening session of 2026-12-07 (tests write those)
        w.I64(state.SentAt).I64(state.SendOrder).I32(state.CheckCount).I64(state.LastCheckAtMs).I64(state.NextCheckAtMs).Bool(state.Parked).I64(state.ParkedAtMs);
        for (int i = 0; i < queueRefs.Count; i++) w.I64(state.VisibleAt is { } v && i < v.Length ? v[i] : -1);
    }

    public static BodyRelocatedRecord Read(scoped ref RecordReader r)
    {
        var rec = new BodyRelocatedRecord { PreviousAddress = r.I64(), HalfTransactionId = r.Str(), Delayed = r.Bool() };
        ulong n = r.U64();
        // Each reference takes at least 3 bytes: a count above that is damage (and must not size an allocation).
        if (n > 1_000_000 || n > (ulong)r.Remaining / 3) throw new InvalidDataException($"{n} queue references is implausible");
        rec.QueueRefs = new List<(string, int, long)>((int)n);
        for (ulong i = 0; i < n; i++) rec.QueueRefs.Add((DeliveredRecord.ReadName(ref r), r.I32(), r.I64()));
        rec.Original = r.Bytes();
        if (r.End) return rec;
        var state = new RelocatedState { SentAt = r.I64(), SendOrder = r.I64(), CheckCount = r.I32(), LastCheckAtMs = r.I64(), NextCheckAtMs = r.I64(), Parked = r.Bool(), ParkedAtMs = r.I64() };
        state.VisibleAt = new long[(int)n];
        for (int i = 0; i < (int)n; i++) state.VisibleAt[i] = r.I64();
        rec.State = state;
        return rec;
    }
}

/// <summary>
/// What the references a <see cref="BodyRelocatedRecord"/> moves held when it was written: the delayed message's
/// address sent at (its recall handle) and place in send order; the pending half's check-backs and park; the moment
/// each queue entry entered its queue (the record that put it there). A replay that has the state moves it and reads
/// none of this; a replay of the log alone after a cut re-creates what it lacks from it and the carried original.
/// </summary>
public struct RelocatedState
{
    public long SentAt;
    public long SendOrder;
    public int CheckCount;
    public long LastCheckAtMs;
    public long NextCheckAtMs;
    public bool Parked;
    public long ParkedAtMs;
    /// <summary>Per queue reference, in order: its entry's <c>VisibleAt</c> (-1 when not known).</summary>
    public long[]? VisibleAt;

    public RelocatedState() { SentAt = -1; SendOrder = -1; }
}

/// <summary>
/// A producer recalled a delay message (RocketMQ 5's RecallMessage) before its delivery time: it leaves the delay index
/// and is never delivered. It is named by the address it was sent at, which its recall handle carries and retention's
/// moves do not change (<see cref="DelayedEntry.SentAt"/>), and by its topic; the message id is for the record's reader.
/// A message stored more than once (a send retried, the same id and time) is recalled by one record for each copy.
/// <code>vi sentAt | s topic | s messageId | vi atMs | vi deliverAtMs</code>
/// <para><c>deliverAtMs</c>, the recalled message's delivery time (since the late-morning session of 2026-12-07, at the end,
/// so builds before read the record as before): the recall is remembered from the record alone, also when the message
/// it names is not there (a replay of the log alone after a retention cut took its body). A retention cut past the
/// record of a recall still remembered, or one whose dropped copies are still in the log, carries it forward: a record
/// of this kind again at the tail, naming the last dropped copy still in the log, or no address (-1) when there is
/// none (BrokerEngine.CarryRecallsBelowAsync). Null in records written before.</para>
/// </summary>
public readonly record struct DelayRecalledRecord(long SentAt, string Topic, string MessageId, long AtMs, long? DeliverAtMs = null)
{
    public void Write(RecordWriter w)
    {
        var fields = w.Begin(RecordKind.DelayRecalled).I64(SentAt).Str(Topic).Str(MessageId).I64(AtMs);
        if (DeliverAtMs is { } dueMs) fields.I64(dueMs);
    }

    public static DelayRecalledRecord Read(scoped ref RecordReader r)
    {
        var rec = new DelayRecalledRecord(r.I64(), DeliveredRecord.ReadName(ref r), r.Str() ?? throw new InvalidDataException("message id is null"), r.I64());
        return r.End ? rec : rec with { DeliverAtMs = r.I64() };
    }
}

/// <summary>An operator deleted a consumer group: its progress and leases are forgotten. <code>s group | vi atMs</code></summary>
public readonly record struct GroupDeletedRecord(string Group, long AtMs)
{
    public void Write(RecordWriter w) => w.Begin(RecordKind.GroupDeleted).Str(Group).I64(AtMs);
    public static GroupDeletedRecord Read(scoped ref RecordReader r) => new(DeliveredRecord.ReadName(ref r), r.I64());
}

/// <summary>
/// An operator set a consumer group's settings, whole: each record replaces what the group had (no flag set: back to
/// the broker's defaults). <see cref="GroupDeletedRecord"/> clears them too. <code>s group | b flags | vi atMs</code>
/// The flags byte leaves room for later settings: <see cref="OrderlyFlag"/> and <see cref="ConcurrentFlag"/> are the
/// order mode (at most one); a reader refuses a record with a flag it does not know rather than drop a setting.
/// </summary>
public readonly record struct GroupConfiguredRecord(string Group, byte Flags, long AtMs)
{
    public const byte OrderlyFlag = 0x01;
    public const byte ConcurrentFlag = 0x02;
    private const byte KnownFlags = OrderlyFlag | ConcurrentFlag;

    public GroupConfiguredRecord(string group, GroupOrder order, long atMs) : this(group, FlagsOf(order), atMs) { }

    public GroupOrder Order => (Flags & OrderlyFlag) != 0 ? GroupOrder.Orderly : (Flags & ConcurrentFlag) != 0 ? GroupOrder.Concurrent : GroupOrder.NotConfigured;

    public static byte FlagsOf(GroupOrder order) => order switch
    {
        GroupOrder.Orderly => OrderlyFlag,
        GroupOrder.Concurrent => ConcurrentFlag,
        _ => 0,
    };

    public void Write(RecordWriter w) => w.Begin(RecordKind.GroupConfigured).Str(Group).Byte(Flags).I64(AtMs);

    public static GroupConfiguredRecord Read(scoped ref RecordReader r)
    {
        string group = DeliveredRecord.ReadName(ref r);
        byte flags = r.Byte();
        if (FlagsError(flags) is { } bad) throw new InvalidDataException(bad);
        return new(group, flags, r.I64());
    }

    /// <summary>Why <paramref name="flags"/> cannot be a group's settings, or null when they can.</summary>
    public static string? FlagsError(byte flags)
        => (flags & ~KnownFlags) != 0 ? $"group settings flags 0x{flags:X2} name a setting this broker does not know"
            : flags == KnownFlags ? "a group cannot be both orderly and concurrent" : null;
}

/// <summary>
/// Retention cut the log before <see cref="Boundary"/>. Appending it and waiting for it to be durable is what makes
/// the new begin address durable (FasterLog persists the begin with a commit). Replay ignores the cut itself: the state
/// effect of a cut is a function of the log's begin address (ExpireBelow).
/// <code>
/// vi boundary | vi atMs
/// [| u n | n × (u keyHigh | u keyLow | b resolution | vi address | vi decidedAtMs | s namespace)
///  [| u m | m × (s topic | u queues | queues × vi nextOffset)
///   [| u k | k × (s group | s topic | vi queueId | vi offset)]]]
/// </code>
/// <para>The trailing lists (since the afternoon session of 2026-12-07; absent in records written before, and in the
/// record of the cut itself) carry to the tail, before a cut at <see cref="Boundary"/>, what the live broker holds and a
/// replay of the log alone after the cut would otherwise lose with the records the cut takes (in records of this kind,
/// a bounded number of items each, written before the cut's checkpoint; BrokerEngine.CarryDecisionsBelowAsync and
/// CarryPositionsAsync): the decided transaction ids still remembered whose records lie below the boundary
/// (<see cref="CarriedDecision"/>); every topic's queue count and each queue's next offset
/// (<see cref="CarriedTopic"/>), so a topic every record of which the cut took keeps its queues and positions; every
/// pull group's committed offsets. Each list is there when a later one is (empty when it carries nothing). Builds
/// before read the two fields and ignore the rest, as they ignore the record: a downgrade loses from the log alone
/// what those builds always lost.</para>
/// <para>Since the evening session of 2026-12-07 each record that carries lists is written twice, one after the other
/// in the same hold of the engine lock, the second with <see cref="RecordHeader.CarriedCopyFlag"/> in the envelope (the
/// payload the same): a damaged record (a flipped byte) no longer loses what it carried, replay takes the intact copy.
/// Both are durable before the cut acts (the cut's first checkpoint commits the log past them). The items stay carried
/// by the first copy, so a later cut carries them again as soon as either copy would fall below it. Builds before
/// read the copy as a second carrying record of the same values (idempotent).</para>
/// </summary>
public readonly record struct LogCutRecord(long Boundary, long AtMs, IReadOnlyList<CarriedDecision>? Decisions = null,
    IReadOnlyList<CarriedTopic>? Topics = null, IReadOnlyList<ConsumerOffsetCommittedRecord>? PullOffsets = null)
{
    /// <summary>At most this many decisions in one record: with a namespace of up to 127 bytes each, well below
    /// <see cref="RecordLimits.MaxMetadataBytes"/>.</summary>
    public const int MaxDecisions = 256;

    public void Write(RecordWriter w) => Write(w, copy: false);

    /// <summary>Writes the record, or with <paramref name="copy"/> its second copy (<see cref="RecordHeader.CarriedCopyFlag"/>).</summary>
    public void Write(RecordWriter w, bool copy)
    {
        var fields = w.Begin(RecordKind.LogCut, copy ? RecordHeader.CarriedCopyFlag : (ushort)0).I64(Boundary).I64(AtMs);
        if (Decisions is null && Topics is null && PullOffsets is null) return;
        fields.U64((ulong)(Decisions?.Count ?? 0));
        foreach (var d in Decisions ?? [])
            fields.U64((ulong)(d.Key >> 64)).U64((ulong)d.Key).Byte((byte)d.Resolution).I64(d.Address).I64(d.AtMs).Str(d.Namespace);
        if (Topics is null && PullOffsets is null) return;
        fields.U64((ulong)(Topics?.Count ?? 0));
        foreach (var t in Topics ?? [])
        {
            fields.Str(t.Topic).U64((ulong)t.NextOffsets.Length);
            foreach (long next in t.NextOffsets) fields.I64(next);
        }
        if (PullOffsets is null) return;
        fields.U64((ulong)PullOffsets.Count);
        foreach (var o in PullOffsets) fields.Str(o.Group).Str(o.Topic).I32(o.QueueId).I64(o.Offset);
    }

    public static LogCutRecord Read(scoped ref RecordReader r)
    {
        var rec = new LogCutRecord(r.I64(), r.I64());
        if (r.End) return rec;
        ulong n = r.U64();
        // Each decision takes at least 6 bytes: a count above that is damage (and must not size an allocation).
        if (n > (ulong)r.Remaining / 6) throw new InvalidDataException($"{n} carried decisions is implausible");
        var decisions = new CarriedDecision[(int)n];
        for (int i = 0; i < decisions.Length; i++)
        {
            var key = new UInt128(r.U64(), r.U64());
            var resolution = (TransactionResolution)r.Byte();
            if (resolution is not (TransactionResolution.Commit or TransactionResolution.Rollback)) throw new InvalidDataException($"resolution {resolution} is not a decision");
            decisions[i] = new CarriedDecision(key, resolution, r.I64(), r.I64(), r.Str());
        }
        rec = rec with { Decisions = decisions };
        if (r.End) return rec;
        ulong m = r.U64();
        // Each topic takes at least 2 bytes (an empty name, no queues), each pull offset 4.
        if (m > (ulong)r.Remaining / 2) throw new InvalidDataException($"{m} carried topics is implausible");
        var topics = new CarriedTopic[(int)m];
        for (int i = 0; i < topics.Length; i++)
        {
            string topic = DeliveredRecord.ReadName(ref r);
            ulong queues = r.U64();
            if (queues is < 1 or > 1024 || queues > (ulong)r.Remaining) throw new InvalidDataException($"queue count {queues} of carried topic '{topic}' is out of range");
            var next = new long[(int)queues];
            for (int q = 0; q < next.Length; q++)
                if ((next[q] = r.I64()) < 0) throw new InvalidDataException($"next offset {next[q]} of carried topic '{topic}' is negative");
            topics[i] = new CarriedTopic(topic, next);
        }
        rec = rec with { Topics = topics };
        if (r.End) return rec;
        ulong k = r.U64();
        if (k > (ulong)r.Remaining / 4) throw new InvalidDataException($"{k} carried pull offsets is implausible");
        var offsets = new ConsumerOffsetCommittedRecord[(int)k];
        for (int i = 0; i < offsets.Length; i++)
            offsets[i] = new ConsumerOffsetCommittedRecord(DeliveredRecord.ReadName(ref r), DeliveredRecord.ReadName(ref r), r.I32(), r.I64());
        return rec with { PullOffsets = offsets };
    }
}

/// <summary>A topic's queue count (the length) and each queue's next offset, carried by a <see cref="LogCutRecord"/>.</summary>
public sealed record CarriedTopic(string Topic, long[] NextOffsets);

/// <summary>
/// A decided transaction id as the live broker remembers it (Transactions.DecidedIndex: the digest of the id, not the
/// id), carried by a <see cref="LogCutRecord"/>: its decision's record's address and time, and the namespace of its
/// half's topic ("" for none, null when not known).
/// </summary>
public readonly record struct CarriedDecision(UInt128 Key, TransactionResolution Resolution, long Address, long AtMs, string? Namespace);

/// <summary>A pull (Remoting) consumer group committed its offset on a queue. <code>s group | s topic | vi queueId | vi offset</code></summary>
public readonly record struct ConsumerOffsetCommittedRecord(string Group, string Topic, int QueueId, long Offset)
{
    public void Write(RecordWriter w) => w.Begin(RecordKind.ConsumerOffsetCommitted).Str(Group).Str(Topic).I32(QueueId).I64(Offset);
    public static ConsumerOffsetCommittedRecord Read(scoped ref RecordReader r) => new(DeliveredRecord.ReadName(ref r), DeliveredRecord.ReadName(ref r), r.I32(), r.I64());
}

/// <summary>An operator deleted a topic: its queues, groups, pull offsets and delayed messages go. <code>s topic</code></summary>
public readonly record struct TopicDeletedRecord(string Topic)
{
    public void Write(RecordWriter w) => w.Begin(RecordKind.TopicDeleted).Str(Topic);
    public static TopicDeletedRecord Read(scoped ref RecordReader r) => new(DeliveredRecord.ReadName(ref r));
}

/// <summary>
/// A consumer group was created on a topic at chosen start offsets, one per queue (everything below is finished for
/// it). <code>s group | s topic | u n | n × vi startOffset</code>
/// </summary>
public readonly record struct GroupStartedRecord(string Group, string Topic, long[] StartOffsets)
{
    public void Write(RecordWriter w)
    {
        w.Begin(RecordKind.GroupStarted).Str(Group).Str(Topic).U64((ulong)StartOffsets.Length);
        foreach (long o in StartOffsets) w.I64(o);
    }

    public static GroupStartedRecord Read(scoped ref RecordReader r)
    {
        string group = DeliveredRecord.ReadName(ref r), topic = DeliveredRecord.ReadName(ref r);
        ulong n = r.U64();
        if (n > 1024 || n > (ulong)r.Remaining) throw new InvalidDataException($"{n} queues is implausible");
        var offsets = new long[n];
        for (int i = 0; i < offsets.Length; i++) offsets[i] = r.I64();
        return new(group, topic, offsets);
    }
}

/// <summary>
/// An operator reset a consumer group on a topic: it is forgotten (as <see cref="GroupDeletedRecord"/>) and started
/// again at chosen offsets, one per queue (as <see cref="GroupStartedRecord"/>), in one record, so that a crash keeps
/// both or neither. (Logs written before this record existed hold the two records instead; replay reads them as before.)
/// <code>s group | s topic | vi atMs | u n | n × vi startOffset</code>
/// </summary>
public readonly record struct GroupResetRecord(string Group, string Topic, long AtMs, long[] StartOffsets)
{
    public void Write(RecordWriter w)
    {
        w.Begin(RecordKind.GroupReset).Str(Group).Str(Topic).I64(AtMs).U64((ulong)StartOffsets.Length);
        foreach (long o in StartOffsets) w.I64(o);
    }

    public static GroupResetRecord Read(scoped ref RecordReader r)
    {
        string group = DeliveredRecord.ReadName(ref r), topic = DeliveredRecord.ReadName(ref r);
        long atMs = r.I64();
        ulong n = r.U64();
        if (n > 1024 || n > (ulong)r.Remaining) throw new InvalidDataException($"{n} queues is implausible");
        var offsets = new long[n];
        for (int i = 0; i < offsets.Length; i++) offsets[i] = r.I64();
        return new(group, topic, atMs, offsets);
    }

    public GroupDeletedRecord Deleted => new(Group, AtMs);
    public GroupStartedRecord Started => new(Group, Topic, StartOffsets);
}
