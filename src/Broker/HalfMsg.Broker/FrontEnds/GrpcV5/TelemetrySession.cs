using System.Globalization;
using System.Threading.Channels;
using Apache.Rocketmq.V2;
using Grpc.Core;
using HalfMsg.Broker.Core.Model;
using HalfMsg.Broker.Core.Transactions;
using HalfMsg.Protocol.Remoting;
using Microsoft.Extensions.Logging;

namespace HalfMsg.Broker.FrontEnds.GrpcV5;

/// <summary>
/// One client's Telemetry stream. Everything the broker sends on it (Settings replies, the delayed Settings re-push,
/// check-backs from the core's scheduler) goes through one outbound channel drained by a single writer loop, so
/// writes never overlap and <see cref="TrySendCheck"/> never blocks the core. The queue is bounded in bytes, not
/// only in commands: a check-back carries the whole half message, so 1,024 queued checks could pin gigabytes. A check
/// that does not fit is refused (the core offers it to another instance, or to this one again once it has room); a
/// client whose queue makes no progress (no command written) for the stall limit while commands wait in it is not
/// reading, and is cut off (<see cref="End"/>): it is not a usable check-back channel, and its unsent checks go to another
/// producer. Until the night session of 2026-12-07 the stream was cut as soon as the bound was passed: a burst of large
/// checks (five of 3.5 MiB given back at once) cut off an instance that was reading, on a busy machine (found by a CI
/// run). Until the late-night session of 2026-12-07 only a queue over its bound (or with a check refused for its
/// connection's) was watched: a producer process that stopped reading with a few small checks queued (its HTTP/2 window
/// and Kestrel's buffer full, far under 16 MiB) kept them, counted as sent and never written, while a live instance of
/// its group could have answered; and non-reading streams of one connection, each under its own bound, that together
/// filled the connection's budget were never ended, so a reading stream of that connection was refused checks for as
/// long as they stayed (found by review).
/// </summary>
internal sealed class TelemetrySession : ICheckBackChannel
{
    // Each command with its size and, for a check-back, the check (given back to the core if it is never written).
    private readonly Channel<(TelemetryCommand Command, int Size, CheckBackRequest? Check)> _outbound =
        Channel.CreateUnbounded<(TelemetryCommand, int, CheckBackRequest?)>(new UnboundedChannelOptions { SingleReader = true });
    private readonly CancellationTokenSource _ended = new();
    // Stops the writer without a drain: a client that does not read would keep it parked in a write for ever (waiting
    // for HTTP/2 window), and the connection's answer budget charged with everything queued (found by review). Cancelled
    // past a bound only (WhenWriterDoneAsync); a session ended for not reading first lets the write under way finish.
    private readonly CancellationTokenSource _stopWriter = new();
    private readonly object _gate = new();
    private readonly Dictionary<string, IDisposable> _producerRegistrations = new(StringComparer.Ordinal);
    private readonly long _maxQueuedBytes;
    // How long a queue with commands in it may go without a command written before the client counts as not reading.
    private readonly TimeSpan _stallLimit;
    private readonly TimeProvider _time;
    // The queue's accounting: a command is charged (to this session and to the connection) and queued in one hold of
    // _queueGate; the writer gives back what it wrote in one, and, when it stops, what it leaves in the queue in one after
    // which nothing more is queued. So each queued byte is released exactly once, whether written, dropped at the end for
    // not reading, or dropped at the close. Until 2026-12-07 the charge, the queueing and the writer's give-back were
    // separate steps: a command queued once the writer had stopped (between the end for not reading and the close) stayed
    // charged until the connection closed, counted as a check sent and never written; one charged just before the writer
    // gave everything back, then refused by the closed queue, was released twice (found by review).
    private readonly object _queueGate = new();
    private long _queuedBytes;
    private readonly AnswerBudget? _connection;
    private long _connectionBytes;
    // Under _queueGate: the writer has stopped and given back what it held; nothing queued now would be written or released.
    private bool _writerDone;
    private TelemetryCommand? _lastSettings;
    // Under _gate: the serialized size of _lastSettings, held on KeptSettings until the session closes.
    private long _keptSettingsBytes;
    private ITimer? _repushTimer;
    private volatile bool _alive = true;
    private int _capWarned;
    // Set when the session is ended for not reading: the writer starts no further write.
    private int _stopRequested;
    // Under _queueGate: when the queue last made progress (a command written, or one queued into an empty queue).
    private long _progressAt;
    // Under _queueGate: a check was refused for want of room; RoomAgain is called once the queue is down to half its bound.
    private bool _wantsRoom;
    // Under _queueGate: fires when the queue, not empty, would have gone the stall limit without progress. One per
    // session, created at the first command queued and moved with Change after (the check path runs thousands of checks
    // a second: no timer per command); disposed when the writer stops.
    private ITimer? _stallTimer;
    // Under _queueGate: _stallTimer is due (its callback re-arms it, or not, under the gate).
    private bool _stallArmed;
    // Under _queueGate: which bound the last refused check did not fit (said when the stall timer ends the session).
    private string? _refusedFor;
    // Under _queueGate: a check was refused for the connection's bound and the connection's next release is watched
    // (this stream's own writes need not come: its queue may be empty while the connection's other streams hold it).
    private bool _watchingConnection;
    // Under _queueGate: the size of the last refused check when it was refused for the connection's bound (room is
    // announced once it fits there), 0 when for this stream's own.
    private long _refusedSize;
    // The size of the command the writer is writing (0 between writes): its write gets a second per
    // SlowestReadBytesPerSecond beyond the stall limit.
    private int _writingSize;

    /// <summary>The slowest read the stall limit allows a write under way beyond itself, as a ReceiveMessage answer's write
    /// bound does (a second per 256 KiB): a 4 MiB check to a client reading at 300 KiB/s takes 14 s, and until the night
    /// session of 2026-12-07 a queue over its bound meanwhile ended the stream at 10 s, its client reading (found by review).</summary>
    internal const double SlowestReadBytesPerSecond = 256 * 1024;

    /// <param name="clientId">The non-blank <c>x-mq-client-id</c> of the stream.</param>
    /// <param name="maxQueuedBytes">Serialized bytes that may wait for the writer before the session is ended.</param>
    /// <param name="connection">The stream's connection budget of unsent answers: queued commands count on it too, so
    /// 200 Telemetry streams of one connection cannot each queue <paramref name="maxQueuedBytes"/>.</param>
    /// <param name="stallLimit">How long a queue with commands in it may go without a command written before the session
    /// is ended for not reading (<see cref="GrpcV5Options.TelemetryStallTimeout"/>), whatever its bound and its
    /// connection's; until then checks that do not fit are refused. Zero (the default): ended as soon as a command does not
    /// fit, and never for time alone.</param>
    /// <param name="time">The clock of <paramref name="stallLimit"/>.</param>
    public TelemetrySession(string clientId, long maxQueuedBytes, AnswerBudget? connection = null, TimeSpan stallLimit = default, TimeProvider? time = null)
    {
        ClientId = clientId;
        _maxQueuedBytes = maxQueuedBytes;
        _connection = connection;
        _stallLimit = stallLimit < TimeSpan.Zero ? TimeSpan.Zero : stallLimit;
        _time = time ?? TimeProvider.System;
    }

    public string ClientId { get; }

    /// <summary>The stream's <c>x-mq-namespace</c> ("" for none): the topics of its check-backs are named in it.</summary>
    public string Namespace { get; init; } = string.Empty;

    /// <summary>
    /// Whether this stream's checks carry the half's check token in their transaction id
    /// (<see cref="HalfMsg.Protocol.Grpc.CheckTokenIds"/>): for a client that opted in (our ProducerClient), or one whose
    /// <c>x-mq-language</c> (and Settings) name an official client that echoes the id and gives its checker none (Java,
    /// Node, Go, Python: MessagingService.SendsCheckTokens). An older build of our ProducerClient gives its checker the id
    /// it is sent, and says DOTNET as the official C# client does; the Rust and C++ clients' checkers see the id too: they,
    /// and a stream of no known language, get the plain id. Since the afternoon session of 2026-12-07.
    /// </summary>
    public bool SendsCheckTokens { get => Volatile.Read(ref _sendsCheckTokens); set => Volatile.Write(ref _sendsCheckTokens, value); }

    private bool _sendsCheckTokens;

    /// <summary>
    /// The client type the stream's last Settings named (UNSPECIFIED until then): a LITE_PUSH_CONSUMER's assignment
    /// queries and receives are refused (MessagingService.LiteRefusal). Since the evening session of 2026-12-07.
    /// </summary>
    public ClientType ClientType { get => (ClientType)Volatile.Read(ref _clientType); set => Volatile.Write(ref _clientType, (int)value); }

    private int _clientType;

    /// <summary>The stream's connection's bound of kept Settings (<see cref="TryKeepSettings"/>); none when null (tests).</summary>
    public KeptSettingsBudget? KeptSettings { get; init; }

    /// <summary>The client asked for check tokens (<see cref="HalfMsg.Protocol.Grpc.CheckTokenIds.AcceptHeader"/>).</summary>
    public bool OptedInToCheckTokens { get; init; }

    public bool IsAlive => _alive;

    /// <summary>Cancelled when the broker ends this session (replaced by a newer stream, or not draining).</summary>
    public CancellationToken Ended => _ended.Token;

    /// <summary>Why the broker ended the session, once <see cref="Ended"/> is cancelled.</summary>
    public string? EndReason { get; private set; }

    /// <summary>Bytes queued and not yet written (for tests and diagnostics).</summary>
    public long QueuedBytes => Interlocked.Read(ref _queuedBytes);

    /// <summary>
    /// Given the checks this session accepted and never wrote, once its writer has stopped (ended for not reading, the
    /// call gone, or stopped past its bound): the core counts them as not sent and offers them to another instance
    /// (<see cref="HalfMsg.Broker.Core.BrokerEngine.ReturnUnsentChecksAsync(string, IReadOnlyList{CheckBackRequest}, CancellationToken)"/>). Called once at most, on the thread pool,
    /// never under a lock of this session; a check in the write under way when the writer stopped is not among them (it
    /// may have reached the client). Until 2026-12-07 these checks were dropped, counted as sent, and their halves
    /// waited a whole check interval.
    /// </summary>
    public Func<string, IReadOnlyList<CheckBackRequest>, Task>? ReturnUnsent { get; init; }

    /// <summary>
    /// Called (on the thread pool, never under a lock of this session) once a queue that refused a check for want of
    /// room is down to half its bound: the core runs a check pass, so the refused halves need not wait the check interval
    /// (<see cref="HalfMsg.Broker.Core.BrokerEngine.RequestCheckPass"/>). Since the night session of 2026-12-07.
    /// </summary>
    public Action? RoomAgain { get; init; }

    /// <summary>Checks refused for want of room while the client was still reading (tests and diagnostics).</summary>
    public long ChecksRefusedForRoom => Interlocked.Read(ref _checksRefusedForRoom);

    private long _checksRefusedForRoom;

    /// <summary>Test seam: run by <see cref="TrySend"/> once it has decided to queue a command, just before the command
    /// goes into the queue (tests end the stream and its writer here).</summary>
    internal Action? BeforeQueueForTests { get; set; }

    /// <summary>Test seam: run by <see cref="End"/> for a client that does not read, once the writer has been told to
    /// stop and before the stream is closed (tests queue a command here).</summary>
    internal Action? AfterStopRequestedForTests { get; set; }

    public bool TrySendCheck(CheckBackRequest request)
    {
        // The Node client drops a check whose message lacks topic, message_id or body_digest; the converter sets all.
        Message message = V5MessageConverter.ToMessage(request.HalfMessage, Namespace);
        // The check's number, 1 at the first, as the Apache proxy passes on what its broker wrote into the half (a user
        // property, replacing any the producer set): checkers read it, Apache's transaction benchmark rolls back without it.
        message.UserProperties[MessageConst.TransactionCheckTimes] = request.CheckNumber.ToString(CultureInfo.InvariantCulture);
        return TryQueue(new TelemetryCommand
        {
            RecoverOrphanedTransactionCommand = new RecoverOrphanedTransactionCommand
            {
                Message = message,
                // The half's check token after its id, for a client that echoes it (see SendsCheckTokens); the engine
                // refuses an answer that echoes another half's (a late answer to an earlier half of a reused id).
                TransactionId = SendsCheckTokens && request.CheckToken >= 0 && request.HalfMessage.MessageId == request.TransactionId
                    ? HalfMsg.Protocol.Grpc.CheckTokenIds.Make(request.TransactionId, request.CheckToken)
                    : request.TransactionId,
            },
        }, request);
    }

    /// <summary>Queues a command; false when the stream is closing, or when the client is not draining and the session
    /// has just been ended for it.</summary>
    public bool TrySend(TelemetryCommand command) => TryQueue(command, null);

    private bool TryQueue(TelemetryCommand command, CheckBackRequest? check)
    {
        if (!_alive)
        {
            return false;
        }

        int size = command.CalculateSize();
        BeforeQueueForTests?.Invoke();
        string endReason;
        lock (_queueGate)
        {
            // Ended for not reading (the writer writes nothing more), or the writer has stopped and given back what it
            // held: a command queued now would never be written, so it is refused (a check goes to another instance).
            if (Volatile.Read(ref _stopRequested) != 0 || _writerDone)
            {
                return false;
            }

            long now = _time.GetTimestamp();
            long queued = Interlocked.Read(ref _queuedBytes);
            string? over = null;
            bool overConnection = false;
            if (queued + size > _maxQueuedBytes)
            {
                over = $"{queued} bytes queued, bound {_maxQueuedBytes}";
            }
            // Charged on the connection without waiting for room: receives lease only what fits under its limit, so
            // receive answers alone (a busy push consumer's backlog) never end this stream; only when the connection
            // holds twice its limit, which takes Telemetry queues that alone pass it (200 streams of one connection each
            // queueing up to their own bound), does a command not fit.
            else if (_connection is not null && _connection.Held + size > 2 * _connection.Limit)
            {
                over = $"its connection holds {_connection.Held} bytes of unsent answers and commands";
                overConnection = true;
            }

            // A command other than a check (a Settings reply or re-push: small, one per Settings the client sends, and one
            // re-push) goes in over the bound for a client that reads, but not past twice it: a client that sends Settings
            // after Settings and reads none cannot make the broker hold more while the stall limit runs.
            bool pastHardBound = over is not null && check is null
                && (queued + size > 2 * _maxQueuedBytes || (_connection is not null && _connection.Held + size > 3 * _connection.Limit));
            if (over is not null && (StalledLocked(now) || pastHardBound))
            {
                endReason = _stallLimit > TimeSpan.Zero
                    ? $"the client did not read its Telemetry stream ({over}; nothing written for {_time.GetElapsedTime(_progressAt, now).TotalSeconds:0.#} s)"
                    : $"the client did not read its Telemetry stream ({over})";
            }
            else
            {
                if (over is not null && check is not null)
                {
                    // The client is reading, only slower than this burst of checks came: the check goes to another
                    // instance, or back to this one once it has room (RoomAgain); the client is cut off only if its queue
                    // stays stuck for the stall limit.
                    _wantsRoom = true;
                    _refusedFor = over;
                    _refusedSize = overConnection ? size : 0;
                    Interlocked.Increment(ref _checksRefusedForRoom);
                    ArmStallTimerLocked(now);
                    if (overConnection)
                    {
                        WatchConnectionLocked();
                    }

                    return false;
                }

                // Fits; or, over the bound, a command other than a check for a client that is still reading.
                if (queued == 0)
                {
                    // The queue was empty: its wait starts now.
                    _progressAt = now;
                }

                if (!_outbound.Writer.TryWrite((command, size, check)))
                {
                    // Closed: nothing was charged.
                    return false;
                }

                if (over is not null || _stallLimit > TimeSpan.Zero)
                {
                    // Watched while commands wait, whatever the bounds: a client that stopped reading is ended after the
                    // stall limit even when no check comes to be refused and its queue is far under its bound (a few small
                    // checks behind a full HTTP/2 window). Until the night session of 2026-12-07 a queue over its bound
                    // was not watched unless a check was refused; until the late-night session only one over its bound
                    // was (found by review). Cheap once armed: the timer is re-armed by its own callback, not per command.
                    ArmStallTimerLocked(now);
                }

                // Charged in the hold that queued it: the writer gives back nothing of it before this hold ends.
                Interlocked.Add(ref _queuedBytes, size);
                if (_connection is not null)
                {
                    _connection.Take(size);
                    Interlocked.Add(ref _connectionBytes, size);
                }

                return true;
            }
        }

        // Outside the hold: End completes the queue and cancels the session's token, whose callbacks may run here.
        End(endReason, stopWriting: true);
        return false;
    }

    /// <summary>Whether commands wait and none has been written for the stall limit (and the write under way's time at
    /// the slowest read allowed). Under _queueGate.</summary>
    private bool StalledLocked(long now)
        => Interlocked.Read(ref _queuedBytes) > 0 && _time.GetElapsedTime(_progressAt, now) >= StallLimitNow();

    /// <summary>The stall limit with the write under way's allowance (none with a zero stall limit: ended as soon as a
    /// command does not fit).</summary>
    private TimeSpan StallLimitNow()
        => _stallLimit <= TimeSpan.Zero ? TimeSpan.Zero : _stallLimit + TimeSpan.FromSeconds(Volatile.Read(ref _writingSize) / SlowestReadBytesPerSecond);

    /// <summary>Arms the stall timer for the moment the queue would have gone the stall limit without progress, unless
    /// armed: the session's one timer, created the first time and moved after. Under _queueGate.</summary>
    private void ArmStallTimerLocked(long now)
    {
        if (_stallArmed || _writerDone)
        {
            return;
        }

        TimeSpan left = StallLimitNow() - _time.GetElapsedTime(_progressAt, now);
        if (left < TimeSpan.Zero) left = TimeSpan.Zero;
        _stallArmed = true;
        if (_stallTimer is null)
        {
            _stallTimer = _time.CreateTimer(static s => ((TelemetrySession)s!).OnStallTimer(), this, left, Timeout.InfiniteTimeSpan);
        }
        else
        {
            _stallTimer.Change(left, Timeout.InfiniteTimeSpan);
        }
    }

    /// <summary>
    /// Watches the connection's releases for a check refused for the connection's bound: once the connection holds no
    /// more than its limit and a half (receives lease up to the limit; the other half leaves room for a check of the
    /// largest message) and the refused check fits, room is announced. This stream's own writes announce it only for its
    /// own queue, which may hold nothing (the connection's other streams hold it): until the night session of 2026-12-07
    /// such a check's half waited the whole check interval (found by review). Not while this stream's own queue is over
    /// half its bound: its writes announce room then (<see cref="Written"/>). Under _queueGate.
    /// </summary>
    private void WatchConnectionLocked()
    {
        if (_watchingConnection || _connection is null || _writerDone || Interlocked.Read(ref _queuedBytes) > _maxQueuedBytes / 2)
        {
            return;
        }

        // The next release's task first, then the bytes held: a release between the two is seen by one or the other.
        Task released = _connection.Released;
        long held = _connection.Held;
        if (held <= ConnectionRoomMark && held + _refusedSize <= 2 * _connection.Limit)
        {
            _wantsRoom = false;
            AnnounceRoom();
            return;
        }

        _watchingConnection = true;
        // Released runs its continuations asynchronously: never inline in a release, which may be under a lock.
        released.ContinueWith(static (_, s) => ((TelemetrySession)s!).OnConnectionReleased(), this,
            CancellationToken.None, TaskContinuationOptions.ExecuteSynchronously, TaskScheduler.Default);
    }

    /// <summary>What the connection may hold for room to be announced to a check refused for its bound.</summary>
    private long ConnectionRoomMark => _connection!.Limit + _connection.Limit / 2;

    private void OnConnectionReleased()
    {
        lock (_queueGate)
        {
            _watchingConnection = false;
            if (!_wantsRoom || Volatile.Read(ref _stopRequested) != 0)
            {
                // Announced meanwhile by this stream's writes (or ended): nothing more to watch.
                return;
            }

            WatchConnectionLocked();
        }
    }

    /// <summary>Asks the core for a check pass, on the thread pool (never inline: this may run under the engine's lock or
    /// this session's, and the pass takes its own locks).</summary>
    private void AnnounceRoom()
    {
        if (RoomAgain is { } roomAgain)
        {
            ThreadPool.QueueUserWorkItem(static a => a(), roomAgain, preferLocal: false);
        }
    }

    /// <summary>The stall timer: a queue with commands in it and nothing written for the stall limit ends the session for
    /// not reading (its unsent checks go to another instance); one that made progress is watched again while commands
    /// wait (an empty one is armed again by the next command queued).</summary>
    private void OnStallTimer()
    {
        string? reason = null;
        lock (_queueGate)
        {
            _stallArmed = false;
            if (Volatile.Read(ref _stopRequested) != 0 || _writerDone)
            {
                return;
            }

            long now = _time.GetTimestamp();
            if (StalledLocked(now))
            {
                // The refused check's bound while checks still want room; else what waits (a queue under its bounds).
                reason = $"the client did not read its Telemetry stream ({(_wantsRoom ? _refusedFor : null) ?? $"{Interlocked.Read(ref _queuedBytes)} bytes queued"}; nothing written for {_time.GetElapsedTime(_progressAt, now).TotalSeconds:0.#} s)";
            }
            else if (Interlocked.Read(ref _queuedBytes) > 0)
            {
                ArmStallTimerLocked(now);
            }
        }

        if (reason is not null)
        {
            End(reason, stopWriting: true);
        }
    }

    /// <summary>Makes this stream the check-back channel of each topic's producer group (group = topic, as the proxy does).</summary>
    /// <returns>How many of the topics are not registered because the stream already has
    /// <see cref="Remoting.RemotingSession.MaxProducerGroups"/> groups (0 almost always): they get no check-backs over
    /// this stream, and the caller says so (<see cref="MessagingService.RegisterPublishing"/>).</returns>
    public int RegisterProducer(IEnumerable<string> topics, ProducerRegistry registry)
    {
        int overCap = 0;
        lock (_gate)
        {
            if (!_alive)
            {
                return 0;
            }

            foreach (string topic in topics)
            {
                // Bounded as a Remoting connection's producer groups (each is kept until the stream ends).
                if (topic.Length == 0 || topic.Length > 255 || _producerRegistrations.ContainsKey(topic))
                {
                    continue;
                }

                if (_producerRegistrations.Count >= Remoting.RemotingSession.MaxProducerGroups)
                {
                    overCap++;
                    continue;
                }

                _producerRegistrations[topic] = registry.Register(topic, this);
            }
        }

        return overCap;
    }

    /// <summary>True the first time only: the over-cap warning is written once per stream, not on every Settings
    /// (the clients re-send theirs every 5 minutes).</summary>
    public bool TryClaimCapWarning() => Interlocked.Exchange(ref _capWarned, 1) == 0;

    /// <summary>Stops receiving check-backs (client termination), keeping the stream itself open.</summary>
    public void UnregisterProducer()
    {
        IDisposable[] registrations;
        lock (_gate)
        {
            registrations = [.. _producerRegistrations.Values];
            _producerRegistrations.Clear();
        }

        foreach (IDisposable registration in registrations)
        {
            registration.Dispose();
        }
    }

    /// <summary>
    /// Keeps <paramref name="reply"/> as the Settings <see cref="ReplySettings"/> sends and <see cref="Repush"/> pushes
    /// again, in place of the stream's previous ones, its size held on the connection's <see cref="KeptSettings"/> until
    /// the session closes. False, and nothing kept or changed, when the connection's sessions would keep more than its
    /// bound, or the session is closed.
    /// </summary>
    public bool TryKeepSettings(TelemetryCommand reply)
    {
        long size = reply.CalculateSize();
        lock (_gate)
        {
            if (!_alive || (KeptSettings is { } budget && !budget.TryReplace(_keptSettingsBytes, size))) return false;
            _keptSettingsBytes = size;
            _lastSettings = reply;
            return true;
        }
    }

    /// <summary>Sends the kept Settings (<see cref="TryKeepSettings"/>) now and once more after <paramref name="repushDelay"/>.</summary>
    public void ReplySettings(TimeSpan repushDelay, TimeProvider time)
    {
        TelemetryCommand? reply;
        lock (_gate)
        {
            reply = _lastSettings;
            if (reply is null) return;
            _repushTimer?.Dispose();
            _repushTimer = repushDelay > TimeSpan.Zero ? time.CreateTimer(static s => ((TelemetrySession)s!).Repush(), this, repushDelay, Timeout.InfiniteTimeSpan) : null;
        }

        TrySend(reply);
    }

    /// <summary>Pushes the last Settings again (an unsolicited Settings is always accepted by the clients).</summary>
    public void Repush()
    {
        TelemetryCommand? settings;
        lock (_gate)
        {
            settings = _lastSettings;
        }

        if (settings is not null)
        {
            TrySend(settings);
        }
    }

    private Task? _writer;

    /// <summary>The single writer: writes queued commands until <see cref="Close"/> (then drains what is left), the
    /// call fails, or the writer is stopped (<see cref="End"/> for a client that does not read, or
    /// <see cref="WhenWriterDoneAsync"/> past its bound).</summary>
    public Task RunWriterAsync(IServerStreamWriter<TelemetryCommand> stream, CancellationToken ct)
        => _writer = RunWriterCoreAsync(stream, ct);

    private async Task RunWriterCoreAsync(IServerStreamWriter<TelemetryCommand> stream, CancellationToken callAborted)
    {
        using var stop = CancellationTokenSource.CreateLinkedTokenSource(callAborted, _stopWriter.Token);
        var ct = stop.Token;
        // A check taken from the queue and not written: given back with those left in the queue.
        CheckBackRequest? taken = null;
        try
        {
            await foreach ((TelemetryCommand command, int size, CheckBackRequest? check) in _outbound.Reader.ReadAllAsync(ct).ConfigureAwait(false))
            {
                if (Volatile.Read(ref _stopRequested) != 0)
                {
                    // Ended for not reading: what is queued is not written (the finally gives its bytes back, and its
                    // checks to the core).
                    taken = check;
                    break;
                }

                Volatile.Write(ref _writingSize, size);
                await stream.WriteAsync(command, ct).ConfigureAwait(false);
                Written(size);
            }
        }
        catch
        {
            // The read loop owns the call's outcome; make sure it notices and stops routing checks here.
            End("the Telemetry stream could not be written");
            throw;
        }
        finally
        {
            // Whatever was queued and never written is no longer held for the connection, and nothing is queued after
            // this (TrySend refuses once _writerDone is set, in the same hold).
            List<CheckBackRequest>? unsent = taken is null ? null : [taken];
            lock (_queueGate)
            {
                _writerDone = true;
                _wantsRoom = false;
                _stallTimer?.Dispose();
                _stallTimer = null;
                _stallArmed = false;
                Interlocked.Exchange(ref _queuedBytes, 0);
                long unwritten = Interlocked.Exchange(ref _connectionBytes, 0);
                _connection?.Release(unwritten);
                // Taken out in the same hold: nothing is queued after it, so each unwritten check is given back once.
                while (_outbound.Reader.TryRead(out var left))
                {
                    if (left.Check is { } check) (unsent ??= []).Add(check);
                }
            }

            if (unsent is not null && ReturnUnsent is { } giveBack)
            {
                // On the thread pool: the core takes its lock and appends, and this may run inside End (TrySendCheck,
                // under the engine's lock) when a synchronous continuation ends the writer.
                _ = Task.Run(async () =>
                {
                    try
                    {
                        await giveBack(ClientId, unsent).ConfigureAwait(false);
                    }
                    catch (Exception)
                    {
                        // The broker is stopping (or its log failed): the halves are checked again after the interval.
                    }
                });
            }
        }
    }

    /// <summary>
    /// After <see cref="Close"/>: waits up to <paramref name="bound"/> for the writer to write what is queued, then stops
    /// it. True when it finished within the bound (or none ran; after <see cref="End"/> for a client that does not read,
    /// the bound is <see cref="InFlightWriteGrace"/> and only the write under way is finished): everything it wrote was
    /// taken by the stream, and a status may follow it. False when it did not finish within the bound: it is stopped in a
    /// write parked for HTTP/2 window, which may never end otherwise, and a status would wait behind it: the stream is to
    /// be reset (by <paramref name="beforeStop"/>).
    /// Never throws for the writer's own failure (the read side reports the call's outcome).
    /// </summary>
    /// <param name="bound">How long the writer may take (at most <see cref="InFlightWriteGrace"/> once ended for not reading).</param>
    /// <param name="time">The clock of the bound.</param>
    /// <param name="beforeStop">Run past the bound before the writer is stopped (the handler resets the stream here: a
    /// write cancelled first would make the stream reset with CANCEL, which the clients report as CANCELLED).</param>
    public async Task<bool> WhenWriterDoneAsync(TimeSpan bound, TimeProvider time, Action? beforeStop = null)
    {
        if (_writer is not { } writer) return true;
        if (Volatile.Read(ref _stopRequested) != 0 && bound > InFlightWriteGrace) bound = InFlightWriteGrace;
        bool inTime = true;
        try
        {
            await writer.WaitAsync(bound, time).ConfigureAwait(false);
        }
        catch (TimeoutException)
        {
            inTime = false;
            beforeStop?.Invoke();
            StopWriter();
        }
        catch (Exception)
        {
            // The write failed or was stopped: reported by the read side.
        }

        try
        {
            await writer.ConfigureAwait(false);
        }
        catch (Exception)
        {
            // Stopped above, or failed: nothing left to report here.
        }

        return inTime;
    }

    /// <summary>A session ended for not reading lets the write under way finish within this long (a client that reads,
    /// only slower than a burst of check-backs came, takes it at once), so that the status can follow it; a write still
    /// parked then is stopped, and the stream reset.</summary>
    internal static readonly TimeSpan InFlightWriteGrace = TimeSpan.FromSeconds(2);

    /// <summary>No more writes: the writer stops before its next one, leaving what is queued unwritten; from now on
    /// nothing more is queued (set in the queue's hold, so a command is either queued before it, and dropped with the
    /// rest, or refused).</summary>
    private void StopBetweenWrites()
    {
        lock (_queueGate)
        {
            Interlocked.Exchange(ref _stopRequested, 1);
        }
    }

    /// <summary>Stops the writer now, in its write.</summary>
    private void StopWriter()
    {
        StopBetweenWrites();
        _stopWriter.Cancel();
    }

    /// <summary>The writer wrote a command of <paramref name="size"/> bytes: it is no longer queued nor held for the
    /// connection.</summary>
    private void Written(int size)
    {
        bool room = false;
        lock (_queueGate)
        {
            long left = Interlocked.Add(ref _queuedBytes, -size);
            _progressAt = _time.GetTimestamp();
            Volatile.Write(ref _writingSize, 0);
            if (_connection is not null)
            {
                Interlocked.Add(ref _connectionBytes, -size);
                _connection.Release(size);
            }

            if (_wantsRoom && left <= _maxQueuedBytes / 2)
            {
                if (_refusedSize > 0)
                {
                    // Refused for the connection's bound: announced once the connection has room (at once if it has).
                    WatchConnectionLocked();
                }
                else
                {
                    _wantsRoom = false;
                    room = true;
                }
            }
        }

        if (room)
        {
            // Not inline: the writer goes on writing, and the core's pass takes its own locks.
            AnnounceRoom();
        }
    }

    /// <summary>The broker ends the session: no more checks here, and the read loop stops with <paramref name="reason"/>.
    /// <paramref name="stopWriting"/> (the client does not read): the writer writes nothing more than the write under
    /// way, which <see cref="WhenWriterDoneAsync"/> gives <see cref="InFlightWriteGrace"/>, and what was queued is no
    /// longer held for the connection once the writer stopped. If that write finishes, the stream ends with ABORTED and
    /// the reason (a client that reads, only slower than a burst came); if not, it is reset (a client that does not read
    /// can be sent no status).</summary>
    public void End(string reason, bool stopWriting = false)
    {
        if (stopWriting)
        {
            // Not cancelled here: this runs in TrySendCheck, under the engine's lock; the write under way gets
            // InFlightWriteGrace from WhenWriterDoneAsync, which the read loop's end calls at once.
            StopBetweenWrites();
            AfterStopRequestedForTests?.Invoke();
        }

        lock (_gate)
        {
            if (!_alive && EndReason is not null)
            {
                return;
            }

            EndReason = reason;
        }

        Close();
        try
        {
            _ended.Cancel();
        }
        catch (ObjectDisposedException)
        {
        }
    }

    /// <summary>The stream ended: no more checks here, unregister from every producer group, let the writer drain.</summary>
    public void Close()
    {
        lock (_gate)
        {
            _alive = false;
            _repushTimer?.Dispose();
            _repushTimer = null;
            // What the session kept of Settings goes with it (a reply already queued is still written, and charged to
            // the connection's answer budget until it is).
            _lastSettings = null;
            KeptSettings?.Release(_keptSettingsBytes);
            _keptSettingsBytes = 0;
        }

        UnregisterProducer();
        _outbound.Writer.TryComplete();
    }
}

/// <summary>Open Telemetry sessions by client id: at most one per id, the newest.</summary>
internal sealed partial class TelemetrySessions(ILogger logger)
{
    private readonly object _gate = new();
    private readonly Dictionary<string, TelemetrySession> _byClient = new(StringComparer.Ordinal);

    /// <summary>
    /// Adds the session, ending an older one with the same client id. A client that reconnects after its connection
    /// died silently gets its check-backs at once instead of after the old stream times out; two live processes that
    /// share an id both see their stream end (instead of one of them silently getting no check-backs).
    /// </summary>
    public void Add(TelemetrySession session)
    {
        TelemetrySession? previous;
        lock (_gate)
        {
            _byClient.TryGetValue(session.ClientId, out previous);
            _byClient[session.ClientId] = session;
        }

        if (previous is not null && previous != session)
        {
            LogReplaced(session.ClientId);
            previous.End("replaced by a newer Telemetry stream with the same client id");
        }
    }

    public void Remove(TelemetrySession session)
    {
        lock (_gate)
        {
            if (_byClient.TryGetValue(session.ClientId, out TelemetrySession? current) && current == session)
            {
                _byClient.Remove(session.ClientId);
            }
        }
    }

    public TelemetrySession? Find(string clientId)
    {
        lock (_gate)
        {
            return _byClient.GetValueOrDefault(clientId);
        }
    }

    public void RepushSettings(string clientId) => Find(clientId)?.Repush();

    public void Terminate(string clientId) => Find(clientId)?.UnregisterProducer();

    [LoggerMessage(Level = LogLevel.Information, Message = "Telemetry: a new stream for client {ClientId} replaces its previous one")]
    private partial void LogReplaced(string clientId);
}
