using System.Buffers.Binary;
using System.Diagnostics;
using HalfMsg.Broker.Core.Model;
using HalfMsg.Broker.Core.Storage;
using Microsoft.Extensions.Logging;

namespace HalfMsg.Broker.Core;

public sealed partial class BrokerEngine
{
    /// <summary>FasterLog's first valid address: a log whose begin is past it has been cut by retention.</summary>
    private const long FirstLogAddress = 64;

    private void Recover()
    {
        var sw = Stopwatch.StartNew();
        long begin = _log.BeginAddress;
        long? loaded;
        lock (_gate) loaded = _checkpointer.LoadLatest();
        if (loaded is { } c) LastCheckpointAddress = c;
        long from = loaded is { } covered ? Math.Max(covered, begin) : begin;
        if (loaded is null && begin > FirstLogAddress)
        {
            // The head of the log was cut, and no checkpoint that covers the cut can be read: whatever the cut relied
            // on the checkpoint for (consumer progress, decided ids, queue positions) is missing. Serve, but say so.
            string reason = $"no readable checkpoint covers the log start at {begin}: state was rebuilt from the log after the cut alone; consumer progress, decided transactions and queue entries from before it may be missing";
            _logger.LogError("Recovery: {Reason}", reason);
            Health.ReportDegraded(reason);
        }
        var replayer = new Replayer(this);
        lock (_gate) _log.Replay(from, ref replayer);
        lock (_gate)
        {
            // What a retention cut removed, as a pure function of the log's begin address (see Retention).
            ExpireBelow(begin);
            // Leases recovered from the log expire on the sweeper; delays and checks re-enter their due-time indexes.
            _groups.ScheduleAllInFlight();
            _recordsSinceCheckpoint = _replayedRecords;
        }
        Metrics.ReplayedRecords = _replayedRecords;
        Metrics.RecoveryMilliseconds = sw.ElapsedMilliseconds;
        _logger.LogInformation("Recovered in {Ms} ms: checkpoint {Checkpoint}, replayed {Records} records from {From} to {Tail}; {Pending} pending halves, {Topics} topics",
            sw.ElapsedMilliseconds, loaded?.ToString() ?? "none", _replayedRecords, from, _log.TailAddress, _txs.Count, _topics.Count);
    }

    private struct Replayer(BrokerEngine engine) : IRecordConsumer
    {
        public void Consume(ReadOnlySpan<byte> record, long address) => engine.ApplyRecord(record, address);
    }

    /// <summary>
    /// Applies one record to the in-memory state: the single path for replay and for the live engine
    /// (<see cref="AppendAndApply"/>). Every record is read whole before anything changes, so a damaged record changes
    /// nothing; during replay it costs itself only, and is reported loudly (Error log, degraded health, counter).
    /// </summary>
    private void ApplyRecord(ReadOnlySpan<byte> record, long address)
    {
        if (!IsReady) _replayedRecords++;
        if (!RecordHeader.TryOpen(record, out var kind, out var r, out var error))
        {
            ReportDamaged(address, kind, error);
            return;
        }
        try
        {
            switch (kind)
            {
                case RecordKind.TopicCreated:
                {
                    var rec = TopicCreatedRecord.Read(ref r);
                    ApplyTopicCreated(rec.Topic, rec.Queues);
                    break;
                }
                case RecordKind.MessageStored:
                    ApplyMessageStored(address, record.Length, MessageStoredRecord.Read(ref r));
                    break;
                case RecordKind.HalfStored:
                    ApplyHalfStored(address, record.Length, HalfStoredRecord.Read(ref r));
                    break;
                case RecordKind.TxDecided:
                    ApplyTxDecided(address, TxDecidedRecord.Read(ref r));
                    break;
                case RecordKind.TxChecked:
                    ApplyTxChecked(TxCheckedRecord.Read(ref r));
                    break;
                case RecordKind.TxParked:
                    ApplyTxParked(address, TxParkedRecord.Read(ref r));
                    break;
                case RecordKind.TxResumed:
                    ApplyTxResumed(TxResumedRecord.Read(ref r));
                    break;
                case RecordKind.Delivered:
                    ApplyDelivered(DeliveredRecord.Read(ref r));
                    break;
                case RecordKind.Acked:
                    ApplyAcked(AckedRecord.Read(ref r));
                    break;
                case RecordKind.InvisibilityChanged:
                    ApplyInvisibilityChanged(InvisibilityChangedRecord.Read(ref r));
                    break;
                case RecordKind.DeadLettered:
                    ApplyDeadLettered(address, DeadLetteredRecord.Read(ref r));
                    break;
                case RecordKind.QueueEntryAdded:
                    ApplyQueueEntryAdded(address, QueueEntryAddedRecord.Read(ref r));
                    break;
                case RecordKind.BodyRelocated:
                    ApplyBodyRelocated(address, record.Length, BodyRelocatedRecord.Read(ref r));
                    break;
                case RecordKind.GroupDeleted:
                    ApplyGroupDeleted(GroupDeletedRecord.Read(ref r));
                    break;
                case RecordKind.LogCut:
                    LogCutRecord.Read(ref r);
                    break;
                case RecordKind.GroupStarted:
                    ApplyGroupStarted(GroupStartedRecord.Read(ref r));
                    break;
                case RecordKind.ConsumerOffsetCommitted:
                    ApplyConsumerOffset(ConsumerOffsetCommittedRecord.Read(ref r));
                    break;
                case RecordKind.TopicDeleted:
                    ApplyTopicDeleted(TopicDeletedRecord.Read(ref r).Topic);
                    break;
                default:
                    ReportDamaged(address, kind, $"unknown record kind {(byte)kind}");
                    break;
            }
        }
        catch (Exception ex) when (!IsReady && ex is InvalidDataException or OverflowException or IndexOutOfRangeException or ArgumentOutOfRangeException)
        {
            // Only during replay: on the live path a record we just wrote that does not apply is a bug, and throws.
            ReportDamaged(address, kind, ex.Message);
        }
    }

    private void ReportDamaged(long address, RecordKind kind, string error)
    {
        Metrics.CorruptRecordsSkipped++;
        string reason = $"log record at address {address} ({kind}) is damaged and was skipped: {error}";
        _logger.LogError("Damaged log record at {Address} ({Kind}) skipped: {Error}. Only this record is lost; replay continues.", address, kind, error);
        Health.ReportDegraded(reason);
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

    private async Task CheckpointLockedAsync(CancellationToken ct)
    {
        long covered;
        lock (_gate)
        {
            covered = _log.TailAddress;
            _recordsSinceCheckpoint = 0;
        }
        var written = await _checkpointer.WriteAsync(covered, ct).ConfigureAwait(false);
        Metrics.LastCheckpointPauseMicros = written.LongestHoldMicros;
        LastCheckpointAddress = covered;
        lock (_gate) _retention.AddBoundary(covered, NowMs);
        _logger.LogDebug("Checkpoint at {Address}: {Bytes} bytes in {Ms} ms; the engine lock was held at most {Micros} µs at a time",
            covered, written.Bytes, written.ElapsedMs, written.LongestHoldMicros);
    }

    /// <summary>The log address the newest checkpoint covers (replay starts there).</summary>
    public long LastCheckpointAddress { get; private set; }

    private string? Intern(string? value) => _tags.Intern(value);

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
