using System.Collections.Concurrent;
using HalfMsg.Broker.Core.Diagnostics;
using HalfMsg.Broker.Core.Model;

namespace HalfMsg.Broker.Core
{
    public sealed partial class BrokerEngine
    {
        /// <summary>Message ids and keys of recent messages, for operator look-ups (see <see cref="Diagnostics.MessageIndex"/>),
        /// <see cref="CoreOptions.MessageIndexCapacity"/> of them.</summary>
        public MessageIndex MessageIndex { get; private set; } = null!;
    }
}

namespace HalfMsg.Broker.Core.Diagnostics
{
    /// <summary>One step in a message's life, as <see cref="MessageIndex.History"/> tells it.</summary>
    public enum HistoryKind : byte
    {
        /// <summary>Stored on a queue (a normal, FIFO or delay message).</summary>
        Stored,
        /// <summary>Stored as a half message, waiting for the producer's decision.</summary>
        HalfStored,
        Committed,
        RolledBack,
        /// <summary>Leased to a consumer of a group (attempt 1), or again after a lease ended (attempt &gt; 1).</summary>
        Delivered,
        Acked,
        /// <summary>The consumer changed the lease (a nack with a retry delay, or a renewal): invisible until <see cref="HistoryEvent.Detail"/>.</summary>
        LeaseChanged,
        /// <summary>The lease ran out without an ack: the message is delivered again (or dead-lettered after the last attempt).</summary>
        LeaseExpired,
        DeadLettered,
        /// <summary>The same message id was stored again on another topic (a re-drive, a Remoting send-back to the retry or DLQ topic).</summary>
        StoredAgain,
        /// <summary>An operator re-drove it from the group's dead-letter topic back to its topic.</summary>
        Redriven,
        /// <summary>Its delivery time came: a delayed message (or a committed delayed half) was put on a queue.</summary>
        Released,
        /// <summary>Its producer recalled the delay message before its delivery time: it is never put on a queue.</summary>
        Recalled,
        /// <summary>Its properties do not match the group's SQL92 filter: finished for the group, never handed to a consumer of it.</summary>
        FilteredOut,
    }

    /// <summary>
    /// One history step. <see cref="At"/> is null for steps rebuilt from the log after a restart whose record carries no
    /// time (deliveries, acks, lease changes); <see cref="ClientId"/> is known only for gRPC deliveries seen live.
    /// </summary>
    public readonly record struct HistoryEvent(HistoryKind Kind, DateTimeOffset? At, string? Group = null, int Attempt = 0,
        string? ClientId = null, string? Detail = null);

    /// <summary>
    /// RocketMQ's most used operator feature: where is the message with this id, or with this key, and what happened to
    /// it? A bounded in-memory index, fed by one-line hook calls in the engine's live paths (send, half, decision,
    /// delivery, ack, lease change and expiry, dead-letter, re-drive), so a look-up never scans the log.
    /// </summary>
    /// <remarks>
    /// <para>Bounded: the oldest of <see cref="Capacity"/> messages is forgotten first, and a key keeps its newest
    /// <see cref="MaxIdsPerKey"/> ids. A message is found by at most <see cref="MaxKeysPerMessage"/> of its distinct keys
    /// (its first ones), each at most <see cref="MaxKeyLength"/> characters long; its other keys are not indexed, only
    /// counted (<see cref="KeysNotIndexed"/>). The indexed keys of all messages together are kept within an estimated
    /// <see cref="MaxKeyBytes"/> (<see cref="MaxKeyBytesTotal"/> by default): past it the oldest messages are forgotten
    /// first, even below <see cref="Capacity"/> (<see cref="MessagesForgottenForKeyBytes"/>). Until 2026-12-05 every key
    /// of a message was indexed: 4,900 short keys (within the 64 KiB metadata limit) cost 788 KB per message. A message's history keeps its first step and its newest
    /// <see cref="MaxEventsPerMessage"/> - 1 (older ones are counted as dropped); all histories together hold at most
    /// <see cref="MaxEventsTotal"/> steps (about 56 MB), beyond which the oldest messages' histories are cut back to their
    /// first step. Retention is honoured at look-up time (the caller compares the queue offset with the queue's minimum
    /// offset), so the index never claims a message that retention has cut.</para>
    /// <para>After a restart (kill -9 included) the index is rebuilt from the retained log by a background scan of the
    /// records that were there at start (<see cref="BrokerEngine.StartIndexRebuild"/>; no engine state is touched). While
    /// it runs, <see cref="IsWarming"/> is true and look-ups see only messages sent since the start; live steps are kept
    /// aside and replayed over the rebuilt index when the scan ends, so nothing seen live is lost. Rebuilt steps whose
    /// record has no time show no time, and no consumer client id.</para>
    /// <para>Because the same hooks see every send and decision, it also keeps two small tallies for
    /// <see cref="BrokerMeter"/> (body bytes per topic, decisions by resolution and source, both since start) and raises
    /// <see cref="Decided"/> with each half's age for the half-age histogram.</para>
    /// </remarks>
    public sealed class MessageIndex(int capacity = 200_000, int maxEventsTotal = MessageIndex.MaxEventsTotal,
        long maxKeyBytes = MessageIndex.MaxKeyBytesTotal)
    {
        public const int MaxIdsPerKey = 64;
        /// <summary>Distinct keys of one message the index finds it by (the first ones); the rest are counted, not indexed.</summary>
        public const int MaxKeysPerMessage = 32;
        /// <summary>Longer keys are counted, not indexed.</summary>
        public const int MaxKeyLength = 128;
        /// <summary>Estimated bytes the indexed keys of all messages may hold (128 MiB); past it the oldest messages go.</summary>
        public const long MaxKeyBytesTotal = 128L << 20;
        public const int MaxEventsPerMessage = 32;
        public const int MaxEventsTotal = 1_000_000;
        /// <summary>Live steps kept aside while the index is rebuilt; beyond this the rebuilt index misses some.</summary>
        private const int MaxDeferred = 1_000_000;
        private const string RedrivePrefix = "%REDRIVE%";

        /// <summary>What the index knows of one message. QueueId/QueueOffset are -1 until it is on a queue (half, delayed).</summary>
        public sealed record Entry(string MessageId, string Topic, string? Tag, IReadOnlyList<string> Keys, DateTimeOffset StoredAt,
            MessageKind Kind, string? TransactionId, string? ProducerGroup, int QueueId, long QueueOffset,
            TransactionResolution? Resolution, DecisionSource? DecidedBy, DateTimeOffset? DecidedAt)
        {
            /// <summary>A delay message its producer recalled before its delivery time: it never reaches a queue.</summary>
            public bool Recalled { get; init; }
        }

        /// <summary>A message's history, oldest first, and how many steps in the middle were dropped to stay bounded.</summary>
        public sealed record MessageHistory(IReadOnlyList<HistoryEvent> Events, int Dropped);

        private readonly object _lock = new();
        private State _state = new(capacity, maxEventsTotal, maxKeyBytes);
        // While warming: live operations applied to _state and also kept here, to be replayed over the rebuilt state.
        private List<Op>? _deferred;
        private bool _deferredOverflow;
        private long _scanned;
        // The hooks see every accepted send, so they also count body bytes per topic for rocketmq_throughput_in_total.
        private readonly Dictionary<string, long> _bytesIn = new(StringComparer.Ordinal);
        // ... and every first decision, for halfmsg_transaction_decisions_total{resolution, source}.
        private readonly Dictionary<(TransactionResolution, DecisionSource), long> _decisions = new();
        private readonly Dictionary<string, string> _clientIds = new(StringComparer.Ordinal);

        public int Capacity { get; } = capacity;

        /// <summary>Estimated bytes the indexed keys of all messages may hold (see <see cref="MaxKeyBytesTotal"/>).</summary>
        public long MaxKeyBytes { get; } = maxKeyBytes;

        /// <summary>Estimated bytes the indexed keys of the messages the index knows hold now.</summary>
        public long KeyBytes { get { lock (_lock) { DrainLocked(); return _state.KeyBytes; } } }

        /// <summary>Keys of messages the index knows or knew that were not indexed: past <see cref="MaxKeysPerMessage"/>
        /// distinct keys of one message, or longer than <see cref="MaxKeyLength"/> characters. Those messages are still
        /// found by id and by their indexed keys.</summary>
        public long KeysNotIndexed { get { lock (_lock) { DrainLocked(); return _state.KeysNotIndexed; } } }

        /// <summary>Messages with at least one key not indexed.</summary>
        public long MessagesWithKeysNotIndexed { get { lock (_lock) { DrainLocked(); return _state.MessagesWithKeysNotIndexed; } } }

        /// <summary>Messages forgotten before <see cref="Capacity"/> was reached because the indexed keys passed <see cref="MaxKeyBytes"/>.</summary>
        public long MessagesForgottenForKeyBytes { get { lock (_lock) { DrainLocked(); return _state.ForgottenForKeyBytes; } } }

        public int Count
        {
            get
            {
                lock (_lock)
                {
                    DrainLocked();
                    return _state.ById.Count;
                }
            }
        }

        /// <summary>True while the index is being rebuilt from the log after a start.</summary>
        public bool IsWarming { get { lock (_lock) return _deferred is not null; } }

        /// <summary>Log records the rebuild has read so far (or in all, once done).</summary>
        public long RecordsScanned => Interlocked.Read(ref _scanned);

        /// <summary>Raised (live decisions only) with the half's resolution, who decided, and its age in seconds.</summary>
        public event Action<TransactionResolution, DecisionSource, double>? Decided;

        // ------------------------------------------------------------------ hooks (called by the engine)

        // The hooks only queue what they saw; the index applies it later, off the caller's path (see Submit).

        // address: the body's log address; a delayed message (queue -1) is found by it at its release.
        // bytesIn: false for the broker's own stores (send-backs, dead letters, re-drives into a retry topic), which
        // rocketmq_throughput_in leaves out, as RocketMQ 5 leaves retry and dead-letter topics out of it.
        internal void OnStored(MessageDraft msg, int queueId, long offset, long storedAtMs, long address = -1, bool bytesIn = true)
        {
            var kind = msg.MessageGroup is not null ? MessageKind.Fifo : msg.DeliveryTimestampMs is not null ? MessageKind.Delay : MessageKind.Normal;
            Submit(new Op(OpKind.Stored, msg.MessageId, msg.Topic, storedAtMs)
            {
                Tag = msg.Tag, Keys = msg.Keys, MessageKind = kind, QueueId = queueId, Offset = offset, BodyBytes = bytesIn ? msg.Body.Length : -1, Address = address,
            });
        }

        internal void OnHalf(MessageDraft msg, string producerGroup, long storedAtMs)
            => Submit(new Op(OpKind.Half, msg.MessageId, msg.Topic, storedAtMs) { Tag = msg.Tag, Keys = msg.Keys, Group = producerGroup, MessageKind = MessageKind.Transaction, BodyBytes = msg.Body.Length });

        // address: the half's body address; a delayed commit (queue -1) is found by it at its release.
        internal void OnDecided(string transactionId, TransactionResolution resolution, DecisionSource source, int queueId, long offset, long atMs, long storedAtMs, long address = -1)
        {
            // The transaction id is the half's message id (RocketMQ's UNIQ_KEY).
            Submit(new Op(OpKind.Decided, transactionId, null, atMs) { Resolution = resolution, Source = source, QueueId = queueId, Offset = offset, Address = address });
            // On the engine's request path, under its lock: a failing listener (a metric) must not fail the decision.
            try { Decided?.Invoke(resolution, source, Math.Max(0, atMs - storedAtMs) / 1000.0); }
            catch (Exception) { Interlocked.Increment(ref _failedListenerCalls); }
        }

        internal void OnDelivered(string topic, string group, string? clientId, List<(int Queue, long Offset, int Attempt)> picked, long atMs)
        {
            if (picked.Count == 0 || group.StartsWith(RedrivePrefix, StringComparison.Ordinal)) return;
            foreach (var (q, off, attempt) in picked)
                Submit(new Op(OpKind.Delivered, null, topic, atMs) { Group = group, ClientId = clientId, QueueId = q, Offset = off, Attempt = attempt });
        }

        /// <summary>An SQL-filtered receive settled these messages for the group: they do not match its expression.</summary>
        internal void OnFilteredOut(string topic, string group, List<(int Queue, long Offset)> settled, long atMs)
        {
            if (group.StartsWith(RedrivePrefix, StringComparison.Ordinal)) return;
            foreach (var (q, off) in settled)
                Submit(new Op(OpKind.FilteredOut, null, topic, atMs) { Group = group, QueueId = q, Offset = off });
        }

        internal void OnAcked(string group, string topic, int queueId, long offset, long atMs)
        {
            if (group.StartsWith(RedrivePrefix, StringComparison.Ordinal)) return;
            Submit(new Op(OpKind.Acked, null, topic, atMs) { Group = group, QueueId = queueId, Offset = offset });
        }

        internal void OnLeaseChanged(string group, string topic, int queueId, long offset, long untilMs, long atMs)
            => Submit(new Op(OpKind.LeaseChanged, null, topic, atMs) { Group = group, QueueId = queueId, Offset = offset, UntilMs = untilMs });

        internal void OnLeaseExpired(string group, string topic, int queueId, long offset, int attempt, long atMs)
        {
            if (group.StartsWith(RedrivePrefix, StringComparison.Ordinal)) return;
            Submit(new Op(OpKind.LeaseExpired, null, topic, atMs) { Group = group, QueueId = queueId, Offset = offset, Attempt = attempt });
        }

        internal void OnDeadLettered(string group, string topic, int queueId, long offset, string dlqTopic, long dlqOffset, long atMs)
            => Submit(new Op(OpKind.DeadLettered, null, topic, atMs) { Group = group, QueueId = queueId, Offset = offset, Detail = dlqTopic, DlqOffset = dlqOffset });

        internal void OnRedriven(string messageId, string group, string toTopic, long atMs)
            => Submit(new Op(OpKind.Redriven, messageId, toTopic, atMs) { Group = group });

        /// <summary>The delayed message whose body is at <paramref name="bodyAddress"/> was put on a queue (its delivery
        /// time came). Until 2026-12-06 nothing told the index, and it showed a delayed message as scheduled for good,
        /// without its deliveries and acks, which it finds by queue position (found by review).</summary>
        internal void OnReleased(long bodyAddress, string topic, int queueId, long offset, long atMs)
            => Submit(new Op(OpKind.Released, null, topic, atMs) { Address = bodyAddress, QueueId = queueId, Offset = offset });

        /// <summary>The delay message waiting with its body at <paramref name="bodyAddress"/> was recalled (under the
        /// engine's lock, after its record was appended): it no longer waits. Until 2026-12-06 nothing told the index, and
        /// it showed a recalled message as scheduled for good (found by review).</summary>
        internal void OnRecalled(string messageId, string topic, long bodyAddress, long atMs)
            => Submit(new Op(OpKind.Recalled, messageId, topic, atMs) { Address = bodyAddress });

        /// <summary>Retention moved a delayed message's body: it is released by its new address.</summary>
        internal void OnBodyMoved(long previous, long address)
            => Submit(new Op(OpKind.BodyMoved, null, null, -1) { PreviousAddress = previous, Address = address });

        /// <summary>The topic was deleted: its bytes-in tally goes (as its rocketmq_messages_in series does); the
        /// messages the index knows of it stay until they are forgotten as usual.</summary>
        internal void OnTopicDeleted(string topic) => Submit(new Op(OpKind.TopicDeleted, null, topic, -1));

        // ------------------------------------------------------------------ rebuild (see BrokerEngine.StartIndexRebuild)

        internal void BeginWarmup()
        {
            lock (_lock)
            {
                DrainLocked();
                _deferred = [];
            }
        }

        /// <summary>Ends the warm-up: the rebuilt state, with the live operations seen meanwhile replayed over it, replaces the live-only one.</summary>
        internal bool CompleteWarmup(State rebuilt, long scanned)
        {
            lock (_lock)
            {
                DrainLocked();
                if (_deferred is null) return true;
                foreach (var op in _deferred) rebuilt.Apply(op);
                _state = rebuilt;
                _deferred = null;
                Interlocked.Exchange(ref _scanned, scanned);
                return !_deferredOverflow;
            }
        }

        internal void ReportScanned(long scanned) => Interlocked.Exchange(ref _scanned, scanned);

        internal State NewState() => new(Capacity, maxEventsTotal, MaxKeyBytes);

        // Operations the hooks queued and the index has not applied yet. The hooks run on the engine's request paths
        // (several under the engine's lock), four or more per transaction: applying each there cost the broker a fifth
        // to a third of its tx/s at 256 in flight (bench/results/2026-11-30-ab/memory-and-second-tries.md §3). So a
        // hook only queues its operation (no lock), and one thread-pool work item at a time applies all queued ones in a
        // batch under the index's lock. Every look-up applies what is queued first, under the same lock, so it sees
        // every step whose hook returned before it started, as when the hooks applied their steps themselves.
        private readonly ConcurrentQueue<Op> _queued = new();
        private int _queuedCount;
        private int _applyScheduled;
        /// <summary>Beyond this many queued operations a hook applies them itself, so a starved applier cannot let the
        /// queue grow without bound.</summary>
        internal const int MaxQueued = 65_536;

        internal object LockForTests => _lock;

        /// <summary>Operations queued and not applied yet (tests).</summary>
        internal int QueuedCount => Volatile.Read(ref _queuedCount);

        private void Submit(in Op op)
        {
            _queued.Enqueue(op);
            if (Interlocked.Increment(ref _queuedCount) > MaxQueued)
            {
                lock (_lock) DrainLocked();
                return;
            }
            if (Volatile.Read(ref _applyScheduled) == 0 && Interlocked.CompareExchange(ref _applyScheduled, 1, 0) == 0)
                ThreadPool.UnsafeQueueUserWorkItem(static index => index.ApplyQueued(), this, preferLocal: false);
        }

        private void ApplyQueued()
        {
            while (true)
            {
                lock (_lock) DrainLocked();
                Volatile.Write(ref _applyScheduled, 0);
                // A hook that queued after the drain but saw the flag still set did not schedule: look again.
                if (_queued.IsEmpty || Interlocked.CompareExchange(ref _applyScheduled, 1, 0) != 0) return;
            }
        }

        /// <summary>Steps whose application failed and was dropped (a bug in the index): a diagnostic never ends the
        /// process nor fails the request that queued the step.</summary>
        public long FailedSteps => Interlocked.Read(ref _failedSteps);
        private long _failedSteps;

        /// <summary>The first failure's exception text, for <c>/api/message-index</c>; null while none failed.</summary>
        public string? FirstFailure { get { lock (_lock) return _firstFailure; } }
        private string? _firstFailure;

        /// <summary>Calls of <see cref="Decided"/> that threw (dropped).</summary>
        public long FailedListenerCalls => Interlocked.Read(ref _failedListenerCalls);
        private long _failedListenerCalls;

        /// <summary>Told of the first failed step (the engine logs it); later ones are only counted.</summary>
        internal Action<string, Exception>? FirstStepFailed;

        /// <summary>Tests: runs before each step is applied (to make one fail).</summary>
        internal Action<OpKind>? BeforeApplyForTests;

        /// <summary>Applies every queued operation, in the order the hooks queued them. Caller holds <see cref="_lock"/>.</summary>
        private void DrainLocked()
        {
            while (_queued.TryDequeue(out var op))
            {
                Interlocked.Decrement(ref _queuedCount);
                try
                {
                    BeforeApplyForTests?.Invoke(op.Kind);
                    Tally(ref op);
                    _state.Apply(op);
                }
                catch (Exception ex)
                {
                    // Until 2026-12-05 an exception here was unhandled on the applier's pool thread (ending the
                    // process), or thrown into the engine's request that drained inline, possibly under the engine
                    // lock. The index is a diagnostic: the step is dropped (its message's history misses it) and counted.
                    if (Interlocked.Increment(ref _failedSteps) == 1)
                    {
                        _firstFailure = $"{op.Kind} step: {ex.GetType().Name}: {ex.Message}";
                        try { FirstStepFailed?.Invoke(op.Kind.ToString(), ex); } catch (Exception) { }
                    }
                    continue;
                }
                if (_deferred is null) continue;
                if (_deferred.Count < MaxDeferred) _deferred.Add(op);
                else _deferredOverflow = true;
            }
        }

        private void Tally(ref Op op)
        {
            switch (op.Kind)
            {
                case OpKind.Stored or OpKind.Half when op.BodyBytes >= 0:
                    _bytesIn[op.Topic!] = _bytesIn.GetValueOrDefault(op.Topic!) + op.BodyBytes;
                    break;
                case OpKind.Decided:
                    _decisions[(op.Resolution, op.Source!.Value)] = _decisions.GetValueOrDefault((op.Resolution, op.Source!.Value)) + 1;
                    break;
                case OpKind.Delivered:
                    op.ClientId = InternClient(op.ClientId);
                    break;
                case OpKind.TopicDeleted:
                    _bytesIn.Remove(op.Topic!);
                    break;
            }
        }

        private string? InternClient(string? clientId)
        {
            if (string.IsNullOrEmpty(clientId)) return null;
            if (_clientIds.TryGetValue(clientId, out var shared)) return shared;
            if (_clientIds.Count < 10_000) _clientIds[clientId] = clientId;
            return clientId;
        }

        // ------------------------------------------------------------------ look-ups

        /// <summary>First decisions since start, by resolution and by who decided.</summary>
        public IReadOnlyList<KeyValuePair<(TransactionResolution Resolution, DecisionSource Source), long>> DecisionsBySource()
        {
            lock (_lock)
            {
                DrainLocked();
                return [.. _decisions];
            }
        }

        /// <summary>Body bytes accepted per topic (sends and halves) since start, or since the topic was last deleted.</summary>
        public IReadOnlyList<KeyValuePair<string, long>> BytesInByTopic()
        {
            lock (_lock)
            {
                DrainLocked();
                return [.. _bytesIn];
            }
        }

        public Entry? Find(string messageId)
        {
            lock (_lock)
            {
                DrainLocked();
                return _state.ById.GetValueOrDefault(messageId)?.ToEntry();
            }
        }

        /// <summary>What happened to the message, oldest first; null when the index does not know it.</summary>
        public MessageHistory? History(string messageId)
        {
            lock (_lock)
            {
                DrainLocked();
                if (!_state.ById.TryGetValue(messageId, out var t)) return null;
                var events = new List<HistoryEvent>(t.EventCount);
                foreach (var step in t.EventsAsSpan) events.Add(step.ToEvent());
                return new MessageHistory(events, t.Dropped);
            }
        }

        /// <summary>The message as found in <paramref name="topic"/> (see <see cref="FindByKey"/>); null when it was never there.</summary>
        public Entry? Find(string messageId, string topic)
        {
            lock (_lock)
            {
                DrainLocked();
                return _state.ById.TryGetValue(messageId, out var t) ? InTopic(t, topic) : null;
            }
        }

        /// <summary>
        /// Messages with this key (newest last), optionally as found in one topic: where the message is in that topic,
        /// which need not be where it is now. A send-back stores the same message id again in <c>%RETRY%group</c> (a
        /// dead-letter in <c>%DLQ%group</c>), and the entry follows it there; RocketMQ still finds the message by key in
        /// its own topic (its IndexFile keeps topic#key of every store). Until 2026-12-06 a topic's look-up compared the
        /// entry's topic, so QUERY_MESSAGE and <c>GET /api/messages?key=&amp;topic=</c> lost a message from its topic
        /// after one send-back (found by review).
        /// </summary>
        public IReadOnlyList<Entry> FindByKey(string key, string? topic = null)
        {
            lock (_lock)
            {
                DrainLocked();
                if (!_state.ByKey.TryGetValue(key, out var ids)) return [];
                var found = new List<Entry>(ids.Count);
                foreach (string id in ids)
                    if ((topic is null ? _state.ById[id].ToEntry() : InTopic(_state.ById[id], topic)) is { } e) found.Add(e);
                return found;
            }
        }

        /// <summary>
        /// The message as found in <paramref name="topic"/>: its entry if it is on a queue there now; else at its newest
        /// queue position in the topic (every store, release and dead-letter adds one); else its entry if it belongs to
        /// the topic without a position (a pending half, a delayed message not yet due); else null.
        /// </summary>
        private static Entry? InTopic(Tracked t, string topic)
        {
            bool current = string.Equals(t.Topic, topic, StringComparison.Ordinal);
            if (current && t.QueueId >= 0 && t.QueueOffset >= 0) return t.ToEntry();
            (string Topic, int Queue, long Offset) at = (null!, -1, -1);
            if (t.Position.Queue >= 0 && string.Equals(t.Position.Topic, topic, StringComparison.Ordinal)) at = t.Position;
            if (t.MorePositions is not null)
                foreach (var p in t.MorePositions)
                    if (string.Equals(p.Topic, topic, StringComparison.Ordinal)) at = p; // added oldest first: the last is the newest
            if (at.Queue >= 0) return t.ToEntry() with { Topic = topic, QueueId = at.Queue, QueueOffset = at.Offset };
            return current ? t.ToEntry() : null;
        }

        // ------------------------------------------------------------------ state

        internal enum OpKind : byte { Stored, Half, Decided, Delivered, Acked, LeaseChanged, LeaseExpired, DeadLettered, Redriven, TopicDeleted, Released, BodyMoved, Recalled, FilteredOut }

        /// <summary>One index operation: what a live hook saw, or what the rebuild read from a log record. A struct: four
        /// per transaction, and only a rebuild keeps any.</summary>
        internal struct Op(OpKind kind, string? messageId, string? topic, long atMs)
        {
            public OpKind Kind = kind;
            public string? MessageId = messageId;
            public string? Topic = topic;
            /// <summary>Unix ms; -1 = unknown (a rebuilt record without a time).</summary>
            public long AtMs = atMs;
            public string? Tag;
            public IReadOnlyList<string> Keys = [];
            public MessageKind MessageKind;
            public string? Group;
            public string? ClientId;
            public int QueueId = -1;
            public long Offset = -1;
            public int Attempt;
            /// <summary>FilteredOut read from the log: the lease's delivery step (its DeliveredRecord came first) goes, as
            /// the live index never shows it.</summary>
            public bool ReplacesDelivery;
            public long UntilMs;
            public long DlqOffset;
            public string? Detail;
            /// <summary>Stored and Half: the body's length, for the bytes-in tally; -1 for a store the tally leaves out.</summary>
            public int BodyBytes;
            public TransactionResolution Resolution;
            public DecisionSource? Source;
            /// <summary>Rebuild only: a body re-appended by retention; it adds the message if unknown, and no step.</summary>
            public bool Relocated;
            /// <summary>Rebuild only: extra queue positions the relocated body serves.</summary>
            public List<(string Topic, int QueueId, long Offset)>? Positions;
            /// <summary>The body's log address (Stored, Half, Decided, Released, BodyMoved, Recalled; -1 = not told), and where a
            /// relocated body (or BodyMoved) was before.</summary>
            public long Address = -1;
            public long PreviousAddress = -1;
            /// <summary>Rebuild only: the relocated body is a delayed message still waiting for its time.</summary>
            public bool Delayed;
        }

        /// <summary>
        /// What the index keeps of one message, in as few objects as it can: the index holds up to <see cref="Capacity"/>
        /// of these for seconds to minutes, so every object and every copied string here is old-generation garbage the
        /// GC has to trace and collect later. The <see cref="Entry"/> is built when someone looks (an earlier shape
        /// replaced an Entry record at each change and kept two lists: 933 against 789 bytes per message, full).
        /// </summary>
        internal sealed class Tracked(string messageId, string topic)
        {
            public readonly string MessageId = messageId;
            public string Topic = topic;
            public string? Tag;
            /// <summary>The keys the index finds it by (at most <see cref="MaxKeysPerMessage"/>).</summary>
            public string[] Keys = [];
            /// <summary>Estimated bytes of those keys in the index (see <see cref="State.KeyCost"/>).</summary>
            public int KeyBytes;
            public long StoredAtMs;
            public MessageKind Kind;
            public bool Half;                             // a half message: its transaction id is its message id
            public bool Recalled;                         // a delay message recalled before its delivery time
            public string? ProducerGroup;
            public int QueueId = -1;
            public long QueueOffset = -1;
            public TransactionResolution? Resolution;
            public DecisionSource? DecidedBy;
            public long DecidedAtMs = -1;                 // -1: not decided, or decided at an unknown time
            public long BodyAddress = -1;                 // where its body is, if told: a delayed one is released by it
            // History: the first step and the newest ones, oldest first.
            private Step[] _events = new Step[4];
            public int EventCount;
            public int Dropped;
            // Where the message is on queues: one position inline (nearly every message has exactly one), more in a list.
            public (string Topic, int Queue, long Offset) Position = (null!, -1, -1);
            public List<(string Topic, int Queue, long Offset)>? MorePositions;

            public ReadOnlySpan<Step> EventsAsSpan => _events.AsSpan(0, EventCount);

            public Entry ToEntry() => new(MessageId, Topic, Tag, Keys, DateTimeOffset.FromUnixTimeMilliseconds(Math.Max(0, StoredAtMs)), Kind,
                Half ? MessageId : null, ProducerGroup, QueueId, QueueOffset, Resolution, DecidedBy,
                DecidedBy is null || DecidedAtMs < 0 ? null : DateTimeOffset.FromUnixTimeMilliseconds(DecidedAtMs)) { Recalled = Recalled };

            /// <summary>Adds a step; at <see cref="MaxEventsPerMessage"/> the oldest after the first makes room. True if one was dropped.</summary>
            public bool AddEvent(in Step e)
            {
                bool dropped = false;
                if (EventCount >= MaxEventsPerMessage)
                {
                    Array.Copy(_events, 2, _events, 1, EventCount - 2);
                    EventCount--;
                    Dropped++;
                    dropped = true;
                }
                if (EventCount == _events.Length) Array.Resize(ref _events, Math.Min(_events.Length * 2, MaxEventsPerMessage));
                _events[EventCount++] = e;
                return dropped;
            }

            /// <summary>
            /// Removes the group's newest step if it is a delivery (lease changes after it, a renewal's, passed over): the
            /// lease an SQL filter settled, which the live index never showed. True if one went.
            /// </summary>
            public bool RemoveLeaseDelivery(string group)
            {
                for (int i = EventCount - 1; i > 0; i--)
                {
                    ref readonly var e = ref _events[i];
                    if (!string.Equals(e.Group, group, StringComparison.Ordinal) || e.Kind == HistoryKind.LeaseChanged) continue;
                    if (e.Kind != HistoryKind.Delivered) return false;
                    Array.Copy(_events, i + 1, _events, i, EventCount - i - 1);
                    _events[--EventCount] = default;
                    return true;
                }
                return false;
            }

            /// <summary>Cuts the history back to its first step; returns how many steps went.</summary>
            public int CutToFirst()
            {
                int cut = EventCount - 1;
                if (cut <= 0) return 0;
                Array.Clear(_events, 1, cut);
                EventCount = 1;
                Dropped += cut;
                if (_events.Length > 4) Array.Resize(ref _events, 4);
                return cut;
            }

            public bool HasPosition((string Topic, int Queue, long Offset) p)
                => (Position.Queue >= 0 && Position == p) || (MorePositions?.Contains(p) ?? false);

            public void AddPosition((string Topic, int Queue, long Offset) p)
            {
                if (HasPosition(p)) return;
                if (Position.Queue < 0) Position = p;
                else (MorePositions ??= new List<(string, int, long)>(1)).Add(p);
            }

            public void RemovePosition((string Topic, int Queue, long Offset) p)
            {
                if (Position.Queue >= 0 && Position == p)
                {
                    if (MorePositions is { Count: > 0 }) { Position = MorePositions[0]; MorePositions.RemoveAt(0); }
                    else Position = (null!, -1, -1);
                }
                else MorePositions?.Remove(p);
            }

        }

        /// <summary>Who decided, for a Committed or RolledBack step.</summary>
        internal enum StepNote : byte { None, ByProducer, ByCheckBack, ByOperator }

        /// <summary>
        /// One history step as kept: the facts only. Its words (<see cref="HistoryEvent.Detail"/>, "by the producer; t
        /// queue 1 offset 7") are written when someone looks: formatted at every step, they were two strings and two
        /// interpolations per transaction, for a history almost nobody reads.
        /// </summary>
        internal readonly record struct Step(HistoryKind Kind, long AtMs, string? Group = null, int Attempt = 0, string? ClientId = null,
            string? Topic = null, int Queue = -1, long Offset = -1, StepNote Note = StepNote.None)
        {
            public HistoryEvent ToEvent() => new(Kind, AtMs < 0 ? null : DateTimeOffset.FromUnixTimeMilliseconds(AtMs), Group, Attempt, ClientId, Detail());

            private string? Detail() => Kind switch
            {
                HistoryKind.Stored => Queue >= 0 ? State.Where(Topic!, Queue, Offset) : "waiting for its delivery time",
                HistoryKind.HalfStored => $"producer group {Group}",
                HistoryKind.StoredAgain or HistoryKind.DeadLettered or HistoryKind.Released => State.Where(Topic!, Queue, Offset),
                HistoryKind.Committed => $"by {By()}; " + (Queue >= 0 ? State.Where(Topic!, Queue, Offset) : "waiting for its delivery time"),
                HistoryKind.RolledBack => $"by {By()}",
                HistoryKind.Redriven => $"back to {Topic}",
                HistoryKind.Recalled => "by its producer before its delivery time: it will not be delivered",
                HistoryKind.Delivered => Attempt > 1 ? "redelivery" : null,
                HistoryKind.FilteredOut => "its properties do not match the group's SQL92 filter: never handed to its consumers",
                HistoryKind.LeaseChanged => "invisible until " + DateTimeOffset.FromUnixTimeMilliseconds(Offset)
                    .ToString("yyyy-MM-dd HH:mm:ss.fff 'UTC'", System.Globalization.CultureInfo.InvariantCulture),
                _ => null,
            };

            private string By() => Note switch { StepNote.ByProducer => "the producer", StepNote.ByCheckBack => "a check-back answer", _ => "an operator" };
        }

        internal sealed class State(int capacity, int maxEvents, long maxKeyBytes)
        {
            public long KeyBytes { get; private set; }
            public long KeysNotIndexed { get; private set; }
            public long MessagesWithKeysNotIndexed { get; private set; }
            public long ForgottenForKeyBytes { get; private set; }
            public readonly Dictionary<string, Tracked> ById = new(StringComparer.Ordinal);
            public readonly Dictionary<string, List<string>> ByKey = new(StringComparer.Ordinal);
            public readonly Queue<string> Order = new();
            /// <summary>Queue positions to the message there, per topic: the position steps (deliveries, acks, lease changes)
            /// find their message with an integer key, without hashing the topic and the message id at each step.</summary>
            public readonly Dictionary<string, Dictionary<(int Queue, long Offset), Tracked>> ByPosition = new(StringComparer.Ordinal);
            /// <summary>The messages waiting for their delivery time (delayed, or committed delayed halves), by their body's
            /// address: its release names the body, not the message. Never more than <see cref="ById"/> holds.</summary>
            public readonly Dictionary<long, Tracked> Waiting = [];
            // The topic looked up last: steps come in runs of one topic (a receive's batch, an ack call), so most find it here.
            private string? _lastTopic;
            private Dictionary<(int Queue, long Offset), Tracked>? _lastPositions;
            private readonly Dictionary<string, string> _strings = new(StringComparer.Ordinal);
            private int _events;

            public void Apply(in Op op)
            {
                switch (op.Kind)
                {
                    case OpKind.Stored:
                    case OpKind.Half:
                    {
                        bool half = op.Kind == OpKind.Half;
                        string topic = Intern(op.Topic!);
                        if (ById.TryGetValue(op.MessageId!, out var known))
                        {
                            if (op.Relocated)
                            {
                                AddPositions(known, op);
                                if (op.PreviousAddress >= 0 && known.BodyAddress == op.PreviousAddress) MoveBody(known, op.Address);
                                return;
                            }
                            // The same id again: a re-drive or a send-back. It is where it was stored last (a send-back
                            // waits for its delivery time in the retry topic). A message recalled before and sent again is
                            // recalled no more; a copy dropped by the recall gets its Recalled step next (live: AppendMessage;
                            // rebuilt: IndexScanner). Until the evening session of 2026-12-06 it stayed recalled.
                            known.Recalled = false;
                            known.Topic = topic;
                            known.QueueId = op.QueueId;
                            known.QueueOffset = op.Offset;
                            if (!half && op.QueueId < 0 && op.Address >= 0)
                            {
                                Unwait(known);
                                known.BodyAddress = op.Address;
                                Wait(known);
                            }
                            AddPosition(known, topic, op.QueueId, op.Offset);
                            AddEvent(known, new Step(HistoryKind.StoredAgain, op.AtMs, Topic: topic, Queue: op.QueueId, Offset: op.Offset));
                            return;
                        }
                        var t = new Tracked(op.MessageId!, topic)
                        {
                            Tag = op.Tag is null ? null : Intern(op.Tag), StoredAtMs = op.AtMs, Kind = op.MessageKind, Half = half,
                            ProducerGroup = half && op.Group is not null ? Intern(op.Group) : null, QueueId = op.QueueId, QueueOffset = op.Offset,
                            BodyAddress = op.Address,
                        };
                        ById[t.MessageId] = t;
                        Order.Enqueue(t.MessageId);
                        if (op.Keys.Count > 0)
                        {
                            t.Keys = KeysToIndex(op.Keys, out int notIndexed, out t.KeyBytes);
                            if (notIndexed > 0)
                            {
                                KeysNotIndexed += notIndexed;
                                MessagesWithKeysNotIndexed++;
                            }
                            KeyBytes += t.KeyBytes;
                            foreach (string key in t.Keys)
                            {
                                if (!ByKey.TryGetValue(key, out var ids)) ByKey[key] = ids = new List<string>(1);
                                ids.Add(t.MessageId);
                                if (ids.Count > MaxIdsPerKey) ids.RemoveAt(0);
                            }
                        }
                        AddPosition(t, topic, op.QueueId, op.Offset);
                        AddPositions(t, op);
                        if (op.Relocated && half && op.Positions is { Count: > 0 })
                        {
                            // A committed half whose decision record retention has cut: it serves a queue position.
                            string? relocatedTopic = op.Topic;
                            var (pt, pq, po) = op.Positions.FirstOrDefault(p => p.Topic == relocatedTopic, op.Positions[0]);
                            t.QueueId = pq;
                            t.QueueOffset = po;
                            t.Resolution = TransactionResolution.Commit;
                        }
                        else if (op.Relocated && !half && op.QueueId < 0 && op.Positions is { Count: > 0 })
                        {
                            // A delayed message released before retention cut its stored record: it serves a queue position.
                            string? relocatedTopic = op.Topic;
                            (_, t.QueueId, t.QueueOffset) = op.Positions.FirstOrDefault(p => p.Topic == relocatedTopic, op.Positions[0]);
                        }
                        // Waiting for its delivery time: a delayed message as stored (queue -1), or a body retention moved
                        // while it waited (a delayed half's decision record may be cut: it was committed).
                        if (op.Relocated ? op.Delayed : !half && op.QueueId < 0)
                        {
                            if (half) t.Resolution = TransactionResolution.Commit;
                            Wait(t);
                        }
                        AddEvent(t, new Step(half ? HistoryKind.HalfStored : HistoryKind.Stored, op.AtMs, half ? t.ProducerGroup : op.Group, Topic: topic, Queue: op.QueueId, Offset: op.Offset));
                        while (Order.Count > capacity) Forget(Order.Dequeue());
                        // The newest message stays, whatever its keys cost (at most MaxKeysPerMessage × MaxKeyLength).
                        while (KeyBytes > maxKeyBytes && Order.Count > 1)
                        {
                            Forget(Order.Dequeue());
                            ForgottenForKeyBytes++;
                        }
                        return;
                    }
                    case OpKind.Decided:
                    {
                        if (!ById.TryGetValue(op.MessageId!, out var t)) return;
                        t.QueueId = op.QueueId;
                        t.QueueOffset = op.Offset;
                        t.Resolution = op.Resolution;
                        t.DecidedBy = op.Source;
                        t.DecidedAtMs = op.AtMs;
                        if (op.Address >= 0) t.BodyAddress = op.Address;
                        if (op.Resolution == TransactionResolution.Commit && op.QueueId < 0) Wait(t); // a delayed commit
                        AddPosition(t, t.Topic, op.QueueId, op.Offset);
                        var by = op.Source switch { DecisionSource.Client => StepNote.ByProducer, DecisionSource.CheckBack => StepNote.ByCheckBack, _ => StepNote.ByOperator };
                        AddEvent(t, new Step(op.Resolution == TransactionResolution.Commit ? HistoryKind.Committed : HistoryKind.RolledBack, op.AtMs,
                            Topic: t.Topic, Queue: op.QueueId, Offset: op.Offset, Note: by));
                        return;
                    }
                    case OpKind.Redriven:
                    {
                        if (ById.TryGetValue(op.MessageId!, out var t))
                            AddEvent(t, new Step(HistoryKind.Redriven, op.AtMs, op.Group, Topic: op.Topic));
                        return;
                    }
                    case OpKind.TopicDeleted:
                        return; // only the bytes-in tally changes (Tally)
                    case OpKind.Released:
                    {
                        if (!Waiting.Remove(op.Address, out var t)) return;
                        string topic = Intern(op.Topic!);
                        t.QueueId = op.QueueId;
                        t.QueueOffset = op.Offset;
                        AddPosition(t, topic, op.QueueId, op.Offset);
                        AddEvent(t, new Step(HistoryKind.Released, op.AtMs, Topic: topic, Queue: op.QueueId, Offset: op.Offset));
                        return;
                    }
                    case OpKind.BodyMoved:
                    {
                        if (Waiting.TryGetValue(op.PreviousAddress, out var t)) MoveBody(t, op.Address);
                        return;
                    }
                    case OpKind.Recalled:
                    {
                        // Live, the waiting body's address names it; rebuilt, the record names the address it was sent at,
                        // which retention may have moved since: there the message id (and its topic) finds it, if it waits.
                        Tracked? t;
                        if (op.Address >= 0) Waiting.TryGetValue(op.Address, out t);
                        else if (ById.TryGetValue(op.MessageId!, out t) && !string.Equals(t.Topic, op.Topic, StringComparison.Ordinal)) t = null;
                        if (t is null || !Unwait(t)) return;
                        t.Recalled = true;
                        AddEvent(t, new Step(HistoryKind.Recalled, op.AtMs));
                        return;
                    }
                }
                // Steps of a queue position.
                if (PositionsOf(op.Topic!, create: false) is not { } positions || !positions.TryGetValue((op.QueueId, op.Offset), out var tracked)) return;
                switch (op.Kind)
                {
                    case OpKind.Delivered:
                        AddEvent(tracked, new Step(HistoryKind.Delivered, op.AtMs, op.Group, op.Attempt, op.ClientId));
                        break;
                    case OpKind.Acked:
                        AddEvent(tracked, new Step(HistoryKind.Acked, op.AtMs, op.Group));
                        break;
                    case OpKind.FilteredOut:
                        if (op.ReplacesDelivery && tracked.RemoveLeaseDelivery(op.Group!)) _events--;
                        AddEvent(tracked, new Step(HistoryKind.FilteredOut, op.AtMs, op.Group));
                        break;
                    case OpKind.LeaseChanged:
                        AddEvent(tracked, new Step(HistoryKind.LeaseChanged, op.AtMs, op.Group, Offset: op.UntilMs)); // Offset: until (ms)
                        break;
                    case OpKind.LeaseExpired:
                        AddEvent(tracked, new Step(HistoryKind.LeaseExpired, op.AtMs, op.Group, op.Attempt));
                        break;
                    case OpKind.DeadLettered:
                        AddPosition(tracked, op.Detail!, 0, op.DlqOffset);
                        AddEvent(tracked, new Step(HistoryKind.DeadLettered, op.AtMs, op.Group, Topic: op.Detail, Queue: 0, Offset: op.DlqOffset));
                        break;
                }
            }

            /// <summary>
            /// The keys a message is found by: its first <see cref="MaxKeysPerMessage"/> distinct keys of at most
            /// <see cref="MaxKeyLength"/> characters, in its order. <paramref name="notIndexed"/> counts the others
            /// (repeats of an indexed key excepted); <paramref name="bytes"/> is their estimated cost in the index.
            /// </summary>
            internal static string[] KeysToIndex(IReadOnlyList<string> keys, out int notIndexed, out int bytes)
            {
                notIndexed = 0;
                bytes = 0;
                List<string>? picked = null;
                foreach (string key in keys)
                {
                    if (key is null) continue;
                    if (picked is not null && picked.Contains(key, StringComparer.Ordinal)) continue;
                    if (key.Length > MaxKeyLength || picked?.Count >= MaxKeysPerMessage)
                    {
                        notIndexed++;
                        continue;
                    }
                    (picked ??= new List<string>(Math.Min(keys.Count, MaxKeysPerMessage))).Add(key);
                    bytes += KeyCost(key);
                }
                return picked is null ? [] : [.. picked];
            }

            /// <summary>Estimated bytes one indexed key holds: its string (24 + 2 per character), its slot in the
            /// message's key array (8), its entry in <see cref="ByKey"/> (about 28 with the table's slack) and its id
            /// list (a list and its array, about 64), rounded up; counted per message, even where messages share a key.
            /// Measured: a message with 32 keys of 8 characters holds about 7.4 KB in all; this estimates its keys at 5.6 KB.</summary>
            internal static int KeyCost(string key) => 2 * key.Length + 160;

            internal static string Where(string topic, int queue, long offset) => $"{topic} queue {queue} offset {offset}";

            private void AddPositions(Tracked t, in Op op)
            {
                if (op.Positions is null) return;
                foreach (var (pt, pq, po) in op.Positions) AddPosition(t, pt, pq, po);
            }

            private void AddPosition(Tracked t, string topic, int queue, long offset)
            {
                if (queue < 0 || offset < 0) return;
                var positions = PositionsOf(topic, create: true)!;
                ref var slot = ref System.Runtime.InteropServices.CollectionsMarshal.GetValueRefOrAddDefault(positions, (queue, offset), out bool exists);
                if (exists && !ReferenceEquals(slot, t)) slot!.RemovePosition((topic, queue, offset));
                slot = t;
                t.AddPosition((topic, queue, offset));
            }

            private Dictionary<(int Queue, long Offset), Tracked>? PositionsOf(string topic, bool create)
            {
                if (_lastPositions is not null && string.Equals(_lastTopic, topic, StringComparison.Ordinal)) return _lastPositions;
                if (!ByPosition.TryGetValue(topic, out var positions))
                {
                    if (!create) return null;
                    topic = Intern(topic);
                    ByPosition[topic] = positions = [];
                }
                _lastTopic = topic;
                _lastPositions = positions;
                return positions;
            }

            private void Wait(Tracked t)
            {
                if (t.BodyAddress >= 0) Waiting[t.BodyAddress] = t;
            }

            private bool Unwait(Tracked t)
            {
                if (t.BodyAddress < 0 || !Waiting.TryGetValue(t.BodyAddress, out var waiting) || !ReferenceEquals(waiting, t)) return false;
                Waiting.Remove(t.BodyAddress);
                return true;
            }

            // Retention moved the body: a waiting message is released by its new address.
            private void MoveBody(Tracked t, long address)
            {
                bool waiting = Unwait(t);
                t.BodyAddress = address;
                if (waiting) Wait(t);
            }

            private void AddEvent(Tracked t, in Step e)
            {
                if (t.AddEvent(e)) _events--;
                if (++_events > maxEvents) TrimOldest();
            }

            /// <summary>Cuts the oldest messages' histories back to their first step until a tenth of the budget is free.</summary>
            private void TrimOldest()
            {
                foreach (string id in Order)
                {
                    if (_events <= maxEvents * 9L / 10) break;
                    if (ById.TryGetValue(id, out var t)) _events -= t.CutToFirst();
                }
            }

            /// <summary>
            /// Topics, tags and producer groups arrive as new strings with every request; the index keeps one copy of each
            /// (up to 10,000 distinct), not one per message.
            /// </summary>
            private string Intern(string s)
            {
                if (_strings.TryGetValue(s, out var shared)) return shared;
                if (_strings.Count < 10_000) _strings[s] = s;
                return s;
            }

            /// <summary>Drops a position's mapping if it still leads to this message (a later message may have taken it).</summary>
            private void Unmap((string Topic, int Queue, long Offset) p, Tracked t)
            {
                if (PositionsOf(p.Topic, create: false) is not { } positions || !positions.TryGetValue((p.Queue, p.Offset), out var at) || !ReferenceEquals(at, t)) return;
                positions.Remove((p.Queue, p.Offset));
                if (positions.Count > 0) return;
                // A topic none of whose positions the index still knows (deleted, or quiet for long) keeps no map.
                ByPosition.Remove(p.Topic);
                _lastTopic = null;
                _lastPositions = null;
            }

            private void Forget(string messageId)
            {
                if (!ById.Remove(messageId, out var t)) return;
                Unwait(t);
                _events -= t.EventCount;
                KeyBytes -= t.KeyBytes;
                if (t.Position.Queue >= 0) Unmap(t.Position, t);
                if (t.MorePositions is not null) foreach (var p in t.MorePositions) Unmap(p, t);
                foreach (string key in t.Keys)
                {
                    if (!ByKey.TryGetValue(key, out var ids)) continue;
                    ids.Remove(messageId);
                    if (ids.Count == 0) ByKey.Remove(key);
                }
            }
        }
    }
}
