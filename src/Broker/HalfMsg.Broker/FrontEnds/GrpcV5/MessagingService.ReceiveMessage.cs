using Apache.Rocketmq.V2;
using Grpc.Core;
using Status = Apache.Rocketmq.V2.Status;
using Google.Protobuf.WellKnownTypes;
using HalfMsg.Broker.Core;
using HalfMsg.Broker.Core.Model;
using HalfMsg.Broker.Core.Storage;

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
    /// deadline, because the Node client only looks at the stream once it has ended.
    /// </summary>
    public override async Task ReceiveMessage(ReceiveMessageRequest request, IServerStreamWriter<ReceiveMessageResponse> responseStream,
        ServerCallContext context)
    {
        string ns = V5Namespace.Of(context);
        string group = V5Namespace.Wrap(ns, request.Group?.Name ?? string.Empty);
        string topic = V5Namespace.Wrap(ns, request.MessageQueue?.Topic?.Name ?? string.Empty);
        if (request.FilterExpression is { Type: FilterType.Sql })
        {
            await WriteReceiveEndAsync(responseStream, V5Status.Of(Code.IllegalFilterExpression, "SQL92 filters are not supported; use a tag expression"))
                .ConfigureAwait(false);
            return;
        }

        if (!V5Time.TryToTimeSpan(request.InvisibleDuration, out TimeSpan? invisible))
        {
            await WriteReceiveEndAsync(responseStream, V5Status.Of(Code.IllegalInvisibleTime, "invisible_duration is not a valid duration")).ConfigureAwait(false);
            return;
        }

        if (!V5Time.TryToTimeSpan(request.LongPollingTimeout, out TimeSpan? longPolling))
        {
            await WriteReceiveEndAsync(responseStream, V5Status.Of(Code.IllegalPollingTime, "long_polling_timeout is not a valid duration")).ConfigureAwait(false);
            return;
        }

        var receive = new ReceiveRequest
        {
            ConsumerGroup = group,
            Topic = topic,
            TagExpression = request.FilterExpression?.Expression,
            BatchSize = request.BatchSize > 0 ? request.BatchSize : DefaultBatchSize,
            // Push consumers (auto_renew) send no invisible_duration; lease for the proxy's default instead.
            InvisibleDuration = invisible ?? _options.DefaultInvisibleDuration,
            LongPollTimeout = LongPoll(longPolling, Deadline(context)),
            ClientId = ClientId(context),
            // Push consumers ask for it: the broker extends their leases while they are connected, as the proxy does.
            AutoRenew = request.AutoRenew,
        };
        _engine.Consumers.Seen(group, receive.ClientId, "gRPC", context.Peer);

        ReceiveResult result = await _engine.ReceiveAsync(receive, context.CancellationToken).ConfigureAwait(false);
        if (result.IsOk && result.Messages.Count > 0)
        {
            // The status and the messages are buffered, and the delivery timestamp that ends the batch flushes them all:
            // one flush per batch instead of one per message (grpc-dotnet flushes every write without BufferHint).
            try
            {
                context.WriteOptions = BufferedWrite;
                await responseStream.WriteAsync(new ReceiveMessageResponse { Status = V5Status.Ok() }).ConfigureAwait(false);
                foreach (DeliveredMessage delivered in result.Messages)
                {
                    await responseStream.WriteAsync(new ReceiveMessageResponse { Message = V5MessageConverter.ToMessage(delivered, ns) }).ConfigureAwait(false);
                }

                context.WriteOptions = null;
                await responseStream.WriteAsync(new ReceiveMessageResponse { DeliveryTimestamp = Timestamp.FromDateTimeOffset(_time.GetUtcNow()) })
                    .ConfigureAwait(false);
            }
            catch
            {
                // The messages were leased before this write, which failed (the client went away, its deadline passed):
                // it never saw them. Release them now, as RocketMQ's proxy does, instead of letting the lease run (and
                // a push consumer's renewal keep it for up to MaxAutoRenew).
                await ReleaseAsync(group, topic, result.Messages).ConfigureAwait(false);
                throw;
            }

            return;
        }

        Status status = result.IsOk || result.Error.Status == BrokerStatus.MessageNotFound
            ? V5Status.Of(Code.MessageNotFound, "no new message")
            : V5Status.From(result.Error);
        await WriteReceiveEndAsync(responseStream, status).ConfigureAwait(false);
    }

    private async Task ReleaseAsync(string group, string topic, IReadOnlyList<DeliveredMessage> messages)
    {
        foreach (DeliveredMessage delivered in messages)
        {
            try
            {
                await _engine.ChangeInvisibleDurationAsync(group, topic, delivered.ReceiptHandle, TimeSpan.Zero, CancellationToken.None).ConfigureAwait(false);
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
