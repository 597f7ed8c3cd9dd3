using System.Buffers.Binary;
using System.Diagnostics;
using HalfMsg.Broker.Core.Model;
using HalfMsg.Broker.Core.Storage;
using Microsoft.Extensions.Logging;

namespace HalfMsg.Broker.Core;

public sealed partial class BrokerEngine
{
    // Checkpoint file: "HMCP" | u8 version | i64 coveredUntil | i64 createdAtMs | then records, each u32 length + record
    // (same envelope and checksum as log records, kinds from 100 up). A checkpoint is complete when its last record is
    // SnapEnd; anything else (a torn write) is ignored and the previous checkpoint is used.
    private const uint CheckpointMagic = 0x50434D48; // "HMCP" little-endian
    private const byte CheckpointVersion = 1;
    private const RecordKind SnapTopic = (RecordKind)100;
    private const RecordKind SnapEntries = (RecordKind)101;
    private const RecordKind SnapHalf = (RecordKind)102;
    private const RecordKind SnapDecided = (RecordKind)103;
    private const RecordKind SnapDelayed = (RecordKind)104;
    private const RecordKind SnapGroupQueue = (RecordKind)105;
    private const RecordKind SnapEnd = (RecordKind)106;

    private string CheckpointDir => Path.Combine(_options.DataDir, "checkpoints");

    private void Recover()
    {
        var sw = Stopwatch.StartNew();
        long from = _log.BeginAddress;
        var loaded = LoadLatestCheckpoint();
        if (loaded is { } covered) from = Math.Max(covered, _log.BeginAddress);
        var replayer = new Replayer(this);
        lock (_gate) _log.Replay(from, ref replayer);
        // Leases recovered from the log expire on the sweeper; delays and checks re-enter their due-time indexes.
        lock (_gate)
        {
            foreach (var g in _groups.Values)
                for (int q = 0; q < g.Queues.Length; q++)
                    foreach (var (off, f) in g.Queues[q].InFlight)
                        _leaseDue.Enqueue((g, q, off, f.LeaseId), f.InvisibleUntilMs);
            _recordsSinceCheckpoint = _replayedRecords;
        }
        Metrics.ReplayedRecords = _replayedRecords;
        Metrics.RecoveryMilliseconds = sw.ElapsedMilliseconds;
        _logger.LogInformation("Recovered in {Ms} ms: checkpoint {Checkpoint}, replayed {Records} records from {From} to {Tail}; {Pending} pending halves, {Topics} topics",
            sw.ElapsedMilliseconds, loaded?.ToString() ?? "none", _replayedRecords, from, _log.TailAddress, _halves.Count, _topics.Count);
    }

    private struct Replayer(BrokerEngine engine) : IRecordConsumer
    {
        public void Consume(ReadOnlySpan<byte> record, long address) => engine.ApplyRecord(record, address);
    }

    private void ApplyRecord(ReadOnlySpan<byte> record, long address)
    {
        _replayedRecords++;
        if (!RecordHeader.TryOpen(record, out var kind, out var r, out var error))
        {
            Metrics.CorruptRecordsSkipped++;
            _logger.LogError("Skipping corrupt log record at {Address}: {Error}", address, error);
            return;
        }
        try
        {
            switch (kind)
            {
                case RecordKind.TopicCreated:
                    ApplyTopicCreated(r.Str()!, r.I32());
                    break;
                case RecordKind.MessageStored:
                {
                    int q = r.I32(); long off = r.I64(); long prev = r.I64(); r.Byte(); r.Str(); string? queueTopic = r.Str(); int requested = r.I32();
                    string topic = r.Str()!;
                    if (queueTopic is not null) topic = queueTopic; r.Str(); string? tag = r.Str(); r.StrList(); r.StrMap(); r.I64(); r.Str(); r.I64();
                    string? mg = r.Str(); long deliverAt = r.I64();
                    ApplyMessageStored(address, topic, q, off, prev, requested, tag, mg, deliverAt);
                    break;
                }
                case RecordKind.HalfStored:
                {
                    string tx = r.Str()!; string pg = r.Str()!; string? client = r.Str(); long immunity = r.I64(); int checks = r.I32();
                    long next = r.I64(); bool parked = r.Bool(); int requested = r.I32();
                    string topic = r.Str()!; string msgId = r.Str()!; string? tag = r.Str(); r.StrList(); r.StrMap(); r.I64(); r.Str();
                    long store = r.I64(); string? mg = r.Str(); long deliverAt = r.I64();
                    ApplyHalfStored(address, tx, msgId, topic, pg, client, immunity, checks, next, parked, requested, tag, mg, deliverAt, store);
                    break;
                }
                case RecordKind.TxDecided:
                {
                    string tx = r.Str()!; var res = (TransactionResolution)r.Byte(); r.Byte(); long at = r.I64(); int q = r.I32(); long off = r.I64();
                    ApplyTxDecided(address, tx, res, at, q, off);
                    break;
                }
                case RecordKind.TxChecked:
                    ApplyTxChecked(r.Str()!, r.I32(), r.I64(), r.I64());
                    break;
                case RecordKind.TxParked:
                    ApplyTxParked(address, r.Str()!, r.I64(), r.I64());
                    break;
                case RecordKind.TxResumed:
                    ApplyTxResumed(r.Str()!, r.I64());
                    break;
                case RecordKind.Delivered:
                    ApplyDelivered(r.Str()!, r.Str()!, r.I32(), r.I64(), r.I32(), r.I64(), r.I64());
                    break;
                case RecordKind.Acked:
                    ApplyAcked(r.Str()!, r.Str()!, r.I32(), r.I64());
                    break;
                case RecordKind.InvisibilityChanged:
                    ApplyInvisibilityChanged(r.Str()!, r.Str()!, r.I32(), r.I64(), r.I64(), r.I64());
                    break;
                case RecordKind.DeadLettered:
                    ApplyDeadLettered(address, r.Str()!, r.Str()!, r.I32(), r.I64(), r.I64());
                    break;
                case RecordKind.QueueEntryAdded:
                    ApplyQueueEntryAdded(address, r.I64(), r.Str()!, r.I32(), r.I64(), r.Str(), r.Str());
                    break;
                case RecordKind.ConsumerOffsetCommitted:
                    ReplayConsumerOffset(ref r);
                    break;
                case RecordKind.TopicDeleted:
                    ApplyTopicDeleted(r.Str()!);
                    break;
                default:
                    Metrics.CorruptRecordsSkipped++;
                    _logger.LogError("Skipping log record of unknown kind {Kind} at {Address}", (byte)kind, address);
                    break;
            }
        }
        catch (Exception ex) when (ex is InvalidDataException or OverflowException or IndexOutOfRangeException)
        {
            Metrics.CorruptRecordsSkipped++;
            _logger.LogError(ex, "Skipping malformed {Kind} record at {Address}", kind, address);
        }
    }

    // ------------------------------------------------------------ checkpoints

    /// <summary>
    /// Writes a snapshot of every in-memory index, covering the log up to the current tail, so the next start replays
    /// only what came after. The snapshot is serialized under the lock (consistent), written after the log is durable
    /// past the covered address (never ahead of the log), fsynced, and renamed into place.
    /// </summary>
    public async Task CheckpointAsync(CancellationToken ct = default)
    {
        await _checkpointLock.WaitAsync(ct).ConfigureAwait(false);
        try
        {
            var buffer = new MemoryStream();
            long covered;
            lock (_gate)
            {
                covered = _log.TailAddress;
                WriteSnapshot(buffer, covered);
                _recordsSinceCheckpoint = 0;
            }
            await _log.CommitNowAsync(ct).ConfigureAwait(false);
            Directory.CreateDirectory(CheckpointDir);
            string final = Path.Combine(CheckpointDir, $"checkpoint-{covered:x16}.bin");
            string tmp = final + ".tmp";
            await using (var file = new FileStream(tmp, FileMode.Create, FileAccess.Write, FileShare.None, 1 << 16, FileOptions.Asynchronous))
            {
                buffer.Position = 0;
                await buffer.CopyToAsync(file, ct).ConfigureAwait(false);
                file.Flush(flushToDisk: true);
            }
            File.Move(tmp, final, overwrite: true);
            // Keep the newest two: the previous one is the fallback if the newest turns out torn.
            foreach (var old in Directory.GetFiles(CheckpointDir, "checkpoint-*.bin").OrderDescending().Skip(2))
                File.Delete(old);
            LastCheckpointAddress = covered;
            lock (_gate) _boundaries.Add((covered, NowMs));
            _logger.LogDebug("Checkpoint at {Address}: {Bytes} bytes", covered, buffer.Length);
        }
        finally
        {
            _checkpointLock.Release();
        }
    }

    /// <summary>The log address the newest checkpoint covers (replay starts there).</summary>
    public long LastCheckpointAddress { get; private set; }

    private void WriteSnapshot(Stream output, long covered)
    {
        Span<byte> head = stackalloc byte[21];
        BinaryPrimitives.WriteUInt32LittleEndian(head, CheckpointMagic);
        head[4] = CheckpointVersion;
        BinaryPrimitives.WriteInt64LittleEndian(head[5..], covered);
        BinaryPrimitives.WriteInt64LittleEndian(head[13..], NowMs);
        output.Write(head);
        var w = new RecordWriter();
        void Emit(RecordWriter writer)
        {
            var rec = writer.Seal();
            Span<byte> len = stackalloc byte[4];
            BinaryPrimitives.WriteInt32LittleEndian(len, rec.Length);
            output.Write(len);
            output.Write(rec);
        }
        foreach (var t in _topics.Values)
        {
            w.Begin(SnapTopic).Str(t.Name).I32(t.Queues.Length).I32(t.RoundRobin);
            Emit(w);
            for (int q = 0; q < t.Queues.Length; q++)
            {
                var queue = t.Queues[q];
                const int chunk = 8192;
                for (int i = 0; i < queue.Entries.Count || (i == 0 && queue.BaseOffset > 0); i += chunk)
                {
                    int n = Math.Min(chunk, queue.Entries.Count - i);
                    w.Begin(SnapEntries).Str(t.Name).I32(q).I64(queue.BaseOffset + i).I32(n);
                    for (int k = 0; k < n; k++)
                    {
                        var e = queue.Entries[i + k];
                        w.I64(e.BodyAddress).I64(e.VisibleAt).Str(e.Tag).Str(e.MessageGroup);
                    }
                    Emit(w);
                    if (n == 0) break;
                }
            }
        }
        foreach (var h in _halves.Values)
        {
            w.Begin(SnapHalf).Str(h.TransactionId).Str(h.MessageId).Str(h.Topic).Str(h.ProducerGroup).Str(h.OriginClientId).I64(h.Address)
                .I64(h.StoreTimestampMs).I64(h.CheckImmunityMs).I32(h.RequestedQueueId).Str(h.Tag).Str(h.MessageGroup).I64(h.DeliverAtMs)
                .I32(h.CheckCount).I64(h.NextCheckAtMs).Bool(h.Parked).I64(h.ParkedAtMs).I64(h.LastCheckAtMs);
            Emit(w);
        }
        foreach (var (tx, d) in _decided)
        {
            w.Begin(SnapDecided).Str(tx).Byte((byte)d.Resolution).I64(d.RecordAddress).I64(d.AtMs);
            Emit(w);
        }
        foreach (var d in _delayed.Values)
        {
            w.Begin(SnapDelayed).I64(d.BodyAddress).Str(d.Topic).I32(d.RequestedQueueId).I64(d.DeliverAtMs).Str(d.Tag).Str(d.MessageGroup);
            Emit(w);
        }
        foreach (var g in _groups.Values)
        {
            for (int q = 0; q < g.Queues.Length; q++)
            {
                var gq = g.Queues[q];
                w.Begin(SnapGroupQueue).Str(g.Group).Str(g.Topic.Name).I32(q).I64(gq.NextOffset).I64(gq.DoneBelow).U64((ulong)gq.Done.Count);
                foreach (var d in gq.Done) w.I64(d);
                w.U64((ulong)gq.InFlight.Count);
                foreach (var (off, f) in gq.InFlight)
                    w.I64(off).I32(f.Attempt).I64(f.InvisibleUntilMs).I64(f.LeaseId).Str(f.MessageGroup);
                Emit(w);
            }
        }
        WriteConsumerOffsetsSnapshot(w, Emit);
        w.Begin(SnapEnd).I64(covered);
        Emit(w);
    }

    private long? LoadLatestCheckpoint()
    {
        if (!Directory.Exists(CheckpointDir)) return null;
        foreach (var file in Directory.GetFiles(CheckpointDir, "checkpoint-*.bin").OrderDescending())
        {
            try
            {
                var bytes = File.ReadAllBytes(file);
                if (TryLoadSnapshot(bytes, out var covered, out var error))
                {
                    if (covered < _log.BeginAddress)
                    {
                        _logger.LogWarning("Checkpoint {File} covers {Covered}, before the log's begin {Begin}; ignored", file, covered, _log.BeginAddress);
                        ResetState();
                        continue;
                    }
                    LastCheckpointAddress = covered;
                    return covered;
                }
                _logger.LogWarning("Checkpoint {File} is unusable ({Error}); trying an older one", file, error);
                ResetState();
            }
            catch (IOException ex)
            {
                _logger.LogWarning(ex, "Checkpoint {File} could not be read", file);
                ResetState();
            }
        }
        return null;
    }

    private void ResetState()
    {
        _topics.Clear(); _groups.Clear(); _halves.Clear(); _checkDue.Clear(); _decided.Clear(); _decidedOrder.Clear();
        _delayed.Clear(); _delayDue.Clear(); _leaseDue.Clear(); _consumerOffsets.Clear();
    }

    private bool TryLoadSnapshot(byte[] bytes, out long covered, out string? error)
    {
        covered = 0;
        error = null;
        if (bytes.Length < 21 || BinaryPrimitives.ReadUInt32LittleEndian(bytes) != CheckpointMagic || bytes[4] != CheckpointVersion)
        {
            error = "bad header";
            return false;
        }
        covered = BinaryPrimitives.ReadInt64LittleEndian(bytes.AsSpan(5));
        int pos = 21;
        bool ended = false;
        while (pos + 4 <= bytes.Length && !ended)
        {
            int len = BinaryPrimitives.ReadInt32LittleEndian(bytes.AsSpan(pos));
            pos += 4;
            if (len < RecordHeader.Size || pos + len > bytes.Length) { error = "truncated record"; return false; }
            if (!RecordHeader.TryOpen(bytes.AsSpan(pos, len), out var kind, out var r, out error)) return false;
            pos += len;
            switch (kind)
            {
                case SnapTopic:
                {
                    var t = ApplyTopicCreated(r.Str()!, r.I32());
                    t.RoundRobin = r.I32();
                    break;
                }
                case SnapEntries:
                {
                    var t = _topics[r.Str()!];
                    var queue = t.Queues[r.I32()];
                    long start = r.I64();
                    int n = r.I32();
                    if (queue.Entries.Count == 0) queue.BaseOffset = start;
                    for (int k = 0; k < n; k++)
                        queue.Entries.Add(new QueueEntry { BodyAddress = r.I64(), VisibleAt = r.I64(), Tag = Intern(r.Str()), MessageGroup = r.Str() });
                    break;
                }
                case SnapHalf:
                {
                    var h = new HalfState
                    {
                        TransactionId = r.Str()!, MessageId = r.Str()!, Topic = r.Str()!, ProducerGroup = r.Str()!, OriginClientId = r.Str(),
                        Address = r.I64(), StoreTimestampMs = r.I64(), CheckImmunityMs = r.I64(), RequestedQueueId = r.I32(), Tag = r.Str(),
                        MessageGroup = r.Str(), DeliverAtMs = r.I64(), CheckCount = r.I32(), NextCheckAtMs = r.I64(), Parked = r.Bool(),
                        ParkedAtMs = r.I64(), LastCheckAtMs = r.I64(),
                    };
                    _halves[h.TransactionId] = h;
                    if (!h.Parked) _checkDue.Enqueue(h, h.NextCheckAtMs);
                    break;
                }
                case SnapDecided:
                {
                    string tx = r.Str()!;
                    var d = new DecidedTx((TransactionResolution)r.Byte(), r.I64(), r.I64());
                    _decided[tx] = d;
                    _decidedOrder.Enqueue((tx, d.AtMs));
                    break;
                }
                case SnapDelayed:
                    AddDelayed(new DelayedEntry { BodyAddress = r.I64(), Topic = r.Str()!, RequestedQueueId = r.I32(), DeliverAtMs = r.I64(), Tag = r.Str(), MessageGroup = r.Str() });
                    break;
                case SnapGroupQueue:
                {
                    string group = r.Str()!; string topic = r.Str()!; int q = r.I32();
                    var g = GetGroup(group, _topics[topic]);
                    var gq = g.Queues[q];
                    gq.NextOffset = r.I64(); gq.DoneBelow = r.I64();
                    ulong nd = r.U64();
                    for (ulong i = 0; i < nd; i++) gq.Done.Add(r.I64());
                    ulong nf = r.U64();
                    for (ulong i = 0; i < nf; i++)
                    {
                        long off = r.I64();
                        AddInFlight(g, q, off, new InFlight { Attempt = r.I32(), InvisibleUntilMs = r.I64(), LeaseId = r.I64(), MessageGroup = r.Str() });
                    }
                    break;
                }
                case SnapConsumerOffset:
                    ReplayConsumerOffset(ref r);
                    break;
                case SnapEnd:
                    ended = r.I64() == covered;
                    break;
                default:
                    error = $"unknown snapshot record kind {(byte)kind}";
                    return false;
            }
        }
        if (!ended) { error = "no end marker (torn write)"; return false; }
        // Decisions are ordered by time for expiry; the dictionary order is not.
        var ordered = _decidedOrder.OrderBy(d => d.AtMs).ToList();
        _decidedOrder.Clear();
        foreach (var d in ordered) _decidedOrder.Enqueue(d);
        return true;
    }

    private readonly Dictionary<string, string> _tags = new(StringComparer.Ordinal);
    private string? Intern(string? tag)
    {
        if (tag is null) return null;
        if (_tags.TryGetValue(tag, out var t)) return t;
        if (_tags.Count < 100_000) _tags[tag] = tag;
        return tag;
    }

    // ------------------------------------------------------------ background loops

    private void StartLoops()
    {
        _loops.Add(Task.Run(() => RunLoopAsync("check-back", async ct =>
        {
            await _checkKick.WaitAsync(_options.TransactionCheckInterval, ct).ConfigureAwait(false);
            await RunCheckPassAsync(ct).ConfigureAwait(false);
        })));
        _loops.Add(Task.Run(() => RunLoopAsync("sweeper", async ct =>
        {
            await Task.Delay(TimeSpan.FromMilliseconds(50), _time, ct).ConfigureAwait(false);
            RunSweep();
        })));
        _loops.Add(Task.Run(() => RunLoopAsync("checkpoint", async ct =>
        {
            await Task.Delay(TimeSpan.FromSeconds(1), _time, ct).ConfigureAwait(false);
            if (Interlocked.Read(ref _recordsSinceCheckpoint) >= _options.CheckpointEveryRecords)
                await CheckpointAsync(ct).ConfigureAwait(false);
            await RunRetentionAsync(ct).ConfigureAwait(false);
        })));
    }

    private async Task RunLoopAsync(string name, Func<CancellationToken, Task> body)
    {
        var ct = _stop.Token;
        while (!ct.IsCancellationRequested)
        {
            try
            {
                await body(ct).ConfigureAwait(false);
            }
            catch (OperationCanceledException) when (ct.IsCancellationRequested)
            {
                return;
            }
            catch (Exception ex)
            {
                _logger.LogError(ex, "The {Loop} loop failed; retrying in 1 s", name);
                try { await Task.Delay(1000, ct).ConfigureAwait(false); } catch (OperationCanceledException) { return; }
            }
        }
    }
}
