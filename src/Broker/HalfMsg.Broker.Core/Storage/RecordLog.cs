using System.Buffers.Binary;
using FASTER.core;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;

namespace HalfMsg.Broker.Core.Storage;

/// <summary>
/// The broker's single source of truth: a FasterLog of records (see <see cref="RecordHeader"/>) plus the one owner of durability.
/// </summary>
/// <remarks>
/// Appenders never commit. <see cref="Append"/> copies a record into FasterLog's in-memory tail and returns its
/// address; <see cref="WaitDurableAsync"/> parks the caller until a commit covers that address. A single commit loop
/// commits whenever someone waits (or, in async mode, periodically) and completes every waiter the commit covered, so
/// concurrent writers share one fsync: while one commit is in flight, the next batch accumulates behind it. This is
/// FasterLog's own sample pattern with EventStore's adaptive batching (the batch grows with the fsync's duration).
/// A FasterLog read of an address at or beyond <see cref="DurableUntil"/> returns nothing, so readers only ever
/// see durable records — which is also what makes "visible only once durable" cheap to enforce.
/// </remarks>
public sealed class RecordLog : IAsyncDisposable
{
    private readonly FasterLog _log;
    private readonly IDevice _device;
    private readonly ILogCommitManager _commitManager;
    private readonly FlushMode _flush;
    private readonly TimeSpan _asyncInterval;
    private readonly ILogger _logger;
    private readonly object _waitersGate = new();
    // One completion per group commit, not one per waiter: every waiter whose record was appended before a commit
    // started awaits that commit's task (taken from _nextCommit, which the commit loop swaps for a fresh one as the
    // commit starts), then re-checks _durableUntil. No TaskCompletionSource and no list entry per durable wait.
    private TaskCompletionSource _nextCommit = NewCommitCompletion();
    private TaskCompletionSource? _commitInFlight;
    private int _kickPending;
    private readonly SemaphoreSlim _kick = new(0, int.MaxValue);
    private readonly CancellationTokenSource _stop = new();
    private readonly CancellationTokenSource _watchdogStop = new(); // after the commit loop has stopped (DisposeAsync)
    private readonly Task _commitLoop;
    private readonly Task _commitWatchdog;
    private static readonly TimeSpan IdleCommitInterval = TimeSpan.FromMilliseconds(20);
    /// <summary>How long the sync-mode commit loop sleeps when everything appended is committed: until a waiter or
    /// <see cref="RequestCommit"/> kicks it, at most this long (so a record nobody waits for, appended meanwhile, is
    /// committed within this). It used to wake every <see cref="IdleCommitInterval"/>, 50 times a second, to find nothing
    /// to do, and each wake-up set the thread pool's workers spinning: most of an idle broker's CPU (bench "broker idle").</summary>
    private static readonly TimeSpan NothingToCommitSleep = TimeSpan.FromMilliseconds(200);
    private long _durableUntil;
    private long _commits;
    private long _commitTicks;
    private long _idleTicks;
    private long _kickedOnReturn;
    private readonly long _memoryBytes;
    private readonly TimeSpan _commitTimeout;
    private readonly string _directory;
    private readonly LogHoles _holes;
    private StorageFailureException? _fault;
    private readonly TaskCompletionSource<StorageFailureException> _failed = new(TaskCreationOptions.RunContinuationsAsynchronously);

    /// <summary>Times and sizes each commit for the broker's metrics (issue 12).</summary>
    public Diagnostics.LogCommitStats CommitStats { get; } = new();

    /// <summary>Raised on the commit loop after each commit with the new durable-until address.</summary>
    public event Action<long>? Durable;

    public RecordLog(string directory, FlushMode flush, TimeSpan asyncInterval, int segmentSizeBits = 28, int memorySizeBits = 26, ILogger? logger = null,
        int maxRecordSize = DefaultMaxRecordSize, TimeSpan? commitTimeout = null, Func<IDevice, IDevice>? wrapDevice = null,
        int commitLingerYields = DefaultCommitLingerYields)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(commitLingerYields);
        _lingerYields = commitLingerYields;
        Directory.CreateDirectory(directory);
        _logger = logger ?? NullLogger.Instance;
        _flush = flush;
        _asyncInterval = asyncInterval;
        _directory = directory;
        _commitTimeout = commitTimeout ?? DefaultCommitTimeout;
        PageSizeBits = LogLayout.Resolve(directory, maxRecordSize);
        MaxRecordSize = RecordLimits.RecordCapacity(PageSizeBits);
        (var settings, _device, _commitManager) = CreateSettings(directory, segmentSizeBits, memorySizeBits, PageSizeBits, wrapDevice);
        _memoryBytes = settings.MemorySize;
        _holes = new LogHoles(directory, Math.Max(segmentSizeBits, PageSizeBits), PageSizeBits);
        ClearRecoveryScanTraps(_commitManager);
        _log = new FasterLog(settings);
        _durableUntil = _log.CommittedUntilAddress;
        (_commitManager as SlotLogCommitManager)?.NoteRecovered(_durableUntil);
        _commitLoop = Task.Run(CommitLoopAsync);
        _commitWatchdog = Task.Run(CommitWatchdogAsync);
    }

    /// <summary>
    /// Before FasterLog recovers: FasterLog scans forward from the newest commit slot's until-address for commit records
    /// written after it, with its own scan, which never ends on a damaged length header of <c>0x80000000</c> (or of a
    /// magnitude near 2^31): the broker would hang in its constructor, saying nothing (<see cref="LogHoles.FindRecoveryScanTraps"/>).
    /// Each such header is overwritten with zeros, so the scan goes on at the next page as over page-end padding. What
    /// lies after the newest slot was never acknowledged (a commit's slot is written before its waiters are released),
    /// unless that slot itself was damaged too: in that double fault the scan, gone on at the next page, misses the
    /// commit records in the rest of the cleared header's page, and the records they covered are lost with it (before,
    /// the broker never started).
    /// </summary>
    private void ClearRecoveryScanTraps(ILogCommitManager commits)
    {
        long from = 0;
        foreach (long num in commits.ListCommits())
        {
            // The slot FasterLog will start from: the newest whose metadata reads (RestoreLatest's own order).
            try
            {
                byte[]? metadata = commits.GetCommitMetadata(num);
                if (metadata is null) continue;
                var info = new FasterLogRecoveryInfo();
                using (var reader = new BinaryReader(new MemoryStream(metadata))) info.Initialize(reader);
                from = info.UntilAddress;
                break;
            }
            catch (Exception)
            {
                // FasterLog skips a slot that does not load, whatever the error, and tries the next: so does this.
            }
        }
        foreach (long trap in _holes.FindRecoveryScanTraps(from))
        {
            int length = _holes.ReadLength(trap);
            _holes.ClearLength(trap);
            _logger.LogWarning(
                "Recovery: the log's length header at address {Address}, after the newest commit slot (until {Until}), read {Length} (0x{Hex:X8}), on which FasterLog's recovery scan never ends; it was cleared to zero. Records after the newest slot were never acknowledged, unless that slot was damaged too: then records later in that page may be lost.",
                trap, from, length, length);
        }
    }

    /// <summary>The log device's file name: FasterLog stores segment N as <c>broker.log.N</c> beside it.</summary>
    internal const string DeviceFileName = "broker.log";
    /// <summary>Where FASTER's own commit manager (used before <see cref="SlotLogCommitManager"/>) kept its commit files.</summary>
    internal const string LegacyCommitsDirectory = "log-commits";

    /// <summary>The largest record of a broker with the default maximum message size (4 MiB).</summary>
    public const int DefaultMaxRecordSize = 4 * 1024 * 1024 + RecordLimits.MaxRecordOverhead;
    /// <summary>A commit that takes longer than this is a storage failure (FASTER's commit has been seen to hang).</summary>
    public static readonly TimeSpan DefaultCommitTimeout = TimeSpan.FromSeconds(30);

    /// <summary>FasterLog page size of this log (2^bits bytes), fixed when the log was created (<see cref="LogLayout"/>).</summary>
    public int PageSizeBits { get; }
    /// <summary>The largest record <see cref="Append"/> accepts: one page minus FasterLog's entry header and padding.</summary>
    public int MaxRecordSize { get; }

    /// <summary>
    /// The FasterLog configuration the broker runs on. Shared with the benchmark's raw-log ceiling, so "ours vs the raw
    /// log" compares the same device, page, memory and commit settings. Memory holds at least four pages and a segment
    /// at least one; <paramref name="pageSizeBits"/> comes from <see cref="RecordLimits"/>.
    /// </summary>
    /// <remarks>
    /// Four pages, not FASTER's minimum of two (its small-memory support is for four): an append that opens page P spins,
    /// under the engine lock, until every page before P−B+1 is written out (B pages of memory). <see cref="WaitForRoomAsync"/>
    /// keeps writers within <see cref="RoomBytes"/> of the committed address, at most B−3 pages, so writers that passed
    /// it together can still write two pages (B−1−R pages for a room of R) before an append has to wait. With two pages
    /// and a room of one, as before, an append could wait at any page turn.
    /// </remarks>
    internal static (FasterLogSettings Settings, IDevice Device, ILogCommitManager CommitManager) CreateSettings(
        string directory, int segmentSizeBits, int memorySizeBits, int pageSizeBits = -1, Func<IDevice, IDevice>? wrapDevice = null)
    {
        Directory.CreateDirectory(directory);
        if (pageSizeBits < 0) pageSizeBits = RecordLimits.PageSizeBitsForRecord(DefaultMaxRecordSize);
        IDevice device = Devices.CreateLogDevice(Path.Combine(directory, DeviceFileName), preallocateFile: false, deleteOnClose: false, recoverDevice: true);
        if (wrapDevice is not null) device = wrapDevice(device);
        // Fast-commit mode writes each commit's metadata into the log itself, so FASTER's commit file per commit
        // (create, write through, delete the previous) is not needed: SlotLogCommitManager overwrites one of two slots
        // in one file, at most once a second or every 1,024 commits, and always when the begin address moves.
        // (FASTER's own throttle, fastCommitThrottleFreq, was reverted once because CommitAsync then hung now and then:
        // a commit whose page flush, an epoch action, was never drained. The throttle only made that window more
        // likely; CommitWithinBoundAsync now refreshes the epoch when a commit is stuck.)
        string legacyCommits = Path.Combine(directory, LegacyCommitsDirectory);
        DeviceLogCommitCheckpointManager? legacy = Directory.Exists(legacyCommits)
            ? new DeviceLogCommitCheckpointManager(new LocalStorageNamedDeviceFactory(), new DefaultCheckpointNamingScheme(directory), removeOutdated: false)
            : null;
        // A slot on every commit: recovery must know the exact committed tail. With a slot only every 1,024 commits or
        // second, recovery found the tail by scanning forward for commit records, and a damaged record in that stretch
        // ended the scan: everything acknowledged after it vanished without a word (DamageTests failed once the two
        // changes met). One fsynced write in place per commit still saves FASTER's create and delete of a file.
        var commitManager = new SlotLogCommitManager(directory, commitsPerWrite: 1, legacy: legacy);
        var settings = new FasterLogSettings
        {
            LogDevice = device,
            LogCommitManager = commitManager,
            PageSizeBits = pageSizeBits,
            MemorySizeBits = Math.Max(memorySizeBits, pageSizeBits + MinMemoryPagesBits),
            SegmentSizeBits = Math.Max(segmentSizeBits, pageSizeBits),
            TryRecoverLatest = true,
            AutoRefreshSafeTailAddress = false,
            RemoveOutdatedCommits = true,
            // Measured on this machine: 200k 1 KiB appends committed every 1000 took 343 ms instead of 3,022 ms.
            FastCommitMode = true,
        };
        return (settings, device, commitManager);
    }

    /// <summary>The in-memory buffer holds at least 2^this pages (see <see cref="CreateSettings"/>).</summary>
    internal const int MinMemoryPagesBits = 2;

    public long BeginAddress => _log.BeginAddress;
    public long TailAddress => _log.TailAddress;
    public long DurableUntil => Volatile.Read(ref _durableUntil);
    public FlushMode Flush => _flush;
    /// <summary>FasterLog's own view, for diagnosing a stalled commit loop.</summary>
    public string DebugState => $"faster committed={_log.CommittedUntilAddress} flushed={_log.FlushedUntilAddress} tail={_log.TailAddress} durable={DurableUntil}";

    /// <summary>Non-null once the log has failed (a commit failed or exceeded its bound): no write succeeds any more.</summary>
    public StorageFailureException? Fault => Volatile.Read(ref _fault);

    /// <summary>Completes (with the failure) when the log fails; never completes on a healthy log.</summary>
    public Task<StorageFailureException> Failed => _failed.Task;

    /// <summary>Group commits (fsyncs) so far: appends ÷ commits is the batching achieved.</summary>
    public long Commits => Interlocked.Read(ref _commits);

    /// <summary>Time spent in commits (write + fsync) so far: its change over the change of <see cref="Commits"/> is the
    /// mean commit latency of an interval.</summary>
    public TimeSpan CommitTime => System.Diagnostics.Stopwatch.GetElapsedTime(0, Interlocked.Read(ref _commitTicks));

    /// <summary>Time the commit loop spent waiting to be asked for a commit (nobody was waiting for durability), and how
    /// many times it came back from a commit to find a request already waiting. With <see cref="CommitTime"/> this splits
    /// the loop's time into the disk's share, idle, and the rest (getting a thread to run on, publishing).</summary>
    public (TimeSpan Idle, long KickedOnReturn) CommitLoopIdle
        => (System.Diagnostics.Stopwatch.GetElapsedTime(0, Interlocked.Read(ref _idleTicks)), Interlocked.Read(ref _kickedOnReturn));

    /// <summary>Appends one encoded record to the in-memory tail. Thread-safe; callers keep their own order.</summary>
    /// <exception cref="StorageFailureException">The log has failed.</exception>
    /// <exception cref="RecordTooLargeException">The record does not fit a page (the caller's limits are wrong).</exception>
    public long Append(ReadOnlySpan<byte> record)
    {
        if (Volatile.Read(ref _fault) is { } fault) throw fault;
        if (record.Length > MaxRecordSize) throw new RecordTooLargeException(record.Length, MaxRecordSize);
        if (_log.TryEnqueue(record, out long address)) return address;
        return AppendWaitingForPage(record);
    }

    /// <summary>
    /// The page this record needs is not written out yet. Spins as FasterLog's <c>Enqueue</c> does, with the caller
    /// holding the engine lock, but inside <see cref="PoolHeadroom"/>: the page write needs a pool thread, and the pool's
    /// threads may all be blocked on that lock. <see cref="WaitForRoomAsync"/> exists so that this rarely happens; counted
    /// when it does. Gives up with the log's fault if the log fails meanwhile.
    /// </summary>
    private long AppendWaitingForPage(ReadOnlySpan<byte> record)
    {
        Interlocked.Increment(ref _appendsThatWaited);
        using var headroom = PoolHeadroom.Enter();
        for (int spins = 1; ; spins++)
        {
            if (_log.TryEnqueue(record, out long address)) return address;
            if (Volatile.Read(ref _fault) is { } fault) throw fault;
            if (spins % 64 == 0) PoolHeadroom.Raise(); // the queue grows while writers pile up behind the lock
            Thread.Yield();
        }
    }

    private long _appendsThatWaited;

    /// <summary>Appends that found the log's in-memory buffer full and waited inside <see cref="Append"/> for a page
    /// write to complete (while the engine lock was held): zero unless writers outran <see cref="WaitForRoomAsync"/>
    /// (<see cref="AppendWaitingForPage"/>).</summary>
    public long AppendsThatWaited => Interlocked.Read(ref _appendsThatWaited);

    /// <summary>
    /// Completes when the record at <paramref name="address"/> is durable. In async flush mode it completes at once
    /// (the caller accepted the risk); use <see cref="WaitCommittedAsync"/> to wait for the commit regardless.
    /// </summary>
    public ValueTask WaitDurableAsync(long address, CancellationToken ct = default)
        => _flush == FlushMode.Async ? ValueTask.CompletedTask : WaitCommittedAsync(address, ct);

    /// <summary>Completes when a commit covers <paramref name="address"/>, whatever the flush mode.</summary>
    public ValueTask WaitCommittedAsync(long address, CancellationToken ct = default)
    {
        if (address < Volatile.Read(ref _durableUntil)) return ValueTask.CompletedTask;
        return SlowWaitAsync(address, ct);
    }

    private async ValueTask SlowWaitAsync(long address, CancellationToken ct)
    {
        while (true)
        {
            Task commit;
            lock (_waitersGate)
            {
                if (_fault is not null) throw _fault;
                if (address < _durableUntil) return;
                if (_closed) throw new ObjectDisposedException(nameof(RecordLog), "the log was closed before this record was committed");
                commit = _nextCommit.Task;
            }
            // One kick per commit is enough; the commit loop clears the flag before it takes the next completion.
            if (Interlocked.Exchange(ref _kickPending, 1) == 0) _kick.Release();
            if (ct.CanBeCanceled) await commit.WaitAsync(ct).ConfigureAwait(false);
            else await commit.ConfigureAwait(false);
        }
    }

    private static TaskCompletionSource NewCommitCompletion() => new(TaskCreationOptions.RunContinuationsAsynchronously);

    /// <summary>
    /// Backpressure before an append: FasterLog's <c>Enqueue</c> blocks its thread when the in-memory tail buffer is full
    /// of unflushed pages, and the engine appends under its lock. So writers first wait here, asynchronously and
    /// outside the lock, while more than <see cref="RoomBytes"/> of the buffer is not yet committed (a commit flushes it).
    /// </summary>
    public ValueTask WaitForRoomAsync(CancellationToken ct = default)
    {
        long tail = _log.TailAddress;
        if (tail - Volatile.Read(ref _durableUntil) < RoomBytes) return ValueTask.CompletedTask;
        Interlocked.Increment(ref _roomWaits);
        return WaitCommittedAsync(tail - 1, ct);
    }

    private long _roomWaits;

    /// <summary>Tests: how many times <see cref="WaitForRoomAsync"/> found no room and waited for a commit.</summary>
    internal long RoomWaitsForTests => Interlocked.Read(ref _roomWaits);

    /// <summary>
    /// Backpressure before an append of a known size (a message's body): as <see cref="WaitForRoomAsync"/>, but the
    /// bytes count against <see cref="RoomBytes"/> from here until the reservation is disposed, right after the append.
    /// Writers that pass <see cref="WaitForRoomAsync"/> together may add more than the slack the buffer keeps beyond the
    /// room (many large bodies at once), and then an append waits for a page write under the engine lock, holding every
    /// writer; those that reserve wait here instead, outside the lock. A writer alone (nothing else reserved) passes
    /// while the tail is within the room, whatever it reserves, so a large batch cannot wait for ever; a reservation is
    /// at most the slack (<see cref="MaxReservationBytes"/>), so such a writer still finds its pages written. Records
    /// without a body (decisions, acks, offsets) are small and ride on the slack, as before.
    /// </summary>
    public ValueTask<RoomReservation> ReserveRoomAsync(long bytes, CancellationToken ct = default)
    {
        long want = Math.Clamp(bytes, 0, MaxReservationBytes);
        if (TryReserve(want)) return new(new RoomReservation(this, want));
        return ReserveRoomSlowAsync(want, ct);
    }

    /// <summary>The buffer beyond the room that an append may still fill without waiting for a page write: the memory
    /// less one page and the room (at least two pages, <see cref="CreateSettings"/>).</summary>
    internal long MaxReservationBytes => Math.Max(0, _memoryBytes - (1L << PageSizeBits) - RoomBytes);

    private long _reservedBytes;
    private TaskCompletionSource? _reservationReleased;
    private long _reservationsThatWaited;

    /// <summary>Reservations that found the room taken and waited (<see cref="ReserveRoomAsync"/>).</summary>
    public long ReservationsThatWaited => Interlocked.Read(ref _reservationsThatWaited);

    /// <summary>Bytes reserved and not yet released (diagnostics and tests).</summary>
    public long ReservedBytes => Interlocked.Read(ref _reservedBytes);

    private bool TryReserve(long want)
    {
        while (true)
        {
            long ahead = _log.TailAddress - Volatile.Read(ref _durableUntil);
            if (ahead >= RoomBytes) return false; // full, whatever is asked (a reservation of 0 is WaitForRoomAsync's check)
            if (want == 0) return true;
            long reserved = Volatile.Read(ref _reservedBytes);
            // Alone (nothing else reserved), a writer passes whatever it asks; else the sum must fit the room.
            if (reserved > 0 && ahead + reserved + want > RoomBytes) return false;
            if (Interlocked.CompareExchange(ref _reservedBytes, reserved + want, reserved) == reserved) return true;
        }
    }

    private async ValueTask<RoomReservation> ReserveRoomSlowAsync(long want, CancellationToken ct)
    {
        Interlocked.Increment(ref _reservationsThatWaited);
        while (true)
        {
            // The release signal is taken before the look, so a release between the look and the wait is not missed.
            var released = Volatile.Read(ref _reservationReleased);
            if (released is null)
            {
                var fresh = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
                released = Interlocked.CompareExchange(ref _reservationReleased, fresh, null) ?? fresh;
            }
            if (Volatile.Read(ref _fault) is { } fault) throw fault;
            if (TryReserve(want)) return new RoomReservation(this, want);
            long tail = _log.TailAddress;
            if (tail > Volatile.Read(ref _durableUntil))
            {
                // Room comes back with a commit (which this asks for) or with a release, whichever is first.
                var committed = WaitCommittedAsync(tail - 1, ct).AsTask();
                await Task.WhenAny(released.Task, committed).WaitAsync(ct).ConfigureAwait(false);
                if (committed.IsFaulted) await committed.ConfigureAwait(false);
            }
            else
            {
                await released.Task.WaitAsync(ct).ConfigureAwait(false);
            }
        }
    }

    internal void ReleaseRoom(long bytes)
    {
        if (bytes == 0) return;
        Interlocked.Add(ref _reservedBytes, -bytes);
        if (Volatile.Read(ref _reservationReleased) is not null) Interlocked.Exchange(ref _reservationReleased, null)?.TrySetResult();
    }

    /// <summary>The in-memory tail buffer's size (<see cref="CreateSettings"/>).</summary>
    internal long MemoryBytes => _memoryBytes;

    /// <summary>How far the tail may run ahead of the committed address before writers wait in <see cref="WaitForRoomAsync"/>:
    /// half the memory, at most the memory less three pages (<see cref="CreateSettings"/>).</summary>
    internal long RoomBytes => RoomBytesForTests ?? Math.Min(_memoryBytes / 2, _memoryBytes - 3L * (1L << PageSizeBits));

    /// <summary>Tests set a larger room to make appends wait for page writes under the engine lock.</summary>
    internal long? RoomBytesForTests { get; set; }

    /// <summary>Asks the commit loop to commit soon (used for visibility in async mode and before checkpoints).</summary>
    public void RequestCommit() => _kick.Release();

    /// <summary>Pool yields before a small commit (sync flush), see <see cref="CommitLingerBytes"/>: 2 measured best of 2
    /// and 4 (bench/results/2026-12-04-ab/commit-linger.md).</summary>
    public const int DefaultCommitLingerYields = 2;

    /// <summary>
    /// A sync-mode commit that would write fewer bytes than this first yields the commit loop to the thread pool (up to
    /// the log's linger yields, while it stays this small): the work already queued there, typically the requests the
    /// previous commit released, appends before the commit starts and shares it, instead of waiting a whole commit
    /// behind a commit of a few records. Nobody's durability changes: a waiter is released only by a commit that
    /// covers its record. Under load about half the commits were this small (the same record).
    /// </summary>
    public const long CommitLingerBytes = 8 * 1024;

    private readonly int _lingerYields;
    private long _lingerYieldsTaken;

    /// <summary>Yields the commit loop took before small commits so far (<see cref="CommitLingerBytes"/>).</summary>
    public long CommitLingerYieldsTaken => Interlocked.Read(ref _lingerYieldsTaken);

    private async Task CommitLoopAsync()
    {
        var ct = _stop.Token;
        while (!ct.IsCancellationRequested)
        {
            try
            {
                // Sync mode commits as soon as someone waits; records nobody waits for (receipts) ride along,
                // or go out with the idle tick so they never sit in memory for long (within NothingToCommitSleep
                // when they came after the loop found nothing to commit).
                if (_kick.CurrentCount > 0) Interlocked.Increment(ref _kickedOnReturn);
                long idleFrom = System.Diagnostics.Stopwatch.GetTimestamp();
                await _kick.WaitAsync(_flush == FlushMode.Async ? _asyncInterval : NothingToCommit() ? NothingToCommitSleep : IdleCommitInterval, ct).ConfigureAwait(false);
                Interlocked.Add(ref _idleTicks, System.Diagnostics.Stopwatch.GetTimestamp() - idleFrom);
                // Drain extra kicks: one commit covers everybody who appended before it started.
                while (_kick.CurrentCount > 0) _kick.Wait(0, CancellationToken.None);
                Volatile.Write(ref _kickPending, 0);
                // Everyone who took this completion appended before the commit below starts, so it covers them.
                TaskCompletionSource covered;
                lock (_waitersGate)
                {
                    covered = _nextCommit;
                    _nextCommit = NewCommitCompletion();
                    _commitInFlight = covered;
                }

                if (_flush == FlushMode.Sync)
                {
                    // Only before a commit: a turn with nothing appended (the idle tick, a kick its predecessor covered) commits nothing.
                    for (int i = 0; i < _lingerYields && _log.TailAddress - _log.CommittedUntilAddress is > 0 and < CommitLingerBytes; i++)
                    {
                        await Task.Yield();
                        Interlocked.Increment(ref _lingerYieldsTaken);
                    }
                }

                // A truncation (begin moved) is persisted by a commit too, even when nothing was appended.
                if (!NothingToCommit())
                {
                    BeforeCommitForTests?.Invoke();
                    long started = System.Diagnostics.Stopwatch.GetTimestamp();
                    Volatile.Write(ref _commitStartedAt, Math.Max(1, Environment.TickCount64));
                    await CommitStats.ObserveAsync(CommitWithinBoundAsync, ct).ConfigureAwait(false); // metrics hook (issue 12): commit latency and batch size
                    Volatile.Write(ref _commitStartedAt, 0);
                    if (Fault is not null) return; // the watchdog gave up on this commit: its waiters were failed already
                    Interlocked.Add(ref _commitTicks, System.Diagnostics.Stopwatch.GetTimestamp() - started);
                    Interlocked.Increment(ref _commits);
                }
                Publish(_log.CommittedUntilAddress, covered);
            }
            catch (OperationCanceledException) when (ct.IsCancellationRequested)
            {
                break;
            }
            catch (Exception ex)
            {
                // A failed fsync leaves durability unknown (after a failed fsync the kernel may have dropped the dirty
                // pages, so a retry that "succeeds" proves nothing): fail every waiter, refuse every further write.
                Fail(ex as StorageFailureException ?? new StorageFailureException($"a log commit failed: {ex.Message}", ex));
                return;
            }
        }
    }

    /// <summary>When the commit in progress started (<see cref="Environment.TickCount64"/>), or 0 between commits.</summary>
    private long _commitStartedAt;

    /// <summary>Tests: runs on the commit loop just before a commit starts (not counted in its time).</summary>
    internal Action? BeforeCommitForTests;

    /// <summary>
    /// The commit timeout's second guard. <see cref="CommitWithinBoundAsync"/> bounds a commit that FasterLog has started
    /// and returned from; but in fast-commit mode FasterLog's <c>CommitAsync</c> first enqueues a commit record and spins,
    /// on the commit loop's thread, until the tail buffer has room for it. On a device that stopped completing writes,
    /// with the buffer full, that spin never ends and the bound inside the loop is never reached: no write failed, every
    /// writer waited for ever (until 2026-12-05). This loop, on its own thread, fails the log once a commit has run
    /// longer than the timeout plus one check period, so writers get the storage failure and the broker says so.
    /// </summary>
    private async Task CommitWatchdogAsync()
    {
        var period = TimeSpan.FromMilliseconds(Math.Clamp(_commitTimeout.TotalMilliseconds / 4, 50, 1000));
        long limitMs = (long)(_commitTimeout + period).TotalMilliseconds;
        using var timer = new PeriodicTimer(period);
        try
        {
            while (await timer.WaitForNextTickAsync(_watchdogStop.Token).ConfigureAwait(false) && Fault is null)
            {
                long startedAt = Volatile.Read(ref _commitStartedAt);
                if (startedAt == 0 || Environment.TickCount64 - startedAt < limitMs) continue;
                Interlocked.Increment(ref _commitsStuckInFaster);
                Fail(new StorageFailureException(
                    $"a log commit did not complete within {_commitTimeout.TotalSeconds:0.###} s and never returned (FasterLog's commit found no room for its commit record: the device is not writing out the buffer)"));
                return;
            }
        }
        catch (OperationCanceledException)
        {
        }
    }

    private long _commitsStuckInFaster;

    /// <summary>Commits the watchdog found stuck inside FasterLog beyond the timeout (<see cref="CommitWatchdogAsync"/>): 0 or 1.</summary>
    public long CommitsStuckInFaster => Interlocked.Read(ref _commitsStuckInFaster);

    /// <summary>Everything appended is committed and no truncation waits to be persisted.</summary>
    private bool NothingToCommit() => _log.TailAddress <= _log.CommittedUntilAddress && _log.BeginAddress <= _log.CommittedBeginAddress;

    /// <summary>
    /// One FasterLog commit, bounded by the commit timeout. A commit that does not finish in time is abandoned (it may
    /// still complete, but nobody waits for it any more) and counts as a failed one.
    /// </summary>
    private async Task CommitWithinBoundAsync(CancellationToken ct)
    {
        long started = Environment.TickCount64;
        await FasterCommitWithinBoundAsync(started, ct).ConfigureAwait(false);
        if (_commitManager is not SlotLogCommitManager slots) return;
        // FasterLog (fast-commit mode) marks a commit done before it writes the commit's metadata slot, and CommitAsync
        // can return in between: the slot must be on disk before anyone is told the commit is durable (recovery starts
        // from the newest slot; without it, from the previous one, scanning forward through this commit's records).
        long committed = _log.CommittedUntilAddress;
        while (true)
        {
            var done = slots.WhenDoneAsync(committed);
            if (done.IsCompleted)
            {
                await done.ConfigureAwait(false); // throws the slot write's failure
                return;
            }
            WaitingForCommitMetaForTests?.Invoke();
            var left = _commitTimeout - TimeSpan.FromMilliseconds(Environment.TickCount64 - started);
            try
            {
                await done.WaitAsync(left > TimeSpan.Zero ? left : TimeSpan.Zero, ct).ConfigureAwait(false);
            }
            catch (TimeoutException)
            {
                throw new StorageFailureException($"a log commit's metadata slot was not written within {_commitTimeout.TotalSeconds:0.###} s");
            }
        }
    }

    /// <summary>Tests: the commit loop waits for the commit-meta slot of a commit FasterLog already reported done.</summary>
    internal Action? WaitingForCommitMetaForTests;
    /// <summary>Tests: the log's commit manager.</summary>
    internal SlotLogCommitManager? CommitSlotsForTests => _commitManager as SlotLogCommitManager;

    private async Task FasterCommitWithinBoundAsync(long started, CancellationToken ct)
    {
        var commit = _log.CommitAsync(ct);
        if (commit.IsCompleted)
        {
            await commit.ConfigureAwait(false);
            return;
        }
        Task pending = commit.AsTask();
        while (true)
        {
            try
            {
                await pending.WaitAsync(EpochNudgeAfter, ct).ConfigureAwait(false);
                return;
            }
            catch (TimeoutException)
            {
                if (Environment.TickCount64 - started >= (long)_commitTimeout.TotalMilliseconds)
                    throw new StorageFailureException($"a log commit did not complete within {_commitTimeout.TotalSeconds:0.###} s");
                // FASTER flushes the pages of a commit from an epoch action, and an epoch action runs only when some
                // thread enters or leaves FasterLog's epoch. When every writer is parked on this commit and the last
                // thread out left while the action was not yet safe to run, nobody drains it and the commit never
                // completes (seen as: FlushedUntilAddress stuck below the commit record, every writer waiting). A read
                // beyond the tail enters and leaves the epoch and does nothing else, so pending actions run.
                Interlocked.Increment(ref _epochNudges);
                await _log.ReadAsync(long.MaxValue, 0, CancellationToken.None).ConfigureAwait(false);
            }
        }
    }

    /// <summary>How long a commit may take before the commit loop refreshes FasterLog's epoch (see
    /// <see cref="CommitWithinBoundAsync"/>); a healthy commit here takes 1-20 ms.</summary>
    private static readonly TimeSpan EpochNudgeAfter = TimeSpan.FromMilliseconds(200);
    private long _epochNudges;

    /// <summary>Commits that were still waiting after <see cref="EpochNudgeAfter"/> and got an epoch refresh.</summary>
    public long EpochNudges => Interlocked.Read(ref _epochNudges);

    /// <summary>Marks the log failed, once: one log line, every waiter fails, <see cref="Failed"/> completes.</summary>
    private void Fail(StorageFailureException failure)
    {
        // Failed completes before the fault is visible: whoever sees the fault (a writer's StorageFailureException,
        // Fault) also sees Failed done. Its continuations run asynchronously, never under the lock.
        TaskCompletionSource? inFlight, next;
        lock (_waitersGate)
        {
            if (_fault is not null) return;
            _failed.TrySetResult(failure);
            Volatile.Write(ref _fault, failure);
            inFlight = _commitInFlight;
            next = _nextCommit;
        }
        _logger.LogCritical(failure.InnerException,
            "Storage failure: {Reason}. The broker refuses all writes from now on and must be restarted (log {Directory}).",
            failure.Reason, _directory);
        // Waiters wake, see the fault and throw it.
        Wake(inFlight, next);
    }

    /// <summary>Test hook: fails the log as a failed commit would.</summary>
    internal void FailForTest(string reason) => Fail(new StorageFailureException(reason));

    private void Publish(long committed, TaskCompletionSource covered)
    {
        bool advanced;
        lock (_waitersGate)
        {
            advanced = committed > _durableUntil;
            if (advanced) Volatile.Write(ref _durableUntil, committed);
            _commitInFlight = null;
        }
        covered.TrySetResult();
        if (advanced) Durable?.Invoke(committed);
    }

    /// <summary>
    /// Reads a record. Returns null when the address is truncated away (or beyond the tail). A record appended but not
    /// yet durable is read once it is: FasterLog reads nothing at or above its committed address, and until 2026-12-05
    /// that came back as null too. The engine's state can point at such a record: retention moves a live body to the
    /// tail and points its queue entry there at once, before the copy's commit. A pull that picked the entry then read
    /// null and went past the message for good, calling it damaged, while lease groups retried and got it (the opt-in
    /// damage loop's failure on `bc9eac7`, seed 700806).
    /// </summary>
    public ValueTask<byte[]?> ReadAsync(long address, CancellationToken ct = default) => ReadAsync(address, 0, ct);

    /// <summary>
    /// As <see cref="ReadAsync(long, CancellationToken)"/>, with the record's size when the caller knows it: FasterLog
    /// reads every record from the device, and without a size it reads the entry header first and then the rest (two
    /// reads, each a thread-pool hop); with it, one read. A wrong size only costs that second read.
    /// </summary>
    public async ValueTask<byte[]?> ReadAsync(long address, int sizeHint, CancellationToken ct)
    {
        var (bytes, length) = await _log.ReadAsync(address, Math.Max(0, sizeHint), ct).ConfigureAwait(false);
        if (bytes is null && address >= Volatile.Read(ref _durableUntil) && address >= _log.BeginAddress && address < _log.TailAddress)
        {
            Interlocked.Increment(ref _readsThatWaitedForCommit);
            await WaitCommittedAsync(address, ct).ConfigureAwait(false);
            (bytes, length) = await _log.ReadAsync(address, Math.Max(0, sizeHint), ct).ConfigureAwait(false);
        }
        if (bytes is null) return null;
        return bytes.Length == length ? bytes : bytes.AsSpan(0, length).ToArray();
    }

    /// <summary>
    /// The length of the record at <paramref name="address"/>, read from its entry header alone: a caller that must
    /// reserve room for a record before reading it asks this first and reads it with the length as its size hint, which
    /// costs the same two reads a read without a hint makes. The address must be a durable record boundary; at another
    /// address the length read is whatever bytes lie there (the caller bounds it), or this throws.
    /// </summary>
    public ValueTask<int> ReadLengthAsync(long address, CancellationToken ct = default) => _log.ReadRecordLengthAsync(address, ct);

    private long _readsThatWaitedForCommit;

    /// <summary>Reads of a record appended but not yet committed, which waited for its commit (<see cref="ReadAsync(long, int, CancellationToken)"/>).</summary>
    public long ReadsThatWaitedForCommit => Interlocked.Read(ref _readsThatWaitedForCommit);

    /// <summary>
    /// Replays records in [from, tail) in order (or up to <paramref name="until"/>). Used on start, before any append,
    /// and by the message index's rebuild. Returns the stretches that could not be read (<see cref="LogHoles"/>), so the
    /// caller can say what was lost.
    /// </summary>
    /// <remarks>
    /// This reads the segment files itself, a page at a time, instead of using FasterLog's scan: that scan was written for
    /// intact logs. On a damaged length it loops for ever (0x80000000 and a few lengths near it make its entry size
    /// negative, so it steps backwards and starts over: one bit flip in a page's zero padding left the broker starting
    /// for ever under the engine lock), and on a zero length in mid-page it jumps to the next page, skipping intact
    /// records. Here every step moves forward, and every length that cannot be is damage: the stretch up to the next
    /// intact record of ours is a hole.
    /// </remarks>
    public IReadOnlyList<LogHole> Replay<TConsumer>(long from, ref TConsumer consumer, long until = long.MaxValue) where TConsumer : IRecordConsumer
    {
        from = Math.Max(from, _log.BeginAddress);
        long tail = Math.Min(_log.TailAddress, until);
        if (from >= tail) return [];
        long pageSize = 1L << PageSizeBits;
        var holes = new List<LogHole>();
        byte[] page = GC.AllocateUninitializedArray<byte>((int)Math.Min(pageSize, tail - from));
        using var reader = _holes.OpenReader();
        long position = from;
        while (position < tail)
        {
            long pageEnd = (position / pageSize + 1) * pageSize;
            long limit = Math.Min(pageEnd, tail);
            long pageFrom = position;                               // page[0] holds this address
            reader.Read(pageFrom, page.AsSpan(0, (int)(limit - pageFrom)));
            while (position < limit)
            {
                int at = (int)(position - pageFrom);
                int length = BinaryPrimitives.ReadInt32LittleEndian(page.AsSpan(at, 4));
                long room = limit - position - 4;
                if (length > 0 && length <= room)
                {
                    var entry = page.AsSpan(at + 4, length);
                    consumer.Consume(entry, position);             // a damaged record is reported by the consumer
                    long next = position + EntrySize(length);
                    if (!RecordHeader.TryOpen(entry, out _, out _, out _) && next < tail) next = ResumeAfterDamagedRecord(position, next, tail);
                    position = next;
                    continue;
                }
                if (length < 0 && length != int.MinValue && -length <= room)
                {
                    position += EntrySize(-length);                 // FasterLog's own commit record
                    continue;
                }
                if (length == 0 && pageEnd < tail && _holes.Check(position, pageEnd) is null)
                {
                    position = pageEnd;                             // the zero padding the next page's first entry did not fit in
                    continue;
                }
                // A length that cannot be (beyond the page or the tail, or one whose size cannot be computed), or zeros
                // where records are: what lies up to the next intact record of ours in this page is lost.
                long resume = Math.Min(_holes.FindNextRecord(position + 4, tail), limit);
                if (length != 0 && resume == pageEnd && pageEnd < tail && IsDamagedPadding(page.AsSpan(at + 4, (int)(limit - position - 4)), position, pageEnd))
                    _logger.LogWarning("Replay: the zero padding at the end of the page at log address {Address} is damaged (its first word reads {Length}); it held no records, nothing is lost", position, length);
                else if (holes.Count > 0 && holes[^1].To == position) holes[^1] = holes[^1] with { To = resume };
                else holes.Add(new LogHole(position, resume));
                position = resume;
            }
        }
        return holes;
    }

    // The damaged record's length may itself be what was damaged: then the records it seems to span were skipped. Two
    // cases: its length ends where no intact record begins, or it ends on one by chance. In both, resume at the first
    // intact record after it when the evidence says the header was what was damaged.
    private long ResumeAfterDamagedRecord(long position, long next, long tail)
    {
        if (!_holes.IsRecordAt(next, tail))
        {
            // None found: the record's own bytes are what is damaged (a torn tail); the scan goes on, and a stretch of
            // zeros after it is a hole like any other.
            long resume = _holes.FindNextRecord(position + 4, tail);
            return resume != next && _holes.IsRecordAt(resume, tail) ? resume : next;
        }
        // The damaged length can land on an intact record by chance (about one time in ten with small records, all
        // 4-byte aligned): the records it spans were then skipped without a word (seen as acknowledged decisions and
        // acks lost by the crash loop's damage round, seed 903877). Intact records packed right up to that one mean the
        // header was what was damaged: replay them.
        return _holes.FindChainEndingAt(position + 4, next, tail) ?? next;
    }

    // Page-end padding whose first word is damaged: zeros after it to the page end (a record of ours is never all zeros:
    // its envelope has a kind, a version and a checksum), and a next page whose first entry would not have fit in it.
    private bool IsDamagedPadding(ReadOnlySpan<byte> afterHeader, long position, long pageEnd)
        => !afterHeader.ContainsAnyExcept((byte)0) && _holes.NextPageEntryNeededMoreThan(pageEnd, pageEnd - position);

    private static long EntrySize(int length) => 4 + ((length + 3L) & ~3L);

    /// <summary>
    /// After a replay that found a hole reaching the tail: fills the rest of the tail's page, so that records appended
    /// from now on start on the next page. Otherwise they would land after the zeros in the same page, and the next
    /// replay that starts before the hole would jump over them too (acknowledged records lost at the next restart).
    /// The filler is <see cref="RecordKind.Padding"/> records, which replay ignores.
    /// </summary>
    public void SkipToNextPage()
    {
        long pageSize = 1L << PageSizeBits;
        while (true)
        {
            long remaining = pageSize - _log.TailAddress % pageSize;
            // A record smaller than the remainder cannot be written (an envelope needs 4 + 8 bytes): anything appended
            // next does not fit, and FasterLog puts it on the next page by itself.
            if (remaining == pageSize || remaining < 4 + RecordHeader.Size) return;
            int length = (int)Math.Min(remaining - 4, MaxRecordSize) & ~3;
            var record = new byte[length];
            record[0] = (byte)RecordKind.Padding;
            record[1] = RecordHeader.CurrentVersion;
            BinaryPrimitives.WriteUInt32LittleEndian(record.AsSpan(4, 4), RecordHeader.Checksum(record));
            Append(record); // at recovery the buffer is empty; should it not be, the wait is Append's, with its headroom
        }
    }

    /// <summary>Commits everything appended so far and waits for it.</summary>
    public async ValueTask CommitNowAsync(CancellationToken ct = default)
    {
        var tail = _log.TailAddress;
        if (tail > Volatile.Read(ref _durableUntil)) await WaitCommittedAsync(tail - 1, ct).ConfigureAwait(false);
    }

    /// <summary>Drops everything before <paramref name="address"/> (a record boundary). Persisted with the next commit.</summary>
    public void TruncateUntil(long address)
    {
        _log.TruncateUntil(address);
        _kick.Release();
    }

    public async ValueTask DisposeAsync()
    {
        if (Fault is null)
        {
            try
            {
                await CommitNowAsync().AsTask().WaitAsync(_commitTimeout).ConfigureAwait(false);
            }
            catch (Exception ex) when (Fault is null)
            {
                _logger.LogWarning(ex, "Final commit failed.");
            }
            catch (Exception)
            {
                // The final commit failed the log: already said once, by Fail.
            }
        }
        _stop.Cancel();
        // The watchdog keeps watching until the commit loop has stopped: a commit stuck inside FasterLog ignores the
        // cancellation, and the loop would then never end (nor would this). The watchdog fails the log instead.
        await Task.WhenAny(_commitLoop, _failed.Task).ConfigureAwait(false);
        _watchdogStop.Cancel();
        try { await _commitWatchdog.ConfigureAwait(false); } catch (OperationCanceledException) { }
        if (Fault is null)
        {
            try { await _commitLoop.ConfigureAwait(false); } catch (OperationCanceledException) { }
        }
        else
        {
            // The commit loop may be the one stuck inside FasterLog's commit (CommitWatchdogAsync): shutting down must
            // not hang on it. Its thread stays blocked until the process ends.
            try { await _commitLoop.WaitAsync(TimeSpan.FromSeconds(5)).ConfigureAwait(false); }
            catch (TimeoutException) { _logger.LogWarning("The failed log's commit loop did not stop within 5 s (stuck in FasterLog's commit); abandoned."); }
            catch (OperationCanceledException) { }
        }
        ReleaseWaitersOnClose();
        var dispose = Task.Run(() =>
        {
            _log.Dispose();
            _device.Dispose();
            _commitManager.Dispose();
        });
        if (Fault is null)
        {
            await dispose.ConfigureAwait(false);
            return;
        }
        // A failed device may never complete the I/O that disposal waits for; shutting down must not hang on it.
        try { await dispose.WaitAsync(TimeSpan.FromSeconds(5)).ConfigureAwait(false); }
        catch (TimeoutException) { _logger.LogWarning("Closing the failed log did not finish within 5 s; abandoned."); }
        catch (Exception ex) { _logger.LogDebug(ex, "Closing the failed log threw."); }
    }

    /// <summary>Set under <see cref="_waitersGate"/> once the commit loop has stopped for good.</summary>
    private bool _closed;

    /// <summary>
    /// With the commit loop stopped, no commit completes a waiter any more: one that waited for the commit the loop
    /// was cancelled in, or that came after the final commit (a read of a record appended meanwhile, a writer waiting
    /// for room), waited for ever. They now wake and get <see cref="ObjectDisposedException"/>; what the final commit
    /// covered still returns normally.
    /// </summary>
    private void ReleaseWaitersOnClose()
    {
        TaskCompletionSource? inFlight, next;
        lock (_waitersGate)
        {
            _closed = true;
            inFlight = _commitInFlight;
            next = _nextCommit;
        }
        Wake(inFlight, next);
    }

    /// <summary>Wakes the waiters of the commit in flight and of the next one; they look again under the gate (fault,
    /// durable address, closed) and throw or return.</summary>
    private static void Wake(TaskCompletionSource? inFlight, TaskCompletionSource next)
    {
        inFlight?.TrySetResult();
        next.TrySetResult();
    }
}

/// <summary>Receives records during replay, without copying them.</summary>
public interface IRecordConsumer
{
    void Consume(ReadOnlySpan<byte> record, long address);
}
