using System.Buffers;
using System.IO.Pipelines;
using System.Net;
using System.Threading.Channels;
using HalfMsg.Broker.Core.Model;
using HalfMsg.Broker.Core.Transactions;
using HalfMsg.Protocol.Remoting;

namespace HalfMsg.Broker.FrontEnds.Remoting;

/// <summary>
/// One Remoting connection: a read loop that cuts frames with <see cref="RemotingFrame.TryReadFrame"/> and hands each
/// request to the dispatcher (requests run concurrently, bounded per connection; long-polling PULL_MESSAGEs have a
/// bound of their own, so parked pulls neither hold up nor use up the slots of heartbeats and sends), and a write loop that drains one outbound channel: responses and the frames the broker starts
/// itself (CHECK_TRANSACTION_STATE, NOTIFY_CONSUMER_IDS_CHANGED). The session is the check-back channel of every
/// producer group its client announced.
/// </summary>
internal sealed class RemotingSession : ICheckBackChannel
{
    private readonly IDuplexPipe _transport;
    private readonly RemotingServer _server;
    private readonly Channel<Outbound> _outbound;
    // Bytes of check-backs queued and not yet flushed to the socket: each carries a whole half, and a connection that
    // keeps its producer registered but never reads could otherwise hold OutboundQueueCapacity of them.
    private long _queuedCheckBytes;
    // 1 once a check was refused for want of room (CheckBackQueueBudget), until the flush that leaves the queued check
    // bytes at half the budget asks the core for a pass (RoomAgain): the refused halves need not wait the check interval.
    private int _checkRefusedForRoom;

    /// <summary>A frame to write; <see cref="CheckBytes"/> counts against the check-back byte bound,
    /// <see cref="ResponseBytes"/> against the in-flight byte budget and <see cref="PullBytes"/> (a pull's answer) against
    /// the broker's budget of pulled bytes (<see cref="RemotingServer.PullBytes"/>) until the frame is flushed.
    /// <see cref="Check"/>: the check-back a frame carries, given back to the core if the frame is never written.
    /// <see cref="CheckClientId"/>: the connection's client id when the check was queued (the id the core sent it to).</summary>
    private readonly record struct Outbound(RemotingCommand Command, int CheckBytes, long ResponseBytes, long PullBytes = 0, CheckBackRequest? Check = null,
        string? CheckClientId = null);

    /// <summary>The write loop flushes at least every this many bytes, so a large answer (or a run of them) goes out and
    /// is released in pieces, and a flush that does not complete means the client stopped taking bytes.</summary>
    internal const int FlushChunkBytes = 1024 * 1024;
    /// <summary>An answer this small (a send's receipt, an offset) is always queued, even past the budget: refusing it
    /// after the request took effect would make the client repeat it. Such answers are bounded by the request slots.</summary>
    internal const int SmallResponseBytes = 4096;
    private CancellationTokenSource _flushStall = new();
    private readonly SemaphoreSlim _outstanding;
    private readonly SemaphoreSlim _parkedPulls;
    private readonly SemaphoreSlim _decisions = new(MaxOnewayDecisionsPerConnection);
    private readonly CancellationTokenSource _closing = new();
    private readonly object _gate = new();
    private readonly Dictionary<string, IDisposable> _producerGroups = new(StringComparer.Ordinal);
    private volatile bool _alive = true;
    private int _closed;
    private long _inFlightBytes;
    private string _clientId;

    public RemotingSession(IDuplexPipe transport, RemotingServer server, IPEndPoint? remote, IPEndPoint? local, bool nameServerOnly)
    {
        _transport = transport;
        _server = server;
        RemoteEndPoint = remote ?? new IPEndPoint(IPAddress.Loopback, 0);
        LocalEndPoint = local ?? new IPEndPoint(IPAddress.Loopback, server.Options.RemotingPort);
        NameServerOnly = nameServerOnly;
        _clientId = "remoting@" + RemoteEndPoint;
        _outbound = Channel.CreateBounded<Outbound>(new BoundedChannelOptions(server.Options.OutboundQueueCapacity)
        {
            SingleReader = true,
            FullMode = BoundedChannelFullMode.Wait,
        });
        _outstanding = new SemaphoreSlim(server.Options.MaxOutstandingRequestsPerConnection);
        _parkedPulls = new SemaphoreSlim(server.Options.MaxParkedPullsPerConnection);
    }

    public string ClientId => Volatile.Read(ref _clientId);
    public bool IsAlive => _alive;
    public IPEndPoint RemoteEndPoint { get; }
    public IPEndPoint LocalEndPoint { get; }
    /// <summary>Accepted on the name-server port: only name-server requests are served.</summary>
    public bool NameServerOnly { get; }
    /// <summary>Cancelled when the connection closes (ends parked pulls).</summary>
    public CancellationToken Closing => _closing.Token;

    /// <summary>Cancelled when the server begins to stop, before the connection closes: parked pulls end then and are
    /// answered (see PullMessageAsync) while their answers can still be written.</summary>
    public CancellationToken Stopping { get; private set; }

    /// <summary>The longest a session closed by the server's stop waits for the requests it is processing to be answered.</summary>
    internal static readonly TimeSpan DrainTimeout = TimeSpan.FromSeconds(3);

    /// <summary>
    /// Reads and dispatches frames until the connection closes. <paramref name="closeRequested"/> (the server is
    /// stopping): stop reading, let the requests being processed be answered (parked pulls too: they end at once, see
    /// <see cref="Stopping"/>; at most <see cref="DrainTimeout"/>), write those answers out, then close.
    /// </summary>
    public async Task RunAsync(CancellationToken connectionClosed, CancellationToken closeRequested = default)
    {
        Stopping = closeRequested;
        using var link = connectionClosed.Register(static s => ((RemotingSession)s!)._closing.Cancel(), this);
        var writer = WriteLoopAsync();
        var input = _transport.Input;
        var large = new RemotingFrameAssembler(_server.PartialFrames, _server.Options, _server.Time);
        using var idle = CancellationTokenSource.CreateLinkedTokenSource(_closing.Token, closeRequested);
        bool draining = false;
        try
        {
            while (true)
            {
                // Reset on every read: a connection silent for IdleTimeout (no heartbeat, no pull) is closed, and one
                // silent inside a large frame for FrameStallTimeout.
                idle.CancelAfter(large.Active ? _server.Options.FrameStallTimeout : _server.Options.IdleTimeout);
                var result = await input.ReadAsync(idle.Token).ConfigureAwait(false);
                var buffer = result.Buffer;
                try
                {
                    while (true)
                    {
                        if (large.Active)
                        {
                            if (!large.Append(ref buffer, out var whole)) break;
                            if (!RemotingFrame.TryReadFrame(ref whole, _server.Options.MaxFrameLength, out var big))
                                RemotingProtocolException.Throw("a collected frame could not be read");
                            large.Reset();
                            await Dispatch(big, idle.Token).ConfigureAwait(false);
                            continue;
                        }
                        if (RemotingFrame.TryReadFrame(ref buffer, _server.Options.MaxFrameLength, out var command)) await Dispatch(command, idle.Token).ConfigureAwait(false);
                        else if (!large.TryStart(buffer)) break;
                    }
                    if (result.IsCompleted || result.IsCanceled)
                    {
                        if (!buffer.IsEmpty || large.Active) _server.LogMalformed(this, "connection closed inside a frame");
                        break;
                    }
                }
                finally
                {
                    input.AdvanceTo(buffer.Start, buffer.End);
                }
            }
        }
        catch (RemotingProtocolException ex)
        {
            // Malformed, oversized, truncated or too slow: the stream is out of sync or not worth its memory; close, at
            // Debug level (STYLE item 6).
            _server.LogMalformed(this, ex.Message);
        }
        catch (OperationCanceledException) when (closeRequested.IsCancellationRequested && !_closing.IsCancellationRequested)
        {
            // The server is stopping: no new request is read; those being processed are answered below.
            draining = true;
        }
        catch (OperationCanceledException) when (idle.IsCancellationRequested && !_closing.IsCancellationRequested)
        {
            _server.Logger.LogDebug("Closing Remoting connection from {Remote}: {What}", RemoteEndPoint,
                large.Active ? $"no byte of a large frame for {_server.Options.FrameStallTimeout}" : $"idle for {_server.Options.IdleTimeout}");
        }
        catch (Exception ex) when (ex is OperationCanceledException or IOException or Microsoft.AspNetCore.Connections.ConnectionResetException)
        {
        }
        finally
        {
            large.Reset();
            if (draining || closeRequested.IsCancellationRequested) await WaitForRequestsAsync(DrainTimeout).ConfigureAwait(false);
            Close();
            await input.CompleteAsync().ConfigureAwait(false);
            await writer.ConfigureAwait(false);
        }
    }

    /// <summary>Waits until no request is being processed (their answers are then queued; one-way decisions, on their own
    /// slots, are written), at most <paramref name="bound"/> or until the connection is gone. Parked pulls are waited for
    /// too: <see cref="Stopping"/> has ended them, and their answers are queued at once. Until 2026-12-06 they were not
    /// waited for, and the close cancelled them: a parked pull got no answer, only its connection closed.</summary>
    private async Task WaitForRequestsAsync(TimeSpan bound)
    {
        long until = Environment.TickCount64 + (long)bound.TotalMilliseconds;
        while (RequestsInProgress > 0 && !_closing.IsCancellationRequested && Environment.TickCount64 < until)
        {
            await Task.Delay(10).ConfigureAwait(false);
        }
    }

    private void Close()
    {
        if (Interlocked.Exchange(ref _closed, 1) != 0) return;
        _alive = false;
        _closing.Cancel();
        _outbound.Writer.TryComplete();
        IDisposable[] registrations;
        lock (_gate)
        {
            registrations = [.. _producerGroups.Values];
            _producerGroups.Clear();
        }
        foreach (var r in registrations) r.Dispose();
        _server.Clients.RemoveSession(this);
    }

    /// <summary>Starts processing <paramref name="command"/>, or refuses it. Completes at once but when a refusal must wait
    /// for room in the outbound queue (<see cref="Refuse"/>).</summary>
    private ValueTask Dispatch(RemotingCommand command, CancellationToken reading)
    {
        if (command.IsResponse) return default; // the broker's own requests are one-way; a response to them is ignored
        long bytes = command.Body.Length;
        // In flight: bodies of requests being processed and answers not yet flushed to the socket (ProcessAsync). Past the
        // budget a request that expects an answer is refused, so a client that does not read cannot make the broker hold
        // more; a one-way request without a body (UPDATE_CONSUMER_OFFSET) adds nothing to hold and still goes through.
        if (Interlocked.Add(ref _inFlightBytes, bytes) > _server.Options.MaxInFlightBytesPerConnection && (bytes > 0 || !command.IsOneway))
        {
            ReleaseInFlight(bytes);
            return Refuse(command, $"[OVERLOAD]more than {_server.Options.MaxInFlightBytesPerConnection} bytes in flight on this connection (requests being processed, answers the client has not read yet)", reading);
        }
        // A long poll (PULL_MESSAGE with SUSPEND) may stay parked for its whole suspend time: it takes a slot of its own
        // cap, not one of the general slots, which a Java client instance's parked pulls (one per queue of every group,
        // retry queues included) would otherwise use up, leaving none for its heartbeats, sends and offset commits.
        // Past that cap the pull is served as a plain pull, answered at once, rather than refused (the dispatcher clears
        // its SUSPEND flag once the request is authenticated: the ACL signature covers sysFlag).
        var slots = _outstanding;
        bool mayPark = true;
        if (command.Code == RequestCode.PullMessage && (command.GetInt("sysFlag", 0) & PullSysFlag.Suspend) != 0)
        {
            if (_parkedPulls.Wait(0)) slots = _parkedPulls;
            else mayPark = false;
        }
        // A one-way END_TRANSACTION (the producer's commit or rollback: no body, a decision record to write) takes a slot
        // of its own cap first. A Java client instance sends all its producers' and consumers' requests on one connection:
        // with every general slot busy with its sends, the decision would be refused, and a one-way request is refused
        // without an answer, so the half would wait for a check-back. Apache runs END_TRANSACTION on an executor of its own.
        else if (command.Code == RequestCode.EndTransaction && command.IsOneway && bytes == 0 && _decisions.Wait(0))
            slots = _decisions;
        if (slots == _outstanding && !_outstanding.Wait(0))
        {
            ReleaseInFlight(bytes);
            return Refuse(command, $"[OVERLOAD]more than {_server.Options.MaxOutstandingRequestsPerConnection} requests in flight on this connection", reading);
        }
        _ = ProcessAsync(command, slots, mayPark);
        return default;
    }

    /// <summary>One-way END_TRANSACTIONs of one connection being processed at once outside the general slots; past it
    /// they take a general slot.</summary>
    internal const int MaxOnewayDecisionsPerConnection = 1024;

    /// <summary>Requests of this connection being processed, parked pulls and one-way decisions included (tests).</summary>
    internal int RequestsInProgress
        => RequestsBesidesParkedPulls + _server.Options.MaxParkedPullsPerConnection - _parkedPulls.CurrentCount;

    /// <summary>Requests of this connection being processed on the general slots and the one-way decisions' slots.</summary>
    private int RequestsBesidesParkedPulls
        => _server.Options.MaxOutstandingRequestsPerConnection - _outstanding.CurrentCount + MaxOnewayDecisionsPerConnection - _decisions.CurrentCount;

    /// <summary>Counts bytes a request grows by while it is processed (an inflated body) against the in-flight limit.</summary>
    internal bool TryChargeInFlight(long bytes)
    {
        if (Interlocked.Add(ref _inFlightBytes, bytes) <= _server.Options.MaxInFlightBytesPerConnection) return true;
        ReleaseInFlight(bytes);
        return false;
    }

    /// <summary>Takes room on the in-flight budget for a message a pull is about to read (<see cref="PullReservation"/>):
    /// when it fits, or when it is the pull's first and nothing else of the connection is in flight (the pull's own
    /// request aside), so that one message larger than the budget still goes out alone.</summary>
    internal bool TryReservePull(long bytes, bool first, long requestBytes)
    {
        long after = Interlocked.Add(ref _inFlightBytes, bytes);
        if (after <= _server.Options.MaxInFlightBytesPerConnection || (first && after - bytes <= requestBytes)) return true;
        ReleaseInFlight(bytes);
        return false;
    }

    /// <summary>Counts <paramref name="bytes"/> (negative: gives back) whatever the budget.</summary>
    internal void ChargeInFlight(long bytes)
    {
        if (bytes < 0) ReleaseInFlight(-bytes);
        else Interlocked.Add(ref _inFlightBytes, bytes);
    }

    private long _pulledBytes;

    /// <summary>This connection's share of the broker's budget of pulled bytes (<see cref="RemotingServer.PullBytes"/>).</summary>
    internal long PulledBytes => Interlocked.Read(ref _pulledBytes);

    /// <summary>Counts this connection's share of the broker's pulled bytes (<see cref="RemotingServer"/> only).</summary>
    internal void NotePulled(long bytes) => Interlocked.Add(ref _pulledBytes, bytes);

    /// <summary>Bytes this connection has in flight now (tests).</summary>
    internal long InFlightBytes => Interlocked.Read(ref _inFlightBytes);

    /// <summary>Gives back <paramref name="bytes"/> of the in-flight budget and wakes the long polls waiting for room
    /// on it (<see cref="InFlightReleased"/>).</summary>
    internal void ReleaseInFlight(long bytes)
    {
        Interlocked.Add(ref _inFlightBytes, -bytes);
        if (bytes > 0) InFlightReleased.Pulse();
    }

    /// <summary>Pulsed at every release of this connection's in-flight bytes: a long poll refused for room on them waits
    /// on it (<see cref="PullReservation.WaitForRoomAsync"/>).</summary>
    internal RoomSignal InFlightReleased { get; } = new();

    /// <summary>Whether <see cref="TryReservePull"/> of a pull's first message of <paramref name="bytes"/> would succeed
    /// now (it may not by the time it is tried).</summary>
    internal bool HasRoomForPull(long bytes, long requestBytes)
    {
        long held = InFlightBytes;
        return held <= _server.Options.MaxInFlightBytesPerConnection - bytes || held <= requestBytes;
    }

    /// <summary>Flow control: RocketMQ's SYSTEM_BUSY, which clients retry; a one-way request cannot be answered, so it
    /// is dropped, counted and logged (rate-limited). When the outbound queue is full (the client has not read
    /// <see cref="RemotingOptions.OutboundQueueCapacity"/> frames), the answer waits for room, and so does the reading of
    /// this connection's next requests: the client hears SYSTEM_BUSY and retries at once, or stops reading and the
    /// write-stall timeout closes the connection. Until the session of 2026-12-07 such an answer was dropped uncounted,
    /// and the client waited out its own timeout (3 s for the Java client).</summary>
    private ValueTask Refuse(RemotingCommand command, string remark, CancellationToken reading)
    {
        if (command.IsOneway)
        {
            _server.DroppedOneway(this, command, remark);
            return default;
        }
        var answer = new Outbound(RemotingCommand.ResponseTo(command, ResponseCode.SystemBusy, remark), 0, 0);
        if (!_alive || _outbound.Writer.TryWrite(answer)) return default;
        Interlocked.Increment(ref _server.AnswersThatWaitedForRoom);
        return WaitToQueueAsync(answer, reading);
    }

    /// <summary>Queues <paramref name="item"/>, waiting for room; gives up quietly once the connection closes or
    /// <paramref name="cancel"/> fires (the server stopping: the read loop then sees it too).</summary>
    private async ValueTask WaitToQueueAsync(Outbound item, CancellationToken cancel)
    {
        try
        {
            await _outbound.Writer.WriteAsync(item, cancel).ConfigureAwait(false);
        }
        catch (Exception ex) when (ex is ChannelClosedException or OperationCanceledException)
        {
        }
    }

    private async Task ProcessAsync(RemotingCommand request, SemaphoreSlim slots, bool mayPark)
    {
        // A pull takes the room for its answer as it picks each message, before reading its body: see PullReservation.
        // So do the look-ups that answer stored messages (VIEW_MESSAGE_BY_ID, QUERY_MESSAGE), on the same budgets.
        using var pull = request.Code is RequestCode.PullMessage or RequestCode.ViewMessageById or RequestCode.QueryMessage
            ? new PullReservation(this, _server, request.Body.Length) : null;
        try
        {
            var response = await _server.Dispatcher.HandleAsync(this, request, mayPark, pull).ConfigureAwait(false);
            if (response is not null && !request.IsOneway)
            {
                response.Opaque = request.Opaque;
                response.Flag |= RemotingCommand.ResponseFlag;
                long size = FrameSize(response);
                // Pulled messages: their room is already taken, so the answer goes out (charged at its real size).
                long pulled = 0;
                if (pull is { Held: > 0 })
                {
                    pull.HandOver(size);
                    pulled = size;
                }
                else if (!TryChargeResponse(size))
                {
                    // Only answers of reads are this large (stats, routes; pulled, viewed and queried messages took their
                    // room above, before they were read): the client asks again later, as it does after any SYSTEM_BUSY.
                    response = RemotingCommand.ResponseTo(request, ResponseCode.SystemBusy,
                        $"[OVERLOAD]an answer of {size} bytes would pass the {_server.Options.MaxInFlightBytesPerConnection} bytes this connection may have in flight (answers the client has not read yet); retry later");
                    size = FrameSize(response);
                    Interlocked.Add(ref _inFlightBytes, size);
                }
                await SendAsync(response, size, pulled).ConfigureAwait(false);
            }
        }
        catch (OperationCanceledException) when (_closing.IsCancellationRequested)
        {
        }
        catch (Exception ex)
        {
            _server.LogFailure(this, request, ex);
            // Waits for room in the outbound queue rather than dropping the answer (see Refuse).
            if (!request.IsOneway && _alive)
                await WaitToQueueAsync(new Outbound(RemotingCommand.ResponseTo(request, ResponseCode.SystemError, ex.GetType().Name + ": " + ex.Message), 0, 0), _closing.Token).ConfigureAwait(false);
        }
        finally
        {
            ReleaseInFlight(request.Body.Length);
            slots.Release();
        }
    }

    /// <summary>About the bytes of <paramref name="command"/>'s frame: its body and header.</summary>
    private static long FrameSize(RemotingCommand command)
    {
        long size = 64 + command.Body.Length + (command.Remark?.Length ?? 0);
        if (command.ExtFields is { } ext)
            foreach (var (k, v) in ext) size += k.Length + v.Length + 6;
        return size;
    }

    /// <summary>Counts an answer against the in-flight budget until it is flushed: a small one always, a large one when it
    /// fits or nothing else is in flight (an answer larger than the budget still goes out alone).</summary>
    private bool TryChargeResponse(long size)
    {
        long after = Interlocked.Add(ref _inFlightBytes, size);
        if (size <= SmallResponseBytes || after <= _server.Options.MaxInFlightBytesPerConnection || after == size) return true;
        ReleaseInFlight(size);
        return false;
    }

    /// <summary>Queues a frame, waiting while the outbound queue is full (backpressure on a slow reader).
    /// <paramref name="charged"/> in-flight bytes (and <paramref name="pulled"/> bytes of the broker's pulled bytes) are
    /// released once it is flushed, or now if the connection is gone.</summary>
    private async ValueTask SendAsync(RemotingCommand command, long charged, long pulled)
    {
        try
        {
            await _outbound.Writer.WriteAsync(new Outbound(command, 0, charged, pulled), _closing.Token).ConfigureAwait(false);
        }
        catch (Exception ex) when (ex is ChannelClosedException or OperationCanceledException)
        {
            ReleaseInFlight(charged);
            _server.ChargePull(this, -pulled);
        }
    }

    /// <summary>Queues a frame without waiting; false when the connection is gone or its queue is full.</summary>
    public bool Enqueue(RemotingCommand command) => _alive && _outbound.Writer.TryWrite(new Outbound(command, 0, 0));

    /// <summary>
    /// Writes queued frames, flushing at least every <see cref="FlushChunkBytes"/> (a large body goes out in pieces) and
    /// at the end of each run of queued frames. A frame's byte charges are released once a flush after its last byte
    /// completes. A flush that does not complete within <see cref="RemotingOptions.WriteStallTimeout"/> (the client
    /// takes no bytes) closes the connection.
    /// </summary>
    private async Task WriteLoopAsync()
    {
        var output = _transport.Output;
        var reader = _outbound.Reader;
        long unflushed = 0, doneCheck = 0, doneCharged = 0;
        // Pulled bytes of the frame being written and of those written whole since the last flush. The broker's budget
        // outlives the connection: whatever of it a closing connection still holds is released below.
        long writingPull = 0, donePull = 0;
        try
        {
            while (await reader.WaitToReadAsync().ConfigureAwait(false))
            {
                while (reader.TryRead(out var item))
                {
                    writingPull = item.PullBytes;
                    unflushed += RemotingFrame.WriteHead(output, item.Command);
                    var body = item.Command.Body;
                    while (true)
                    {
                        if (unflushed >= FlushChunkBytes)
                        {
                            long pulled = donePull;
                            donePull = 0;
                            if (!await FlushAsync(output, doneCheck, doneCharged, pulled).ConfigureAwait(false)) return;
                            unflushed = doneCheck = doneCharged = 0;
                        }
                        if (body.IsEmpty) break;
                        int take = (int)Math.Min(body.Length, FlushChunkBytes - unflushed);
                        output.Write(body.Span[..take]);
                        body = body[take..];
                        unflushed += take;
                    }
                    doneCheck += item.CheckBytes;
                    doneCharged += item.ResponseBytes;
                    donePull += writingPull;
                    writingPull = 0;
                }
                long flushedPull = donePull;
                donePull = 0;
                if (!await FlushAsync(output, doneCheck, doneCharged, flushedPull).ConfigureAwait(false)) return;
                unflushed = doneCheck = doneCharged = 0;
            }
        }
        catch (Exception ex) when (ex is IOException or OperationCanceledException or InvalidOperationException or Microsoft.AspNetCore.Connections.ConnectionResetException)
        {
        }
        finally
        {
            _flushStall.Dispose();
            Close();
            // Nothing is queued after this; what is queued is never written: its pulled bytes go back to the broker.
            _outbound.Writer.TryComplete();
            long pulled = writingPull + donePull;
            List<CheckBackRequest>? unsent = null;
            // The ids the unsent checks were queued under, and the current one: a later HEART_BEAT may have changed the
            // connection's client id (SetClientId) after a check was queued to the id before.
            HashSet<string>? ids = null;
            while (reader.TryRead(out var left))
            {
                pulled += left.PullBytes;
                if (left.Check is { } check)
                {
                    (unsent ??= []).Add(check);
                    (ids ??= new(StringComparer.Ordinal) { ClientId }).Add(left.CheckClientId ?? ClientId);
                }
            }
            _server.ChargePull(this, -pulled);
            // Check-backs never written (not the frame under way, nor those written and not flushed: they may have reached
            // the producer) go back to the core: not counted as sent, and offered to another instance at once. Until
            // 2026-12-07 they were dropped here, each counted as one of its half's checks, and the half waited a whole
            // check interval (found by review). On the thread pool: the core takes its lock and appends.
            // Given back under every id they were queued under: until the afternoon session of 2026-12-07 only under the
            // last, and a check queued before the id changed was kept as sent (its half waited a whole check interval).
            if (unsent is not null) GiveBack(ids!, unsent);
            await output.CompleteAsync().ConfigureAwait(false);
        }
    }

    /// <summary>Flushes; then releases the charges of the frames written whole before it. False: stop writing (the
    /// connection is gone, or stalled and now closed). <paramref name="pulled"/> bytes go back to the broker's budget of
    /// pulled bytes in any case: written or not, they are no longer the broker's to hold once the connection closes.</summary>
    private async ValueTask<bool> FlushAsync(PipeWriter output, long checkBytes, long charged, long pulled)
    {
        if (!_flushStall.TryReset())
        {
            _flushStall.Dispose();
            _flushStall = new CancellationTokenSource();
        }
        _flushStall.CancelAfter(_server.Options.WriteStallTimeout);
        FlushResult flush;
        try
        {
            flush = await output.FlushAsync(_flushStall.Token).ConfigureAwait(false);
        }
        catch (OperationCanceledException) when (_flushStall.IsCancellationRequested)
        {
            // Too slow, as a large frame that stops arriving (STYLE item 6: Debug level).
            _server.Logger.LogDebug("Closing Remoting connection from {Remote}: it took none of the answers written to it for {Timeout} ({Bytes} bytes of answers waiting)",
                RemoteEndPoint, _server.Options.WriteStallTimeout, Interlocked.Read(ref _inFlightBytes));
            return false;
        }
        finally
        {
            _server.ChargePull(this, -pulled);
        }
        long checksLeft = checkBytes > 0 ? Interlocked.Add(ref _queuedCheckBytes, -checkBytes) : Interlocked.Read(ref _queuedCheckBytes);
        // Also after a flush of answers only: a check refused for a full frame queue has room once the queue is down to
        // half (the writer has read what it flushed).
        if (Volatile.Read(ref _checkRefusedForRoom) != 0 && checksLeft <= _server.Options.CheckBackQueueBudget / 2 && FrameQueueHasRoom)
        {
            RoomAgain();
        }
        if (charged > 0) ReleaseInFlight(charged);
        return !(flush.IsCompleted || flush.IsCanceled);
    }

    // ------------------------------------------------------------ client identity and registrations

    /// <summary>Adopts the heartbeat's clientID; registrations made under the provisional id are redone under it.</summary>
    public void SetClientId(string clientId)
    {
        if (string.IsNullOrEmpty(clientId) || clientId == ClientId) return;
        string[] groups;
        lock (_gate)
        {
            Volatile.Write(ref _clientId, clientId);
            groups = [.. _producerGroups.Keys];
            foreach (var r in _producerGroups.Values) r.Dispose();
            _producerGroups.Clear();
        }
        foreach (var g in groups) RegisterProducer(g);
    }

    /// <summary>Producer groups one connection is a check-back channel of, at most: each is a registration the broker
    /// keeps until the connection closes (a producer names one or a few).</summary>
    public const int MaxProducerGroups = 1024;

    /// <summary>Makes this connection a check-back channel of <paramref name="group"/> (idempotent). A name longer than
    /// any group can have, or a group beyond <see cref="MaxProducerGroups"/>, is not registered.</summary>
    public void RegisterProducer(string group)
    {
        lock (_gate)
        {
            if (!_alive || group.Length > 255 || _producerGroups.Count >= MaxProducerGroups || _producerGroups.ContainsKey(group)) return;
            _producerGroups[group] = _server.Engine.Producers.Register(group, this);
        }
    }

    public void UnregisterProducer(string group)
    {
        IDisposable? r;
        lock (_gate)
        {
            if (!_producerGroups.Remove(group, out r)) return;
        }
        r.Dispose();
    }

    public IReadOnlyCollection<string> ProducerGroups
    {
        get { lock (_gate) return [.. _producerGroups.Keys]; }
    }

    /// <summary>
    /// Queues a check-back unless the ones queued and not yet flushed would pass
    /// <see cref="RemotingOptions.CheckBackQueueBudget"/>: then it is refused, and the check goes to another instance
    /// or waits for a pass (the connection stays; it may still be reading, slowly). Since the night session of
    /// 2026-12-07 the connection asks the core for that pass once its queued checks are down to half the budget
    /// (<see cref="RoomAgain"/>); before, a refused half waited the whole check interval although the connection was
    /// only briefly behind, as a producer that reads a burst of large checks a little later than they came
    /// (RemotingCheckBackRoomTests).
    /// </summary>
    public bool TrySendCheck(CheckBackRequest request)
    {
        if (!_alive) return false;
        // Refused before its frame is built when it cannot fit: the frame holds at least the half's body, and the check
        // pass calls this under the engine's lock, where encoding a large half for nothing held every writer. Until the
        // late-night session of 2026-12-07 the frame was built first (one wasted encode per full connection and pass).
        long before = Interlocked.Read(ref _queuedCheckBytes);
        if ((before > 0 && before + request.HalfMessage.Body.Length > _server.Options.CheckBackQueueBudget)
            || _outbound.Reader.Count >= _server.Options.OutboundQueueCapacity)
        {
            // As the refusals below: noted first; if the writer drained everything meanwhile no flush is coming to see
            // the note, so room is announced here.
            Volatile.Write(ref _checkRefusedForRoom, 1);
            if (Interlocked.Read(ref _queuedCheckBytes) == 0 && FrameQueueHasRoom) RoomAgain();
            return false;
        }
        var command = _server.Dispatcher.BuildCheckTransactionState(this, request);
        Interlocked.Increment(ref _checkFramesBuilt);
        int size = command.Body.Length;
        // A check larger than the budget (a half of more than 16 MiB, --max-message-size above it) goes out alone, as an
        // answer larger than the in-flight budget does: until the night session of 2026-12-07 it was refused even with
        // nothing queued, asked at once for a pass (the queue was empty) that refused it again, back to back, and kept
        // the connection refused for the rest of every pass (found by review).
        long queued = Interlocked.Add(ref _queuedCheckBytes, size);
        if (queued > _server.Options.CheckBackQueueBudget && queued != size)
        {
            // Noted before the bytes are taken back: a flush that gives back bytes after this sees the note. One that gave
            // back between the two Adds may have missed it; if it left nothing queued, no flush is coming, so room is
            // announced here (the queue is empty: the pass's check fits).
            Volatile.Write(ref _checkRefusedForRoom, 1);
            if (Interlocked.Add(ref _queuedCheckBytes, -size) == 0) RoomAgain();
            return false;
        }
        if (_alive && _outbound.Writer.TryWrite(new Outbound(command, size, 0, 0, request, ClientId))) return true;
        Interlocked.Add(ref _queuedCheckBytes, -size);
        if (_alive)
        {
            // The frame queue is full (OutboundQueueCapacity answers waiting for a slow reader): room is announced as for
            // the byte budget, by the flush that finds the queue down to half, or here if the writer drained it meanwhile
            // (its last flush may have read the note before it was made). Until the night session of 2026-12-07 nothing
            // announced it: the core asks a refusing channel nothing more in that pass, so every half of the connection's
            // groups due then waited the whole check interval (found by review).
            Volatile.Write(ref _checkRefusedForRoom, 1);
            if (FrameQueueHasRoom) RoomAgain();
        }
        return false;
    }

    /// <summary>Check-back frames built (tests and diagnostics): a check refused before its frame is built is not one.</summary>
    internal long CheckFramesBuilt => Interlocked.Read(ref _checkFramesBuilt);

    private long _checkFramesBuilt;

    /// <summary>The frame queue is at most half full: a check refused for a full queue fits again.</summary>
    private bool FrameQueueHasRoom => _outbound.Reader.Count <= _server.Options.OutboundQueueCapacity / 2;

    /// <summary>
    /// Asks the core for a check pass (<see cref="HalfMsg.Broker.Core.BrokerEngine.RequestCheckPass"/>: a non-blocking
    /// semaphore release, folded into a pass not yet started) once per refusal episode: the halves refused for want of
    /// room are offered again now that the connection has room, not after the check interval. As a Telemetry stream's
    /// RoomAgain; since the night session of 2026-12-07.
    /// </summary>
    private void RoomAgain()
    {
        if (Interlocked.Exchange(ref _checkRefusedForRoom, 0) != 0) _server.Engine.RequestCheckPass();
    }

    /// <summary>Gives checks this connection queued and never wrote back to the core
    /// (<see cref="HalfMsg.Broker.Core.BrokerEngine.ReturnUnsentChecksAsync(IReadOnlyCollection{string}, IReadOnlyList{CheckBackRequest}, CancellationToken)"/>), in the background; a broker stopping leaves them as they are
    /// (checked again after the interval).</summary>
    private void GiveBack(IReadOnlyCollection<string> clientIds, List<CheckBackRequest> unsent)
    {
        var engine = _server.Engine;
        _ = Task.Run(async () =>
        {
            try
            {
                await engine.ReturnUnsentChecksAsync(clientIds, unsent).ConfigureAwait(false);
            }
            catch (Exception)
            {
                // The broker is stopping (or its log failed): the halves are checked again after the interval.
            }
        });
    }
}
