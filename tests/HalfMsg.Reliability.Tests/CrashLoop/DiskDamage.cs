using HalfMsg.Broker.Core;
using HalfMsg.Broker.Core.Storage;

namespace HalfMsg.Reliability.Tests.CrashLoop;

internal enum DamageKind
{
    /// <summary>One byte of one log record (envelope or payload) flipped.</summary>
    FlipByte,
    /// <summary>The log segment file cut short at a random position after the newest checkpoint's coverage.</summary>
    TruncateSegment,
    /// <summary>The newest checkpoint file cut short at a random length.</summary>
    TearCheckpoint,
}

/// <summary>What one injection did, and what the broker must then report and may lose.</summary>
internal sealed record DamageReport(DamageKind Kind, string What, IReadOnlyList<long> DamagedAddresses, bool MustBeReported,
    IReadOnlySet<string> AffectedIds, IReadOnlySet<(string Topic, int Queue)> AffectedOffsets,
    IReadOnlySet<(string Topic, int Queue, long Offset)> UnattributedPositions)
{
    /// <summary>Damage that hit no record: nothing to report, nothing the model must excuse.</summary>
    public static DamageReport NoRecordHit(DamageKind kind, string what)
        => new(kind, what, [], false, new HashSet<string>(), new HashSet<(string, int)>(), new HashSet<(string, int, long)>());
}

/// <summary>
/// Damage to a killed broker's data dir at seeded random positions. Before damaging, the log is scanned (FasterLog opened
/// on the data dir, as the broker would, read only by replay) so the model knows exactly which records the damage hit
/// and which model ids those records name: their message bodies, their transaction ids, and the messages at the queue
/// positions they name (deliveries, acks, queue entries). Only those may be lost or misbehave.
/// </summary>
internal static class DiskDamage
{
    // The host's log: 2^28-byte segments named broker.log.N; each FasterLog entry is a 4-byte length then our record.
    private const int SegmentBits = 28;

    private sealed record Scanned(long Address, int Length, byte[] Bytes);

    public static DamageReport Apply(string dataDir, DamageKind kind, Random rng, AckModel model)
    {
        // Read before the scan below opens the log: what the broker had made durable, and so could have acknowledged.
        long acknowledgeable = AcknowledgeableTail(dataDir);
        var records = Scan(dataDir);
        long covered = NewestCheckpointCovered(dataDir);
        var index = BuildIndex(records, model);
        switch (kind)
        {
            case DamageKind.FlipByte:
            {
                // Any record kind; mostly records replay must read (after the newest checkpoint), sometimes older ones,
                // whose bodies are still read at delivery.
                var replayed = records.Where(r => r.Address >= covered).ToList();
                var pool = replayed.Count > 0 && rng.Next(4) != 0 ? replayed : records;
                var victim = pool[rng.Next(pool.Count)];
                // Anywhere in the entry: FasterLog's 4-byte length header (one time in four) or our record.
                int at = rng.Next(4) == 0 ? rng.Next(4) : 4 + rng.Next(victim.Length);
                byte mask = (byte)(1 << rng.Next(8));
                using (var s = new FileStream(SegmentFile(dataDir, victim.Address), FileMode.Open, FileAccess.ReadWrite))
                {
                    s.Position = Offset(victim.Address) + at;
                    int b = s.ReadByte();
                    s.Position -= 1;
                    s.WriteByte((byte)(b ^ mask));
                }
                var (ids, offsets, unattributed) = Affected([victim], index, model);
                return new DamageReport(kind, $"flipped bit 0x{mask:X2} at byte {at} of the {KindOf(victim)} record at address {victim.Address} (length {victim.Length}; newest checkpoint covers {covered}; durable before the kill up to {acknowledgeable})",
                    [victim.Address], victim.Address >= covered && victim.Address < acknowledgeable, ids, offsets, unattributed);
            }
            case DamageKind.TruncateSegment:
            {
                // Cut inside one of the newest records (after the checkpoint, so the checkpoint never names a cut body).
                var after = records.Where(r => r.Address >= covered).ToList();
                if (after.Count == 0) return DamageReport.NoRecordHit(kind, "nothing after the newest checkpoint to truncate");
                var first = after[after.Count - 1 - rng.Next(Math.Min(after.Count, 40))];
                long cut = Offset(first.Address) + rng.Next(first.Length + 4);
                string file = SegmentFile(dataDir, first.Address);
                long before = new FileInfo(file).Length;
                using (var s = new FileStream(file, FileMode.Open, FileAccess.ReadWrite)) s.SetLength(cut);
                var lost = records.Where(r => r.Address >= first.Address).ToList();
                var (ids, offsets, unattributed) = Affected(lost, index, model);
                return new DamageReport(kind, $"truncated {Path.GetFileName(file)} from {before} to {cut} bytes: {lost.Count} records from address {first.Address} ({KindOf(first)}) on are gone (newest checkpoint covers {covered}; durable before the kill up to {acknowledgeable})",
                    lost.Select(r => r.Address).ToList(), first.Address < acknowledgeable, ids, offsets, unattributed);
            }
            default:
            {
                var files = Directory.Exists(Path.Combine(dataDir, "checkpoints"))
                    ? Directory.GetFiles(Path.Combine(dataDir, "checkpoints"), "checkpoint-*.bin").OrderBy(CheckpointStoreNames.Covered).ToList()
                    : [];
                if (files.Count == 0) return DamageReport.NoRecordHit(kind, "no checkpoint to tear");
                string newest = files[^1];
                byte[] bytes = File.ReadAllBytes(newest);
                int keep = rng.Next(bytes.Length);
                File.WriteAllBytes(newest, bytes[..keep]);
                // Nothing may be lost: the log after the older checkpoint (or from the start) is still whole.
                return DamageReport.NoRecordHit(kind, $"tore {Path.GetFileName(newest)} from {bytes.Length} to {keep} bytes ({files.Count} checkpoint files)");
            }
        }
    }

    /// <summary>
    /// The tail the broker had made durable before the kill: the until address of the newest slot of its commit
    /// metadata (<see cref="SlotLogCommitManager"/>, written and fsynced on every commit before the commit completes, so
    /// before anything in it is acknowledged). A kill can land after FasterLog flushed a commit record into the log and
    /// before that slot was written: a scan of the log finds those records (recovery scans forward for commit records),
    /// but nothing in them was acknowledged, and when the damage takes the only evidence they existed, the broker
    /// cannot know of them and need not report them. Found as a flaky run: 5 such records cut, health "ready".
    /// </summary>
    private static long AcknowledgeableTail(string dataDir)
    {
        using var slots = new SlotLogCommitManager(Path.Combine(dataDir, "log"));
        long newest = slots.ListCommits().DefaultIfEmpty(-1).First();
        if (newest < 0 || slots.GetCommitMetadata(newest) is not { } metadata) return long.MaxValue;
        // FASTER's FasterLogRecoveryInfo: version (int), checksum (long), begin address (long), until address (long), ...
        using var reader = new BinaryReader(new MemoryStream(metadata));
        reader.ReadInt32();
        reader.ReadInt64();
        reader.ReadInt64();
        return reader.ReadInt64();
    }

    private static string SegmentFile(string dataDir, long address) => Path.Combine(dataDir, "log", $"broker.log.{address >> SegmentBits}");

    private static long Offset(long address) => address & ((1L << SegmentBits) - 1);

    private static long NewestCheckpointCovered(string dataDir)
        => Directory.Exists(Path.Combine(dataDir, "checkpoints"))
            ? Directory.GetFiles(Path.Combine(dataDir, "checkpoints"), "checkpoint-*.bin").Select(CheckpointStoreNames.Covered).DefaultIfEmpty(0).Max()
            : 0;

    private static List<Scanned> Scan(string dataDir)
    {
        var found = new List<Scanned>();
        var log = new RecordLog(Path.Combine(dataDir, "log"), FlushMode.Sync, TimeSpan.FromMilliseconds(5));
        try
        {
            var collector = new Collector(found);
            log.Replay(log.BeginAddress, ref collector);
        }
        finally
        {
            log.DisposeAsync().AsTask().GetAwaiter().GetResult();
        }
        Assert.True(found.Count > 10, $"only {found.Count} records in the log to damage");
        return found;
    }

    private struct Collector(List<Scanned> found) : IRecordConsumer
    {
        public void Consume(ReadOnlySpan<byte> record, long address) => found.Add(new Scanned(address, record.Length, record.ToArray()));
    }

    private static string KindOf(Scanned r) => RecordHeader.TryOpen(r.Bytes, out var kind, out _, out _) ? kind.ToString() : "unreadable";

    /// <summary>Queue positions and transaction ids to model ids, from the whole log.</summary>
    private sealed class Index
    {
        public Dictionary<(string, int, long), string> Positions { get; } = new();
        public Dictionary<string, string> Transactions { get; } = new();
        public Dictionary<string, string> TransactionTopics { get; } = new();
    }

    private static Index BuildIndex(List<Scanned> records, AckModel model)
    {
        var index = new Index();
        var bodies = new Dictionary<long, string>();
        foreach (var rec in records)
        {
            if (!RecordHeader.TryOpen(rec.Bytes, out var kind, out var r, out _)) continue;
            string? id = AckModel.IdsIn(rec.Bytes).FirstOrDefault();
            try
            {
                switch (kind)
                {
                    case RecordKind.MessageStored:
                    {
                        var m = MessageStoredRecord.Read(ref r);
                        if (id is not null) { index.Positions[(m.Message.Topic, m.QueueId, m.Offset)] = id; bodies[rec.Address] = id; }
                        break;
                    }
                    case RecordKind.HalfStored:
                    {
                        var h = HalfStoredRecord.Read(ref r);
                        if (id is not null) { index.Transactions[h.TransactionId] = id; index.TransactionTopics[h.TransactionId] = h.Message.Topic; bodies[rec.Address] = id; }
                        break;
                    }
                    case RecordKind.BodyRelocated:
                        if (id is not null) bodies[rec.Address] = id;
                        break;
                    case RecordKind.TxDecided:
                    {
                        var d = TxDecidedRecord.Read(ref r);
                        if (index.Transactions.TryGetValue(d.TransactionId, out var tid) && index.TransactionTopics.TryGetValue(d.TransactionId, out var topic) && d.Offset >= 0)
                            index.Positions[(topic, d.QueueId, d.Offset)] = tid;
                        break;
                    }
                    case RecordKind.QueueEntryAdded:
                    {
                        var q = QueueEntryAddedRecord.Read(ref r);
                        if (bodies.TryGetValue(q.BodyAddress, out var qid)) index.Positions[(q.Topic, q.QueueId, q.Offset)] = qid;
                        break;
                    }
                }
            }
            catch (Exception ex) when (ex is InvalidDataException or ArgumentOutOfRangeException or IndexOutOfRangeException or OverflowException)
            {
                // a record the scan cannot read is left out of the index; the broker reports it
            }
        }
        return index;
    }

    private static (HashSet<string> Ids, HashSet<(string, int)> Offsets, HashSet<(string, int, long)> Unattributed) Affected(
        IEnumerable<Scanned> hit, Index index, AckModel model)
    {
        var ids = new HashSet<string>();
        var offsets = new HashSet<(string, int)>();
        var unattributed = new HashSet<(string, int, long)>();
        foreach (var rec in hit)
        {
            ids.UnionWith(AckModel.IdsIn(rec.Bytes));
            if (!RecordHeader.TryOpen(rec.Bytes, out var kind, out var r, out _)) continue;
            try
            {
                string? tx = kind switch
                {
                    RecordKind.HalfStored => HalfStoredRecord.Read(ref r).TransactionId,
                    RecordKind.TxDecided => TxDecidedRecord.Read(ref r).TransactionId,
                    RecordKind.TxChecked => TxCheckedRecord.Read(ref r).TransactionId,
                    RecordKind.TxParked => TxParkedRecord.Read(ref r).TransactionId,
                    RecordKind.TxResumed => TxResumedRecord.Read(ref r).TransactionId,
                    _ => null,
                };
                if (tx is not null)
                {
                    if (index.Transactions.TryGetValue(tx, out var id)) ids.Add(id);
                    else if (model.FindByMessageOrTx(tx) is { } e) ids.Add(e.Id);
                }
                (string Topic, int Queue, long Offset)? position = kind switch
                {
                    RecordKind.Delivered => Pos(DeliveredRecord.Read(ref r)),
                    RecordKind.Acked => Pos(AckedRecord.Read(ref r)),
                    RecordKind.InvisibilityChanged => Pos(InvisibilityChangedRecord.Read(ref r)),
                    RecordKind.DeadLettered => Pos(DeadLetteredRecord.Read(ref r)),
                    RecordKind.QueueEntryAdded => Pos(QueueEntryAddedRecord.Read(ref r)),
                    _ => null,
                };
                // The record that put a message at its position may be gone to a retention cut (found by CI: a lost ack
                // named a position nothing left in the log tied to an id): then the pull consumer's view, or the position.
                if (position is { } p)
                {
                    if (index.Positions.TryGetValue(p, out var pid)) ids.Add(pid);
                    else if (model.IdAt(p) is { } mid) ids.Add(mid);
                    else unattributed.Add(p);
                }
                if (kind == RecordKind.ConsumerOffsetCommitted)
                {
                    var c = ConsumerOffsetCommittedRecord.Read(ref r);
                    offsets.Add((c.Topic, c.QueueId));
                }
            }
            catch (Exception ex) when (ex is InvalidDataException or ArgumentOutOfRangeException or IndexOutOfRangeException or OverflowException)
            {
            }
        }
        return (ids, offsets, unattributed);
    }

    private static (string, int, long) Pos(DeliveredRecord d) => (d.Topic, d.QueueId, d.Offset);
    private static (string, int, long) Pos(AckedRecord d) => (d.Topic, d.QueueId, d.Offset);
    private static (string, int, long) Pos(InvisibilityChangedRecord d) => (d.Topic, d.QueueId, d.Offset);
    private static (string, int, long) Pos(DeadLetteredRecord d) => (d.Topic, d.QueueId, d.Offset);
    private static (string, int, long) Pos(QueueEntryAddedRecord d) => (d.Topic, d.QueueId, d.Offset);
}
