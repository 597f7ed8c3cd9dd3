using System.Numerics;
using HalfMsg.Broker.Core.Retention;

namespace HalfMsg.Broker.Core.Delivery;

/// <summary>
/// Owner of messages waiting for their delivery time (delay messages and committed delayed transactions), keyed by
/// the address of their body, with their due times. Guarded by the engine lock.
/// </summary>
/// <remarks>
/// Nothing here grows by copying all of it under the lock: the entries are split by their address's hash into
/// <see cref="Shards"/> tables (<see cref="ShardedTable{TKey, TValue, TShard}"/>, as the pending halves are), and the due times are a heap in segments
/// (<see cref="SegmentedHeap{T}"/>). With one table and a <see cref="PriorityQueue{TElement, TPriority}"/>, each
/// doubling copied every delayed message in one hold of the engine lock.
/// </remarks>
internal sealed class DelayIndex
{
    internal const int Shards = ShardedTable<long, DelayedEntry, ByAddress>.Shards;

    private readonly ShardedTable<long, DelayedEntry, ByAddress> _byBody = new();
    private readonly SegmentedHeap<DelayedEntry, DueKey> _due = new();
    // The same entries by the block of the log their body lies in: a retention cut visits only those below it.
    private readonly AddressBlocks<DelayedEntry> _byBlock = new();
    // And by topic, each topic's linked through the entries (PrevOfTopic, NextOfTopic) from its newest: a topic's
    // delete visits only its own. Until 2026-12-06 it looked at every delayed message of every topic in one hold of the
    // engine lock: with 1,000,000 delayed messages in another topic, the delete of a topic held it 65-270 ms (found by
    // review, measured on the 2-core test machine). Links, not a table per topic: nothing grows by copying.
    private readonly Dictionary<string, DelayedEntry> _newestOfTopic = new(StringComparer.Ordinal);
    // The entries retention moved (BodyAddress != SentAt), by the address they were sent at: a recall handle names that
    // address, and finds a moved message here. Sharded like the main table, as every delayed message may be moved.
    private readonly ShardedTable<long, DelayedEntry, ByAddress> _movedBySentAt = new();
    // And by the key of a recall's copies (CopyKey: topic, delivery time and id hash), each key's linked through the
    // entries (PrevCopy, NextCopy) from its newest: a recall finds the other stored copies of its message (a send retried
    // after a timeout stores it again, with the same id and time) among those of its key, without visiting the others.
    // Until 2026-12-06 the list was keyed by delivery time alone: with 1,000,000 messages due at one millisecond (a
    // campaign for midnight), every recall of one of them walked all of them, every topic's, in one hold of the engine
    // lock, 177 ms (found by review, on the 2-core test machine). Only entries a recall record can name (SentAt >= 0) are
    // listed. Sharded, as every delayed message may have a key of its own.
    private readonly ShardedTable<long, DelayedEntry, ByAddress> _newestOfCopyKey = new();

    // Addresses are record starts (multiples of 8, and spaced by record sizes): the high bits of a Fibonacci hash mix
    // them evenly over the tables. They mix the copies' keys (CopyKey) as well.
    private struct ByAddress : IShardOf<long>
    {
        public static int ShardOf(long bodyAddress) => (int)(((ulong)bodyAddress * 0x9E3779B97F4A7C15UL) >> 58);
    }

    // The recalls remembered until their delivery time (tombstones): a copy of a recalled message stored after its
    // recall (a producer's send retried after the recall, or retried because its answer was lost) is dropped as it is
    // stored, never delivered. Apache's timer does the same with the delete marker a recall puts in the time's slot: at
    // the slot's time it drops every message of that topic and id found there, stored before the recall or after.
    // Keyed by topic, delivery time and id, spread over the tables as the copies' keys are (CopyKey); each leaves at its
    // delivery time (ForgetRecallsDue), in the order of a heap of their times. Until 2026-12-06 a recall took out only
    // the copies waiting when it ran, and a send retried after it was delivered (found by review).
    private readonly ShardedTable<RecallKey, RecallKey, ByRecall> _recalled = new(); // each its own value: a checkpoint copies the values
    private readonly SegmentedHeap<RecallKey> _recalledDue = new();

    /// <summary>A remembered recall: the topic, delivery time and id of the message it took out.</summary>
    internal readonly record struct RecallKey(string Topic, long DeliverAtMs, string MessageId);

    // The recalled messages whose bodies are still in the log, each with the highest address a body of it was stored
    // at (the body when it was recalled, wherever retention had moved it, or a copy dropped later): a read or send-back
    // by offset (VIEW_MESSAGE_BY_ID, CONSUMER_SEND_MSG_BACK with the producer's offsetMsgId) of any of them is refused
    // for as long as it can be read, not only until the recall's delivery time (_recalled above). Until 2026-12-07 a
    // recalled message past its time was copied into the group's retry topic by a send-back of its address and
    // delivered from there (found by review). Keyed as the recalls are, not by address: every body of the message (the
    // one it was sent at, those retention moved it to before its recall, copies dropped after it) is one entry, found
    // by the fields its record holds. Each leaves once a retention cut has passed all of them (ForgetRecalledBodiesBelow),
    // in the order of a heap of their highest addresses (an entry raised by a later copy leaves a stale heap entry,
    // skipped). Bounded by the retained log: one entry per recall whose record and body are still in it (copies of
    // one message raise its entry, they add none). A recalled body is never moved: it is not live.
    private readonly ShardedTable<RecallKey, RecalledBodies, ByRecall> _recalledBodies = new();
    private readonly SegmentedHeap<RecallKey> _recalledBodiesUpTo = new();

    /// <summary>A recalled message whose bodies are still in the log: the highest address one of them lies at.</summary>
    internal readonly record struct RecalledBodies(RecallKey Key, long UpTo);

    // The releases of committed delayed transactional messages (no address sent at), by the address of the body the
    // release put into a queue (the address the message is delivered with): the entry a release puts into a queue enters
    // at the release's record, not at the commit's, and a read or send-back by offset of that body finds the entry through
    // it. Until 2026-12-07 such a message, once released, read as no message by the offset it was delivered with, and a
    // consumer's send-back of it was refused (found by review). Keyed by the body, not by the commit's record: that was
    // found only through the commit's decision, which is forgotten after DecisionRetention (1 h) or past
    // MaxRememberedDecisions, long before a delay of up to MaxDelay (3 days) ends; such a message read as no message from
    // its delivery on (found by review, 2026-12-07). Each leaves once a retention cut passes its release (its queue entry
    // expires with it), in release order (releases are appended in log order, so the heap's top is the oldest).
    private readonly ShardedTable<long, ReleasedCommit, ByAddress> _releasedCommits = new();

    /// <summary>The release of a committed delayed transactional message: its commit's record, its release's, and the
    /// body the release put into a queue.</summary>
    internal readonly record struct ReleasedCommit(long DecidedAt, long ReleasedAt, long BodyAddress);
    private readonly SegmentedHeap<long> _releasedCommitsOrder = new();

    /// <summary>Remembers that the committed delayed transactional message whose commit's record is at
    /// <paramref name="decidedAt"/> was released with its body at <paramref name="bodyAddress"/> by the record at
    /// <paramref name="releasedAt"/>.</summary>
    public void NoteReleasedCommit(long decidedAt, long releasedAt, long bodyAddress)
    {
        ref var known = ref _releasedCommits.GetValueRefOrAddDefault(bodyAddress, out bool exists);
        if (exists && known.ReleasedAt >= releasedAt) return;
        known = new ReleasedCommit(decidedAt, releasedAt, bodyAddress);
        _releasedCommitsOrder.Enqueue(bodyAddress, releasedAt);
    }

    /// <summary>The release's record of the committed delayed transactional message released with its body at
    /// <paramref name="bodyAddress"/>.</summary>
    public bool TryGetReleasedCommit(long bodyAddress, out long releasedAt)
    {
        bool found = _releasedCommits.TryGetValue(bodyAddress, out var known);
        releasedAt = known.ReleasedAt;
        return found;
    }

    /// <summary>A retention cut moved the body of the queue entry a release put into a queue from
    /// <paramref name="previous"/> to <paramref name="address"/>: the release is found by where it lies now (the old
    /// place reads as no message, as a moved committed message's without a delay does).</summary>
    public void MoveReleasedCommit(long previous, long address)
    {
        if (_releasedCommits.Count == 0 || !_releasedCommits.Remove(previous, out var known)) return;
        // The heap's entry of the old place is left stale (ForgetReleasedCommitsBelow skips it).
        NoteReleasedCommit(known.DecidedAt, known.ReleasedAt, address);
    }

    /// <summary>Releases of committed delayed transactional messages remembered (for tests).</summary>
    internal int ReleasedCommitsCount => _releasedCommits.Count;

    /// <summary>Forgets the releases below <paramref name="begin"/> (a retention cut's boundary: their entries expired with it).</summary>
    public void ForgetReleasedCommitsBelow(long begin)
    {
        while (_releasedCommitsOrder.TryPeek(out long bodyAddress, out long releasedAt) && releasedAt < begin)
        {
            _releasedCommitsOrder.Dequeue();
            if (_releasedCommits.TryGetValue(bodyAddress, out var known) && known.ReleasedAt < begin) _releasedCommits.Remove(bodyAddress, out _);
        }
    }

    /// <summary>The releases of committed delayed transactional messages of one table: a checkpoint copies them table by table.</summary>
    public ReleasedCommit[] SnapshotReleasedCommitsShard(int shard) => _releasedCommits.SnapshotShard(shard);

    private struct ByRecall : IShardOf<RecallKey>
    {
        public static int ShardOf(RecallKey key) => ByAddress.ShardOf(CopyKey(key.Topic, key.DeliverAtMs, DelayedEntry.HashOfId(key.MessageId)));
    }

    /// <summary>
    /// A delayed message's place in the due-time heap: its delivery time, then its place in send order
    /// (<see cref="DelayedEntry.SendOrder"/>). Until 2026-12-07 the heap was keyed on the time alone, and messages due at
    /// the same millisecond came out in no particular order: a FIFO message group's, sent one after another with one
    /// delivery time, entered their queue, and were delivered, out of the order they were sent in (found by review).
    /// The send order is an address no retention move changes, kept in the checkpoint: the order is the same after a
    /// restart, whether the heap is rebuilt from the log or from a checkpoint.
    /// </summary>
    internal readonly record struct DueKey(long AtMs, long SendOrder) : IComparisonOperators<DueKey, DueKey, bool>
    {
        public static bool operator <(DueKey a, DueKey b) => a.AtMs < b.AtMs || (a.AtMs == b.AtMs && a.SendOrder < b.SendOrder);
        public static bool operator >(DueKey a, DueKey b) => b < a;
        public static bool operator <=(DueKey a, DueKey b) => !(b < a);
        public static bool operator >=(DueKey a, DueKey b) => !(a < b);
    }

    /// <summary>The engine's sweeper, told of each delivery time (none in tests that build this alone).</summary>
    internal SweepAlarm? Alarm;

    /// <summary>The earliest delivery time in the heap (its entry may be stale), or of a remembered recall (the sweeper
    /// forgets it then), or <see cref="long.MaxValue"/>.</summary>
    public long NextDueMs => Math.Min(_due.TryPeek(out _, out var at) ? at.AtMs : long.MaxValue,
        _recalledDue.TryPeek(out _, out long recall) && recall <= KeepRecallsDueAfterMs ? recall : long.MaxValue); // one kept is the capture's end's

    /// <summary>Delayed messages.</summary>
    public int Count => _byBody.Count;
    /// <summary>The most entries any one table holds (for tests: the tables fill evenly).</summary>
    internal int LargestShard => _byBody.LargestShard;
    /// <summary>Entries in the due-time heap, stale ones included.</summary>
    internal int DueCount => _due.Count;
    public IEnumerable<DelayedEntry> All => _byBody.Values;
    public bool Contains(long bodyAddress) => _byBody.ContainsKey(bodyAddress);
    /// <summary>The delayed message whose body is at <paramref name="bodyAddress"/>.</summary>
    public bool TryGet(long bodyAddress, out DelayedEntry entry) => _byBody.TryGetValue(bodyAddress, out entry!);

    /// <summary>The entries whose body may lie below <paramref name="boundary"/> (a retention cut's), without visiting the others.</summary>
    public IEnumerable<DelayedEntry> InBlocksBelow(long boundary) => _byBlock.InBlocksBelow(boundary);

    public void Add(DelayedEntry entry)
    {
        ref var slot = ref _byBody.GetValueRefOrAddDefault(entry.BodyAddress, out bool replacing);
        if (replacing)
        {
            _byBlock.Remove(slot!.BodyAddress, slot);
            Unlink(slot);
            ForgetMove(slot);
        }
        slot = entry;
        _byBlock.Add(entry.BodyAddress, entry);
        Link(entry);
        NoteMove(entry);
        _due.Enqueue(entry, new DueKey(entry.DeliverAtMs, entry.SendOrder));
        Alarm?.Note(entry.DeliverAtMs);
        if (replacing) DropStaleEntriesIfMost(); // the one it replaced is stale
    }

    public bool Remove(long bodyAddress, out DelayedEntry entry)
    {
        if (!_byBody.Remove(bodyAddress, out entry)) return false;
        _byBlock.Remove(bodyAddress, entry);
        Unlink(entry);
        ForgetMove(entry);
        DropStaleEntriesIfMost();
        return true;
    }

    /// <summary>Removes the delayed messages of <paramref name="topic"/> (its delete), looking at no other; returns how many.</summary>
    public int RemoveTopic(string topic)
    {
        int removed = 0;
        while (_newestOfTopic.TryGetValue(topic, out var newest))
        {
            // An entry another took the address of (a Move onto a live address, not expected) is only unlinked: removing
            // by its address would remove the other, and this loop would never end, under the engine lock.
            if (IsLive(newest)) Remove(newest.BodyAddress, out _);
            else Unlink(newest);
            removed++;
        }
        return removed;
    }

    /// <summary>
    /// The delay message sent as the record at <paramref name="sentAt"/> (what its recall handle names), wherever
    /// retention has moved its body since, while it waits; false once it was released, recalled or dropped.
    /// </summary>
    public bool TryGetSentAt(long sentAt, out DelayedEntry entry)
    {
        if (sentAt >= 0 && _byBody.TryGetValue(sentAt, out entry!) && entry.SentAt == sentAt) return true;
        return _movedBySentAt.TryGetValue(sentAt, out entry!) && IsLive(entry);
    }

    /// <summary>
    /// Adds to <paramref name="into"/> the address sent at of each waiting delay message of
    /// <paramref name="topic"/> due at <paramref name="dueMs"/> that may be stored with <paramref name="messageId"/>,
    /// but for the one sent at <paramref name="exceptSentAt"/>: the other copies a recall of that one takes out. Only
    /// those with the id's hash (<see cref="DelayedEntry.IdHash"/>), and those whose hash is not known, of that topic and
    /// time are visited; the caller reads their bodies (a hash matches other ids too). A committed delayed transaction
    /// message (no address sent at) is never one: no recall record can name it.
    /// </summary>
    public void CopiesDueAt(string topic, long dueMs, long exceptSentAt, string messageId, List<long> into)
    {
        CopiesVisited = 0;
        WalkCopies(topic, dueMs, exceptSentAt, messageId, into);
    }

    /// <summary>Whether <see cref="CopiesDueAt"/> (with no address left out) would list anything: stops at the first.</summary>
    public bool AnyCopyDueAt(string topic, long dueMs, string messageId) => WalkCopies(topic, dueMs, -1, messageId, into: null);

    /// <summary>The walk of <see cref="CopiesDueAt"/>: adds each copy to <paramref name="into"/>, or, without a list,
    /// answers true at the first.</summary>
    private bool WalkCopies(string topic, long dueMs, long exceptSentAt, string messageId, List<long>? into)
    {
        int idHash = DelayedEntry.HashOfId(messageId);
        foreach (int hash in (ReadOnlySpan<int>)[idHash, DelayedEntry.UnknownIdHash])
        {
            for (var e = _newestOfCopyKey.TryGetValue(CopyKey(topic, dueMs, hash), out var newest) ? newest : null; e is not null; e = e.NextCopy)
            {
                if (into is not null) CopiesVisited++;
                // A key names other topics, times and hashes too, seldom (it is their hash).
                if (e.SentAt == exceptSentAt || e.IdHash != hash || e.DeliverAtMs != dueMs
                    || !string.Equals(e.Topic, topic, StringComparison.Ordinal) || !IsLive(e)) continue;
                if (into is null) return true;
                into.Add(e.SentAt);
            }
        }
        return false;
    }

    /// <summary>
    /// The id of the waiting delay message sent at <paramref name="sentAt"/>, read from its body by a recall, when its
    /// hash was not known (it was read from a checkpoint written before the hash was kept): it is listed under its hash
    /// from now on, so its body is read once, not by every recall of its topic and time.
    /// </summary>
    public void NoteIdOf(long sentAt, string messageId)
    {
        if (!TryGetSentAt(sentAt, out var entry) || entry.IdHash != DelayedEntry.UnknownIdHash) return;
        UnlinkCopy(entry);
        entry.IdHash = DelayedEntry.HashOfId(messageId);
        LinkCopy(entry);
    }

    /// <summary>The entries the last <see cref="CopiesDueAt"/> looked at (for tests).</summary>
    internal int CopiesVisited { get; private set; }

    /// <summary>Delayed messages listed under the copies' key of <paramref name="topic"/>, <paramref name="dueMs"/> and
    /// <paramref name="idHash"/> (for tests: walks its list).</summary>
    internal int CountOfCopyKey(string topic, long dueMs, int idHash)
    {
        int n = 0;
        for (var e = _newestOfCopyKey.TryGetValue(CopyKey(topic, dueMs, idHash), out var newest) ? newest : null; e is not null; e = e.NextCopy) n++;
        return n;
    }

    // The copies' key: the topic's hash and the id's, side by side, mixed with the delivery time. Within one topic and
    // time each id hash has a key of its own; other topics and times share one by chance alone (entries are told apart
    // by their fields). The topic's hash is the string's, which differs from run to run: the key is in memory only.
    private static long CopyKey(string topic, long dueMs, int idHash) =>
        (long)((((ulong)(uint)StringComparer.Ordinal.GetHashCode(topic) << 32) | (uint)idHash) ^ ((ulong)dueMs * 0x9E3779B97F4A7C15UL));

    /// <summary>Recalls remembered (<see cref="RememberRecall"/>).</summary>
    public int RecallCount => _recalled.Count;

    /// <summary>True when the message <paramref name="messageId"/> of <paramref name="topic"/> due at
    /// <paramref name="dueMs"/> was recalled and its time has not been swept past: a copy stored now is dropped.</summary>
    public bool IsRecalled(string topic, long dueMs, string messageId)
        // Asked for every delay message stored: with nothing recalled (the usual case) no key is hashed.
        => _recalled.Count != 0 && _recalled.ContainsKey(new RecallKey(topic, dueMs, messageId));

    /// <summary>Recalled messages whose bodies are still in the log (<see cref="NoteRecalledBody"/>).</summary>
    public int RecalledBodiesCount => _recalledBodies.Count;

    /// <summary>
    /// True when the message <paramref name="messageId"/> of <paramref name="topic"/> stored to wait for
    /// <paramref name="dueMs"/> was recalled (or dropped as a copy of a recalled one): its body must read as no message,
    /// before its time and after it, until retention cuts it. Only a message stored to wait for its time is asked about:
    /// one sent for a time already past is delivered at once, whatever was recalled.
    /// </summary>
    public bool IsRecalledMessage(string topic, long dueMs, string messageId)
    {
        if (_recalled.Count == 0 && _recalledBodies.Count == 0) return false;
        var key = new RecallKey(topic, dueMs, messageId);
        return _recalled.ContainsKey(key) || _recalledBodies.ContainsKey(key);
    }

    /// <summary>Remembers that a body of the recalled message <paramref name="topic"/>, <paramref name="dueMs"/>,
    /// <paramref name="messageId"/> lies at <paramref name="address"/> (or below), until retention cuts past it.</summary>
    public void NoteRecalledBody(string topic, long dueMs, string messageId, long address)
    {
        var key = new RecallKey(topic, dueMs, messageId);
        ref var known = ref _recalledBodies.GetValueRefOrAddDefault(key, out bool exists);
        if (exists)
        {
            if (known.UpTo >= address) return;
            key = known.Key; // its strings shared
        }
        else if (_recalled.TryGetValue(key, out var recalled)) key = recalled; // the remembered recall's strings shared
        known = new RecalledBodies(key, address);
        _recalledBodiesUpTo.Enqueue(key, address);
    }

    /// <summary>Forgets the recalled messages all of whose bodies lie below <paramref name="begin"/> (a retention cut's
    /// boundary: they can no longer be read); returns how many.</summary>
    public int ForgetRecalledBodiesBelow(long begin)
    {
        int forgotten = 0;
        while (_recalledBodiesUpTo.TryPeek(out var key, out long upTo) && upTo < begin)
        {
            _recalledBodiesUpTo.Dequeue();
            // Stale when a later copy raised it: that one's heap entry decides.
            if (_recalledBodies.TryGetValue(key, out var known) && known.UpTo < begin && _recalledBodies.Remove(key, out _)) forgotten++;
        }
        return forgotten;
    }

    /// <summary>The recalled messages whose bodies are still in the log, of one table: a checkpoint copies them table by table.</summary>
    public RecalledBodies[] SnapshotRecalledBodiesShard(int shard) => _recalledBodies.SnapshotShard(shard);

    // The address of each recall's last record in the log (DelayRecalled, the copies' included), by the recall's key, and
    // a heap of those addresses: a retention cut past the last record of a recall still remembered (its time ahead), or
    // of one whose dropped copies are still in the log, carries it forward (BrokerEngine.CarryRecallsBelowAsync), so a
    // replay of the log alone still drops a copy stored after the recall. Until the late-morning session of 2026-12-07 such a
    // replay took the copy for a waiting message and delivered it (left by the review of the morning session). An entry
    // leaves once a cut passes its record and the recall needs no carrying (ForgetRecallRecordsBelow): bounded by the
    // retained log's recall records and the recalls carried (remembered ones, and those with bodies in the log). A
    // recall read from a checkpoint written before the addresses were kept has address 0: the next cut carries it if it
    // needs it. An entry a later record raised leaves a stale heap entry, skipped.
    private readonly ShardedTable<RecallKey, RecallRecord, ByRecall> _recallRecords = new();
    private readonly SegmentedHeap<RecallKey> _recallRecordsOrder = new();

    /// <summary>A recall's last record in the log.</summary>
    internal readonly record struct RecallRecord(RecallKey Key, long At);

    /// <summary>A recall to carry forward: its key, and the address its new record names (the last dropped copy still in
    /// the log above the cut, or -1).</summary>
    internal readonly record struct RecallToCarry(RecallKey Key, long SentAt);

    /// <summary>Recalls whose last record's address is kept (for tests).</summary>
    internal int RecallRecordsCount => _recallRecords.Count;

    /// <summary>Notes that a record of the recall <paramref name="topic"/>, <paramref name="dueMs"/>,
    /// <paramref name="messageId"/> lies at <paramref name="address"/> (0: somewhere the caller does not know, at or
    /// after the log's begin).</summary>
    public void NoteRecallRecord(string topic, long dueMs, string messageId, long address)
    {
        var key = new RecallKey(topic, dueMs, messageId);
        ref var known = ref _recallRecords.GetValueRefOrAddDefault(key, out bool exists);
        if (exists)
        {
            if (known.At >= address) return;
            key = known.Key; // its strings shared
        }
        else if (_recalled.TryGetValue(key, out var recalled)) key = recalled; // the remembered recall's strings shared
        else if (_recalledBodies.TryGetValue(key, out var bodies)) key = bodies.Key;
        known = new RecallRecord(key, address);
        _recallRecordsOrder.Enqueue(key, address);
    }

    /// <summary>The address of the last record of the recall <paramref name="key"/>, or 0 when it is not known.</summary>
    public long RecallRecordAt(RecallKey key) => _recallRecords.TryGetValue(key, out var known) ? known.At : 0;

    /// <summary>
    /// The recalls whose last record lies below <paramref name="boundary"/> (a retention cut's) and that must outlive it,
    /// at most <paramref name="max"/> of them into <paramref name="into"/> (null: only whether there is one): remembered
    /// ones (a copy stored later is dropped), and those with a dropped copy at or above the boundary (a replay of the log
    /// alone would otherwise take it for a waiting message). The others below the boundary are forgotten on the way:
    /// nothing is left to carry. Each recall taken leaves the heap; its carried record puts it back at its new address.
    /// </summary>
    public bool TakeRecallsToCarry(long boundary, int max, List<RecallToCarry>? into)
    {
        int taken = 0;
        while (_recallRecordsOrder.TryPeek(out var key, out long at) && at < boundary)
        {
            if (!_recallRecords.TryGetValue(key, out var known) || known.At != at)
            {
                _recallRecordsOrder.Dequeue(); // stale: a later record of the recall decides
                continue;
            }
            bool remembered = _recalled.ContainsKey(key);
            long copyAt = _recalledBodies.TryGetValue(key, out var bodies) && bodies.UpTo >= boundary ? bodies.UpTo : -1;
            if (!remembered && copyAt < 0)
            {
                _recallRecordsOrder.Dequeue();
                _recallRecords.Remove(key, out _);
                continue;
            }
            if (into is null) return true;
            if (taken == max) return true;
            _recallRecordsOrder.Dequeue();
            into.Add(new RecallToCarry(known.Key, copyAt));
            taken++;
        }
        return taken > 0;
    }

    /// <summary>Forgets the recalls whose last record lies below <paramref name="begin"/> (the log's begin, after a cut or
    /// at the end of recovery) and that need no carrying; those that do stay for the next cut.</summary>
    public void ForgetRecallRecordsBelow(long begin) => TakeRecallsToCarry(begin, 0, into: null);

    /// <summary>Remembers a recall until its delivery time; false when it was remembered already.</summary>
    public bool RememberRecall(string topic, long dueMs, string messageId)
    {
        var key = new RecallKey(topic, dueMs, messageId);
        ref var known = ref _recalled.GetValueRefOrAddDefault(key, out bool exists);
        if (exists) return false;
        known = key;
        _recalledDue.Enqueue(key, dueMs);
        Alarm?.Note(dueMs);
        return true;
    }

    /// <summary>
    /// While a checkpoint captures, the recalls due after the time it started at (its replay start's) are kept past their
    /// time: a copy stored after that start replays over the file, and is dropped only if the file has its recall. A
    /// copy waits only for a time after it was stored, so a recall due before the start matches none of those. Without
    /// this, a recall forgotten at its time during a long capture was missing from the file, and a copy stored after the
    /// start (dropped live) was delivered after a restart. <see cref="long.MaxValue"/> when no capture runs.
    /// </summary>
    public long KeepRecallsDueAfterMs
    {
        get => _keepRecallsDueAfterMs;
        set
        {
            _keepRecallsDueAfterMs = value;
            // The capture ended: the recalls it kept past their time are forgotten by the next sweep.
            if (value == long.MaxValue && _recalledDue.TryPeek(out _, out long at)) Alarm?.Note(at);
        }
    }
    private long _keepRecallsDueAfterMs = long.MaxValue;

    /// <summary>Forgets at most <paramref name="max"/> recalls whose delivery time has come (nothing can be stored for
    /// it any more: a message due then is not delayed); returns how many.</summary>
    public int ForgetRecallsDue(long nowMs, int max)
    {
        long upTo = Math.Min(nowMs, KeepRecallsDueAfterMs);
        int forgotten = 0;
        while (forgotten < max && _recalledDue.TryPeek(out var key, out long at) && at <= upTo)
        {
            _recalledDue.Dequeue();
            _recalled.Remove(key, out _);
            forgotten++;
        }
        return forgotten;
    }

    /// <summary>The remembered recalls of one table: a checkpoint copies them table by table.</summary>
    public RecallKey[] SnapshotRecallShard(int shard) => _recalled.SnapshotShard(shard);

    /// <summary>Delayed messages retention moved, found by the address they were sent at (for tests).</summary>
    internal int MovedCount => _movedBySentAt.Count;

    private void NoteMove(DelayedEntry entry)
    {
        if (entry.SentAt >= 0 && entry.SentAt != entry.BodyAddress) _movedBySentAt.Set(entry.SentAt, entry);
    }

    private void ForgetMove(DelayedEntry entry)
    {
        if (entry.SentAt >= 0 && _movedBySentAt.TryGetValue(entry.SentAt, out var moved) && ReferenceEquals(moved, entry))
            _movedBySentAt.Remove(entry.SentAt, out _);
    }

    /// <summary>Delayed messages of <paramref name="topic"/> (for tests: walks its list).</summary>
    internal int CountOfTopic(string topic)
    {
        int n = 0;
        for (var e = _newestOfTopic.GetValueOrDefault(topic); e is not null; e = e.NextOfTopic) n++;
        return n;
    }

    // Links the entry into its topic's list and its copies' key's; Unlink takes it out of both.
    private void Link(DelayedEntry entry)
    {
        ref var newest = ref System.Runtime.InteropServices.CollectionsMarshal.GetValueRefOrAddDefault(_newestOfTopic, entry.Topic, out _);
        entry.PrevOfTopic = null;
        entry.NextOfTopic = newest;
        if (newest is not null) newest.PrevOfTopic = entry;
        newest = entry;
        LinkCopy(entry);
    }

    private void Unlink(DelayedEntry entry)
    {
        if (entry.PrevOfTopic is { } prev) prev.NextOfTopic = entry.NextOfTopic;
        else if (entry.NextOfTopic is { } next) _newestOfTopic[entry.Topic] = next;
        else _newestOfTopic.Remove(entry.Topic);
        if (entry.NextOfTopic is { } after) after.PrevOfTopic = entry.PrevOfTopic;
        entry.PrevOfTopic = entry.NextOfTopic = null;
        UnlinkCopy(entry);
    }

    // Topic, delivery time and id hash do not change while the entry is listed (NoteIdOf unlinks it first): Unlink finds
    // it under the key Link put it under.
    private void LinkCopy(DelayedEntry entry)
    {
        if (entry.SentAt < 0) return;
        ref var newest = ref _newestOfCopyKey.GetValueRefOrAddDefault(CopyKey(entry.Topic, entry.DeliverAtMs, entry.IdHash), out _);
        entry.PrevCopy = null;
        entry.NextCopy = newest;
        if (newest is not null) newest.PrevCopy = entry;
        newest = entry;
    }

    private void UnlinkCopy(DelayedEntry entry)
    {
        if (entry.SentAt < 0) return;
        if (entry.PrevCopy is { } prev) prev.NextCopy = entry.NextCopy;
        else
        {
            long key = CopyKey(entry.Topic, entry.DeliverAtMs, entry.IdHash);
            if (entry.NextCopy is { } next) _newestOfCopyKey.Set(key, next);
            else _newestOfCopyKey.Remove(key, out _);
        }
        if (entry.NextCopy is { } after) after.PrevCopy = entry.PrevCopy;
        entry.PrevCopy = entry.NextCopy = null;
    }

    /// <summary>Times the due-time heap was rid of stale entries (for tests).</summary>
    internal int StaleDrops { get; private set; }

    // A removed entry (its topic deleted, its release replayed over a checkpoint that held it) stays in the heap until
    // its delivery time, up to MaxDelay (3 days) ahead, and keeps its DelayedEntry (topic, tag and group strings) alive
    // that long: a topic filled with delayed messages and deleted, again and again, kept all of them for days (review
    // 2026-12-06). As the pending halves' due times do (HalfIndex), the stale ones go once they are most of the heap.
    // A release takes its own entry off the heap, so released ones are never stale.
    private void DropStaleEntriesIfMost()
    {
        if (!SegmentedHeap.MostlyStale(_due.Count, _byBody.Count)) return;
        _due.RemoveWhere((entry, _) => !IsLive(entry));
        StaleDrops++;
    }

    private bool IsLive(DelayedEntry entry) => _byBody.TryGetValue(entry.BodyAddress, out var live) && ReferenceEquals(live, entry);

    /// <summary>Retention moved the body: the same entry (still in the heap) is now found at its new address.</summary>
    public void Move(long previous, long address, int size)
    {
        if (!_byBody.Remove(previous, out var entry)) return;
        _byBlock.Move(previous, address, entry);
        entry.BodyAddress = address;
        entry.Size = size;
        _byBody.Set(address, entry);
        NoteMove(entry);
    }

    /// <summary>Takes the next entry whose time has come, those of one time in send order (stale heap entries for
    /// released or moved ones are skipped).</summary>
    public bool TryTakeDue(long nowMs, out DelayedEntry entry)
    {
        while (_due.TryPeek(out entry!, out var at) && at.AtMs <= nowMs)
        {
            _due.Dequeue();
            if (IsLive(entry)) return true;
        }
        entry = null!;
        return false;
    }

    /// <summary>Takes every entry whose time has come (for tests; the sweeper takes them a bounded number at a time).</summary>
    internal List<DelayedEntry> TakeDue(long nowMs)
    {
        var due = new List<DelayedEntry>();
        while (TryTakeDue(nowMs, out var entry)) due.Add(entry);
        return due;
    }

    /// <summary>The entries of one table (<see cref="Shards"/> of them): a checkpoint copies them table by table, each in
    /// its own hold of the engine lock.</summary>
    public DelayedEntry[] SnapshotShard(int shard) => _byBody.SnapshotShard(shard);

    /// <summary>Every table's copy, as a checkpoint takes them (for tests).</summary>
    internal DelayedEntry[] Snapshot() => _byBody.Snapshot();

    public void Clear()
    {
        _byBody.Clear();
        _byBlock.Clear();
        _newestOfTopic.Clear();
        _movedBySentAt.Clear();
        _newestOfCopyKey.Clear();
        _due.Clear();
        _recalled.Clear();
        _recalledDue.Clear();
        _recalledBodies.Clear();
        _recalledBodiesUpTo.Clear();
        _releasedCommits.Clear();
        _releasedCommitsOrder.Clear();
        _recallRecords.Clear();
        _recallRecordsOrder.Clear();
    }
}
