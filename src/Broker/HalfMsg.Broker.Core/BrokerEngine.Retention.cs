using HalfMsg.Broker.Core.Model;
using HalfMsg.Broker.Core.Storage;
using Microsoft.Extensions.Logging;

namespace HalfMsg.Broker.Core;

public sealed partial class BrokerEngine
{
    // Known record boundaries with the time they were the tail: truncation may only cut at a record boundary.
    private readonly List<(long Address, long AtMs)> _boundaries = new();
    private readonly SemaphoreSlim _retentionLock = new(1, 1);

    /// <summary>The current log tail: a record boundary (used by tests and the admin API).</summary>
    public long LogTailAddress { get { lock (_gate) return _log.TailAddress; } }
    public long LogBeginAddress => _log.BeginAddress;

    private long ComputeRetentionTarget()
    {
        lock (_gate)
        {
            long tail = _log.TailAddress;
            long now = NowMs;
            long target = _log.BeginAddress;
            foreach (var (address, at) in _boundaries)
            {
                bool bySize = _options.RetentionBytes > 0 && address <= tail - _options.RetentionBytes;
                bool byAge = _options.RetentionTime > TimeSpan.Zero && at <= now - (long)_options.RetentionTime.TotalMilliseconds;
                if ((bySize || byAge) && address > target && address <= LastCheckpointAddress) target = address;
            }
            return target;
        }
    }

    private async Task RunRetentionAsync(CancellationToken ct)
    {
        long target = ComputeRetentionTarget();
        if (target > _log.BeginAddress) await TruncateBeforeAsync(target, ct).ConfigureAwait(false);
    }

    /// <summary>
    /// Drops the log before <paramref name="boundary"/> (a record boundary, e.g. a former <see cref="LogTailAddress"/>).
    /// Nothing live is lost: pending halves, delayed messages and queue entries some consumer group still needs are
    /// re-appended near the tail first (as RocketMQ re-puts halves), a checkpoint is taken, and only then is the head cut.
    /// Returns the number of records re-appended.
    /// </summary>
    public async Task<int> TruncateBeforeAsync(long boundary, CancellationToken ct = default)
    {
        await _retentionLock.WaitAsync(ct).ConfigureAwait(false);
        try
        {
            var moves = new List<(long Address, Func<bool> StillLive, Action<byte[]> Relocate)>();
            lock (_gate)
            {
                if (boundary <= _log.BeginAddress) return 0;
                if (boundary > _log.TailAddress) throw new ArgumentOutOfRangeException(nameof(boundary), "beyond the log tail");
                foreach (var half in _halves.Values.Where(h => h.Address < boundary))
                {
                    var h = half;
                    long old = h.Address;
                    moves.Add((old, () => _halves.TryGetValue(h.TransactionId, out var live) && ReferenceEquals(live, h) && h.Address == old,
                        bytes => RelocateHalf(h, bytes)));
                }
                foreach (var d in _delayed.Values.Where(d => d.BodyAddress < boundary))
                {
                    var e = d;
                    long old = e.BodyAddress;
                    moves.Add((old, () => _delayed.TryGetValue(old, out var live) && ReferenceEquals(live, e),
                        bytes => RelocateBody(bytes, e.Topic, -1, -1, old, e.RequestedQueueId)));
                }
                foreach (var topic in _topics.Values)
                {
                    if (topic.Groups.Count == 0) continue; // retained by time/size only, as RocketMQ does
                    for (int q = 0; q < topic.Queues.Length; q++)
                    {
                        var queue = topic.Queues[q];
                        for (int i = 0; i < queue.Entries.Count; i++)
                        {
                            var entry = queue.Entries[i];
                            if (entry.BodyAddress >= boundary) continue;
                            long off = queue.BaseOffset + i;
                            if (!topic.Groups.Any(g => off >= g.Queues[q].DoneBelow && !g.Queues[q].Done.Contains(off))) continue;
                            var t = topic; int qq = q; long old = entry.BodyAddress;
                            moves.Add((old, () => t.Queues[qq].TryGet(off, out var live) && live.BodyAddress == old,
                                bytes => RelocateBody(bytes, t.Name, qq, off, old, -1)));
                        }
                    }
                }
            }
            int moved = 0;
            foreach (var move in moves)
            {
                var bytes = await _log.ReadAsync(move.Address, ct).ConfigureAwait(false);
                if (bytes is null) continue;
                lock (_gate)
                {
                    if (!move.StillLive()) continue;
                    move.Relocate(bytes);
                    moved++;
                }
            }
            await CheckpointAsync(ct).ConfigureAwait(false);
            lock (_gate)
            {
                _log.TruncateUntil(boundary);
                _boundaries.RemoveAll(b => b.Address <= boundary);
                foreach (var topic in _topics.Values)
                {
                    foreach (var queue in topic.Queues)
                    {
                        int drop = 0;
                        while (drop < queue.Entries.Count && queue.Entries[drop].BodyAddress < boundary) drop++;
                        if (drop == 0) continue;
                        queue.Entries.RemoveRange(0, drop);
                        queue.BaseOffset += drop;
                    }
                }
            }
            await _log.CommitNowAsync(ct).ConfigureAwait(false);
            _logger.LogInformation("Retention: log truncated before {Boundary}; {Moved} live records re-appended", boundary, moved);
            return moved;
        }
        finally
        {
            _retentionLock.Release();
        }
    }

    private void RelocateHalf(HalfState half, byte[] original)
    {
        // Same record, with the check state as it is now, so a replay without the checkpoint still knows the count.
        if (!RecordHeader.TryOpen(original, out var kind, out var r, out _) || kind != RecordKind.HalfStored) return;
        r.Str(); r.Str(); r.Str(); r.I64(); r.I32(); r.I64(); r.Bool(); r.I32();
        var message = DecodeStoredMessage(original, half.Topic, -1, -1)!;
        _writer.Begin(RecordKind.HalfStored).Str(half.TransactionId).Str(half.ProducerGroup).Str(half.OriginClientId).I64(half.CheckImmunityMs)
            .I32(half.CheckCount).I64(half.NextCheckAtMs).Bool(half.Parked).I32(half.RequestedQueueId);
        WriteMessageFields(ToDraft(message), message.StoreTimestampMs);
        half.Address = AppendRecord();
    }

    private void RelocateBody(byte[] original, string queueTopic, int queueId, long offset, long previousAddress, int requestedQueue)
    {
        var message = DecodeStoredMessage(original, queueTopic, queueId, offset);
        if (message is null) return;
        string? topicOverride = message.OriginalTopic is null ? null : queueTopic;
        var kind = message.Kind;
        _writer.Begin(RecordKind.MessageStored).I32(queueId).I64(offset).I64(previousAddress).Byte((byte)kind).Str(message.TransactionId)
            .Str(topicOverride).I32(requestedQueue);
        WriteMessageFields(ToDraft(message), message.StoreTimestampMs);
        long address = AppendRecord();
        ApplyMessageStored(address, queueTopic, queueId, offset, previousAddress, requestedQueue, message.Tag, message.MessageGroup, message.DeliveryTimestampMs ?? 0);
    }

    private static MessageDraft ToDraft(StoredMessage m) => new()
    {
        Topic = m.OriginalTopic ?? m.Topic, MessageId = m.MessageId, Tag = m.Tag, Keys = m.Keys, Properties = m.Properties, Body = m.Body,
        BornTimestampMs = m.BornTimestampMs, BornHost = m.BornHost, MessageGroup = m.MessageGroup, DeliveryTimestampMs = m.DeliveryTimestampMs,
    };
}
