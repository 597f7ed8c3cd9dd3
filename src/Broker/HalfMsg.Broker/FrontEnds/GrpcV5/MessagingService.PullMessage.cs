using Apache.Rocketmq.V2;
using Grpc.Core;
using HalfMsg.Broker.Core;
using HalfMsg.Broker.Core.Delivery;
using HalfMsg.Protocol.Grpc;
using Microsoft.AspNetCore.Http;
using Status = Apache.Rocketmq.V2.Status;

namespace HalfMsg.Broker.FrontEnds.GrpcV5;

internal sealed partial class MessagingService
{
    /// <summary>Most messages one PullMessage returns; a larger batch_size is served up to it (the engine also stops at
    /// <see cref="CoreOptions.ReceiveByteBudget"/> bytes, one message always fits), as a Remoting pull is.</summary>
    public const int MaxPullBatchSize = 1024;

    /// <summary>
    /// The offset (pull) model over gRPC, the one RocketMQ 4 Remoting consumers use (<see cref="BrokerEngine.PullAsync"/>):
    /// reads one queue from <c>offset</c>, skipping messages the tag expression rejects, and leases nothing. The group
    /// keeps its progress with UpdateOffset, in the same store as QUERY_CONSUMER_OFFSET/UPDATE_CONSUMER_OFFSET, so a
    /// group's offsets are the same whichever protocol moves them. The stream is the Apache proxy's
    /// (PullMessageResponseStreamWriter): <c>status OK</c>, one response per message, <c>next_offset</c>, end;
    /// <c>status MESSAGE_NOT_FOUND</c>, <c>next_offset</c> when there is nothing (new, or matching: next_offset then
    /// goes past what was skipped); <c>status ILLEGAL_OFFSET</c>, <c>next_offset</c> (the queue's first or next offset)
    /// when the offset is outside the queue; a status alone for a request that cannot be served. A long poll lasts up to
    /// <c>long_polling_timeout</c> (none when absent, as the proxy), at most 30 s and ends before the client's deadline;
    /// while the broker stops it ends at once with TOO_MANY_REQUESTS, as ReceiveMessage's does.
    /// </summary>
    public override async Task PullMessage(PullMessageRequest request, IServerStreamWriter<PullMessageResponse> responseStream, ServerCallContext context)
    {
        string ns = V5Namespace.Of(context);
        if (PullRefusal(request, ns, out V5PullTarget target, out TagFilter filter, out SqlFilter? sql, out TimeSpan longPoll) is { } refused)
        {
            await responseStream.WriteAsync(new PullMessageResponse { Status = refused }).ConfigureAwait(false);
            return;
        }

        // A group the broker may not start (--max-consumer-groups) is told so at its first pull, as over Remoting; one
        // whose offsets could never be committed (an invalid or reserved name) too.
        if ((BrokerEngine.PullGroupNameRefusal(target.Group) ?? _engine.PullGroupRefusal(target.Group, target.Topic)) is { } full)
        {
            await responseStream.WriteAsync(new PullMessageResponse { Status = V5Status.From(full) }).ConfigureAwait(false);
            return;
        }

        _engine.Consumers.Seen(target.Group, ClientId(context), "gRPC", context.Peer);
        HttpContext? http = context.GetHttpContext();
        bool crc32Digest = http?.Request.Headers[RocketMqHeaders.AcceptDigest].ToString() == RocketMqHeaders.DigestCrc32;
        AnswerBudget connectionBudget = AnswerBudget.Of(http, _options.AnswerBudgetPerConnection);
        using var reservation = new AnswerReservation(connectionBudget, _answerBudget);
        // Arriving while the broker stops: served without a long poll (a pull changes nothing, so what it finds is
        // answered), and told to back off when it finds nothing, rather than to pull again at once.
        bool stoppingAtStart = _stopping.IsCancellationRequested;
        PulledAnswer answer;
        bool stopped = false;
        using (var poll = CancellationTokenSource.CreateLinkedTokenSource(context.CancellationToken, _stopping))
        {
            try
            {
                answer = await PullWithRoomAsync(target, request.Offset, Math.Min(request.BatchSize, MaxPullBatchSize), filter, sql,
                    stoppingAtStart ? TimeSpan.Zero : LongPoll(longPoll, Deadline(context)), ns, crc32Digest, reservation,
                    stoppingAtStart ? context.CancellationToken : poll.Token).ConfigureAwait(false);
            }
            catch (OperationCanceledException) when (_stopping.IsCancellationRequested && !context.CancellationToken.IsCancellationRequested)
            {
                answer = default;
                stopped = true;
            }
        }

        PullResult result = answer.Result;
        if (stopped || (stoppingAtStart && result.Status == PullStatus.NoNewMessage))
        {
            await responseStream.WriteAsync(new PullMessageResponse { Status = PullStoppingStatus }).ConfigureAwait(false);
            return;
        }

        switch (result.Status)
        {
            case PullStatus.NoRoom:
                // Messages to read, but this connection (or the broker) holds its budget of unread answers for the whole
                // long poll: back off, as from a busy broker. Nothing was leased, so nothing is lost.
                await responseStream.WriteAsync(new PullMessageResponse
                {
                    Status = V5Status.Of(Code.TooManyRequests, "too many answers on this connection (or broker) are not read yet; read them and pull again"),
                }).ConfigureAwait(false);
                return;
            case PullStatus.Found when answer.Messages is { } messages:
                await WritePulledAsync(responseStream, context, http, messages, reservation.Held, answer.NextOffset).ConfigureAwait(false);
                return;
            case PullStatus.NoNewMessage:
                await WritePullEndAsync(responseStream, V5Status.Of(Code.MessageNotFound, "no new message"), result.NextBeginOffset).ConfigureAwait(false);
                return;
            case PullStatus.OffsetMoved:
                await WritePullEndAsync(responseStream, V5Status.Of(Code.IllegalOffset,
                    $"offset {request.Offset} is outside the queue's offsets [{result.MinOffset}, {result.MaxOffset}]; pull from next_offset {result.NextBeginOffset}"),
                    result.NextBeginOffset).ConfigureAwait(false);
                return;
            case PullStatus.NoSuchTopic:
                await responseStream.WriteAsync(new PullMessageResponse { Status = V5PullTarget.NoSuchTopic(ns, target.Topic) }).ConfigureAwait(false);
                return;
            case PullStatus.NoSuchQueue:
                await responseStream.WriteAsync(new PullMessageResponse
                {
                    Status = V5PullTarget.NoSuchQueue(ns, target.Topic, target.QueueId, _engine.QueueCount(target.Topic)),
                }).ConfigureAwait(false);
                return;
            default: // NotReadable: as ReceiveMessage answers for that topic
                await responseStream.WriteAsync(new PullMessageResponse
                {
                    Status = V5Status.Of(Code.IllegalTopic, BrokerEngine.UnreadableTopicReason(target.Topic) ?? "the topic cannot be consumed"),
                }).ConfigureAwait(false);
                return;
        }
    }

    /// <summary>Null when the request can be served (with what it asks, read); otherwise the status to answer alone.</summary>
    private static Status? PullRefusal(PullMessageRequest request, string ns, out V5PullTarget target, out TagFilter filter, out SqlFilter? sql,
        out TimeSpan longPoll)
    {
        filter = TagFilter.All;
        sql = null;
        longPoll = TimeSpan.Zero;
        if (!V5PullTarget.TryRead(ns, request.Group, request.MessageQueue, needsGroup: true, out target, out Status? refused)) return refused;
        if (request.Offset < 0)
            return V5Status.Of(Code.IllegalOffset, $"offset {request.Offset} is negative; QueryOffset BEGINNING gives the queue's first offset");
        if (request.BatchSize <= 0)
            return V5Status.Of(Code.BadRequest, $"batch_size must be at least 1 (at most {MaxPullBatchSize} are returned), not {request.BatchSize}");
        // An SQL92 expression is read as one (as ReceiveMessage's): the pull goes past the messages it rejects.
        if (request.FilterExpression is { Type: FilterType.Sql } sqlExpression)
            return SqlFilter.TryParse(sqlExpression.Expression, out sql, out string? sqlError) ? LongPollRefusal(request, out longPoll)
                : V5Status.Of(Code.IllegalFilterExpression, sqlError!);
        if (!TagFilter.TryParse(request.FilterExpression?.Expression, out filter, out string? filterError))
            return V5Status.Of(Code.IllegalFilterExpression, filterError ?? "invalid tag expression");
        return LongPollRefusal(request, out longPoll);
    }

    private static Status? LongPollRefusal(PullMessageRequest request, out TimeSpan longPoll)
    {
        longPoll = TimeSpan.Zero;
        if (!V5Time.TryToTimeSpan(request.LongPollingTimeout, out TimeSpan? asked) || asked < TimeSpan.Zero)
            return V5Status.Of(Code.IllegalPollingTime, "long_polling_timeout is not a valid duration of 0 or more");
        longPoll = asked ?? TimeSpan.Zero;
        return null;
    }

    /// <summary>As <see cref="StoppingStatus"/> (ReceiveMessage's): the official clients back off from TOO_MANY_REQUESTS.</summary>
    private static Status PullStoppingStatus => V5Status.Of(Code.TooManyRequests, "the broker is stopping; pull again later");

    /// <summary>A pull's outcome; when it found messages, those the answer has room for (null: none) and the offset after them.</summary>
    private readonly record struct PulledAnswer(PullResult Result, List<PullMessageResponse>? Messages, long NextOffset);

    /// <summary>
    /// The engine's pull, with the answer's bytes reserved on the connection's and the broker's budget of unread answers
    /// (<see cref="AnswerBudget"/>), as a ReceiveMessage answer's are: a client that opens pull streams and does not read
    /// them cannot make the broker hold 8 MiB per stream. The reservation is the engine's allowance, asked for each
    /// message's stored size before its body is read, as a Remoting pull's is: the answer holds the messages that fit
    /// (next_offset follows the last of them), and once built it is charged at its real size. When not even the first
    /// fits nothing is read, and the pull waits until the budget that refused it has room for it
    /// (<see cref="WaitForRoomAsync"/>) and looks again, until its long poll ends. Nothing is leased, so messages left
    /// out are simply read by the next pull.
    /// </summary>
    private async Task<PulledAnswer> PullWithRoomAsync(V5PullTarget target, long offset, int batch, TagFilter filter, SqlFilter? sql, TimeSpan longPoll, string ns,
        bool crc32Digest, AnswerReservation reservation, CancellationToken ct)
    {
        long deadline = _time.GetTimestamp() + (long)(longPoll.TotalSeconds * _time.TimestampFrequency);
        while (true)
        {
            TimeSpan left = _time.GetElapsedTime(_time.GetTimestamp(), deadline);
            reservation.ResetRefusal();
            Interlocked.Increment(ref _pullLooks);
            // Until 2026-12-06 the engine read the whole batch (up to 8 MiB of bodies) with no allowance and room was taken
            // only for what fitted once read, so concurrent pulls held their whole batches at once whatever the budgets
            // (20 pulls read 160 MiB on a budget of 2 MiB; a limit the last session of 2026-12-06 left).
            PullResult result = await _engine.PullAsync(target.Topic, target.QueueId, offset, batch, filter, left > TimeSpan.Zero ? left : TimeSpan.Zero, ct, sql,
                reservation).ConfigureAwait(false);
            if (result.Status == PullStatus.NoRoom)
            {
                // Messages to read and no room for the first: nothing was read. Look again only once the budget that
                // refused has room for that first message: any release of either budget anywhere on the broker (every
                // answer written to any client) would only have the pull be refused again under the engine's lock.
                if (reservation.RefusedBy is not { } full || !await WaitForRoomAsync(full, reservation.RefusedBytes, deadline, ct).ConfigureAwait(false))
                {
                    return new PulledAnswer(result, null, offset);
                }

                continue;
            }

            if (result.Status != PullStatus.Found) return new PulledAnswer(result, null, result.NextBeginOffset);
            if (PulledForTests is { } hold) await hold(result.Messages.Sum(p => (long)p.Message.Body.Length)).ConfigureAwait(false);

            var messages = new List<PullMessageResponse>(result.Messages.Count);
            long size = 0;
            foreach (PulledMessage pulled in result.Messages)
            {
                Message message = V5MessageConverter.ToMessage(pulled.Message, ns, crc32Digest);
                // The attempt this delivery is, as a retried message's reconsume count says (a pull has no receipt handle).
                message.SystemProperties.DeliveryAttempt = pulled.ReconsumeTimes + 1;
                var response = new PullMessageResponse { Message = message };
                size += response.CalculateSize() + 5;
                messages.Add(response);
            }

            // What the answer really holds (the engine reserved stored sizes), until its last write completes.
            reservation.Resize(size);
            return new PulledAnswer(result, messages, result.NextBeginOffset);
        }
    }

    /// <summary>
    /// Status OK, the messages, next_offset, within the answer's write deadline (<see cref="WriteBeforeDeadlineAsync"/>:
    /// a client that does not read has its stream reset). Status and messages are buffered and the next_offset that ends
    /// the answer flushes them: one flush per pull. Nothing was leased, so a write that fails loses nothing.
    /// </summary>
    private async Task WritePulledAsync(IServerStreamWriter<PullMessageResponse> responseStream, ServerCallContext context, HttpContext? http,
        List<PullMessageResponse> messages, long size, long next)
    {
        await WriteBeforeDeadlineAsync(http, context, size, async () =>
        {
            context.WriteOptions = BufferedWrite;
            await responseStream.WriteAsync(new PullMessageResponse { Status = V5Status.Ok() }).ConfigureAwait(false);
            for (int i = 0; i < messages.Count; i++)
            {
                await responseStream.WriteAsync(messages[i]).ConfigureAwait(false);
                messages[i] = null!;
            }

            context.WriteOptions = null;
            await responseStream.WriteAsync(new PullMessageResponse { NextOffset = next }).ConfigureAwait(false);
        }, leased: false).ConfigureAwait(false);
    }

    private static async Task WritePullEndAsync(IServerStreamWriter<PullMessageResponse> responseStream, Status status, long nextOffset)
    {
        await responseStream.WriteAsync(new PullMessageResponse { Status = status }).ConfigureAwait(false);
        await responseStream.WriteAsync(new PullMessageResponse { NextOffset = nextOffset }).ConfigureAwait(false);
    }
}
