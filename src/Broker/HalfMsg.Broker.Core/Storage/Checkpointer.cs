using System.Buffers.Binary;
using System.Diagnostics;
using HalfMsg.Broker.Core.Delivery;
using HalfMsg.Broker.Core.Model;
using Microsoft.Extensions.Logging;

namespace HalfMsg.Broker.Core.Storage;

/// <summary>
/// Writes snapshots of the state owners (a fuzzy checkpoint) and restores the newest usable one at start.
/// </summary>
/// <remarks>
/// <para>File layout: "HMCP" | u8 version | i64 coveredUntil | i64 createdAtMs | records, each u32 length + record (the
/// log's envelope and checksum, kinds from 100 up). A checkpoint is complete when its last record is SnapEnd naming
/// the same coveredUntil; anything else (a torn write) is unusable and the previous checkpoint is used.</para>
/// <para>Fuzzy capture, so the engine never stops for a time proportional to its state. The replay start S is the
/// tail when the checkpoint begins; the state is then copied in small chunks, each under the engine lock for about a
/// millisecond, while the engine keeps running, so each item is captured at some moment after S. Replay from S
/// re-applies every record after S on top, and that gives the live state because (1) every record carries explicit
/// values (offsets, counts, addresses), so applying it to an item that already has its effect changes nothing, and
/// (2) owners are captured in the order records flow between them: halves, then delayed messages, then queues, then
/// decided ids, then groups. A half missing from the snapshot was therefore decided before the queues were captured,
/// so its queue entry is in them; a delayed message missing was released before the queues were. The file is made
/// durable only after the log is durable past everything the copy saw ("never ahead of the log"). Retention holds the
/// engine's checkpoint lock across its cut, so a cut never moves a queue under a running capture.</para>
/// </remarks>
internal sealed class Checkpointer(object gate, RecordLog log, CheckpointStore store, StateOwners state, TimeProvider time, ILogger logger)
{
    private const uint Magic = 0x50434D48; // "HMCP" little-endian
    // Version 2: queue entries carry their record size, consumed offsets are runs, decided ids are digests.
    private const byte Version = 2;
    private const int HeaderSize = 21;
    private const RecordKind SnapTopic = (RecordKind)100;
    private const RecordKind SnapEntries = (RecordKind)101;
    private const RecordKind SnapHalf = (RecordKind)102;
    private const RecordKind SnapDecided = (RecordKind)103;
    private const RecordKind SnapDelayed = (RecordKind)104;
    private const RecordKind SnapGroupQueue = (RecordKind)105;
    private const RecordKind SnapEnd = (RecordKind)106;
    private const RecordKind SnapPullOffset = (RecordKind)107;

    /// <summary>Items serialized per hold of the engine lock.</summary>
    private const int ItemsPerHold = 4096;

    /// <summary>What one checkpoint wrote.</summary>
    /// <param name="Covered">The log address replay starts at after this checkpoint.</param>
    /// <param name="Bytes">The file's size.</param>
    /// <param name="LongestHoldMicros">The longest hold of the engine lock, snapshots of the owners included.</param>
    /// <param name="LargestHoldBytes">The most serialized in one hold.</param>
    /// <param name="ElapsedMs">The whole checkpoint, file durable included.</param>
    public readonly record struct Written(long Covered, long Bytes, long LongestHoldMicros, long LargestHoldBytes, long ElapsedMs);

    /// <summary>
    /// Captures every owner and makes the file durable; replay after it starts at <paramref name="covered"/> (the
    /// tail the caller read under the engine lock when the checkpoint began).
    /// </summary>
    public async Task<Written> WriteAsync(long covered, CancellationToken ct)
    {
        var total = Stopwatch.StartNew();
        long longestHold = 0, largestHoldBytes = 0;
        long bytes;
        await using (var pending = store.Begin(covered))
        {
            var output = pending.Stream;
            var w = new RecordWriter();
            var chunk = new MemoryStream();
            WriteHeader(output, covered, time.GetUtcNow().ToUnixTimeMilliseconds());

            // Copies an owner's item list under the lock (the chunks below then read it without holding the lock).
            T Snapshot<T>(Func<T> take)
            {
                long start = Stopwatch.GetTimestamp();
                T taken;
                lock (gate) taken = take();
                longestHold = Math.Max(longestHold, Stopwatch.GetTimestamp() - start);
                return taken;
            }

            // Serializes one chunk under the lock into memory, then writes it out with the lock released.
            async Task Chunk(Action<RecordWriter, MemoryStream> capture)
            {
                chunk.SetLength(0);
                long start = Stopwatch.GetTimestamp();
                lock (gate) capture(w, chunk);
                longestHold = Math.Max(longestHold, Stopwatch.GetTimestamp() - start);
                largestHoldBytes = Math.Max(largestHoldBytes, chunk.Length);
                chunk.Position = 0;
                await chunk.CopyToAsync(output, ct).ConfigureAwait(false);
            }

            HalfState[] halves;
            halves = Snapshot(() => state.Halves.Snapshot());
            for (int i = 0; i < halves.Length; i += ItemsPerHold)
            {
                int from = i;
                // A half decided since the array was taken is written as still pending: its decision is after S and
                // replays on top.
                await Chunk((w, o) => { for (int k = from; k < Math.Min(from + ItemsPerHold, halves.Length); k++) WriteHalf(w, o, halves[k]); }).ConfigureAwait(false);
            }
            halves = [];

            DelayedEntry[] delayed;
            delayed = Snapshot(() => state.Delayed.Snapshot());
            for (int i = 0; i < delayed.Length; i += ItemsPerHold)
            {
                int from = i;
                await Chunk((w, o) =>
                {
                    for (int k = from; k < Math.Min(from + ItemsPerHold, delayed.Length); k++)
                    {
                        var d = delayed[k];
                        w.Begin(SnapDelayed).I64(d.BodyAddress).I32(d.Size).Str(d.Topic).I32(d.RequestedQueueId).I64(d.DeliverAtMs).Str(d.Tag).Str(d.MessageGroup);
                        Emit(w, o);
                    }
                }).ConfigureAwait(false);
            }

            TopicState[] topics;
            topics = Snapshot(() => state.Topics.Values.ToArray());
            foreach (var t in topics)
            {
                await Chunk((w, o) => { w.Begin(SnapTopic).Str(t.Name).I32(t.Queues.Length).I32(t.RoundRobin); Emit(w, o); }).ConfigureAwait(false);
                for (int q = 0; q < t.Queues.Length; q++)
                {
                    var queue = t.Queues[q];
                    int qq = q;
                    // Entries only grow at the end while retention (which trims the front) waits for this checkpoint.
                    for (long next = -1; ;)
                    {
                        bool done = false;
                        await Chunk((w, o) =>
                        {
                            long from = next < 0 ? queue.BaseOffset : next;
                            int i = (int)(from - queue.BaseOffset);
                            int n = Math.Min(2 * ItemsPerHold, queue.Entries.Count - i);
                            w.Begin(SnapEntries).Str(t.Name).I32(qq).I64(from).I32(n);
                            for (int k = 0; k < n; k++)
                            {
                                var e = queue.Entries[i + k];
                                w.I64(e.BodyAddress).I64(e.VisibleAt).I32(e.Size).Str(e.Tag).Str(e.MessageGroup);
                            }
                            Emit(w, o);
                            next = from + n;
                            done = n == 0 || next >= queue.NextOffset;
                        }).ConfigureAwait(false);
                        if (done) break;
                    }
                }
            }

            (UInt128 Key, long AtMs)[] decidedOrder;
            decidedOrder = Snapshot(() => state.Halves.Decided.OrderSnapshot());
            for (int i = 0; i < decidedOrder.Length; i += 4 * ItemsPerHold)
            {
                int from = i;
                await Chunk((w, o) =>
                {
                    for (int k = from; k < Math.Min(from + 4 * ItemsPerHold, decidedOrder.Length); k++)
                    {
                        if (!state.Halves.Decided.TryGetLive(decidedOrder[k].Key, decidedOrder[k].AtMs, out var resolution, out var address)) continue;
                        w.Begin(SnapDecided).U64((ulong)(decidedOrder[k].Key >> 64)).U64((ulong)decidedOrder[k].Key).Byte((byte)resolution).I64(address).I64(decidedOrder[k].AtMs);
                        Emit(w, o);
                    }
                }).ConfigureAwait(false);
            }
            decidedOrder = [];

            GroupTopicState[] groups;
            groups = Snapshot(() => state.Groups.Values.ToArray());
            foreach (var g in groups)
            {
                await Chunk((w, o) =>
                {
                    if (!state.Groups.TryGetValue((g.Group, g.Topic.Name), out var live) || !ReferenceEquals(live, g)) return; // deleted meanwhile
                    for (int q = 0; q < g.Queues.Length; q++)
                    {
                        var gq = g.Queues[q];
                        w.Begin(SnapGroupQueue).Str(g.Group).Str(g.Topic.Name).I32(q).I64(gq.NextOffset).I64(gq.DoneBelow).U64((ulong)gq.Done.Count);
                        foreach (var (from, to) in gq.Done) w.I64(from).I64(to);
                        w.U64((ulong)gq.InFlight.Count);
                        foreach (var (off, f) in gq.InFlight)
                            w.I64(off).I32(f.Attempt).I64(f.InvisibleUntilMs).I64(f.LeaseId).Str(f.MessageGroup);
                        Emit(w, o);
                    }
                }).ConfigureAwait(false);
            }

            // Pull consumers' committed offsets: each record sets an explicit value, so any capture order works.
            await Chunk((w, o) =>
            {
                foreach (var ((group, topic, queue), offset) in state.PullOffsets.All)
                {
                    w.Begin(SnapPullOffset).Str(group).Str(topic).I32(queue).I64(offset);
                    Emit(w, o);
                }
            }).ConfigureAwait(false);

            w.Begin(SnapEnd).I64(covered);
            Emit(w, output);
            bytes = output.Position;
            // Never ahead of the log: the copy may include records appended after S, so all of them must be durable
            // before this file can be found by a restart.
            await log.CommitNowAsync(ct).ConfigureAwait(false);
            await store.CompleteAsync(pending, ct).ConfigureAwait(false);
        }
        return new Written(covered, bytes, longestHold * 1_000_000 / Stopwatch.Frequency, largestHoldBytes, total.ElapsedMilliseconds);
    }

    private static void WriteHeader(Stream output, long covered, long nowMs)
    {
        Span<byte> head = stackalloc byte[HeaderSize];
        BinaryPrimitives.WriteUInt32LittleEndian(head, Magic);
        head[4] = Version;
        BinaryPrimitives.WriteInt64LittleEndian(head[5..], covered);
        BinaryPrimitives.WriteInt64LittleEndian(head[13..], nowMs);
        output.Write(head);
    }

    private static void Emit(RecordWriter writer, Stream output)
    {
        var rec = writer.Seal();
        Span<byte> len = stackalloc byte[4];
        BinaryPrimitives.WriteInt32LittleEndian(len, rec.Length);
        output.Write(len);
        output.Write(rec);
    }

    private static void WriteHalf(RecordWriter w, Stream o, HalfState h)
    {
        w.Begin(SnapHalf).Str(h.TransactionId).Str(h.MessageId).Str(h.Topic).Str(h.ProducerGroup).Str(h.OriginClientId).I64(h.Address).I32(h.Size)
            .I64(h.StoreTimestampMs).I64(h.CheckImmunityMs).I32(h.RequestedQueueId).Str(h.Tag).Str(h.MessageGroup).I64(h.DeliverAtMs)
            .I32(h.CheckCount).I64(h.NextCheckAtMs).Bool(h.Parked).I64(h.ParkedAtMs).I64(h.LastCheckAtMs);
        Emit(w, o);
    }

    /// <summary>
    /// Restores the newest checkpoint that is complete and covers the log's begin into the (empty) owners, trying
    /// older ones after an unusable one. Returns the address replay starts at, or null when none is usable (the owners
    /// are then empty). Runs before the engine serves, under the engine lock.
    /// </summary>
    public long? LoadLatest()
    {
        foreach (var file in store.ListNewestFirst())
        {
            try
            {
                var bytes = File.ReadAllBytes(file);
                if (TryLoad(bytes, out var covered, out var error))
                {
                    if (covered < log.BeginAddress)
                    {
                        logger.LogWarning("Checkpoint {File} covers {Covered}, before the log's begin {Begin}; ignored", file, covered, log.BeginAddress);
                        state.Clear();
                        continue;
                    }
                    return covered;
                }
                logger.LogError("Checkpoint {File} is unusable ({Error}); trying an older one", file, error);
                state.Clear();
            }
            // ArgumentException covers ArgumentNullException: a checksummed record with a null name (a dictionary key)
            // stopped the broker from starting instead of falling back to an older checkpoint (found by afl, issue 13).
            catch (Exception ex) when (ex is IOException or InvalidDataException or OverflowException or KeyNotFoundException or IndexOutOfRangeException or ArgumentException)
            {
                logger.LogError(ex, "Checkpoint {File} could not be read; trying an older one", file);
                state.Clear();
            }
        }
        return null;
    }

    private bool TryLoad(byte[] bytes, out long covered, out string? error)
    {
        covered = 0;
        error = null;
        if (bytes.Length < HeaderSize || BinaryPrimitives.ReadUInt32LittleEndian(bytes) != Magic || bytes[4] != Version)
        {
            error = "bad header";
            return false;
        }
        covered = BinaryPrimitives.ReadInt64LittleEndian(bytes.AsSpan(5));
        var tags = state.Tags;
        int pos = HeaderSize;
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
                    var t = state.Topics.GetOrAdd(r.Str()!, r.I32());
                    t.RoundRobin = r.I32();
                    break;
                }
                case SnapEntries:
                {
                    var t = state.Topics[r.Str()!];
                    var queue = t.Queues[r.I32()];
                    long start = r.I64();
                    int n = r.I32();
                    if (queue.Entries.Count == 0) queue.BaseOffset = start;
                    for (int k = 0; k < n; k++)
                        queue.Entries.Add(new QueueEntry { BodyAddress = r.I64(), VisibleAt = r.I64(), Size = r.I32(), Tag = tags.Intern(r.Str()), MessageGroup = r.Str() });
                    break;
                }
                case SnapHalf:
                {
                    var h = new HalfState
                    {
                        TransactionId = r.Str()!, MessageId = r.Str()!, Topic = tags.Intern(r.Str())!, ProducerGroup = tags.Intern(r.Str())!, OriginClientId = tags.Intern(r.Str()),
                        Address = r.I64(), Size = r.I32(), StoreTimestampMs = r.I64(), CheckImmunityMs = r.I64(), RequestedQueueId = r.I32(), Tag = r.Str(),
                        MessageGroup = r.Str(), DeliverAtMs = r.I64(), CheckCount = r.I32(), NextCheckAtMs = r.I64(), Parked = r.Bool(),
                        ParkedAtMs = r.I64(), LastCheckAtMs = r.I64(),
                    };
                    if (h.MessageId == h.TransactionId) h.MessageId = h.TransactionId;
                    state.Halves.Add(h);
                    break;
                }
                case SnapDecided:
                {
                    ulong hi = r.U64(), lo = r.U64();
                    var resolution = (TransactionResolution)r.Byte();
                    long address = r.I64(), at = r.I64();
                    state.Halves.Decided.Add(new UInt128(hi, lo), resolution, address, at);
                    break;
                }
                case SnapDelayed:
                    state.Delayed.Add(new DelayedEntry { BodyAddress = r.I64(), Size = r.I32(), Topic = r.Str()!, RequestedQueueId = r.I32(), DeliverAtMs = r.I64(), Tag = r.Str(), MessageGroup = r.Str() });
                    break;
                case SnapGroupQueue:
                {
                    string group = r.Str()!; string topic = r.Str()!; int q = r.I32();
                    var g = state.Groups.GetOrAdd(group, state.Topics[topic]);
                    var gq = g.Queues[q];
                    gq.NextOffset = r.I64(); gq.DoneBelow = r.I64();
                    ulong nd = r.U64();
                    for (ulong i = 0; i < nd; i++) gq.Done.Add((r.I64(), r.I64()));
                    ulong nf = r.U64();
                    for (ulong i = 0; i < nf; i++)
                    {
                        long off = r.I64();
                        ConsumerGroups.AddInFlight(g, q, off, new InFlight { Attempt = r.I32(), InvisibleUntilMs = r.I64(), LeaseId = r.I64(), MessageGroup = r.Str() });
                    }
                    break;
                }
                case SnapPullOffset:
                {
                    var rec = ConsumerOffsetCommittedRecord.Read(ref r);
                    state.PullOffsets.Set(rec.Group, rec.Topic, rec.QueueId, rec.Offset);
                    break;
                }
                case SnapEnd:
                    ended = r.I64() == covered;
                    break;
                default:
                    error = $"unknown snapshot record kind {(byte)kind}";
                    return false;
            }
        }
        if (!ended) { error = "no end marker (torn write)"; return false; }
        return true;
    }
}
