using HalfMsg.Broker.Core.Diagnostics;
using HalfMsg.Broker.Core.Model;

namespace HalfMsg.Broker.Core
{
    public sealed partial class BrokerEngine
    {
        /// <summary>Message ids and keys of recent messages, for operator look-ups (see <see cref="Diagnostics.MessageIndex"/>).</summary>
        public MessageIndex MessageIndex { get; } = new();
    }
}

namespace HalfMsg.Broker.Core.Diagnostics
{
    /// <summary>
    /// RocketMQ's most used operator feature: where is the message with this id, or with this key? A bounded in-memory
    /// index, fed by three marked hook calls in the engine's live paths (send, half, decision), so a look-up never scans
    /// the log.
    /// </summary>
    /// <remarks>
    /// Bounded: the oldest of <see cref="Capacity"/> messages is forgotten first, and a key keeps its newest
    /// <see cref="MaxIdsPerKey"/> ids. Retention is honoured at look-up time (the caller compares the queue offset with
    /// the queue's minimum offset), so the index never claims a message that retention has cut. Not persisted: after a
    /// restart it knows only messages sent since. Because the same hooks see every send and decision, it also keeps two
    /// small tallies for <see cref="BrokerMeter"/>: body bytes per topic and decisions by resolution and source.
    /// </remarks>
    public sealed class MessageIndex(int capacity = 200_000)
    {
        public const int MaxIdsPerKey = 64;

        /// <summary>What the index knows of one message. QueueId/QueueOffset are -1 until it is on a queue (half, delayed).</summary>
        public sealed record Entry(string MessageId, string Topic, string? Tag, IReadOnlyList<string> Keys, DateTimeOffset StoredAt,
            MessageKind Kind, string? TransactionId, string? ProducerGroup, int QueueId, long QueueOffset,
            TransactionResolution? Resolution, DecisionSource? DecidedBy, DateTimeOffset? DecidedAt);

        private readonly object _lock = new();
        private readonly Dictionary<string, Entry> _byId = new(StringComparer.Ordinal);
        private readonly Dictionary<string, List<string>> _byKey = new(StringComparer.Ordinal);
        private readonly Queue<string> _order = new();
        // The hooks see every accepted send, so they also count body bytes per topic for rocketmq_throughput_in_total.
        private readonly Dictionary<string, long> _bytesIn = new(StringComparer.Ordinal);
        // ... and every first decision, for halfmsg_transaction_decisions_total{resolution, source}.
        private readonly Dictionary<(TransactionResolution, DecisionSource), long> _decisions = new();

        public int Capacity { get; } = capacity;

        public int Count { get { lock (_lock) return _byId.Count; } }

        internal void OnStored(MessageDraft msg, int queueId, long offset, long storedAtMs)
        {
            var kind = msg.MessageGroup is not null ? MessageKind.Fifo : msg.DeliveryTimestampMs is not null ? MessageKind.Delay : MessageKind.Normal;
            Add(new Entry(msg.MessageId, msg.Topic, msg.Tag, msg.Keys, DateTimeOffset.FromUnixTimeMilliseconds(storedAtMs), kind,
                null, null, queueId, offset, null, null, null), msg.Body.Length);
        }

        internal void OnHalf(MessageDraft msg, string producerGroup, long storedAtMs)
            => Add(new Entry(msg.MessageId, msg.Topic, msg.Tag, msg.Keys, DateTimeOffset.FromUnixTimeMilliseconds(storedAtMs), MessageKind.Transaction,
                msg.MessageId, producerGroup, -1, -1, null, null, null), msg.Body.Length);

        internal void OnDecided(string transactionId, TransactionResolution resolution, DecisionSource source, int queueId, long offset, long atMs)
        {
            lock (_lock)
            {
                _decisions[(resolution, source)] = _decisions.GetValueOrDefault((resolution, source)) + 1;
                // The transaction id is the half's message id (RocketMQ's UNIQ_KEY).
                if (_byId.TryGetValue(transactionId, out var e))
                    _byId[transactionId] = e with
                    {
                        QueueId = queueId, QueueOffset = offset, Resolution = resolution, DecidedBy = source,
                        DecidedAt = DateTimeOffset.FromUnixTimeMilliseconds(atMs),
                    };
            }
        }

        /// <summary>First decisions since start, by resolution and by who decided.</summary>
        public IReadOnlyList<KeyValuePair<(TransactionResolution Resolution, DecisionSource Source), long>> DecisionsBySource()
        {
            lock (_lock) return [.. _decisions];
        }

        /// <summary>Body bytes accepted per topic (sends and halves) since start.</summary>
        public IReadOnlyList<KeyValuePair<string, long>> BytesInByTopic()
        {
            lock (_lock) return [.. _bytesIn];
        }

        private void Add(Entry entry, int bodyBytes)
        {
            lock (_lock)
            {
                _bytesIn[entry.Topic] = _bytesIn.GetValueOrDefault(entry.Topic) + bodyBytes;
                if (_byId.ContainsKey(entry.MessageId)) { _byId[entry.MessageId] = entry; return; }
                _byId[entry.MessageId] = entry;
                _order.Enqueue(entry.MessageId);
                foreach (string key in entry.Keys.Distinct(StringComparer.Ordinal))
                {
                    if (!_byKey.TryGetValue(key, out var ids)) _byKey[key] = ids = new List<string>(1);
                    ids.Add(entry.MessageId);
                    if (ids.Count > MaxIdsPerKey) ids.RemoveAt(0);
                }
                while (_order.Count > Capacity) Forget(_order.Dequeue());
            }
        }

        private void Forget(string messageId)
        {
            if (!_byId.Remove(messageId, out var e)) return;
            foreach (string key in e.Keys)
            {
                if (!_byKey.TryGetValue(key, out var ids)) continue;
                ids.Remove(messageId);
                if (ids.Count == 0) _byKey.Remove(key);
            }
        }

        public Entry? Find(string messageId)
        {
            lock (_lock) return _byId.GetValueOrDefault(messageId);
        }

        /// <summary>Messages with this key (newest last), optionally of one topic.</summary>
        public IReadOnlyList<Entry> FindByKey(string key, string? topic = null)
        {
            lock (_lock)
            {
                if (!_byKey.TryGetValue(key, out var ids)) return [];
                return ids.Select(id => _byId[id]).Where(e => topic is null || e.Topic == topic).ToList();
            }
        }
    }
}
