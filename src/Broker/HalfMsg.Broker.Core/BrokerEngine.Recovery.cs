using System.Buffers.Binary;
using System.Diagnostics;
using HalfMsg.Broker.Core.Delivery;
using HalfMsg.Broker.Core.Model;
using HalfMsg.Broker.Core.Storage;
using Microsoft.Extensions.Logging;

namespace HalfMsg.Broker.Core;

public sealed partial class BrokerEngine
{
    private void Recover()
    {
        var sw = Stopwatch.StartNew();
        _checkpoints.DeleteInterruptedWrites();
        long begin = _log.BeginAddress;
        long? loaded;
        lock (_gate) loaded = _checkpointer.LoadLatest();
        if (loaded is { } c) LastCheckpointAddress = c;
        _lastCheckpointAtMs = NowMs;
        long from = loaded is { } covered ? Math.Max(covered, begin) : begin;
        if (_checkpointer.SetAsideAheadOfLog.Count > 0)
        {
            // Checkpoints are written only over a durable log: one beyond the recovered tail means the log lost its end
            // (or both commit-meta slots, and FasterLog fell back to what it could find). What it lost is gone; say so.
            string reason = $"the checkpoint {_checkpointer.SetAsideAheadOfLog[0]} covers more log than was recovered (up to {_log.TailAddress}): acknowledged records from {_log.TailAddress} on are lost (the log's end or its commit metadata was damaged); the {_checkpointer.SetAsideAheadOfLog.Count} checkpoint file(s) ahead of the log were moved to checkpoints/{CheckpointStore.AheadOfLogDirectory}";
            _logger.LogError("Recovery: {Reason}", reason);
            Health.ReportDegraded(reason);
        }
        if (loaded is null && begin > LogHoles.FirstLogAddress)
        {
            // The head of the log was cut, and no checkpoint that covers the cut can be read: whatever the cut relied
            // on the checkpoint for (consumer progress, decided ids, queue positions) is missing. Serve, but say so.
            string reason = $"no readable checkpoint covers the log start at {begin}: state was rebuilt from the log after the cut alone; consumer progress, decided transactions and queue entries from before it may be missing";
            _logger.LogError("Recovery: {Reason}", reason);
            Health.ReportDegraded(reason);
        }
        var replayer = new Replayer(this);
        // Replaying the log alone: a retention move whose original record the cut took re-creates what it moved (see
        // RecordApplier.ApplyBodyRelocated); over a checkpoint, never.
        _applier.RebuildMovedFrom = loaded is null ? begin : -1;
        lock (_gate)
        {
            foreach (var hole in _log.Replay(from, ref replayer))
            {
                // FasterLog skipped these bytes without a word: say what is lost, and keep new records out of the hole's page.
                Metrics.CorruptRecordsSkipped++;
                // A hole that reaches the recovered tail is a log cut short: the commit records after the cut are gone
                // with it, so FasterLog's recovered tail may stop short of what was once written. Say so.
                string unreadable = hole.To >= _log.TailAddress
                    ? $"log bytes from address {hole.From} to the end of the log (recovered up to {hole.To}) are unreadable (cut short) and were skipped: the records in them, and any written after them, are lost"
                    : $"log bytes from address {hole.From} up to {hole.To} are unreadable (damaged, zeroed or cut short) and were skipped: the records in them are lost";
                _logger.LogError("Recovery: {Reason}", unreadable);
                Health.ReportDegraded(unreadable);
                if (hole.To >= _log.TailAddress) _log.SkipToNextPage();
            }
        }
        _applier.RebuildMovedFrom = -1;
        if (_applier.RebuiltFromMoves is { } rebuilt && rebuilt != default)
        {
            // Said, not degraded of itself (the start without a checkpoint covering the cut is): nothing is lost, but
            // the history the cut took with the original records may be partial (lease history, decided ids, the check
            // counts of records written before the moves carried them).
            _logger.LogWarning("Recovery: {Halves} pending halves, {Delayed} delayed messages and {Entries} queue entries were rebuilt from the records a retention cut moved their bodies in (their own records were cut, and no checkpoint covers the cut)",
                rebuilt.Halves, rebuilt.Delayed, rebuilt.Entries);
        }
        if (_applier.DecisionsRebuilt > 0)
            _logger.LogInformation("Recovery: {Decisions} decided transaction ids were taken from the records retention cuts carried them in (their own records were cut, and no checkpoint covers the cut)",
                _applier.DecisionsRebuilt);
        lock (_gate)
        {
            // Decisions carried by retention cuts were replayed after those of later records: back in their order.
            _txs.Decided.RestoreOrder();
            // A decision whose record was damaged, but which the checkpoint already holds, stays decided (see there).
            // Only after damage: the pass looks up every pending half (about 0.2-0.3 s a million).
            if (Metrics.CorruptRecordsSkipped > 0) _applier.DropHalvesDecidedInCheckpoint();
            // What a retention cut removed, as a pure function of the log's begin address (see Retention).
            ExpireBelow(begin);
            // Leases recovered from the log expire on the sweeper; delays and checks re-enter their due-time indexes.
            _groups.ScheduleAllInFlight();
            _recordsSinceCheckpoint = _applier.ReplayedRecords;
            // A growth replayed from the log (a crash before its checkpoint) is still only in its record: asked again.
            if (_applier.ReplayedGrowths > 0) _checkpointAsked = 1;
            // The loaded checkpoint covers the log up to its address, so a retention cut may cut there at once, not only
            // after the next checkpoint. Its age is not known here: taken as now, an age cut there waits a whole limit.
            if (loaded is { } at && at > begin && at <= _log.TailAddress) _retention.AddBoundary(at, NowMs);
        }
        Metrics.ReplayedRecords = _applier.ReplayedRecords;
        Metrics.RecoveryMilliseconds = sw.ElapsedMilliseconds;
        _logger.LogInformation("Recovered in {Ms} ms: checkpoint {Checkpoint}, replayed {Records} records from {From} to {Tail}; {Pending} pending halves, {Topics} topics",
            sw.ElapsedMilliseconds, loaded?.ToString() ?? "none", _applier.ReplayedRecords, from, _log.TailAddress, _txs.Count, _topics.Count);
    }

    private struct Replayer(BrokerEngine engine) : IRecordConsumer
    {
        public void Consume(ReadOnlySpan<byte> record, long address) => engine._applier.Apply(record, address);
    }

    // ------------------------------------------------------------ checkpoints

    /// <summary>Writes a snapshot of every state owner so the next start replays only the log after it (see <see cref="Checkpointer"/>).</summary>
    public async Task CheckpointAsync(CancellationToken ct = default)
    {
        await _checkpointLock.WaitAsync(ct).ConfigureAwait(false);
        try
        {
            await CheckpointLockedAsync(ct).ConfigureAwait(false);
        }
        finally
        {
            _checkpointLock.Release();
        }
    }

    /// <summary>
    /// Waits until no checkpoint is being captured (nor a retention cut, which holds the same lock across its own) and
    /// holds the next one off until the returned lease is disposed: for a destructive operation whose record must not
    /// fall inside a fuzzy capture (see <see cref="Checkpointer"/>). Hold it only across the append, never across a wait
    /// for durability. Cancellable while it waits; nothing is written then.
    /// </summary>
    private async ValueTask<CaptureBarrier> HoldOffCapturesAsync(CancellationToken ct, bool relocation = false)
    {
        if (!_checkpointLock.Wait(0))
        {
            Interlocked.Increment(ref relocation ? ref _relocationsHeldByCapture : ref _adminHeldByCapture);
            await _checkpointLock.WaitAsync(ct).ConfigureAwait(false);
        }
        return new CaptureBarrier(_checkpointLock);
    }

    private long _adminHeldByCapture;
    private long _relocationsHeldByCapture;

    /// <summary>Tests: how many destructive admin operations found a capture running and waited for it to end.</summary>
    internal long AdminHeldByCaptureForTests => Interlocked.Read(ref _adminHeldByCapture);

    /// <summary>Tests: how many of a retention cut's body moves found a capture running and waited for it to end.</summary>
    internal long RelocationsHeldByCaptureForTests => Interlocked.Read(ref _relocationsHeldByCapture);

    private readonly struct CaptureBarrier(SemaphoreSlim held) : IDisposable
    {
        public void Dispose() => held.Release();
    }

    // whole: write the whole state, not a delta on the previous checkpoint (retention's cut asks for it when no other
    // chain would cover the cut).
    private async Task CheckpointLockedAsync(CancellationToken ct, bool whole = false)
    {
        var written = await _checkpointer.WriteAsync(() =>
        {
            _recordsSinceCheckpoint = 0;
            return _log.TailAddress;
        }, whole, ct).ConfigureAwait(false);
        long covered = written.Covered;
        Metrics.LastCheckpointPauseMicros = written.LongestHoldMicros;
        Metrics.LastCheckpointLockWaitMicros = written.LongestWaitMicros;
        Metrics.LastCheckpointHoldMicrosByPart = written.LongestHoldMicrosByPart;
        Metrics.LastCheckpointHoldGcPauseMicros = written.GcPauseInLongestHoldMicros;
        Metrics.LastCheckpointBytes = written.Bytes;
        if (written.Delta) Metrics.CheckpointsDelta++; else Metrics.CheckpointsWhole++;
        Metrics.LastCheckpointLargestHoldBytes = written.LargestHoldBytes;
        Metrics.LastCheckpointLargestSnapshotItems = written.LargestSnapshotItems;
        Metrics.CheckpointLockHolds.Record(written.LongestHoldMicros);
        CheckpointWritten?.Invoke(new CheckpointFacts(written.Delta, written.Bytes, written.ElapsedMs / 1000.0, written.LongestHoldMicros, written.LongestWaitMicros));
        LastCheckpointAddress = covered;
        _lastCheckpointAtMs = NowMs;
        lock (_gate) _retention.AddBoundary(covered, NowMs);
        _logger.LogDebug("Checkpoint at {Address} ({Kind}): {Bytes} bytes in {Ms} ms; the engine lock was held at most {Micros} µs at a time (the longest wait to take it {WaitMicros} µs)",
            covered, written.Delta ? "delta" : "whole", written.Bytes, written.ElapsedMs, written.LongestHoldMicros, written.LongestWaitMicros);
    }

    /// <summary>Raised after each checkpoint is written (on the checkpointing task, outside the engine lock).</summary>
    public event Action<CheckpointFacts>? CheckpointWritten;

    /// <summary>One written checkpoint: a delta or whole, its size, how long writing it took, its longest hold of the
    /// engine lock and its longest wait to take it, in microseconds.</summary>
    public readonly record struct CheckpointFacts(bool Delta, long Bytes, double Seconds, long LongestHoldMicros, long LongestWaitMicros);

    /// <summary>The log address the newest checkpoint covers (replay starts there).</summary>
    public long LastCheckpointAddress { get; private set; }

    // When the newest checkpoint was written (or the engine opened): the age bound of CheckpointSchedule counts from it.
    private long _lastCheckpointAtMs;

    /// <summary>
    /// One pass of the checkpoint loop: a checkpoint when one is due (<see cref="CheckpointSchedule"/>: by records, by
    /// log bytes, or by time while anything is written) or was asked for (a topic's growth), then a retention cut when
    /// the limits ask for one.
    /// </summary>
    internal async Task RunCheckpointPassAsync(CancellationToken ct)
    {
        long records = Interlocked.Read(ref _recordsSinceCheckpoint);
        long bytes;
        lock (_gate) bytes = _log.TailAddress - LastCheckpointAddress;
        // Taken before the capture starts: an ask made during it (its record may lie past the address the capture
        // covers) stays for the next pass. Until 2026-12-06 a growth waited for the schedule (200,000 records by
        // default), and a damaged growth record left the added queues that had no message missing after replay.
        bool asked = Interlocked.Exchange(ref _checkpointAsked, 0) == 1;
        if (asked || CheckpointSchedule.IsDue(records, bytes, NowMs - _lastCheckpointAtMs, _options))
        {
            try
            {
                await CheckpointAsync(ct).ConfigureAwait(false);
            }
            catch when (asked)
            {
                Volatile.Write(ref _checkpointAsked, 1); // not written: asked again at the next pass
                throw;
            }
        }
        await RunRetentionAsync(ct).ConfigureAwait(false);
    }

    // ------------------------------------------------------------ background loops

    private void StartLoops()
    {
        _loops.Add(Task.Run(() => RunLoopAsync("check-back", async ct =>
        {
            await _checkKick.WaitAsync(_options.TransactionCheckInterval, ct).ConfigureAwait(false);
            await RunCheckPassAsync(ct).ConfigureAwait(false);
        })));
        _loops.Add(Task.Run(async () =>
        {
            // Before the first sweep releases anything: copies of recalled messages a crash left waiting.
            try
            {
                await RecallCopiesLeftByCrashAsync(_stop.Token).ConfigureAwait(false);
            }
            catch (Exception ex) when (ex is OperationCanceledException or ObjectDisposedException or StorageFailureException)
            {
                // Stopping, or the log failed (which the broker reports): a retried recall takes them out.
            }
            catch (Exception ex)
            {
                // Anything else must not keep the sweeper from starting (no delayed message released, no lease ended):
                // said, and the sweeper goes on (found by review of the night session of 2026-12-06).
                _logger.LogError(ex, "Taking out copies of recalled messages left by a crash failed; the sweeper starts anyway (a retried recall takes them out)");
            }
            await RunLoopAsync("sweeper", async ct =>
            {
                long sweptAt = _time.GetTimestamp();
                TimeSpan wait = await SweepAndPlanAsync(ct).ConfigureAwait(false);
                await _sweepAlarm.WaitAsync(wait, ct).ConfigureAwait(false);
                // Kicked: still at most one sweep per MinGap, so a stream of short delays is swept in batches.
                TimeSpan rest = SweepAlarm.MinGap - _time.GetElapsedTime(sweptAt);
                if (rest > TimeSpan.Zero) await Task.Delay(rest, _time, ct).ConfigureAwait(false);
            }).ConfigureAwait(false);
        }));
        _loops.Add(Task.Run(() => RunLoopAsync("checkpoint", async ct =>
        {
            await Task.Delay(TimeSpan.FromSeconds(1), _time, ct).ConfigureAwait(false);
            await RunCheckpointPassAsync(ct).ConfigureAwait(false);
        })));
    }

    private async Task RunLoopAsync(string name, Func<CancellationToken, Task> body)
    {
        var ct = _stop.Token;
        while (!ct.IsCancellationRequested && StorageFault is null)
        {
            try
            {
                await body(ct).ConfigureAwait(false);
            }
            catch (OperationCanceledException) when (ct.IsCancellationRequested)
            {
                return;
            }
            catch (Exception) when (StorageFault is not null)
            {
                return; // the log failed: said once by RecordLog, nothing here can work any more (issue 8, defect 6)
            }
            catch (Exception ex)
            {
                _logger.LogError(ex, "The {Loop} loop failed; retrying in 1 s", name);
                try { await Task.Delay(1000, ct).ConfigureAwait(false); } catch (OperationCanceledException) { return; }
            }
        }
    }
}
