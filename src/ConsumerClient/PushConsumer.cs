using Apache.Rocketmq.V2;
using HalfMsg.ConsumerClient.Transport;
using Microsoft.Extensions.Logging;

namespace HalfMsg.ConsumerClient;

/// <summary>
/// A RocketMQ 5 push consumer: long-polling receive loops (one per assigned queue) feed a handler with at most
/// <see cref="PushConsumerOptions.MaxConcurrency"/> messages in flight. Success acknowledges; failure (or an exception)
/// makes the message invisible for the retry backoff so the broker redelivers it with delivery attempt + 1. The broker
/// dead-letters a non-FIFO message after the maximum attempts; for a FIFO group (broker Settings <c>fifo</c>) the
/// client retries locally, in order, and then forwards the message to the dead letter queue itself.
/// </summary>
public sealed class PushConsumer : IAsyncDisposable
{
    private const int DefaultMaxAttempts = 16;
    private const int DefaultBatchSize = 32;

    private readonly PushConsumerOptions _options;
    private readonly ConsumerCore _core;
    private readonly Func<ReceivedMessage, CancellationToken, Task<ConsumeResult>> _handler;
    private readonly SemaphoreSlim _slots;
    private readonly CancellationTokenSource _receiving = new();
    private readonly CancellationTokenSource _abort = new();
    private readonly List<Task> _loops = [];
    private readonly HashSet<Task> _inFlight = [];
    private readonly ILogger _logger;
    private int _stopped;

    private PushConsumer(PushConsumerOptions options)
    {
        _options = options;
        _handler = options.Handler ?? throw new ArgumentException("A Handler is required.", nameof(options));
        ArgumentOutOfRangeException.ThrowIfLessThan(options.MaxConcurrency, 1);
        var config = new ClientConfig(options.Endpoints, options.Credentials, options.RequestTimeout, options.Namespace, options.LoggerFactory);
        _core = new ConsumerCore(config, ClientType.PushConsumer, options.ConsumerGroup, options.Subscriptions, longPolling: null, handler: null);
        _slots = new SemaphoreSlim(options.MaxConcurrency, options.MaxConcurrency);
        _logger = _core.Session.Logger;
    }

    /// <summary>The consumer group.</summary>
    public string ConsumerGroup => _options.ConsumerGroup;

    private Settings? Server => _core.Session.ServerSettings;

    private bool IsFifo => Server?.Subscription is { HasFifo: true, Fifo: true };

    /// <summary>Maximum deliveries in effect (options, else broker Settings, else 16).</summary>
    public int MaxAttempts => _options.MaxAttempts
        ?? (Server?.BackoffPolicy is { MaxAttempts: > 0 } p ? p.MaxAttempts : DefaultMaxAttempts);

    private RetryBackoff Backoff
    {
        get
        {
            if (_options.RetryBackoff is { } b)
            {
                return b;
            }

            if (Server?.BackoffPolicy?.ExponentialBackoff is { } e && e.Initial is not null)
            {
                return new RetryBackoff(e.Initial.ToTimeSpan(), e.Max?.ToTimeSpan() ?? TimeSpan.FromSeconds(60), e.Multiplier > 0 ? e.Multiplier : 2);
            }

            return RetryBackoff.Default;
        }
    }

    /// <summary>Creates the consumer, registers with the broker, and starts receiving.</summary>
    public static async Task<PushConsumer> StartAsync(PushConsumerOptions options, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(options);
        var consumer = new PushConsumer(options);
        try
        {
            await consumer._core.StartAsync(cancellationToken).ConfigureAwait(false);
            foreach (string topic in options.Subscriptions.Keys)
            {
                foreach (MessageQueue queue in await consumer.AssignmentsAsync(topic, cancellationToken).ConfigureAwait(false))
                {
                    consumer._loops.Add(Task.Run(() => consumer.ReceiveLoopAsync(queue)));
                }
            }
        }
        catch
        {
            await consumer.DisposeAsync().ConfigureAwait(false);
            throw;
        }

        return consumer;
    }

    /// <summary>QueryAssignment (the proxy answers one queue id −1 per broker: "pop from any queue"); falls back to one
    /// readable queue per broker endpoint of the route when the server has no assignment to offer.</summary>
    private async Task<IReadOnlyList<MessageQueue>> AssignmentsAsync(string topic, CancellationToken ct)
    {
        try
        {
            IReadOnlyList<MessageQueue> assigned = await _core.QueryAssignmentAsync(topic, ct).ConfigureAwait(false);
            if (assigned.Count > 0)
            {
                return assigned;
            }
        }
        catch (ClientException ex)
        {
            _logger.LogDebug(ex, "QueryAssignment for {Topic} failed; using the route", topic);
        }

        IReadOnlyList<MessageQueue> readable = await _core.ReadableQueuesAsync(topic, ct).ConfigureAwait(false);
        return readable.GroupBy(q => Endpoint.FromProto(q.Broker.Endpoints)).Select(g => g.First()).ToList();
    }

    private async Task ReceiveLoopAsync(MessageQueue queue)
    {
        CancellationToken stop = _receiving.Token;
        while (!stop.IsCancellationRequested)
        {
            int slots;
            try
            {
                await _slots.WaitAsync(stop).ConfigureAwait(false);
            }
            catch (OperationCanceledException)
            {
                break;
            }

            // Fetch as many as there are free handler slots (bounded by the broker's batch size).
            int batch = Server?.Subscription is { HasReceiveBatchSize: true, ReceiveBatchSize: > 0 } s ? s.ReceiveBatchSize : DefaultBatchSize;
            slots = 1;
            while (slots < batch && _slots.Wait(0))
            {
                slots++;
            }

            IReadOnlyList<ReceivedMessage> messages;
            try
            {
                TimeSpan longPolling = Server?.Subscription?.LongPollingTimeout?.ToTimeSpan() ?? _options.AwaitDuration;
                messages = await _core.ReceiveAsync(queue, slots, _options.InvisibleDuration, longPolling, stop).ConfigureAwait(false);
            }
            catch (Exception ex)
            {
                _slots.Release(slots);
                if (stop.IsCancellationRequested)
                {
                    break;
                }

                _logger.LogDebug(ex, "Receive from {Topic} failed", queue.Topic.Name);
                try
                {
                    await Task.Delay(ex is TooManyRequestsException ? TimeSpan.FromMilliseconds(20) : TimeSpan.FromSeconds(1), stop).ConfigureAwait(false);
                }
                catch (OperationCanceledException)
                {
                    break;
                }

                continue;
            }

            if (slots > messages.Count)
            {
                _slots.Release(slots - messages.Count);
            }

            if (IsFifo)
            {
                // Messages of one group are handled in order, one after the other.
                foreach (IGrouping<string?, ReceivedMessage> group in messages.GroupBy(m => m.MessageGroup))
                {
                    List<ReceivedMessage> ordered = [.. group];
                    Track(Task.Run(async () =>
                    {
                        foreach (ReceivedMessage m in ordered)
                        {
                            try
                            {
                                await HandleFifoAsync(m).ConfigureAwait(false);
                            }
                            finally
                            {
                                _slots.Release();
                            }
                        }
                    }));
                }
            }
            else
            {
                foreach (ReceivedMessage m in messages)
                {
                    Track(Task.Run(async () =>
                    {
                        try
                        {
                            await HandleAsync(m).ConfigureAwait(false);
                        }
                        finally
                        {
                            _slots.Release();
                        }
                    }));
                }
            }
        }
    }

    private void Track(Task task)
    {
        lock (_inFlight)
        {
            _inFlight.Add(task);
        }

        task.ContinueWith(t =>
        {
            lock (_inFlight)
            {
                _inFlight.Remove(t);
            }
        }, CancellationToken.None, TaskContinuationOptions.ExecuteSynchronously, TaskScheduler.Default);
    }

    private async Task<ConsumeResult> InvokeAsync(ReceivedMessage message)
    {
        try
        {
            return await _handler(message, _abort.Token).ConfigureAwait(false);
        }
        catch (Exception ex)
        {
            _logger.LogWarning(ex, "Handler failed for message {MessageId} (attempt {Attempt})", message.MessageId, message.DeliveryAttempt);
            return ConsumeResult.Failure;
        }
    }

    private async Task HandleAsync(ReceivedMessage message)
    {
        ConsumeResult result = message.IsCorrupted ? ConsumeResult.Failure : await InvokeAsync(message).ConfigureAwait(false);
        if (result == ConsumeResult.Success)
        {
            await RetryAsync("ack", message, ct => message.AckAsync(ct)).ConfigureAwait(false);
        }
        else
        {
            TimeSpan delay = Backoff.GetDelay(message.DeliveryAttempt);
            await RetryAsync("nack", message, ct => message.ChangeInvisibleDurationAsync(delay, ct)).ConfigureAwait(false);
        }
    }

    private async Task HandleFifoAsync(ReceivedMessage message)
    {
        int maxAttempts = MaxAttempts;
        while (true)
        {
            ConsumeResult result = message.IsCorrupted ? ConsumeResult.Failure : await InvokeAsync(message).ConfigureAwait(false);
            if (result == ConsumeResult.Success)
            {
                await RetryAsync("ack", message, ct => message.AckAsync(ct)).ConfigureAwait(false);
                return;
            }

            if (message.DeliveryAttempt >= maxAttempts || message.IsCorrupted)
            {
                await RetryAsync("forward to DLQ", message, ct => _core.ForwardToDeadLetterQueueAsync(message, maxAttempts, ct)).ConfigureAwait(false);
                return;
            }

            // Redelivering through the broker would let later messages of the group overtake; retry here instead.
            try
            {
                await Task.Delay(Backoff.GetDelay(message.DeliveryAttempt), _abort.Token).ConfigureAwait(false);
            }
            catch (OperationCanceledException)
            {
                return; // the message becomes visible again after its invisible duration
            }

            message.DeliveryAttempt++;
        }
    }

    /// <summary>Retries ack / nack / DLQ forwarding every second until it succeeds, the receipt handle is no longer
    /// valid (INVALID_RECEIPT_HANDLE: the message will be redelivered anyway), or the consumer is aborted.</summary>
    private async Task RetryAsync(string what, ReceivedMessage message, Func<CancellationToken, Task> action)
    {
        while (true)
        {
            try
            {
                await action(_abort.Token).ConfigureAwait(false);
                return;
            }
            catch (BadRequestException ex) when (ex.Code == Code.InvalidReceiptHandle)
            {
                _logger.LogInformation("{What} of {MessageId}: receipt handle no longer valid", what, message.MessageId);
                return;
            }
            catch (OperationCanceledException) when (_abort.IsCancellationRequested)
            {
                return;
            }
            catch (ClientException ex)
            {
                _logger.LogDebug(ex, "{What} of {MessageId} failed; retrying", what, message.MessageId);
            }

            try
            {
                await Task.Delay(TimeSpan.FromSeconds(1), _abort.Token).ConfigureAwait(false);
            }
            catch (OperationCanceledException)
            {
                return;
            }
        }
    }

    /// <summary>Stops receiving and waits for the handlers in flight (and their acks) to finish. If
    /// <paramref name="cancellationToken"/> is cancelled first, the handlers' token is cancelled and unfinished messages
    /// are left to reappear after their invisible duration.</summary>
    public async Task StopAsync(CancellationToken cancellationToken = default)
    {
        if (Interlocked.Exchange(ref _stopped, 1) != 0)
        {
            return;
        }

        await _receiving.CancelAsync().ConfigureAwait(false);
        await Task.WhenAll(_loops).ConfigureAwait(false);
        Task[] inFlight;
        lock (_inFlight)
        {
            inFlight = [.. _inFlight];
        }

        try
        {
            await Task.WhenAll(inFlight).WaitAsync(cancellationToken).ConfigureAwait(false);
        }
        catch (OperationCanceledException)
        {
            await _abort.CancelAsync().ConfigureAwait(false);
            await Task.WhenAll(inFlight).ConfigureAwait(false);
        }
    }

    /// <summary>Stops gracefully (see <see cref="StopAsync"/>, waiting up to 30 s), notifies the broker and closes the
    /// connections.</summary>
    public async ValueTask DisposeAsync()
    {
        using (var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(30)))
        {
            await StopAsync(timeout.Token).ConfigureAwait(false);
        }

        await _core.DisposeAsync().ConfigureAwait(false);
        _receiving.Dispose();
        _abort.Dispose();
    }
}
