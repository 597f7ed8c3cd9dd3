using HalfMsg.Broker.Core.Delivery;
using HalfMsg.Broker.Core.Model;

namespace HalfMsg.Broker.Core;

// In-memory indexes rebuilt from the log on start. All of them are guarded by BrokerEngine's lock.

/// <summary>One entry of a topic queue: where the body lives and when the entry became durable (visible).</summary>
internal struct QueueEntry
{
    /// <summary>A queue position whose record was damaged on disk: it costs itself, never its neighbours.</summary>
    public const long Missing = -1;
    /// <summary>A queue position whose body fell behind the retention limits before every group consumed it.</summary>
    public const long Expired = -2;

    /// <summary>Address of the record holding the body (a MessageStored, HalfStored or BodyRelocated record), or a hole marker.</summary>
    public long BodyAddress;
    /// <summary>Address of the record that put the entry into the queue; visible once the log is durable past it.</summary>
    public long VisibleAt;
    /// <summary>Size of the body's record in bytes: receives stop at a byte budget without reading bodies first.</summary>
    public int Size;
    public string? Tag;
    public string? MessageGroup;
    /// <summary>
    /// The one consumer group the entry is for (a number of <see cref="Delivery.GroupTargets"/>), 0 = every group: a
    /// re-driven dead letter goes back onto its topic for the group that dead-lettered it only. Other lease groups pass
    /// over it as over a filtered-out entry; pulls skip it. An int in the padding after <see cref="Size"/>: free.
    /// </summary>
    public int ForGroup;

    public readonly bool IsHole => BodyAddress < 0;
}

/// <summary>
/// One queue of a topic. Offsets are explicit in every record that assigns one and are never reused: a position
/// whose record is missing (damaged) is a hole, and the next offset is past every offset any record ever named.
/// </summary>
internal sealed class QueueState
{
    /// <summary>How far a record may jump ahead of the queue's end; a larger jump is treated as a damaged record.</summary>
    private const long MaxGap = 1 << 24;

    public long BaseOffset { get; private set; }
    /// <summary>The queue's entries from <see cref="BaseOffset"/> on, in segments: a retention cut drops a prefix without
    /// moving the rest, and growth never copies what is there (see <see cref="SegmentedList{T}"/>).</summary>
    public readonly SegmentedList<QueueEntry> Entries = new();
    public long NextOffset => BaseOffset + Entries.Count;

    /// <summary>
    /// Changes when the queue is emptied and given a new front (<see cref="Reset"/>, a first record far past an empty
    /// queue's start). A checkpoint that finds
    /// it unchanged since the previous one writes only what changed since: the front, if it moved, as one number; the
    /// entries rewritten in place, while <see cref="TryGetRewritesSince"/> still lists them all; and the entries appended
    /// (see <see cref="Storage.Checkpointer"/>). Otherwise it writes the whole queue again.
    /// </summary>
    public int ResetVersion { get; private set; }

    // Offsets of entries rewritten in place (a body relocated by retention, an entry marked lost), in order, so a delta
    // checkpoint can write those entries alone. Bounded: past MaxRewritesListed the list starts again, and a checkpoint
    // that has not seen the dropped ones writes the queue whole.
    private const int MaxRewritesListed = 1024;
    private readonly List<long> _rewritten = new();
    private long _rewrittenDropped;

    /// <summary>How many entries were rewritten in place so far (a running count; see <see cref="TryGetRewritesSince"/>).</summary>
    public long Rewrites => _rewrittenDropped + _rewritten.Count;

    /// <summary>The offsets rewritten since <see cref="Rewrites"/> was <paramref name="since"/> (repeats possible, some
    /// perhaps below the front by now), or false when they are no longer all listed.</summary>
    public bool TryGetRewritesSince(long since, out ReadOnlySpan<long> offsets)
    {
        offsets = default;
        if (since < _rewrittenDropped || since > Rewrites) return false;
        offsets = System.Runtime.InteropServices.CollectionsMarshal.AsSpan(_rewritten)[(int)(since - _rewrittenDropped)..];
        return true;
    }

    public bool TryGet(long offset, out QueueEntry entry)
    {
        long i = offset - BaseOffset;
        if (i < 0 || i >= Entries.Count) { entry = default; return false; }
        entry = Entries[(int)i];
        return true;
    }

    public void Set(long offset, QueueEntry entry)
    {
        if (offset < BaseOffset) return; // already expired behind the retention cut
        EnsureNext(offset);
        long i = offset - BaseOffset;
        if (i == Entries.Count) Append(entry);
        else Replace((int)i, entry);
    }

    /// <summary>Adds an entry at <see cref="NextOffset"/>.</summary>
    public void Append(QueueEntry entry)
    {
        NoteBody(NextOffset, entry.BodyAddress);
        Entries.Add(entry);
    }

    /// <summary>Rewrites the entry at index <paramref name="i"/> of <see cref="Entries"/> (not an append).</summary>
    public void Replace(int i, QueueEntry entry)
    {
        Entries[i] = entry;
        NoteBody(BaseOffset + i, entry.BodyAddress);
        if (_rewritten.Count == MaxRewritesListed)
        {
            _rewrittenDropped += _rewritten.Count;
            _rewritten.Clear();
        }
        _rewritten.Add(BaseOffset + i);
    }

    // The topic a dead letter was taken from, by its offset in a dead-letter topic's queue, for the dead letters a group
    // took from another dead-letter topic only (G2 reading %DLQ%A): the entries of a dead-letter topic are the one kind
    // a group can read that point at a body stored under another topic's name, so a re-drive cannot learn that topic
    // from the body, as it does for every other dead letter. Beside the entries, not in them: a field would cost every
    // entry of every queue 8 bytes (QueueEntry has no padding left), for a few entries of a few queues.
    private Dictionary<long, string>? _sources;

    /// <summary>The topic the dead letter at <paramref name="offset"/> was taken from, when that is not the topic its
    /// body names (see <see cref="SetSource"/>); null otherwise.</summary>
    public string? SourceOf(long offset) => _sources is not null && _sources.TryGetValue(offset, out var source) ? source : null;

    /// <summary>Keeps the topic the dead letter at <paramref name="offset"/> (an entry of this queue) was taken from.</summary>
    public void SetSource(long offset, string source)
    {
        if (offset < BaseOffset || offset >= NextOffset) return; // cut by retention, as the entry
        (_sources ??= new())[offset] = source;
    }

    /// <summary>Drops the first <paramref name="n"/> entries: the front moves up by <paramref name="n"/> offsets.</summary>
    public void RemoveFront(int n)
    {
        if (n <= 0) return;
        long firstBlock = BaseOffset >> BlockBits;
        Entries.RemoveFront(n);
        BaseOffset += n;
        if (_sources is not null)
        {
            foreach (long offset in _sources.Keys)
                if (offset < BaseOffset) _sources.Remove(offset); // removing while enumerating a Dictionary is allowed
            if (_sources.Count == 0) _sources = null;
        }
        // A block cut in part keeps its lowest address: it may be lower than what is left, which costs a look, never a miss.
        _lowestBody.RemoveRange(0, (int)Math.Min(_lowestBody.Count, (BaseOffset >> BlockBits) - firstBlock));
    }

    /// <summary>Moves the front up to <paramref name="front"/> (a checkpoint load), past the end if need be (the queue is then empty).</summary>
    public void MoveFrontTo(long front)
    {
        if (front < BaseOffset) throw new InvalidDataException($"the queue's front cannot move back from {BaseOffset} to {front}");
        if (front >= NextOffset) Reset(front);
        else RemoveFront((int)(front - BaseOffset));
    }

    /// <summary>Empties the queue and makes <paramref name="baseOffset"/> its front (a checkpoint load).</summary>
    public void Reset(long baseOffset)
    {
        Entries.Clear();
        _lowestBody.Clear();
        _sources = null;
        BaseOffset = baseOffset;
        ResetVersion++;
    }

    /// <summary>Makes an empty queue start at <paramref name="baseOffset"/> (a checkpoint load).</summary>
    public void StartEmptyAt(long baseOffset)
    {
        if (Entries.Count != 0) throw new InvalidOperationException("the queue is not empty");
        _lowestBody.Clear();
        _sources = null;
        BaseOffset = baseOffset;
    }

    // Per block of 2^BlockBits offsets (counted from offset 0, so a cut does not shift them), from the block holding
    // BaseOffset on: the lowest body address any entry of the block had. Retention asks which entries point below a
    // cut; nearly every entry's body lies just before the entry itself (a half and its commit), so only the blocks near
    // the cut, and those holding a late commit or a late delay, can have one. The other blocks are skipped unread.
    private const int BlockBits = 11;
    private readonly List<long> _lowestBody = new();

    private void NoteBody(long offset, long bodyAddress)
    {
        if (bodyAddress < 0) return; // a hole points nowhere
        int block = (int)((offset >> BlockBits) - (BaseOffset >> BlockBits));
        while (_lowestBody.Count <= block) _lowestBody.Add(long.MaxValue);
        if (bodyAddress < _lowestBody[block]) _lowestBody[block] = bodyAddress;
    }

    /// <summary>How many blocks <see cref="EntriesWithBodyBelow"/> reads for <paramref name="boundary"/> from the front (for tests).</summary>
    internal int BlocksToReadBelow(long boundary) => _lowestBody.Count(lowest => lowest < boundary);

    /// <summary>
    /// The indexes into <see cref="Entries"/>, from <paramref name="from"/> on, of the entries whose body lies below
    /// <paramref name="boundary"/> (holes excluded), in order. Reads only the blocks that can hold one.
    /// </summary>
    public IEnumerable<int> EntriesWithBodyBelow(int from, long boundary)
    {
        long firstBlock = BaseOffset >> BlockBits;
        for (int b = (int)(((BaseOffset + from) >> BlockBits) - firstBlock); b < _lowestBody.Count; b++)
        {
            if (_lowestBody[b] >= boundary) continue;
            long blockStart = (firstBlock + b) << BlockBits;
            int start = (int)Math.Max(from, blockStart - BaseOffset);
            int end = (int)Math.Min(Entries.Count, blockStart + (1L << BlockBits) - BaseOffset);
            for (int i = start; i < end; i++)
            {
                var e = Entries[i];
                if (!e.IsHole && e.BodyAddress < boundary) yield return i;
            }
        }
    }

    /// <summary>Makes every offset below <paramref name="offset"/> exist (as a hole if no record filled it).</summary>
    public void EnsureNext(long offset)
    {
        if (offset <= NextOffset) return;
        if (Entries.Count == 0 && BaseOffset == 0 && offset - BaseOffset > MaxGap) { StartEmptyAt(offset); ResetVersion++; return; }
        if (offset - NextOffset > MaxGap) throw new InvalidDataException($"queue offset {offset} is implausibly far past the queue end {NextOffset}");
        while (NextOffset < offset) Append(new QueueEntry { BodyAddress = QueueEntry.Missing });
    }
}

internal sealed class TopicState(string name, int queueCount)
{
    public readonly string Name = name;
    private QueueState[] _queues = NewQueues([], queueCount);

    /// <summary>
    /// The topic's queues, by queue id. Replaced by a longer array when an operator adds queues (<see cref="GrowTo"/>),
    /// never changed in length in place and never shortened: a queue id valid once stays valid, and a caller that took
    /// the array keeps a consistent one. Read under the engine lock.
    /// </summary>
    public QueueState[] Queues => _queues;

    /// <summary>
    /// Gives the topic <paramref name="queueCount"/> queues when it has fewer (a TopicQueuesGrown record): the queues it
    /// has keep their entries and offsets, the new ones start empty at offset 0, and every consumer group on the topic
    /// gets its state for them in the same step (<see cref="GroupTopicState.GrowTo"/>), so nothing indexed by queue id
    /// sees the topic and a group disagree. Fewer or as many queues change nothing (a record replayed over a checkpoint
    /// that already holds its effect). Under the engine lock.
    /// </summary>
    public void GrowTo(int queueCount)
    {
        if (queueCount <= _queues.Length) return;
        Volatile.Write(ref _queues, NewQueues(_queues, queueCount));
        foreach (var g in Groups) g.GrowTo(queueCount);
    }

    /// <summary>
    /// A replay of the log alone only: gives the topic <paramref name="queueCount"/> queues when it has more and the
    /// queues past that count were never used (no entry, offset 0, no group's progress on them): the replay made the
    /// topic with <see cref="CoreOptions.QueuesPerTopic"/> from a record naming it after the cut took its creation's,
    /// and a retention cut's record then carried the count the live topic had. Returns whether it changed.
    /// </summary>
    public bool ShrinkUnusedForReplay(int queueCount)
    {
        if (queueCount < 1 || queueCount >= _queues.Length) return false;
        for (int q = queueCount; q < _queues.Length; q++)
        {
            var queue = _queues[q];
            if (queue.Entries.Count != 0 || queue.NextOffset != 0) return false;
            foreach (var g in Groups)
            {
                var gq = g.Queues[q];
                if (gq.NextOffset != 0 || gq.DoneBelow != 0 || gq.Done.Count != 0 || gq.InFlight.Count != 0 || gq.PassedOver.Count != 0) return false;
                if (g.Redeliver.Any(r => r.Queue >= queueCount)) return false;
            }
        }
        Volatile.Write(ref _queues, _queues[..queueCount]);
        foreach (var g in Groups) g.ShrinkTo(queueCount);
        return true;
    }

    private static QueueState[] NewQueues(QueueState[] kept, int queueCount)
    {
        var queues = new QueueState[queueCount];
        kept.CopyTo(queues, 0);
        for (int q = kept.Length; q < queueCount; q++) queues[q] = new QueueState();
        return queues;
    }

    /// <summary>
    /// The address of the retention cut's record (Storage.LogCutRecord) that last carried this topic's queue count and
    /// next offsets, -1 when none did since the topic was made here (or loaded from a checkpoint): a cut carries the
    /// topic again only when that record lies below its boundary (since the afternoon session of 2026-12-07; records
    /// after it that name the topic replay after it). In memory only.
    /// </summary>
    public long CarriedAt = -1;

    public int RoundRobin;
    private GroupTopicState[] _groups = [];
    private TaskCompletionSource _signal = NewSignal();

    private static TaskCompletionSource NewSignal() => new(TaskCreationOptions.RunContinuationsAsynchronously);

    /// <summary>The consumer groups on this topic. Replaced, never changed in place (under the engine lock), so the
    /// commit loop can walk it without that lock.</summary>
    public GroupTopicState[] Groups => Volatile.Read(ref _groups);

    public void AddGroup(GroupTopicState group) => Volatile.Write(ref _groups, [.. _groups, group]);

    public void RemoveGroup(GroupTopicState group) => Volatile.Write(ref _groups, _groups.Where(g => g != group).ToArray());

    /// <summary>
    /// Completes (and is replaced) whenever something new may be pullable on this topic (Remoting pulls, which read
    /// queues by offset). A pull takes it BEFORE looking for messages, so a wake between its look and its wait is never
    /// lost. Receives (leases per consumer group) wait in their group's <see cref="GroupTopicState.Waiters"/> instead.
    /// </summary>
    public Task Signal => Volatile.Read(ref _signal).Task;

    /// <summary>New entries are visible: wakes the pulls and one receive of each group. Thread-safe; called with or
    /// without the engine lock.</summary>
    public void WakeForNewEntries()
    {
        WakePulls();
        foreach (var g in Groups) g.Waiters.WakeOne();
    }

    /// <summary>Wakes every pull and every receive (the topic was deleted).</summary>
    public void WakeAll()
    {
        WakePulls();
        foreach (var g in Groups) g.Waiters.WakeAll();
    }

    private void WakePulls() => Interlocked.Exchange(ref _signal, NewSignal()).TrySetResult();
}

internal sealed class HalfState
{
    public required string TransactionId;
    public required string MessageId;
    public required string Topic;
    public required string ProducerGroup;
    public string? OriginClientId;
    /// <summary>Address of the half's body record. Changed through <see cref="Transactions.HalfIndex.MoveBody"/> once the half
    /// is in the index, which keeps the halves by log block in step.</summary>
    public long Address;
    /// <summary>Size of the half's record in bytes.</summary>
    public int Size;
    /// <summary>
    /// Names this half, not its id: the address of the record it was stored at (its HalfStored record; the Remoting send
    /// result's <c>queueOffset</c>), which no retention move changes and no other half can have. A check-back carries it
    /// (the Remoting <c>tranStateTableOffset</c>, which the Java client echoes in its answer), so an answer to a check
    /// of an EARLIER half of a reused id is told from one to this half's (see <c>BrokerEngine.DecideLocked</c>). Kept
    /// by moves (<see cref="Storage.RelocatedState.SentAt"/>) and checkpoints (SnapHalf, trailing); a half read from a
    /// checkpoint written before (since the midday session of 2026-12-07's check tokens) takes its address at the load.
    /// </summary>
    public long CheckToken = -1;
    public long StoreTimestampMs;
    public long CheckImmunityMs;
    public int RequestedQueueId = -1;
    public string? Tag;
    public string? MessageGroup;
    public long DeliverAtMs;
    public int CheckCount;
    public long NextCheckAtMs;
    /// <summary>Set by <see cref="Transactions.HalfIndex"/> when it adds the half: names it in the due times.</summary>
    public long DueSeq;
    public bool Parked;
    public long ParkedAtMs;
    public long LastCheckAtMs;
    /// <summary>The producer's last non-deciding answer (in memory only; shown to operators).</summary>
    public string? LastAnswer;
    public long LastAnswerAtMs;
    /// <summary>The instance the last check-back went to (in memory only): if the half is due again without an answer
    /// since, the next check goes to another live instance.</summary>
    public string? LastCheckedClientId;
    /// <summary>The <see cref="Model.CheckBackRequest.Sequence"/> of the check-back last sent for this half (in memory
    /// only; 0 for none, or once given back): a check given back unwritten is undone only while it is this very one
    /// (<c>BrokerEngine.ReturnUnsentChecksAsync</c>). Its number, client id and message id do not tell it from a later
    /// check: a half parked and resumed, or a later half of its id, is checked again from number 1, to the same client
    /// id (a reconnected stream), with the same message id (the transaction id); until 2026-12-07 such a check was undone
    /// by the stalled stream's give-back (found by review). A number, not the request: that holds the half's body.</summary>
    public long LastSentCheck;
    /// <summary>True while a check pass hands this half's check-back to a channel (in memory only, under the engine
    /// lock): a channel that answers while queueing it answers a check that was sent, before its TxChecked record.</summary>
    public bool CheckBeingSent;

    /// <summary>
    /// Whether a check-back of this half (this one, not an earlier half of its id) was ever sent: its TxChecked record
    /// sets <see cref="LastCheckAtMs"/>, kept by the checkpoint and by replay; a resume resets the count, not the time,
    /// and halves re-appended by version 1 retention carry their count. A check-back answer for a half that was never
    /// checked answers a check of an earlier half of the id (see <c>BrokerEngine.DecideLocked</c>).
    /// </summary>
    public bool WasCheckedBack => LastCheckAtMs > 0 || CheckCount > 0 || CheckBeingSent;
}

internal sealed class DelayedEntry
{
    public long BodyAddress;
    public int Size;
    public required string Topic;
    public int RequestedQueueId = -1;
    public long DeliverAtMs;
    public string? Tag;
    public string? MessageGroup;
    /// <summary>
    /// The address of the record the delay message was sent as (its MessageStored), which its recall handle names: a
    /// retention move changes <see cref="BodyAddress"/>, never this. -1 for a committed delayed transaction message
    /// (no recall handle is issued for it) and for one read from a checkpoint written before recall existed (none was
    /// issued for those either).
    /// </summary>
    public long SentAt = -1;
    /// <summary>
    /// Where the message stands in send order: the address of the record that made it a delayed message, which no
    /// retention move changes (its MessageStored, <see cref="SentAt"/>; for a committed delayed transaction message, the
    /// commit's decision record, where a transaction message that is not delayed takes its queue offset). Messages due
    /// at the same millisecond are released in this order (DelayIndex), so a FIFO message group's keep the order they
    /// were sent in. Kept in the checkpoint (an entry read from one written before: <see cref="SentAt"/>, else
    /// <see cref="BodyAddress"/>).
    /// </summary>
    public long SendOrder;
    // The delayed messages of one topic, linked (DelayIndex): a topic's delete visits only its own.
    public DelayedEntry? PrevOfTopic, NextOfTopic;
    // The delayed messages of one topic, time and id hash, linked (DelayIndex): a recall visits only those for its copies.
    public DelayedEntry? PrevCopy, NextCopy;
    /// <summary>
    /// <see cref="HashOfId"/> of the id the message was stored with, so a recall reads the bodies of its copies only, not
    /// of every message due at its time; <see cref="UnknownIdHash"/> when not known (the entry was read from a checkpoint
    /// written before the hash was kept there: a recall reads its body, once). Kept in the checkpoint: until 2026-12-06 it
    /// was the string's hash, another in each process, and not kept, so after every restart a recall read the body of
    /// every message of its topic due at its time (20,000 took 1.04 s; found by review).
    /// </summary>
    public int IdHash;

    /// <summary>The <see cref="IdHash"/> of an entry whose id is not known.</summary>
    public const int UnknownIdHash = 0;

    /// <summary>
    /// A message id's hash for <see cref="IdHash"/>, the same in every process (it is kept in checkpoints): FNV-1a over
    /// its UTF-16 code units, as the FIFO groups' queue is picked (TopicQueues). Never <see cref="UnknownIdHash"/>.
    /// </summary>
    public static int HashOfId(string messageId)
    {
        uint h = 2166136261;
        foreach (char c in messageId) { h ^= c; h *= 16777619; }
        return h == UnknownIdHash ? 1 : (int)h;
    }
}

internal sealed class InFlight
{
    public int Attempt;
    public long InvisibleUntilMs;
    public long LeaseId;
    public string? MessageGroup;
    /// <summary>True once the lease expired and the message waits in the group's redelivery queue.</summary>
    public bool Expired;
    /// <summary>The push consumer (auto_renew) holding the lease: it is extended at its expiry while that client is
    /// active, by <see cref="RenewEveryMs"/>, until <see cref="RenewUntilMs"/>. In memory only (not in the log or a
    /// checkpoint): after a restart such a lease expires as leased, and the message is delivered again.</summary>
    public string? RenewFor;
    public long RenewEveryMs;
    public long RenewUntilMs;
}

internal sealed class GroupQueueState
{
    /// <summary>Next offset never handed to this group.</summary>
    public long NextOffset;
    /// <summary>Every offset below this is finished (acked, dead-lettered, filtered out or expired).</summary>
    public long DoneBelow;
    /// <summary>
    /// Finished offsets at or above <see cref="DoneBelow"/> (acks arrive out of order), as sorted disjoint runs
    /// [Start, End). A message whose lease is renewed forever keeps <see cref="DoneBelow"/> behind it, but the acks
    /// after it collapse into one run: memory follows the number of gaps, not the number of acks.
    /// </summary>
    public readonly List<(long Start, long End)> Done = new();
    public readonly Dictionary<long, InFlight> InFlight = new();
    /// <summary>
    /// Offsets below <see cref="NextOffset"/> a group not configured (message-group holds) passed over because their FIFO
    /// message group was in flight, ascending: neither finished nor leased, delivered before anything newer of the queue
    /// once their message group is free. Never more than <see cref="CoreOptions.MaxPassedOverPerQueue"/> (the pick stops
    /// at a busy message group then, as it did before). Durable as a <see cref="Storage.DeliveredRecord"/> of attempt
    /// <see cref="Storage.DeliveredRecord.PassedOverAttempt"/>, and in a checkpoint as an in-flight entry of that attempt.
    /// </summary>
    public readonly List<long> PassedOver = new();

    /// <summary>
    /// The pick's last whole look at <see cref="PassedOver"/> left every one waiting for its busy message group: the
    /// group's <see cref="GroupTopicState.MessageGroupsFreed"/> then (-1: none), with the filter and order mode it looked
    /// with. While those are the same, no message group was freed since, so each one still waits (one passed over since
    /// waits for a message group busy when it was): the next pick does not look again. In memory only.
    /// </summary>
    public long PassedOverHeldAt = -1;
    public TagFilter? PassedOverHeldFor;
    public GroupOrder PassedOverHeldOrder;

    /// <summary>Notes <paramref name="offset"/> as passed over (kept ascending).</summary>
    public void AddPassedOver(long offset)
    {
        int i = PassedOver.BinarySearch(offset);
        if (i < 0) PassedOver.Insert(~i, offset);
    }

    /// <summary>The offset is no longer passed over (leased or finished).</summary>
    public void RemovePassedOver(long offset)
    {
        if (PassedOver.Count == 0) return;
        int i = PassedOver.BinarySearch(offset);
        if (i >= 0) PassedOver.RemoveAt(i);
    }

    /// <summary>Whether a message of the queue is leased and its lease has not ended (an orderly group's hold).</summary>
    public bool HasLiveLease
    {
        get
        {
            foreach (var flight in InFlight.Values)
                if (!flight.Expired) return true;
            return false;
        }
    }

    public bool IsDone(long offset)
    {
        if (offset < DoneBelow) return true;
        int i = FindRun(offset);
        return i >= 0 && offset < Done[i].End;
    }

    /// <summary>Index of the last run starting at or before <paramref name="offset"/>, or -1.</summary>
    private int FindRun(long offset)
    {
        int lo = 0, hi = Done.Count - 1, found = -1;
        while (lo <= hi)
        {
            int mid = (lo + hi) >>> 1;
            if (Done[mid].Start <= offset) { found = mid; lo = mid + 1; } else hi = mid - 1;
        }
        return found;
    }

    public long DoneCountAboveBase
    {
        get { long n = 0; foreach (var (a, b) in Done) n += b - a; return n; }
    }

    public void MarkDone(long offset)
    {
        InFlight.Remove(offset);
        RemovePassedOver(offset);
        if (offset < DoneBelow) return;
        int i = FindRun(offset);
        if (i >= 0 && offset < Done[i].End) return;
        if (i >= 0 && Done[i].End == offset)
        {
            Done[i] = (Done[i].Start, offset + 1);
            if (i + 1 < Done.Count && Done[i + 1].Start == offset + 1) { Done[i] = (Done[i].Start, Done[i + 1].End); Done.RemoveAt(i + 1); }
        }
        else if (i + 1 < Done.Count && Done[i + 1].Start == offset + 1) Done[i + 1] = (offset, Done[i + 1].End);
        else Done.Insert(i + 1, (offset, offset + 1));
        if (Done.Count > 0 && Done[0].Start == DoneBelow) { DoneBelow = Done[0].End; Done.RemoveAt(0); }
    }

    /// <summary>Everything below <paramref name="offset"/> is finished (it expired behind a retention cut).</summary>
    public void AdvanceTo(long offset)
    {
        if (offset <= DoneBelow) return;
        DoneBelow = offset;
        int below = 0;
        while (below < PassedOver.Count && PassedOver[below] < offset) below++;
        if (below > 0) PassedOver.RemoveRange(0, below);
        while (Done.Count > 0 && Done[0].End <= offset) Done.RemoveAt(0);
        if (Done.Count > 0 && Done[0].Start <= offset) { DoneBelow = Done[0].End; Done.RemoveAt(0); }
        if (NextOffset < DoneBelow) NextOffset = DoneBelow;
    }
}

internal sealed class GroupTopicState(string group, TopicState topic)
{
    public readonly string Group = group;
    public readonly TopicState Topic = topic;
    /// <summary>The group's progress on each of the topic's queues, by queue id: as long as the topic's queues, and
    /// replaced by a longer array with them (<see cref="TopicState.GrowTo"/>). Read under the engine lock.</summary>
    public GroupQueueState[] Queues { get; private set; } = NewQueues([], topic.Queues);

    /// <summary>The group's state for the queues the topic gained: each starts at its queue's front, as a new group's
    /// does, so a group that received before the growth gets everything sent to the new queues. Under the engine lock.</summary>
    public void GrowTo(int queueCount)
    {
        if (queueCount <= Queues.Length) return;
        Queues = NewQueues(Queues, Topic.Queues.AsSpan(0, queueCount));
    }

    /// <summary>See <see cref="TopicState.ShrinkUnusedForReplay"/>.</summary>
    public void ShrinkTo(int queueCount)
    {
        if (queueCount < Queues.Length) Queues = Queues[..queueCount];
    }

    private static GroupQueueState[] NewQueues(GroupQueueState[] kept, ReadOnlySpan<QueueState> queues)
    {
        var states = new GroupQueueState[queues.Length];
        kept.CopyTo(states, 0);
        for (int q = kept.Length; q < queues.Length; q++) states[q] = new GroupQueueState { NextOffset = queues[q].BaseOffset, DoneBelow = queues[q].BaseOffset };
        return states;
    }
    /// <summary>Expired leases waiting to be delivered again, in expiry order.</summary>
    public readonly Queue<(int Queue, long Offset)> Redeliver = new();
    /// <summary>The group's order mode as configured (<see cref="ConsumerGroups.SetOrder"/>); the same on each of its topics.</summary>
    public GroupOrder Order;
    /// <summary>FIFO message groups with a message in flight: their later messages wait.</summary>
    public readonly Dictionary<string, int> BusyMessageGroups = new(StringComparer.Ordinal);
    /// <summary>How many times a FIFO message group left <see cref="BusyMessageGroups"/> (its last message in flight
    /// finished): a pick looks again at the messages passed over only after it changed (GroupQueueState.PassedOverHeldAt).</summary>
    public long MessageGroupsFreed;
    public int RoundRobin;
    /// <summary>This group's long-polling receives on the topic.</summary>
    public readonly ReceiveWaiters Waiters = new();
    public long LastSeenMs;
    /// <summary>Messages that fell behind the retention limits before this group finished them (since start).</summary>
    public long Expired;
}
