using Apache.Rocketmq.V2;
using Grpc.Core;
using Status = Apache.Rocketmq.V2.Status;
using Google.Protobuf.WellKnownTypes;
using HalfMsg.Broker.Core;
using HalfMsg.Broker.Core.Delivery;
using HalfMsg.Broker.Core.Model;
using HalfMsg.Broker.Core.Storage;
using HalfMsg.Protocol.Grpc;
using System.IO.Pipelines;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.Logging;

namespace HalfMsg.Broker.FrontEnds.GrpcV5;

internal sealed partial class MessagingService
{
    /// <summary>Default batch when the request says 0 (the Node push consumer does when Settings lacked a batch size).</summary>
    private const int DefaultBatchSize = 32;

    private static readonly WriteOptions BufferedWrite = new(WriteFlags.BufferHint);

    /// <summary>
    /// POP-style receive over the whole topic (the queue id in the request, 0 or -1, is ignored, as the proxy does).
    /// The response stream is the proxy's: <c>status OK</c>, one response per message, <c>delivery_timestamp</c>, end;
    /// or <c>status MESSAGE_NOT_FOUND</c>, <c>delivery_timestamp</c>, end. The long poll ends before the client's
    /// deadline, because the Node client only looks at the stream once it has ended. While the broker stops, a parked
    /// or arriving receive gets <c>status TOO_MANY_REQUESTS</c> instead (see <see cref="StoppingStatus"/>).
    /// </summary>
    public override async Task ReceiveMessage(ReceiveMessageRequest request, IServerStreamWriter<ReceiveMessageResponse> responseStream,
        ServerCallContext context)
    {
        if (LiteRefusal(context) is { } refused)
        {
            await WriteReceiveEndAsync(responseStream, refused).ConfigureAwait(false);
            return;
        }

        string ns = V5Namespace.Of(context);
        string group = V5Namespace.Wrap(ns, request.Group?.Name ?? string.Empty);
        string topic = V5Namespace.Wrap(ns, request.MessageQueue?.Topic?.Name ?? string.Empty);
        SqlFilter? sql = null;
        if (request.FilterExpression is { Type: FilterType.Sql } sqlExpression && !SqlFilter.TryParse(sqlExpression.Expression, out sql, out string? sqlError))
        {
            // As the proxy answers a subscription its broker cannot compile (ILLEGAL_FILTER_EXPRESSION), with what and where.
            await WriteReceiveEndAsync(responseStream, V5Status.Of(Code.IllegalFilterExpression, sqlError!)).ConfigureAwait(false);
            return;
        }

        if (!V5Time.TryToTimeSpan(request.InvisibleDuration, out TimeSpan? invisible))
        {
            await WriteReceiveEndAsync(responseStream, V5Status.Of(Code.IllegalInvisibleTime, "invisible_duration is not a valid duration")).ConfigureAwait(false);
            return;
        }

        if (invisible is { } asked && asked > TimeSpan.Zero && asked < _options.MinReceiveInvisibleDuration)
        {
            // As the proxy's minInvisibleTimeMillsForRecv: a lease of a few milliseconds only lets one client take the
            // same messages again for every stream it opens.
            await WriteReceiveEndAsync(responseStream, V5Status.Of(Code.IllegalInvisibleTime,
                $"invisible_duration must be at least {_options.MinReceiveInvisibleDuration.TotalMilliseconds:0} ms")).ConfigureAwait(false);
            return;
        }

        if (!V5Time.TryToTimeSpan(request.LongPollingTimeout, out TimeSpan? longPolling))
        {
            await WriteReceiveEndAsync(responseStream, V5Status.Of(Code.IllegalPollingTime, "long_polling_timeout is not a valid duration")).ConfigureAwait(false);
            return;
        }

        HttpContext? http = context.GetHttpContext();
        if (_stopping.IsCancellationRequested)
        {
            // Arrived while the broker stops (Kestrel still lets a stream in on an open connection until it closes it):
            // nothing is leased, and the client is told to back off, as a parked receive is below.
            await WriteBeforeDeadlineAsync(http, context, 0, () => WriteReceiveEndAsync(responseStream, StoppingStatus)).ConfigureAwait(false);
            return;
        }

        AnswerBudget connectionBudget = AnswerBudget.Of(http, _options.AnswerBudgetPerConnection);
        using var reservation = new AnswerReservation(connectionBudget, _answerBudget);
        var receive = new ReceiveRequest
        {
            ConsumerGroup = group,
            Topic = topic,
            TagExpression = sql is null ? request.FilterExpression?.Expression : null,
            SqlFilter = sql,
            BatchSize = request.BatchSize > 0 ? request.BatchSize : DefaultBatchSize,
            // Push consumers (auto_renew) send no invisible_duration; lease for the proxy's default instead.
            InvisibleDuration = invisible ?? _options.DefaultInvisibleDuration,
            LongPollTimeout = LongPoll(longPolling, Deadline(context)),
            ClientId = ClientId(context),
            // Push consumers ask for it: the broker extends their leases while they are connected, as the proxy does.
            AutoRenew = request.AutoRenew,
            // Room for the answer is taken before each message is leased: a connection (or the broker) that already
            // holds its budget of unsent answers leases nothing more until some is written out.
            Allowance = reservation,
        };
        _engine.Consumers.Seen(group, receive.ClientId, "gRPC", context.Peer);

        ReceiveResult result;
        bool stopped = false;
        using (var poll = CancellationTokenSource.CreateLinkedTokenSource(context.CancellationToken, _stopping))
        {
            try
            {
                result = await ReceiveWithRoomAsync(receive, reservation, poll.Token).ConfigureAwait(false);
            }
            catch (OperationCanceledException) when (_stopping.IsCancellationRequested && !context.CancellationToken.IsCancellationRequested)
            {
                // The broker is stopping: a parked long poll ends now, with nothing leased (a receive cancelled while
                // waiting leases nothing; one that picked messages returns them whatever the token says).
                result = new ReceiveResult(new BrokerError(BrokerStatus.TooManyRequests, "the broker is stopping"), []);
                stopped = true;
            }
        }
        if (result.IsOk && result.Messages.Count > 0)
        {
            List<string> handles = result.Messages.Select(m => m.ReceiptHandle).ToList();
            bool written = false;
            try
            {
                var responses = new List<ReceiveMessageResponse>(result.Messages.Count);
                long size = 0;
                bool crc32Digest = http?.Request.Headers[RocketMqHeaders.AcceptDigest].ToString() == RocketMqHeaders.DigestCrc32;
                foreach (DeliveredMessage delivered in result.Messages)
                {
                    var response = new ReceiveMessageResponse { Message = V5MessageConverter.ToMessage(delivered, ns, crc32Digest) };
                    size += response.CalculateSize() + 5;
                    responses.Add(response);
                }

                // What the answer really holds (the engine reserved record sizes), until its last write completes. From
                // here on only the serialized copy in Kestrel's buffer is kept: the bodies are let go as each message is
                // written, so a stalled answer costs its size once, not three times (body, protobuf, serialized).
                reservation.Resize(size);
                result = default;

                // The status and the messages are buffered, and the delivery timestamp that ends the batch flushes them
                // all: one flush per batch instead of one per message (grpc-dotnet flushes every write without BufferHint).
                // The whole answer has a deadline: past it the stream is reset (see WriteBeforeDeadlineAsync).
                bool reachedStream = false;
                written = await WriteBeforeDeadlineAsync(http, context, size, async () =>
                {
                    context.WriteOptions = BufferedWrite;
                    await responseStream.WriteAsync(new ReceiveMessageResponse { Status = V5Status.Ok() }).ConfigureAwait(false);
                    for (int i = 0; i < responses.Count; i++)
                    {
                        await responseStream.WriteAsync(responses[i]).ConfigureAwait(false);
                        responses[i] = null!;
                    }

                    context.WriteOptions = null;
                    await responseStream.WriteAsync(new ReceiveMessageResponse { DeliveryTimestamp = Timestamp.FromDateTimeOffset(_time.GetUtcNow()) })
                        .ConfigureAwait(false);
                    reachedStream = await StreamStillOpenAfterFlushAsync(http).ConfigureAwait(false);
                }).ConfigureAwait(false) && reachedStream;
            }
            finally
            {
                if (!written)
                {
                    // The messages were leased before this write, which failed, was reset at its deadline, or ended with
                    // the stream (the client went away, its deadline passed): it never saw them. Release them now, as
                    // RocketMQ's proxy does, instead of letting the lease run (and a push consumer's renewal keep it for
                    // up to MaxAutoRenew).
                    await ReleaseAsync(group, topic, handles).ConfigureAwait(false);
                }
            }

            return;
        }

        Status status = stopped ? StoppingStatus
            : result.IsOk || result.Error.Status == BrokerStatus.MessageNotFound || reservation.Refused
            ? V5Status.Of(Code.MessageNotFound, "no new message")
            : V5Status.From(result.Error);
        await WriteBeforeDeadlineAsync(http, context, 0, () => WriteReceiveEndAsync(responseStream, status)).ConfigureAwait(false);
    }

    /// <summary>
    /// The answer to a receive parked or arriving while the broker stops: TOO_MANY_REQUESTS, what RocketMQ's proxy
    /// answers for a busy broker (SYSTEM_BUSY), from which every official client backs off and asks again (a push
    /// consumer after a pause, a simple consumer's caller by its retry). Until 2026-12-06 it was MESSAGE_NOT_FOUND, which
    /// tells the client the queue is empty: a push consumer asked again at once, and a caller could take a stop for a
    /// drained queue.
    /// </summary>
    private static Status StoppingStatus => V5Status.Of(Code.TooManyRequests, "the broker is stopping; receive again later");

    /// <summary>
    /// The engine's receive, waiting for room when there is something to deliver but the answer has none: once the
    /// budget that refused has room for the message it refused (<see cref="WaitForRoomAsync"/>) the receive looks again,
    /// until its long poll ends. A receive that never got room leased nothing and is answered MESSAGE_NOT_FOUND, which
    /// every official client takes as an empty receive and asks again (TOO_MANY_REQUESTS would throw from a simple
    /// consumer's receive).
    /// </summary>
    private async Task<ReceiveResult> ReceiveWithRoomAsync(ReceiveRequest receive, AnswerReservation reservation, CancellationToken ct)
    {
        long deadline = _time.GetTimestamp() + (long)(receive.LongPollTimeout.TotalSeconds * _time.TimestampFrequency);
        while (true)
        {
            reservation.ResetRefusal();
            ReceiveResult result = await _engine.ReceiveAsync(receive, ct).ConfigureAwait(false);
            if (!(reservation.Refused && result.Messages.Count == 0 && result.Error.Status == BrokerStatus.TooManyRequests))
            {
                return result;
            }

            // Until 2026-12-06 the receive waited for any release of either budget, and a refusal by the broker's budget
            // gives back what the reservation took on the connection's, which is a release: the receive woke itself and
            // looked again at once, under the engine's lock, for its whole long poll (found while fixing the review of
            // the gRPC pull).
            if (reservation.RefusedBy is not { } full || !await WaitForRoomAsync(full, reservation.RefusedBytes, deadline, ct).ConfigureAwait(false))
            {
                return result;
            }

            TimeSpan rest = _time.GetElapsedTime(_time.GetTimestamp(), deadline);
            receive = receive with { LongPollTimeout = rest > TimeSpan.Zero ? rest : TimeSpan.Zero };
        }
    }

    /// <summary>
    /// Waits until <paramref name="budget"/> has room for <paramref name="bytes"/> (or holds nothing, when they are more
    /// than its whole limit: such an answer goes alone, <see cref="AnswerBudget.TryTake"/>); false when
    /// <paramref name="deadline"/> passes first. A receive or pull refused for room waits here for the budget that
    /// refused it, and for the room it lacked: a release elsewhere, or one too small, would only have it look again
    /// and be refused again. The release task is taken before the room is checked, so a release between the look and
    /// the wait is not missed; it is awaited only here, alone, and the timeout removes the wait. Until 2026-12-06 each
    /// receive and pull registered a Task.WhenAny on both budgets before its look, even one that never waited, kept
    /// until some answer released bytes: on a broker writing no answers with messages (idle or caught-up consumers),
    /// every empty receive and pull stayed in memory (found by review).
    /// </summary>
    private async Task<bool> WaitForRoomAsync(AnswerBudget budget, long bytes, long deadline, CancellationToken ct)
    {
        while (true)
        {
            Task released = budget.Released;
            if (budget.HasRoomFor(bytes)) return true;
            TimeSpan left = _time.GetElapsedTime(_time.GetTimestamp(), deadline);
            if (left <= TimeSpan.Zero) return false;
            try
            {
                await released.WaitAsync(left, _time, ct).ConfigureAwait(false);
            }
            catch (TimeoutException)
            {
                return false;
            }
        }
    }

    /// <summary>
    /// Runs <paramref name="write"/> (one answer of <paramref name="bytes"/>, final flush included) with
    /// <see cref="GrpcV5Options.AnswerWriteTimeout"/> plus a second per <see cref="AnswerWriteBytesPerSecond"/> of the
    /// answer (a large answer on a slow link is not cut off and leased again for ever): past it the stream is aborted
    /// (RST_STREAM), which ends the pending flush and drops what Kestrel buffered. Kestrel's minimum response rate alone
    /// does not end a stream whose client opens its window a little at a time.
    /// True: written in time, and the call was not ended before the write completed; false otherwise (or it throws).
    /// <paramref name="leased"/>: the answer's messages are leased and released when it is not written (ReceiveMessage),
    /// which the log line says; a PullMessage answer leases nothing.
    /// </summary>
    private async Task<bool> WriteBeforeDeadlineAsync(HttpContext? http, ServerCallContext context, long bytes, Func<Task> write, bool leased = true)
    {
        var gate = new object();
        bool done = false, timedOut = false, endedFirst = false;
        TimeSpan deadline = _options.AnswerWriteTimeout + TimeSpan.FromSeconds((double)bytes / AnswerWriteBytesPerSecond);
        // A call ended (client gone, reset) before the write completed may have had its writes dropped: not written. One
        // ended after the write completed was written (until 2026-12-05 that counted as not written, and its messages,
        // already with the client, were released; found by review).
        using CancellationTokenRegistration ended = context.CancellationToken.Register(() =>
        {
            lock (gate)
            {
                if (!done) endedFirst = true;
            }
        });
        using ITimer timer = _time.CreateTimer(_ =>
        {
            lock (gate)
            {
                if (done) return;
                timedOut = true;
            }

            if (leased) LogAnswerWriteTimeout(context.Peer, deadline.TotalSeconds);
            else LogPullAnswerWriteTimeout(context.Peer, deadline.TotalSeconds);
            http?.Abort();
        }, null, deadline, Timeout.InfiniteTimeSpan);
        try
        {
            await write().ConfigureAwait(false);
        }
        finally
        {
            lock (gate)
            {
                done = true;
            }
        }

        lock (gate)
        {
            return !timedOut && !endedFirst;
        }
    }

    /// <summary>
    /// False when the stream was aborted before the answer's last flush completed: a flush pending when the client goes
    /// away (connection closed, stream reset) completes without an error, and grpc-dotnet does not look at its result.
    /// Kestrel marks the stream's output stopped before it releases that flush, and a flush of a stopped stream answers
    /// <see cref="FlushResult.IsCompleted"/> at once; on a live stream this flush has nothing to write (Kestrel makes one
    /// empty pass of its frame writer), so only answers whose messages are leased ask it. The call's cancellation token
    /// is cancelled later, on the thread pool. It narrows what counts as written, no more: the last flush returns while
    /// up to 4 KiB may still wait in Kestrel's stream pipe, and bytes in the sockets' buffers are lost with the
    /// connection; an answer cut off there still counts as written and its messages wait for their lease. Until the
    /// night session of 2026-12-06 only that token was looked at: an answer released by the close before the token
    /// fired was counted written, and its messages waited for their lease (5 minutes by default) instead of being
    /// released at once (found in the evening session: 9 of 67 messages of a closed stalled connection, 4 runs in 20
    /// beside stress-ng; a probe then saw this flush answer "completed" with the token not yet cancelled 3 times in 18
    /// runs).
    /// </summary>
    private static async Task<bool> StreamStillOpenAfterFlushAsync(HttpContext? http)
    {
        if (http is null) return true;
        if (http.RequestAborted.IsCancellationRequested) return false;
        FlushResult flushed = await http.Response.BodyWriter.FlushAsync().ConfigureAwait(false);
        return !flushed.IsCompleted && !flushed.IsCanceled && !http.RequestAborted.IsCancellationRequested;
    }

    /// <summary>The write rate an answer's deadline allows for beyond <see cref="GrpcV5Options.AnswerWriteTimeout"/>: 256 KiB/s
    /// (an 8 MiB answer gets 32 s more).</summary>
    private const double AnswerWriteBytesPerSecond = 256 * 1024;

    [LoggerMessage(Level = LogLevel.Warning, Message = "ReceiveMessage answer to {Peer} not written within {Seconds} s (the client does not read it): stream reset, its messages released")]
    private partial void LogAnswerWriteTimeout(string peer, double seconds);

    [LoggerMessage(Level = LogLevel.Warning, Message = "PullMessage answer to {Peer} not written within {Seconds} s (the client does not read it): stream reset")]
    private partial void LogPullAnswerWriteTimeout(string peer, double seconds);

    private async Task ReleaseAsync(string group, string topic, IReadOnlyList<string> receiptHandles)
    {
        foreach (string handle in receiptHandles)
        {
            try
            {
                await _engine.ChangeInvisibleDurationAsync(group, topic, handle, TimeSpan.Zero, CancellationToken.None).ConfigureAwait(false);
            }
            catch (Exception ex) when (ex is StorageFailureException or OperationCanceledException or ObjectDisposedException)
            {
                return; // the broker is failing or stopping: the leases end on their own
            }
        }
    }

    private async Task WriteReceiveEndAsync(IServerStreamWriter<ReceiveMessageResponse> responseStream, Status status)
    {
        await responseStream.WriteAsync(new ReceiveMessageResponse { Status = status }).ConfigureAwait(false);
        await responseStream.WriteAsync(new ReceiveMessageResponse { DeliveryTimestamp = Timestamp.FromDateTimeOffset(_time.GetUtcNow()) })
            .ConfigureAwait(false);
    }

    private static readonly TimeSpan MaxLongPolling = TimeSpan.FromSeconds(30);

    /// <summary>min(requested or default long-polling timeout, 30 s, time left before the deadline minus a margin for the
    /// response to travel back); never negative.</summary>
    private TimeSpan LongPoll(TimeSpan? requested, DateTimeOffset? clientDeadline)
    {
        // Without a grpc-timeout a client could otherwise hold a stream (and its lease wait) as long as it asks.
        TimeSpan poll = requested ?? _options.LongPollingTimeout;
        if (poll > MaxLongPolling) poll = MaxLongPolling;
        if (clientDeadline is { } deadline)
        {
            TimeSpan remaining = deadline - _time.GetUtcNow();
            TimeSpan margin = TimeSpan.FromTicks(Math.Clamp(remaining.Ticks / 10, TimeSpan.FromMilliseconds(200).Ticks, TimeSpan.FromSeconds(2).Ticks));
            poll = TimeSpan.FromTicks(Math.Min(poll.Ticks, (remaining - margin).Ticks));
        }

        return poll < TimeSpan.Zero ? TimeSpan.Zero : poll;
    }
}
