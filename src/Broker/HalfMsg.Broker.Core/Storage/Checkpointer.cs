using System.Buffers.Binary;
using System.Diagnostics;
using HalfMsg.Broker.Core.Delivery;
using HalfMsg.Broker.Core.Model;
using HalfMsg.Broker.Core.Transactions;
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
/// <para>A destructive record replayed over a copy that already holds later records' effects wipes those too, and is
/// safe only where every later record rebuilds what it wiped. A group's delete or reset is: every group record carries
/// its offsets, and groups are copied last. A topic's delete is not (a half pending before it and committed after it
/// is copied as decided, and replay of the commit finds no half to commit), so a topic delete takes the checkpoint lock
/// across its append: it is never inside a capture.</para>
/// </remarks>
internal sealed class Checkpointer(object gate, RecordLog log, CheckpointStore store, StateOwners state, TimeProvider time, ILogger logger)
{
    private const uint Magic = 0x50434D48; // "HMCP" little-endian
    // Version 2: queue entries carry their record size, consumed offsets are runs, decided ids are digests.
    // Version 3: the header says whether the file is whole or a delta on the checkpoint it names.
    // Version 4: an entry reserved for one consumer group (a re-driven dead letter) names it (see WriteEntry).
    // Version 5: a dead letter taken from another dead-letter topic names that topic (see WriteEntry).
    // Decided ids with their namespace (2026-12-06) are two new record kinds, not a version: a file without them loads
    // as before. One more byte per decided id (the namespace's number), and each namespace's name once per file.
    private const byte Version = 5;
    private const byte VersionWithoutSources = 4;
    private const byte VersionWithoutTargets = 3;
    private const byte VersionWhole = 2;
    private const int HeaderSizeV2 = 21;
    private const int HeaderSize = HeaderSizeV2 + 1 + 8;
    private const byte KindWhole = 0;
    private const byte KindDelta = 1;
    private const RecordKind SnapTopic = (RecordKind)100;
    private const RecordKind SnapEntries = (RecordKind)101;
    private const RecordKind SnapHalf = (RecordKind)102;
    private const RecordKind SnapDecided = (RecordKind)103;
    private const RecordKind SnapDelayed = (RecordKind)104;
    private const RecordKind SnapGroupQueue = (RecordKind)105;
    private const RecordKind SnapEnd = (RecordKind)106;
    private const RecordKind SnapPullOffset = (RecordKind)107;
    /// <summary>In a delta: the queue is written whole again (it was emptied and given a new front, or more of its entries
    /// were rewritten than it lists), starting here.</summary>
    private const RecordKind SnapQueueReset = (RecordKind)108;
    /// <summary>In a delta: the queue's front moved up to here (a retention cut) since the previous file.</summary>
    private const RecordKind SnapQueueFront = (RecordKind)109;
    /// <summary>In a delta: one entry below the previous file's end, rewritten in place since (a body relocated).</summary>
    private const RecordKind SnapEntryPatch = (RecordKind)110;
    /// <summary>A decided id with its namespace: as <see cref="SnapDecided"/>, then the namespace's number in this file
    /// (0: none; others named by a <see cref="SnapNamespace"/> before it). <see cref="SnapDecided"/> is a decision whose
    /// namespace is not known (written before decisions kept one, and kept so since).</summary>
    private const RecordKind SnapDecidedIn = (RecordKind)111;
    /// <summary>A namespace's number in this file, and its name.</summary>
    private const RecordKind SnapNamespace = (RecordKind)112;
    /// <summary>A consumer group's settings, as its GroupConfigured record holds them: <code>s group | b flags</code>
    /// Small and written whole in each file, taken from the newest (a build before these reports the kind unknown).</summary>
    private const RecordKind SnapGroupConfigured = (RecordKind)113;
    /// <summary>A recall remembered until its delivery time (DelayIndex.RememberRecall): topic, delivery time, message
    /// id. Written whole in every file, a delta's too, and taken from the newest. A new kind, not a version: a build
    /// before finds the kind unknown and starts from an older checkpoint, or replays the log.</summary>
    private const RecordKind SnapRecalled = (RecordKind)114;
    /// <summary>A recalled message whose bodies are still in the log (DelayIndex.NoteRecalledBody): topic, delivery
    /// time, message id, the highest address one of its bodies lies at. Written whole in every file, a delta's too, and
    /// taken from the newest (since 2026-12-07). A new kind, not a version: a build before finds the kind unknown and
    /// starts from an older checkpoint, or replays the log; a file without it (written before, or with no recalled
    /// body in the log) loads with none.</summary>
    private const RecordKind SnapRecalledBodies = (RecordKind)115;
    /// <summary>The release of a committed delayed transactional message (DelayIndex.NoteReleasedCommit): its commit's
    /// record's address, its release's, and (trailing, since later on 2026-12-07) the address of the body it delivered. Written whole in every file, a delta's too, and taken from the newest (since
    /// 2026-12-07). A new kind, not a version: a build before falls back to an older checkpoint, or replays the log.</summary>
    private const RecordKind SnapReleasedCommit = (RecordKind)116;

    /// <summary>Tests: runs before the halves, the queues and the decided ids are captured (with the part's index:
    /// 0, 2, 3), outside the engine lock, so a test can decide a half at a chosen moment of a fuzzy capture.</summary>
    internal Func<int, Task>? BeforePartForTests { get; set; }
    /// <summary>For tests: the delayed messages are written without their id hash, as before 2026-12-06.</summary>
    internal bool WithoutIdHashesForTests { get; set; }

    /// <summary>A chain never grows longer than this many deltas: a restart reads at most this many files past the whole one.</summary>
    internal const int MaxDeltas = 32;

    /// <summary>What the checkpoints written since the last whole one hold, for writing the next delta.</summary>
    private sealed class Chain(long baseCovered, long baseBytes)
    {
        public readonly long BaseCovered = baseCovered;
        public readonly long BaseBytes = baseBytes;
        public long LastCovered = baseCovered;
        public int Deltas;
        public long DeltaBytes;
        /// <summary>Each queue's front, end, <see cref="QueueState.ResetVersion"/> and <see cref="QueueState.Rewrites"/>
        /// when the newest checkpoint captured it.</summary>
        public Dictionary<QueueState, QueueCapture> Queues = new(ReferenceEqualityComparer.Instance);
        /// <summary><see cref="Transactions.DecidedIndex.Added"/> when the newest checkpoint captured the decided ids.</summary>
        public long DecidedAdded;
    }

    internal readonly record struct QueueCapture(long Front, long End, int Version, long Rewrites);

    // Only the checkpoint writer (one at a time, under the engine's checkpoint lock) and the load before it touch these.
    private Chain? _chain;
    /// <summary>The whole checkpoint of the chain recovery loaded, if any: the first whole checkpoint after a start
    /// keeps it and its deltas as the fallback.</summary>
    private long? _loadedBase;
    /// <summary>The newest address the chain before the current one (kept as its fallback) covers, when known.</summary>
    private long? _fallbackNewest;
    private long? _loadedNewest;

    /// <summary>
    /// True when the chain kept as the fallback, all of whose files are apart from the current chain's, still covers
    /// <paramref name="begin"/>: after a retention cut there, a damaged file of the current chain still leaves a
    /// checkpoint to start from without a whole one being written.
    /// </summary>
    public bool FallbackCovers(long begin) => _fallbackNewest is { } newest && newest >= begin;

    /// <summary>Items serialized per hold of the engine lock (queue entries twice as many, decided ids four times: they are
    /// smaller). 4,096 held the lock 3.9-5.1 ms on the median per delta in the long bench row, 1,024 held it 1.7-2.7 ms.</summary>
    private const int ItemsPerHold = 1024;

    /// <summary>What one checkpoint wrote.</summary>
    /// <param name="Covered">The log address replay starts at after this checkpoint.</param>
    /// <param name="Bytes">The file's size.</param>
    /// <param name="LongestHoldMicros">The longest hold of the engine lock, snapshots of the owners included: from taking
    /// the lock to releasing it, so what it stalled the engine for (a collection that stopped the process meanwhile
    /// included).</param>
    /// <param name="LargestHoldBytes">The most serialized in one hold.</param>
    /// <param name="ElapsedMs">The whole checkpoint, file durable included.</param>
    /// <param name="Delta">Written as a delta on the previous checkpoint rather than whole.</param>
    /// <param name="LargestSnapshotItems">The most items an owner's list copied in one hold.</param>
    /// <param name="LongestWaitMicros">The longest wait to take the engine lock (behind the traffic: it stalls only the
    /// checkpoint).</param>
    /// <param name="LongestHoldMicrosByPart">The longest hold of each part of the state (<see cref="BrokerMetrics.CheckpointHoldParts"/>).</param>
    /// <param name="GcPauseInLongestHoldMicros">Of the longest hold, the time the collector stopped the process.</param>
    public readonly record struct Written(long Covered, long Bytes, long LongestHoldMicros, long LargestHoldBytes, long ElapsedMs, bool Delta, long LargestSnapshotItems,
        long LongestWaitMicros, long[] LongestHoldMicrosByPart, long GcPauseInLongestHoldMicros);

    // Indexes into BrokerMetrics.CheckpointHoldParts: a checkpoint's holds are timed per part of the state.
    private const int PartHalves = 0, PartDelayed = 1, PartQueues = 2, PartDecided = 3, PartGroups = 4;

    /// <summary>
    /// Captures every owner and makes the file durable; replay after it starts at the address <paramref name="begin"/>
    /// returns (run under the engine lock as the checkpoint's first step, timed like the others: the log's tail).
    /// </summary>
    /// <remarks>
    /// Queue entries and decided ids are most of a large state (millions of entries with a full log), and they change
    /// little between checkpoints: entries are appended, a retention cut moves a queue's front, a relocation rewrites a
    /// few entries in place. So a checkpoint is usually a delta that names the previous one and holds, of those two,
    /// only what changed since it captured them: decided ids added, and per queue its new front (one number), the
    /// entries rewritten in place and those appended. A queue emptied and restarted, or with more entries rewritten
    /// than it lists (<see cref="QueueState.ResetVersion"/>, <see cref="QueueState.TryGetRewritesSince"/>), is written
    /// whole within the delta. Every other owner is small and written whole each time. A restart loads the whole
    /// checkpoint and its deltas in order, the small owners from the newest only. A whole checkpoint is written first
    /// after a start, when <paramref name="whole"/> is asked (retention's cut, when no other chain would cover it),
    /// after <see cref="MaxDeltas"/> deltas, and once the deltas together outgrow the whole checkpoint they build on.
    /// </remarks>
    public async Task<Written> WriteAsync(Func<long> begin, bool whole, CancellationToken ct)
    {
        var total = Stopwatch.StartNew();
        // Every step under the engine lock is timed, the wait to take the lock apart from the hold; the first one too
        // (a holder met there stalls the checkpoint as much as one met later).
        var locked = new Diagnostics.LockTimer(gate, BrokerMetrics.CheckpointHoldParts.Length);
        // The recalls due after the replay start's time are kept while this capture runs (DelayIndex.KeepRecallsDueAfterMs).
        long covered = locked.Run(() =>
        {
            state.Delayed.KeepRecallsDueAfterMs = time.GetUtcNow().ToUnixTimeMilliseconds();
            return begin();
        });
        try
        {
            return await CaptureAsync(covered, locked, whole, total, ct).ConfigureAwait(false);
        }
        finally
        {
            lock (gate) state.Delayed.KeepRecallsDueAfterMs = long.MaxValue;
        }
    }

    private async Task<Written> CaptureAsync(long covered, Diagnostics.LockTimer locked, bool whole, Stopwatch total, CancellationToken ct)
    {
        long largestHoldBytes = 0, largestSnapshot = 0;
        int part = PartHalves;   // which state the steps below copy
        long bytes;
        var chain = _chain;
        // Nothing appended since the newest checkpoint (an idle broker's shutdown): this one gets the same name, and it
        // replaces that file, so it must not build on it. A whole one is complete on its own.
        bool delta = !whole && chain is not null && covered != chain.LastCovered && chain.Deltas < MaxDeltas && chain.DeltaBytes < chain.BaseBytes;
        if (!delta) chain = null;
        var queuesCaptured = new Dictionary<QueueState, QueueCapture>(ReferenceEqualityComparer.Instance);
        long decidedAdded = 0;
        await using (var pending = store.Begin(covered))
        {
            var output = pending.Stream;
            var w = new RecordWriter();
            var chunk = new MemoryStream();
            WriteHeader(output, covered, time.GetUtcNow().ToUnixTimeMilliseconds(), chain?.LastCovered);

            T Locked<T>(Func<T> step) => locked.Run(step, part);

            // Copies an owner's item list under the lock (the chunks below then read it without holding the lock).
            T[] Snapshot<T>(Func<T[]> take)
            {
                T[] taken = Locked(take);
                largestSnapshot = Math.Max(largestSnapshot, taken.Length);
                return taken;
            }

            // Serializes one chunk under the lock into memory, then writes it out with the lock released.
            async Task Chunk(Action<RecordWriter, MemoryStream> capture)
            {
                chunk.SetLength(0);
                Locked(() => { capture(w, chunk); return true; });
                largestHoldBytes = Math.Max(largestHoldBytes, chunk.Length);
                chunk.Position = 0;
                await chunk.CopyToAsync(output, ct).ConfigureAwait(false);
            }

            // An owner's items, one of its tables at a time (Snapshot), written ItemsPerHold to a chunk.
            async Task Tables<T>(int tables, Func<int, T[]> take, Action<RecordWriter, MemoryStream, T> write)
            {
                for (int shard = 0; shard < tables; shard++)
                {
                    int table = shard;
                    T[] items = Snapshot(() => take(table));
                    for (int i = 0; i < items.Length; i += ItemsPerHold)
                    {
                        int from = i;
                        await Chunk((w, o) => { for (int k = from; k < Math.Min(from + ItemsPerHold, items.Length); k++) write(w, o, items[k]); }).ConfigureAwait(false);
                    }
                }
            }

            // The pending halves and the delayed messages are copied one table at a time (64 holds, not one that copies a
            // million halves): like the chunks, each table's copy is taken at its own moment after S, and replay from S
            // makes them agree.
            part = PartHalves;
            if (BeforePartForTests is { } hookHalves) await hookHalves(PartHalves).ConfigureAwait(false);
            // A half decided since its table was taken is written as still pending: its decision is after S and replays on top.
            await Tables(HalfIndex.Shards, state.Halves.SnapshotShard, WriteHalf).ConfigureAwait(false);

            part = PartDelayed;
            await Tables(DelayIndex.Shards, state.Delayed.SnapshotShard, (w, o, d) =>
            {
                w.Begin(SnapDelayed).I64(d.BodyAddress).I32(d.Size).Str(d.Topic).I32(d.RequestedQueueId).I64(d.DeliverAtMs).Str(d.Tag).Str(d.MessageGroup).I64(d.SentAt);
                // Then its place in send order (since 2026-12-07), after the hash it needs before it.
                if (!WithoutIdHashesForTests) w.I32(d.IdHash).I64(d.SendOrder);
                Emit(w, o);
            }).ConfigureAwait(false);

            // The remembered recalls after the delayed messages, in the order records flow between them: a recall
            // replayed over this file that finds its message gone took it out before the delayed messages were copied,
            // so its recall is in the copy below (one due after the replay start's time is kept until this capture ends).
            await Tables(DelayIndex.Shards, state.Delayed.SnapshotRecallShard, (w, o, recall) =>
            {
                // The address of its last record trailing (since the late-morning session of 2026-12-07): a cut past it carries
                // the recall forward (DelayIndex.NoteRecallRecord). A build before reads the three fields before it.
                w.Begin(SnapRecalled).Str(recall.Topic).I64(recall.DeliverAtMs).Str(recall.MessageId).I64(state.Delayed.RecallRecordAt(recall));
                Emit(w, o);
            }).ConfigureAwait(false);

            // The recalled messages whose bodies are still in the log, after the delayed messages too: a recall replayed
            // over this file that finds its message gone took it out before they were copied, so it is in this copy; a
            // copy dropped after the capture started is dropped again by replay, and noted again.
            await Tables(DelayIndex.Shards, state.Delayed.SnapshotRecalledBodiesShard, (w, o, bodies) =>
            {
                // Then the address of its recall's last record, trailing, as for the remembered recalls.
                w.Begin(SnapRecalledBodies).Str(bodies.Key.Topic).I64(bodies.Key.DeliverAtMs).Str(bodies.Key.MessageId).I64(bodies.UpTo)
                    .I64(state.Delayed.RecallRecordAt(bodies.Key));
                Emit(w, o);
            }).ConfigureAwait(false);

            // The releases of committed delayed transactional messages, after the delayed messages as well: a release
            // replayed over this file that finds its message gone released it before they were copied, so it is here.
            await Tables(DelayIndex.Shards, state.Delayed.SnapshotReleasedCommitsShard, (w, o, release) =>
            {
                // The body last, a trailing field: the build that wrote the kind first reads the two before it.
                w.Begin(SnapReleasedCommit).I64(release.DecidedAt).I64(release.ReleasedAt).I64(release.BodyAddress);
                Emit(w, o);
            }).ConfigureAwait(false);

            TopicState[] topics;
            part = PartQueues;
            if (BeforePartForTests is { } hookQueues) await hookQueues(PartQueues).ConfigureAwait(false);
            topics = Snapshot(() => state.Topics.Values.ToArray());
            foreach (var t in topics)
            {
                // The queues as the topic's record names them, taken in the same hold: an operator may add queues while the
                // capture runs (a new array, TopicState.GrowTo), and this file then holds the count before; the growth's
                // record is after `covered` and replays on top.
                QueueState[] queues = null!;
                bool wholeTopic = false;
                await Chunk((w, o) =>
                {
                    queues = t.Queues;
                    // A topic with a queue the previous file did not capture (new, or grown since) is written whole: a
                    // reader meets a count it did not have (TryLoad makes the topic again; builds before growth did the
                    // same), so every queue must be in this file from its front, not only what was appended.
                    wholeTopic = chain is not null && !queues.All(chain.Queues.ContainsKey);
                    w.Begin(SnapTopic).Str(t.Name).I32(queues.Length).I32(t.RoundRobin);
                    Emit(w, o);
                }).ConfigureAwait(false);
                for (int q = 0; q < queues.Length; q++)
                {
                    var queue = queues[q];
                    int qq = q;
                    int version = 0;
                    long front = 0, rewrites = 0;
                    long next = -1;
                    // Entries only grow at the end while retention (which trims the front) waits for this checkpoint.
                    while (true)
                    {
                        bool done = false;
                        await Chunk((w, o) =>
                        {
                            if (next < 0)
                            {
                                // The queue as the capture starts: a change later in this capture is after `covered`
                                // (replayed on top), and the next checkpoint writes it again.
                                version = queue.ResetVersion;
                                rewrites = queue.Rewrites;
                                front = queue.BaseOffset;
                                if (chain is not null && !wholeTopic && chain.Queues.TryGetValue(queue, out var before) && before.Version == version
                                    && queue.TryGetRewritesSince(before.Rewrites, out var rewritten))
                                {
                                    // What changed since the previous file: the front (a retention cut), entries rewritten
                                    // in place below its end (a body relocated), and the entries appended after it.
                                    if (front != before.Front)
                                    {
                                        w.Begin(SnapQueueFront).Str(t.Name).I32(qq).I64(front);
                                        Emit(w, o);
                                    }
                                    foreach (long offset in rewritten)
                                    {
                                        if (offset >= before.End || !queue.TryGet(offset, out var e)) continue; // appended since, or cut
                                        WriteEntry(w.Begin(SnapEntryPatch).Str(t.Name).I32(qq).I64(offset), e, queue.SourceOf(offset));
                                        Emit(w, o);
                                    }
                                    next = Math.Max(before.End, front);
                                }
                                else if (chain is not null)
                                {
                                    w.Begin(SnapQueueReset).Str(t.Name).I32(qq).I64(queue.BaseOffset);
                                    Emit(w, o);
                                }
                            }
                            long from = next < 0 ? queue.BaseOffset : next;
                            int i = (int)(from - queue.BaseOffset);
                            int n = Math.Min(2 * ItemsPerHold, queue.Entries.Count - i);
                            w.Begin(SnapEntries).Str(t.Name).I32(qq).I64(from).I32(n);
                            for (int k = 0; k < n; k++) WriteEntry(w, queue.Entries[i + k], queue.SourceOf(from + k));
                            Emit(w, o);
                            next = from + n;
                            done = n == 0 || next >= queue.NextOffset;
                        }).ConfigureAwait(false);
                        if (done) break;
                    }
                    queuesCaptured[queue] = new QueueCapture(front, next, version, rewrites);
                }
            }

            // The decided ids in expiry order, walked in steps that each copy and write a bounded part under one hold:
            // the order can hold a million entries, too many to copy in one hold. Ids added after the first step are
            // after `covered` (replayed on top) and are left to the next checkpoint; ids forgotten meanwhile are skipped.
            part = PartDecided;
            if (BeforePartForTests is { } hookDecided) await hookDecided(PartDecided).ConfigureAwait(false);
            var decidedPart = new (UInt128 Key, long AtMs)[4 * ItemsPerHold];
            var namespaces = new Dictionary<string, int>(StringComparer.Ordinal) { [""] = 0 };
            long decidedNext = chain?.DecidedAdded ?? 0;
            long decidedEnd = -1;
            while (true)
            {
                bool done = false;
                await Chunk((w, o) =>
                {
                    var decided = state.Halves.Decided;
                    if (decidedEnd < 0) decidedEnd = decided.Added;
                    int n = decided.CopyOrder(decidedNext, decidedEnd, decidedPart, out decidedNext);
                    for (int k = 0; k < n; k++)
                    {
                        var (key, atMs) = decidedPart[k];
                        if (!decided.TryGetLive(key, atMs, out var resolution, out var address, out var ns)) continue;
                        if (ns is null)
                        {
                            w.Begin(SnapDecided).U64((ulong)(key >> 64)).U64((ulong)key).Byte((byte)resolution).I64(address).I64(atMs);
                            Emit(w, o);
                            continue;
                        }
                        if (!namespaces.TryGetValue(ns, out int number))
                        {
                            namespaces[ns] = number = namespaces.Count;
                            w.Begin(SnapNamespace).I32(number).Str(ns);
                            Emit(w, o);
                        }
                        w.Begin(SnapDecidedIn).U64((ulong)(key >> 64)).U64((ulong)key).Byte((byte)resolution).I64(address).I64(atMs).I32(number);
                        Emit(w, o);
                    }
                    done = n == 0 || decidedNext >= decidedEnd;
                }).ConfigureAwait(false);
                if (done) break;
            }
            decidedAdded = decidedEnd;

            GroupTopicState[] groups;
            part = PartGroups;
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
                        // Offsets passed over (their message group in flight) as in-flight entries of attempt 0 whose
                        // lease has ended: read back as passed over; a build before 2026-12-07 delivers them again.
                        w.U64((ulong)(gq.InFlight.Count + gq.PassedOver.Count));
                        foreach (var (off, f) in gq.InFlight)
                            w.I64(off).I32(f.Attempt).I64(f.InvisibleUntilMs).I64(f.LeaseId).Str(f.MessageGroup);
                        foreach (long off in gq.PassedOver)
                            w.I64(off).I32(DeliveredRecord.PassedOverAttempt).I64(0).I64(0)
                                .Str(g.Topic.Queues[q].TryGet(off, out var passed) ? passed.MessageGroup : null);
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

            // Consumer groups' settings: each record sets a group's whole settings, so any capture order works.
            await Chunk((w, o) =>
            {
                foreach (var (group, order) in state.Groups.Orders)
                {
                    w.Begin(SnapGroupConfigured).Str(group).Byte(GroupConfiguredRecord.FlagsOf(order));
                    Emit(w, o);
                }
            }).ConfigureAwait(false);

            // Then, trailing (since the evening session of 2026-12-07), the records in the log that carry state past
            // retention cuts (Retention.CarryingRecords), each as its distance from the one before: the first cut after a
            // start from this file notes their items as carried by them, and carries again only what it newly must.
            // A build before reads the covered address alone; a file without the list loads with none (that cut carries
            // everything again, as before).
            long[] carrying = Snapshot(() => state.Carrying.From(log.BeginAddress));
            w.Begin(SnapEnd).I64(covered).U64((ulong)carrying.Length);
            long previousCarrying = 0;
            foreach (long a in carrying)
            {
                w.U64((ulong)(a - previousCarrying));
                previousCarrying = a;
            }
            Emit(w, output);
            bytes = output.Position;
            // Never ahead of the log: the copy may include records appended after S, so all of them must be durable
            // before this file can be found by a restart.
            await log.CommitNowAsync(ct).ConfigureAwait(false);
            // A whole checkpoint starts a new chain; the files before the chain it replaces can go (that chain stays, as
            // the fallback). A delta deletes nothing: its chain needs every file back to the whole one.
            await store.CompleteAsync(pending, delta ? null : _chain?.BaseCovered ?? _loadedBase, ct).ConfigureAwait(false);
        }
        if (delta)
        {
            chain!.Deltas++;
            chain.DeltaBytes += bytes;
            chain.LastCovered = covered;
        }
        else
        {
            // The chain before this one stays as the fallback (see CompleteAsync's deleteBelow above), unless this file
            // took the name of its newest (nothing appended since): then what it covers is not known apart from this one.
            long? previousNewest = _chain?.LastCovered ?? _loadedNewest;
            _fallbackNewest = previousNewest is { } p && p != covered ? p : null;
            chain = _chain = new Chain(covered, bytes);
        }
        chain.Queues = queuesCaptured;
        chain.DecidedAdded = decidedAdded;
        return new Written(covered, bytes, locked.LongestHoldMicros, largestHoldBytes, total.ElapsedMilliseconds, delta, largestSnapshot, locked.LongestWaitMicros,
            BrokerMetrics.CheckpointHoldParts.Select((_, i) => locked.LongestHoldMicrosOf(i)).ToArray(), locked.GcPauseInLongestHoldMicros);
    }

    private static void WriteHeader(Stream output, long covered, long nowMs, long? previous)
    {
        Span<byte> head = stackalloc byte[HeaderSize];
        BinaryPrimitives.WriteUInt32LittleEndian(head, Magic);
        head[4] = Version;
        BinaryPrimitives.WriteInt64LittleEndian(head[5..], covered);
        BinaryPrimitives.WriteInt64LittleEndian(head[13..], nowMs);
        head[21] = previous is null ? KindWhole : KindDelta;
        BinaryPrimitives.WriteInt64LittleEndian(head[22..], previous ?? -1);
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

    /// <summary>
    /// One queue entry:
    /// <code>vi bodyAddress | vi visibleAt | vi size (or -1 - size: more follows) | s tag | s messageGroup [| s group | s source]</code>
    /// The group (null = every group) and the source follow only for an entry reserved for one group
    /// (<see cref="QueueEntry.ForGroup"/>) or a dead letter taken from another dead-letter topic
    /// (<paramref name="source"/>, <see cref="QueueState.SourceOf"/>), which a negative size marks (a size is never
    /// negative): every other entry is written as version 3 wrote it, at no extra byte. (Version 4 wrote the group alone,
    /// never null.) Written with its entry, the source is in every file that has the entry, a delta's too.
    /// </summary>
    private void WriteEntry(RecordWriter w, in QueueEntry e, string? source)
    {
        bool more = e.ForGroup != 0 || source is not null;
        w.I64(e.BodyAddress).I64(e.VisibleAt).I32(more ? -1 - e.Size : e.Size).Str(e.Tag).Str(e.MessageGroup);
        if (more) w.Str(state.Topics.Targets.NameOf(e.ForGroup)).Str(source);
    }

    private QueueEntry ReadEntry(ref RecordReader r, byte version, out string? source)
    {
        source = null;
        var e = new QueueEntry { BodyAddress = r.I64(), VisibleAt = r.I64(), Size = r.I32(), Tag = state.Tags.Intern(r.Str()), MessageGroup = r.Str() };
        if (e.Size >= 0) return e;
        if (version < VersionWithoutSources) throw new InvalidDataException($"queue entry size {e.Size} is negative");
        e.Size = -1 - e.Size;
        string? group = state.Tags.Intern(r.Str());
        if (version == VersionWithoutSources && group is null) throw new InvalidDataException("an entry reserved for a group names none");
        e.ForGroup = state.Topics.Targets.NumberOf(group);
        if (version >= Version) source = state.Tags.Intern(r.Str());
        return e;
    }

    private static void WriteHalf(RecordWriter w, Stream o, HalfState h)
    {
        w.Begin(SnapHalf).Str(h.TransactionId).Str(h.MessageId).Str(h.Topic).Str(h.ProducerGroup).Str(h.OriginClientId).I64(h.Address).I32(h.Size)
            .I64(h.StoreTimestampMs).I64(h.CheckImmunityMs).I32(h.RequestedQueueId).Str(h.Tag).Str(h.MessageGroup).I64(h.DeliverAtMs)
            .I32(h.CheckCount).I64(h.NextCheckAtMs).Bool(h.Parked).I64(h.ParkedAtMs).I64(h.LastCheckAtMs)
            .I64(h.CheckToken); // since the midday session of 2026-12-07's check tokens, at the end: builds before stop before it
        Emit(w, o);
    }

    /// <summary>
    /// Restores the newest checkpoint that is complete and covers the log's begin into the (empty) owners, trying
    /// older ones after an unusable one. Returns the address replay starts at, or null when none is usable (the owners
    /// are then empty). Runs before the engine serves, under the engine lock.
    /// </summary>
    public long? LoadLatest()
    {
        SetAsideAheadOfLog = store.SetAsideAheadOf(log.TailAddress);
        foreach (var name in SetAsideAheadOfLog)
            logger.LogError("Checkpoint {File} covers more than the recovered log (up to {Tail}): the log lost its end; moved to {Directory}", name, log.TailAddress, CheckpointStore.AheadOfLogDirectory);
        var files = store.ListNewestFirst();
        foreach (var file in files)
        {
            try
            {
                // The file and, for a delta, the ones it builds on back to a whole checkpoint, oldest first.
                if (ResolveChain(file, files, out var chain, out var error))
                {
                    long covered = 0;
                    for (int i = 0; i < chain.Count && error is null; i++)
                    {
                        if (!TryLoad(File.ReadAllBytes(chain[i].Path), last: i == chain.Count - 1, out covered, out error))
                            error = $"{Path.GetFileName(chain[i].Path)}: {error}";
                    }
                    if (error is null)
                    {
                        if (covered < log.BeginAddress)
                        {
                            logger.LogWarning("Checkpoint {File} covers {Covered}, before the log's begin {Begin}; ignored", file, covered, log.BeginAddress);
                            state.Clear();
                            continue;
                        }
                        _loadedBase = chain[0].Covered;
                        _loadedNewest = covered;
                        return covered;
                    }
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

    /// <summary>The checkpoint files <see cref="LoadLatest"/> found ahead of the recovered log and moved aside.</summary>
    public IReadOnlyList<string> SetAsideAheadOfLog { get; private set; } = [];

    /// <summary>Reads a checkpoint file's header: its covered address and, for a delta, the checkpoint it builds on.</summary>
    private static bool TryReadHeader(ReadOnlySpan<byte> bytes, out long covered, out long? previous, out int headerSize, out byte version)
    {
        covered = 0; previous = null; headerSize = 0; version = 0;
        if (bytes.Length < HeaderSizeV2 || BinaryPrimitives.ReadUInt32LittleEndian(bytes) != Magic) return false;
        covered = BinaryPrimitives.ReadInt64LittleEndian(bytes[5..]);
        version = bytes[4];
        if (version == VersionWhole) { headerSize = HeaderSizeV2; return true; }
        if (version is not (Version or VersionWithoutSources or VersionWithoutTargets) || bytes.Length < HeaderSize) return false;
        headerSize = HeaderSize;
        if (bytes[21] == KindWhole) return true;
        if (bytes[21] != KindDelta) return false;
        previous = BinaryPrimitives.ReadInt64LittleEndian(bytes[22..]);
        return previous < covered; // a delta builds on an older checkpoint: no cycles
    }

    /// <summary>The chain that loads <paramref name="file"/>: the whole checkpoint first, then each delta in order.</summary>
    private static bool ResolveChain(string file, IReadOnlyList<string> files, out List<(string Path, long Covered)> chain, out string? error)
    {
        chain = [];
        error = null;
        string? next = file;
        var head = new byte[HeaderSize];
        while (next is not null)
        {
            int read;
            using (var f = File.OpenRead(next)) read = f.ReadAtLeast(head, HeaderSize, throwOnEndOfStream: false);
            if (!TryReadHeader(head.AsSpan(0, read), out long covered, out long? previous, out _, out _) || CheckpointStore.TryParseCovered(next, out long named) && named != covered)
            {
                error = $"{Path.GetFileName(next)}: bad header";
                return false;
            }
            chain.Insert(0, (next, covered));
            if (previous is not { } p) return true;
            if (chain.Count > MaxDeltas + 1)
            {
                error = $"more than {MaxDeltas} deltas";
                return false;
            }
            next = files.FirstOrDefault(x => CheckpointStore.TryParseCovered(x, out long c) && c == p);
            if (next is null) error = $"{Path.GetFileName(chain[0].Path)} builds on a checkpoint covering {p}, which is not there";
        }
        return false;
    }

    /// <summary>
    /// Loads one file of a chain over what the files before it loaded. Queue entries and decided ids add up along the
    /// chain; every other owner is written whole in each file and taken from the <paramref name="last"/> one.
    /// </summary>
    private bool TryLoad(byte[] bytes, bool last, out long covered, out string? error)
    {
        covered = 0;
        error = null;
        if (!TryReadHeader(bytes, out covered, out _, out int headerSize, out byte version))
        {
            error = "bad header";
            return false;
        }
        var tags = state.Tags;
        int pos = headerSize;
        bool ended = false;
        var topicsNamed = new HashSet<string>(StringComparer.Ordinal);
        var namespaces = new List<string> { "" };
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
                    string name = r.Str()!;
                    int queues = r.I32();
                    var t = state.Topics.GetOrAdd(name, queues);
                    if (t.Queues.Length != queues)
                    {
                        // Deleted and created again, or given more queues, since an older file of the chain: this file
                        // writes its queues whole (see WriteAsync's wholeTopic).
                        state.Topics.Remove(name, out _);
                        t = state.Topics.GetOrAdd(name, queues);
                    }
                    t.RoundRobin = r.I32();
                    topicsNamed.Add(name);
                    break;
                }
                case SnapQueueReset:
                {
                    var t = state.Topics[r.Str()!];
                    t.Queues[r.I32()].Reset(r.I64());
                    break;
                }
                case SnapQueueFront:
                {
                    var t = state.Topics[r.Str()!];
                    var queue = t.Queues[r.I32()];
                    long front = r.I64();
                    if (front < queue.BaseOffset) { error = $"the front of {t.Name} moves back from {queue.BaseOffset} to {front}"; return false; }
                    queue.MoveFrontTo(front);
                    break;
                }
                case SnapEntryPatch:
                {
                    var t = state.Topics[r.Str()!];
                    var queue = t.Queues[r.I32()];
                    long offset = r.I64();
                    var entry = ReadEntry(ref r, version, out var source);
                    if (offset < queue.BaseOffset || offset >= queue.NextOffset) { error = $"a rewritten entry of {t.Name} at {offset} lies outside the queue ({queue.BaseOffset} to {queue.NextOffset})"; return false; }
                    queue.Replace((int)(offset - queue.BaseOffset), entry);
                    if (source is not null) queue.SetSource(offset, source);
                    break;
                }
                case SnapEntries:
                {
                    var t = state.Topics[r.Str()!];
                    var queue = t.Queues[r.I32()];
                    long start = r.I64();
                    int n = r.I32();
                    if (queue.Entries.Count == 0) queue.StartEmptyAt(start);
                    else if (start != queue.NextOffset) { error = $"entries of {t.Name} from {start} do not continue the queue's end {queue.NextOffset}"; return false; }
                    for (int k = 0; k < n; k++)
                    {
                        queue.Append(ReadEntry(ref r, version, out var source));
                        if (source is not null) queue.SetSource(start + k, source);
                    }
                    break;
                }
                case SnapHalf when !last:
                case SnapDelayed when !last:
                case SnapGroupQueue when !last:
                case SnapPullOffset when !last:
                case SnapGroupConfigured when !last:
                case SnapRecalled when !last:
                case SnapRecalledBodies when !last:
                case SnapReleasedCommit when !last:
                    break; // taken from the newest file of the chain
                case SnapHalf:
                {
                    var h = new HalfState
                    {
                        TransactionId = r.Str()!, MessageId = r.Str()!, Topic = tags.Intern(r.Str())!, ProducerGroup = tags.Intern(r.Str())!, OriginClientId = tags.InternClientId(r.Str()),
                        Address = r.I64(), Size = r.I32(), StoreTimestampMs = r.I64(), CheckImmunityMs = r.I64(), RequestedQueueId = r.I32(), Tag = r.Str(),
                        MessageGroup = r.Str(), DeliverAtMs = r.I64(), CheckCount = r.I32(), NextCheckAtMs = r.I64(), Parked = r.Bool(),
                        ParkedAtMs = r.I64(), LastCheckAtMs = r.I64(),
                    };
                    // A checkpoint written before check tokens has none: the half is named by its address now from here on
                    // (an answer to a check sent before the upgrade from a half moved since is refused; it is checked again).
                    h.CheckToken = r.Remaining > 0 ? r.I64() : h.Address;
                    if (h.MessageId == h.TransactionId) h.MessageId = h.TransactionId;
                    state.Halves.Add(h);
                    break;
                }
                case SnapDecided:
                {
                    ulong hi = r.U64(), lo = r.U64();
                    var resolution = (TransactionResolution)r.Byte();
                    long address = r.I64(), at = r.I64();
                    // Its namespace is not known: see BrokerEngine.MayKnow for how such a decision is answered.
                    state.Halves.Decided.Add(new UInt128(hi, lo), resolution, address, at, ns: null);
                    break;
                }
                case SnapNamespace:
                {
                    int number = r.I32();
                    if (number != namespaces.Count) { error = $"namespace number {number} is out of order (expected {namespaces.Count})"; return false; }
                    namespaces.Add(r.Str() ?? "");
                    break;
                }
                case SnapDecidedIn:
                {
                    ulong hi = r.U64(), lo = r.U64();
                    var resolution = (TransactionResolution)r.Byte();
                    long address = r.I64(), at = r.I64();
                    int number = r.I32();
                    if (number < 0 || number >= namespaces.Count) { error = $"a decided id names namespace number {number}, which the file has not named"; return false; }
                    state.Halves.Decided.Add(new UInt128(hi, lo), resolution, address, at, namespaces[number]);
                    break;
                }
                case SnapDelayed:
                {
                    var d = new DelayedEntry { BodyAddress = r.I64(), Size = r.I32(), Topic = r.Str()!, RequestedQueueId = r.I32(), DeliverAtMs = r.I64(), Tag = r.Str(), MessageGroup = r.Str() };
                    // The address it was sent at (what a recall handle names) follows since recall came; a file written
                    // before has none, and no handle was issued for its messages (SentAt stays -1).
                    if (r.Remaining > 0) d.SentAt = r.I64();
                    // Then the hash of its id (since 2026-12-06), so a recall after the restart reads the bodies of its
                    // copies alone. A file written before has none: a recall reads the body of each such message of its
                    // topic and time, once (DelayIndex.NoteIdOf). A build before reads the record without it: the reader
                    // takes the fields it knows and leaves the rest of a record.
                    if (r.Remaining > 0) d.IdHash = r.I32();
                    // Then its place in send order (since 2026-12-07), so the messages due at one millisecond are
                    // released after a restart in the order they would have been live. A file written before has none:
                    // the address it was sent at stands in (a committed transaction message has none: its body's).
                    d.SendOrder = r.Remaining > 0 ? r.I64() : d.SentAt >= 0 ? d.SentAt : d.BodyAddress;
                    state.Delayed.Add(d);
                    break;
                }
                case SnapRecalled:
                {
                    string topic = r.Str() ?? throw new InvalidDataException("a remembered recall names no topic");
                    long dueMs = r.I64();
                    string messageId = r.Str() ?? throw new InvalidDataException("a remembered recall names no message id");
                    string interned = state.Tags.Intern(topic)!;
                    state.Delayed.RememberRecall(interned, dueMs, messageId);
                    // Where its last record lies; a file written before does not say (0): the next cut carries it.
                    state.Delayed.NoteRecallRecord(interned, dueMs, messageId, r.Remaining > 0 ? r.I64() : 0);
                    break;
                }
                case SnapRecalledBodies:
                {
                    string topic = r.Str() ?? throw new InvalidDataException("a recalled message's bodies name no topic");
                    long dueMs = r.I64();
                    string messageId = r.Str() ?? throw new InvalidDataException("a recalled message's bodies name no message id");
                    string interned = state.Tags.Intern(topic)!;
                    state.Delayed.NoteRecalledBody(interned, dueMs, messageId, r.I64());
                    state.Delayed.NoteRecallRecord(interned, dueMs, messageId, r.Remaining > 0 ? r.I64() : 0);
                    break;
                }
                case SnapReleasedCommit:
                {
                    long decidedAt = r.I64();
                    long releasedAt = r.I64();
                    // Written with its body since later on 2026-12-07; one without it (from the build of that morning)
                    // names no body to find it by: the message reads as no message by offset, as before the kind came.
                    if (r.Remaining > 0) state.Delayed.NoteReleasedCommit(decidedAt, releasedAt, r.I64());
                    break;
                }
                case SnapGroupQueue:
                {
                    string group = r.Str()!; string topic = r.Str()!; int q = r.I32();
                    // A group on a topic created (or deleted and created again with more queues) while the capture ran,
                    // after the topics were copied and before the groups: its topic is not in this file as it knows it.
                    // Everything of that group on that topic happened after the covered address, so replay rebuilds it.
                    // Until 2026-12-05 such a record made the whole file unusable (found by review).
                    if (!state.Topics.TryGetValue(topic, out var onTopic) || q < 0 || q >= onTopic.Queues.Length) break;
                    var g = state.Groups.GetOrAdd(group, onTopic);
                    var gq = g.Queues[q];
                    gq.NextOffset = r.I64(); gq.DoneBelow = r.I64();
                    ulong nd = r.U64();
                    for (ulong i = 0; i < nd; i++) gq.Done.Add((r.I64(), r.I64()));
                    ulong nf = r.U64();
                    for (ulong i = 0; i < nf; i++)
                    {
                        long off = r.I64();
                        var flight = new InFlight { Attempt = r.I32(), InvisibleUntilMs = r.I64(), LeaseId = r.I64(), MessageGroup = r.Str() };
                        if (flight.Attempt == DeliveredRecord.PassedOverAttempt) gq.AddPassedOver(off);
                        else ConsumerGroups.AddInFlight(g, q, off, flight);
                    }
                    break;
                }
                case SnapPullOffset:
                {
                    var rec = ConsumerOffsetCommittedRecord.Read(ref r);
                    state.PullOffsets.Set(rec.Group, rec.Topic, rec.QueueId, rec.Offset);
                    break;
                }
                case SnapGroupConfigured:
                {
                    string group = r.Str() ?? throw new InvalidDataException("group is null");
                    byte flags = r.Byte();
                    // The record's own check, so a checkpoint and the log refuse the same flags (both bits included).
                    if (GroupConfiguredRecord.FlagsError(flags) is { } bad) { error = $"group {group}: {bad}"; return false; }
                    state.Groups.SetOrder(group, new GroupConfiguredRecord(group, flags, 0).Order);
                    break;
                }
                case SnapEnd:
                {
                    ended = r.I64() == covered;
                    if (!ended || !last || r.End) break;
                    // The carrying records (see WriteAsync), taken from the newest file of the chain.
                    ulong n = r.U64();
                    if (n > (ulong)r.Remaining) { error = $"{n} carrying records is implausible"; return false; }
                    var carrying = new long[(int)n];
                    long at = 0;
                    for (int i = 0; i < carrying.Length; i++)
                    {
                        ulong step = r.U64();
                        if (step == 0 || step > long.MaxValue || (at += (long)step) < 0) { error = "carrying records out of order"; return false; }
                        carrying[i] = at;
                    }
                    state.Carrying.Loaded(carrying);
                    break;
                }
                default:
                    error = $"unknown snapshot record kind {(byte)kind}";
                    return false;
            }
        }
        if (!ended) { error = "no end marker (torn write)"; return false; }
        // A topic deleted since an older file of the chain is not named here.
        foreach (var gone in state.Topics.Values.Select(t => t.Name).Where(n => !topicsNamed.Contains(n)).ToList()) state.Topics.Remove(gone, out _);
        return true;
    }
}
