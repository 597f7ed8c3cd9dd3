using Apache.Rocketmq.V2;
using HalfMsg.ClientCore;
using HalfMsg.ClientCore.Transport;
using Microsoft.Extensions.Logging;

namespace HalfMsg.ConsumerClient;

/// <summary>
/// A RocketMQ 5 push consumer: long-polling receive loops (one per assigned queue) feed a handler with at most
/// <see cref="PushConsumerOptions.MaxConcurrency"/> messages in flight. Success acknowledges; failure (or an exception)
/// makes the message invisible for the retry backoff so the broker redelivers it with delivery attempt + 1. The broker
/// dead-letters a non-FIFO message after the maximum attempts; for a FIFO group (broker Settings <c>fifo</c>) the
/// client retries locally, in order, and then forwards the message to the dead letter queue itself.
/// <para>Like the official clients, it re-queries its assignments every 5 s (QueryAssignment; new queues get a receive
/// loop, queues no longer assigned have theirs stopped; a failed query keeps the current loops), and while a handler
/// runs it renews the message's lease (ChangeInvisibleDuration to <see cref="PushConsumerOptions.InvisibleDuration"/>)
/// every half invisible duration (a failed renewal is retried within a second), so a slow handler does not see its
/// message redelivered to another consumer.</para>
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
    // Acks, nacks and DLQ forwards end with this, not with _abort: StopAsync cancels the handlers' token first and then
    // waits its grace for them "and their acks", so a handler that finishes with Success inside the grace still has its
    // ack sent. Until the afternoon session of 2026-12-06 they shared _abort, the ack was never sent, and the work done
    // was delivered and done again after the invisible duration (found by review).
    private readonly CancellationTokenSource _settle = new();
    private static readonly TimeSpan AssignmentScanPeriod = TimeSpan.FromSeconds(5);

    // The receive loops still running: a loop removes itself when it ends (see QueueLoopEnded).
    private readonly HashSet<Task> _loops = [];
    // The receive loop of each assigned queue (by QueueKey), with the topic it belongs to.
    private readonly Dictionary<string, (string Topic, CancellationTokenSource Cts)> _assigned = new(StringComparer.Ordinal);
    private Task? _scanLoop;
    private readonly HashSet<Task> _inFlight = [];
    private readonly System.Collections.Concurrent.ConcurrentDictionary<ReceivedMessage, DateTime> _handling = new();

    /// <summary>How long <see cref="StopAsync"/> still waits, once its token is cancelled and the handlers' token with it,
    /// for handlers (and their acks) to finish before it returns without them.</summary>
    internal static readonly TimeSpan AbortGrace = TimeSpan.FromSeconds(5);
    private readonly ILogger _logger;
    private readonly LogThrottle _throttle = new(TimeSpan.FromMinutes(1));
    private int _stopped;

    private PushConsumer(PushConsumerOptions options)
    {
        options.Validate();
        _options = options;
        _handler = options.Handler!;
        var config = new ClientConfig(options.Endpoints, options.Credentials, options.RequestTimeout, options.Namespace, options.LoggerFactory,
            ClientTls.Create(nameof(PushConsumerOptions), options.Endpoints, options.UseTls, options.Tls, options.LoggerFactory),
            options.ConnectTimeout, options.FailbackInterval, nameof(PushConsumerOptions));
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

    /// <summary>
    /// The delay after failed delivery number <paramref name="attempt"/>: the options' backoff, else the broker's
    /// customized backoff (its n-th delay, the last repeating, as the official clients read it; what the Apache proxy and
    /// this broker announce by default) or exponential one, else <see cref="RetryBackoff.Default"/>. Until 2026-12-06 a
    /// customized backoff was not read and the default (1 s doubling to 60 s) used instead.
    /// </summary>
    private TimeSpan RetryDelay(int attempt)
    {
        if (_options.RetryBackoff is null && Server?.BackoffPolicy?.CustomizedBackoff is { Next.Count: > 0 } customized)
        {
            var delays = customized.Next;
            Google.Protobuf.WellKnownTypes.Duration next = delays[Math.Clamp(attempt, 1, delays.Count) - 1];
            // ToTimeSpan throws on a duration whose seconds and nanos disagree in sign or overflow: unusable, as a negative one.
            TimeSpan delay = next.Seconds is >= 0 and <= 12 * 3600 && next.Nanos is >= 0 and < 1_000_000_000 ? next.ToTimeSpan() : TimeSpan.MinValue;
            if (delay >= TimeSpan.Zero && delay <= PushConsumerOptions.MaxInvisibleDuration)
            {
                return delay;
            }

            if (_throttle.ShouldLog("backoff|customized"))
            {
                _logger.LogWarning("The broker's retry delay for attempt {Attempt} ({Delay}) is not usable; using {Default}", attempt, delay, RetryBackoff.Default);
            }

            return RetryBackoff.Default.GetDelay(attempt);
        }

        return Backoff.GetDelay(attempt);
    }

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
                var server = new RetryBackoff(e.Initial.ToTimeSpan(), e.Max?.ToTimeSpan() ?? TimeSpan.FromSeconds(60), e.Multiplier > 0 ? e.Multiplier : 2);
                if (server.Initial >= TimeSpan.Zero && server.Initial <= server.Max && server.Max <= PushConsumerOptions.MaxInvisibleDuration
                    && server.Multiplier >= 1 && !double.IsInfinity(server.Multiplier))
                {
                    return server;
                }

                if (_throttle.ShouldLog("backoff|server"))
                {
                    _logger.LogWarning("The broker's retry backoff ({Backoff}) is not usable; using {Default}", server, RetryBackoff.Default);
                }
            }

            return RetryBackoff.Default;
        }
    }

    /// <summary>Creates the consumer, registers with the broker, and starts receiving.</summary>
    /// <exception cref="ArgumentException">An option is missing or out of range (see <see cref="PushConsumerOptions"/>).</exception>
    public static async Task<PushConsumer> StartAsync(PushConsumerOptions options, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(options);
        var consumer = new PushConsumer(options);
        try
        {
            await consumer._core.StartAsync(cancellationToken).ConfigureAwait(false);
            foreach (string topic in options.Subscriptions.Keys)
            {
                consumer.Apply(topic, await consumer.AssignmentsAsync(topic, cancellationToken).ConfigureAwait(false));
            }

            consumer._scanLoop = Task.Run(consumer.ScanAssignmentsLoopAsync);
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
    internal async Task<IReadOnlyList<MessageQueue>> AssignmentsAsync(string topic, CancellationToken ct)
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
        // One per broker (its name and endpoint): an Apache proxy fronts several brokers at one endpoint.
        return readable.GroupBy(q => (q.Broker?.Name, Endpoint.FromProto(q.Broker!.Endpoints))).Select(g => g.First()).ToList();
    }

    /// <summary>Tests: the queues a receive loop runs for, by the topic it was started for.</summary>
    internal IReadOnlyList<(string Topic, string Queue)> AssignedForTests()
    {
        lock (_assigned)
        {
            return _assigned.Select(a => (a.Value.Topic, a.Key)).ToList();
        }
    }

    // The broker's name is part of the key: an Apache proxy in cluster mode answers one assignment per broker group, each
    // with queue id -1 and the proxy's own endpoint. Until the afternoon session of 2026-12-06 the key left it out, two
    // broker groups made the same key twice, and StartAsync threw "An item with the same key has already been added"
    // (found by review).
    private static string QueueKey(MessageQueue q) => $"{q.Topic?.Name}|{q.Broker?.Name}|{Endpoint.FromProto(q.Broker!.Endpoints)}|{q.Id}";

    /// <summary>Starts a receive loop for every queue of <paramref name="topic"/> in <paramref name="queues"/> that has
    /// none, and stops the loops of the topic's queues that are no longer in it.</summary>
    internal void Apply(string topic, IReadOnlyList<MessageQueue> queues)
    {
        lock (_assigned)
        {
            if (_receiving.IsCancellationRequested)
            {
                return;
            }

            var wanted = queues.ToDictionary(QueueKey, q => q, StringComparer.Ordinal);
            // By the topic each loop was started for: a key prefix would also take a topic named "<topic>|..." (a '|' is
            // valid in topic names), whose loops a change of this topic's queues then stopped.
            foreach (string key in _assigned.Where(a => a.Value.Topic == topic && !wanted.ContainsKey(a.Key)).Select(a => a.Key).ToList())
            {
                _logger.LogInformation("Queue {Queue} is no longer assigned; stopping its receive loop", key);
                _assigned[key].Cts.Cancel();
                _assigned.Remove(key);
            }

            foreach ((string key, MessageQueue queue) in wanted)
            {
                if (_assigned.ContainsKey(key))
                {
                    continue;
                }

                var cts = CancellationTokenSource.CreateLinkedTokenSource(_receiving.Token);
                _assigned[key] = (topic, cts);
                QueueSourceCreatedForTests?.Invoke(cts);
                Task loop = Task.Run(() => ReceiveLoopAsync(queue, cts.Token));
                _loops.Add(loop);
                _ = loop.ContinueWith(ended => QueueLoopEnded(key, cts, ended), CancellationToken.None,
                    TaskContinuationOptions.ExecuteSynchronously, TaskScheduler.Default);
            }
        }
    }

    /// <summary>Tests: called with the token source of each receive loop started.</summary>
    internal Action<CancellationTokenSource>? QueueSourceCreatedForTests { get; set; }

    /// <summary>A receive loop has ended (its queue was taken away, or the consumer stops): its token source is disposed
    /// now, not when the consumer is. Until then each source stayed registered with <c>_receiving</c> and, with its
    /// finished loop, in <c>_loops</c>: a little memory for every queue a reassignment took away, for the consumer's
    /// life.</summary>
    private void QueueLoopEnded(string key, CancellationTokenSource cts, Task loop)
    {
        if (loop.IsFaulted)
        {
            _logger.LogError(loop.Exception, "The receive loop of queue {Queue} failed; the next assignment scan starts it again", key);
        }

        lock (_assigned)
        {
            _loops.Remove(loop);
            // Still the queue's loop only if it ended by itself (a fault) or the consumer stops; a reassignment has
            // already removed it (and may have given the key a new loop, which must stay).
            if (_assigned.TryGetValue(key, out var current) && ReferenceEquals(current.Cts, cts))
            {
                _assigned.Remove(key);
            }

            cts.Dispose();
        }
    }

    private async Task ScanAssignmentsLoopAsync()
    {
        using var timer = new PeriodicTimer(AssignmentScanPeriod);
        try
        {
            while (await timer.WaitForNextTickAsync(_receiving.Token).ConfigureAwait(false))
            {
                foreach (string topic in _options.Subscriptions.Keys)
                {
                    try
                    {
                        IReadOnlyList<MessageQueue> assigned = await _core.QueryAssignmentAsync(topic, _receiving.Token).ConfigureAwait(false);
                        if (assigned.Count > 0)
                        {
                            Apply(topic, assigned);
                        }
                    }
                    catch (ClientException ex)
                    {
                        // Broker unreachable (restart) or no assignment: keep receiving from what we have.
                        _logger.LogDebug("QueryAssignment for {Topic} failed: {Message}", topic, ex.Message);
                    }
                    catch (Exception ex) when (ex is not OperationCanceledException)
                    {
                        // Anything else must not end the scan: the consumer would never follow a reassignment again.
                        _logger.LogError(ex, "Applying the assignment of {Topic} failed; keeping the receive loops it has", topic);
                    }
                }
            }
        }
        catch (OperationCanceledException)
        {
        }
    }

    private async Task ReceiveLoopAsync(MessageQueue queue, CancellationToken stop)
    {
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

                LogReceiveFailure(queue, ex);
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
                // Messages of one group are handled in order, one after the other, and so are the messages without a
                // group: an orderly consumer group is served in queue order, which a RocketMQ 4 producer that picks the
                // queue itself (no message group) relies on. As the official Java client's FIFO consume service does
                // (unkeyed messages are one more group). From 2026-12-05 until the afternoon session of 2026-12-06
                // messages without a group were handled side by side; no broker of ours said fifo then.
                foreach (IGrouping<string?, ReceivedMessage> group in messages.GroupBy(m => m.MessageGroup))
                {
                    List<ReceivedMessage> ordered = [.. group];
                    Track(Task.Run(() => HandleChainAsync(ordered)));
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

    /// <summary>A failure that retrying may fix (broker restarting, throttling) is logged at Debug; a refusal that
    /// retrying cannot fix (bad request, unauthorized, forbidden, not found, an illegal filter expression...) and any
    /// unexpected exception at Warning, once per minute per code, since the loop retries it every second.</summary>
    private void LogReceiveFailure(MessageQueue queue, Exception ex)
    {
        if (ex is ClientException { IsRetryable: true })
        {
            _logger.LogDebug(ex, "Receive from {Topic} failed", queue.Topic.Name);
            return;
        }

        string code = ex is ClientException ce ? (ex is TransportException te ? "grpc " + te.GrpcStatus : ce.Code.ToString()) : ex.GetType().Name;
        if (_throttle.ShouldLog("receive|" + code))
        {
            _logger.LogWarning(ex,
                "Receive from {Topic} for group {Group} refused ({Code}): {Error}. Retrying will not fix this; check the consumer's options, subscription, credentials and the broker. Nothing is consumed from this queue meanwhile (logged once a minute per code)",
                queue.Topic.Name, _options.ConsumerGroup, code, ex.Message);
        }
        else
        {
            _logger.LogDebug(ex, "Receive from {Topic} failed", queue.Topic.Name);
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
        using System.Diagnostics.Activity? span = ConsumerTracing.StartProcess(message, _options.ConsumerGroup);
        _handling[message] = DateTime.UtcNow;
        try
        {
            ConsumeResult result = await _handler(message, _abort.Token).ConfigureAwait(false);
            span?.SetTag("messaging.rocketmq.consume_result", result.ToString().ToLowerInvariant());
            return result;
        }
        catch (Exception ex)
        {
            span?.SetStatus(System.Diagnostics.ActivityStatusCode.Error, ex.Message);
            _logger.LogWarning(ex, "Handler failed for message {MessageId} (attempt {Attempt})", message.MessageId, message.DeliveryAttempt);
            return ConsumeResult.Failure;
        }
        finally
        {
            _handling.TryRemove(message, out _);
        }
    }

    /// <summary>Most time between a failed lease renewal and its retry.</summary>
    private static readonly TimeSpan RenewRetryDelay = TimeSpan.FromSeconds(1);

    /// <summary>Renews the lease of <paramref name="message"/> every half <see cref="PushConsumerOptions.InvisibleDuration"/>
    /// (counted from the receive, then from each renewal) until <paramref name="stop"/> is cancelled. A failed renewal is
    /// retried after 1 s, or sooner when less is left on the lease, so one failure does not let the lease run out. A
    /// renewal in flight is never cancelled by <paramref name="stop"/> (its new receipt handle must be known before the
    /// ack), only by the consumer's abort.</summary>
    private async Task RenewLeaseAsync(ReceivedMessage message, CancellationToken stop)
    {
        TimeSpan lease = _options.InvisibleDuration;
        TimeSpan period = lease / 2;
        if (period <= TimeSpan.Zero)
        {
            return;
        }

        long leaseEndsMs = message.ReceivedAtMs + (long)lease.TotalMilliseconds;
        long nextMs = message.ReceivedAtMs + (long)period.TotalMilliseconds;
        for (int failures = 0; ; )
        {
            long waitMs = nextMs - Environment.TickCount64;
            try
            {
                await Task.Delay(TimeSpan.FromMilliseconds(Math.Max(waitMs, 0)), stop).ConfigureAwait(false);
            }
            catch (OperationCanceledException)
            {
                return;
            }

            if (stop.IsCancellationRequested)
            {
                return;
            }

            long sentMs = Environment.TickCount64;
            try
            {
                await message.ChangeInvisibleDurationAsync(lease, _abort.Token).ConfigureAwait(false);
                _logger.LogDebug("Renewed the lease of {MessageId} for {Duration}", message.MessageId, lease);
                failures = 0;
                leaseEndsMs = sentMs + (long)lease.TotalMilliseconds;
                nextMs = sentMs + (long)period.TotalMilliseconds;
            }
            catch (BadRequestException ex) when (ex.Code == Code.InvalidReceiptHandle)
            {
                _logger.LogWarning("Lease of {MessageId} expired while its handler was running; it may be redelivered", message.MessageId);
                return;
            }
            catch (OperationCanceledException) when (_abort.IsCancellationRequested)
            {
                return;
            }
            catch (Exception ex) when (ex is not OperationCanceledException)
            {
                failures++;
                long now = Environment.TickCount64;
                long leftMs = leaseEndsMs - now;
                // Soon, and before the lease ends: half of what is left when that is under 2 s (at least 100 ms); once
                // the lease has ended, every second (the broker answers INVALID_RECEIPT_HANDLE if it is really gone).
                long retryMs = leftMs <= 0 || leftMs >= 2 * (long)RenewRetryDelay.TotalMilliseconds ? (long)RenewRetryDelay.TotalMilliseconds
                    : Math.Clamp(leftMs / 2, 100, (long)RenewRetryDelay.TotalMilliseconds);
                nextMs = now + retryMs;
                string code = ex is TransportException te ? "grpc " + te.GrpcStatus : ex is ClientException ce ? ce.Code.ToString() : ex.GetType().Name;
                if (_throttle.ShouldLog("renew|" + code))
                {
                    _logger.LogWarning(ex,
                        "Renewing the lease of {MessageId} failed ({Code}): {Error}; retrying in {RetryMs} ms ({LeftMs} ms left on the lease, failure {Failures}; logged once a minute per code)",
                        message.MessageId, code, ex.Message, retryMs, leftMs, failures);
                }
                else
                {
                    _logger.LogDebug(ex, "Renewing the lease of {MessageId} failed; retrying in {RetryMs} ms", message.MessageId, retryMs);
                }
            }
        }
    }

    /// <summary>Runs <paramref name="work"/>, then stops the renewal <paramref name="lease"/> (awaiting one in flight).</summary>
    private static async Task<T> WithRenewalAsync<T>((CancellationTokenSource Stop, Task Renewal) lease, Func<Task<T>> work)
    {
        try
        {
            return await work().ConfigureAwait(false);
        }
        finally
        {
            if (!lease.Stop.IsCancellationRequested)
            {
                await lease.Stop.CancelAsync().ConfigureAwait(false);
            }

            await lease.Renewal.ConfigureAwait(false);
        }
    }

    /// <summary>Runs <paramref name="work"/> while renewing the lease of <paramref name="message"/>.</summary>
    private async Task<T> WithLeaseAsync<T>(ReceivedMessage message, Func<Task<T>> work)
    {
        using var stop = new CancellationTokenSource();
        Task renewal = RenewLeaseAsync(message, stop.Token);
        try
        {
            return await work().ConfigureAwait(false);
        }
        finally
        {
            await stop.CancelAsync().ConfigureAwait(false);
            await renewal.ConfigureAwait(false);
        }
    }

    private async Task HandleAsync(ReceivedMessage message)
    {
        ConsumeResult result = message.IsCorrupted ? ConsumeResult.Failure
            : await WithLeaseAsync(message, () => InvokeAsync(message)).ConfigureAwait(false);
        if (result == ConsumeResult.Success)
        {
            await RetryAsync("ack", message, ct => message.AckAsync(ct)).ConfigureAwait(false);
        }
        else
        {
            TimeSpan delay = RetryDelay(message.DeliveryAttempt);
            delay = delay < TimeSpan.Zero ? TimeSpan.Zero : delay > PushConsumerOptions.MaxInvisibleDuration ? PushConsumerOptions.MaxInvisibleDuration : delay;
            await RetryAsync("nack", message, ct => message.ChangeInvisibleDurationAsync(delay, ct)).ConfigureAwait(false);
        }
    }

    /// <summary>Handles the messages of one message group in order. If one fails unexpectedly the chain stops there (a
    /// later message must not overtake it): the rest reappear after their invisible duration. Every message's handler
    /// slot is released, handled or not.</summary>
    private async Task HandleChainAsync(List<ReceivedMessage> ordered)
    {
        // Every message of the chain keeps its lease from the receive until it is settled, not only while its own handler
        // runs: a message waiting behind earlier ones (their handlers, their local retries) lost its lease, the broker
        // handed it out again, and it was handled twice and could overtake its group (until the afternoon session of
        // 2026-12-06; found by review).
        var leases = new (CancellationTokenSource Stop, Task Renewal)[ordered.Count];
        for (int i = 0; i < ordered.Count; i++)
        {
            var stop = new CancellationTokenSource();
            leases[i] = (stop, RenewLeaseAsync(ordered[i], stop.Token));
        }

        int released = 0;
        try
        {
            for (int i = 0; i < ordered.Count; i++)
            {
                ReceivedMessage m = ordered[i];
                bool settled;
                try
                {
                    // Once the stop has cancelled the handlers' token no later message is started: the ones behind an
                    // unsettled message must not overtake it.
                    settled = !_abort.IsCancellationRequested && await HandleFifoAsync(m, leases[i]).ConfigureAwait(false);
                }
                finally
                {
                    released++;
                    _slots.Release();
                }

                if (!settled)
                {
                    // Left to come back after its invisible duration (a stop cancelled its retries): the rest of the
                    // chain waits for it, and comes back after it. Until the review of 2026-12-07 the chain went on, and
                    // a later message of the group was handled (and acked) before it (found by review).
                    _logger.LogInformation("Handling message group {MessageGroup} stopped at message {Index} of {Count} (the consumer is stopping); the rest reappear after their invisible duration",
                        m.MessageGroup, i + 1, ordered.Count);
                    break;
                }
            }
        }
        catch (Exception ex)
        {
            _logger.LogError(ex, "Handling message group {MessageGroup} stopped at message {Index} of {Count}; the rest reappear after their invisible duration",
                ordered[0].MessageGroup, released, ordered.Count);
        }
        finally
        {
            if (released < ordered.Count)
            {
                _slots.Release(ordered.Count - released);
            }

            // The messages not handled (the chain stopped) reappear after their invisible duration.
            foreach ((CancellationTokenSource stop, Task renewal) in leases)
            {
                await StopRenewalAsync(stop, renewal).ConfigureAwait(false);
            }
        }
    }

    private static async Task StopRenewalAsync(CancellationTokenSource stop, Task renewal)
    {
        await stop.CancelAsync().ConfigureAwait(false);
        await renewal.ConfigureAwait(false);
        stop.Dispose();
    }

    /// <summary>Handles one message of a FIFO chain; <paramref name="lease"/> renews its lease from the receive and is
    /// stopped (its renewal in flight awaited, so the ack carries the newest receipt handle) before the message is
    /// settled.</summary>
    /// <returns>False when the message was left unsettled (the stop cancelled its local retries): it comes back after its
    /// invisible duration, and the later messages of its group must not be handled before it.</returns>
    private async Task<bool> HandleFifoAsync(ReceivedMessage message, (CancellationTokenSource Stop, Task Renewal) lease)
    {
        int maxAttempts = MaxAttempts;

        // The lease is renewed across the local retries and their backoff delays.
        bool? success = await WithRenewalAsync(lease, async () =>
        {
            while (true)
            {
                ConsumeResult result = message.IsCorrupted ? ConsumeResult.Failure : await InvokeAsync(message).ConfigureAwait(false);
                if (result == ConsumeResult.Success)
                {
                    return (bool?)true;
                }

                if (message.DeliveryAttempt >= maxAttempts || message.IsCorrupted)
                {
                    return false;
                }

                // Redelivering through the broker would let later messages of the group overtake; retry here instead.
                try
                {
                    await Task.Delay(RetryDelay(message.DeliveryAttempt), _abort.Token).ConfigureAwait(false);
                }
                catch (OperationCanceledException)
                {
                    return null; // the message becomes visible again after its invisible duration
                }

                message.DeliveryAttempt++;
            }
        }).ConfigureAwait(false);

        if (success == true)
        {
            await RetryAsync("ack", message, ct => message.AckAsync(ct)).ConfigureAwait(false);
        }
        else if (success == false)
        {
            await RetryAsync("forward to DLQ", message, ct => _core.ForwardToDeadLetterQueueAsync(message, maxAttempts, ct)).ConfigureAwait(false);
        }

        return success is not null;
    }

    /// <summary>Retries ack / nack / DLQ forwarding every second until it succeeds, the receipt handle is no longer
    /// valid (INVALID_RECEIPT_HANDLE: the message will be redelivered anyway), or StopAsync's grace after a cancelled stop has ended. Failures are
    /// logged at Warning (once a minute per operation and code); an unexpected exception (not a broker or transport
    /// failure) is logged at Error and ends the retries: the message reappears after its invisible duration.</summary>
    private async Task RetryAsync(string what, ReceivedMessage message, Func<CancellationToken, Task> action)
    {
        for (int attempt = 1; ; attempt++)
        {
            try
            {
                await action(_settle.Token).ConfigureAwait(false);
                return;
            }
            catch (BadRequestException ex) when (ex.Code == Code.InvalidReceiptHandle)
            {
                _logger.LogInformation("{What} of {MessageId}: receipt handle no longer valid", what, message.MessageId);
                return;
            }
            catch (OperationCanceledException) when (_settle.IsCancellationRequested)
            {
                return;
            }
            catch (ClientException ex)
            {
                string code = ex is TransportException te ? "grpc " + te.GrpcStatus : ex.Code.ToString();
                if (_throttle.ShouldLog(what + "|" + code))
                {
                    _logger.LogWarning(ex, "{What} of {MessageId} failed ({Code}): {Error}; retrying every second (attempt {Attempt}; logged once a minute per code)",
                        what, message.MessageId, code, ex.Message, attempt);
                }
                else
                {
                    _logger.LogDebug(ex, "{What} of {MessageId} failed; retrying", what, message.MessageId);
                }
            }
            catch (Exception ex) when (ex is not OperationCanceledException)
            {
                _logger.LogError(ex, "{What} of {MessageId} failed unexpectedly; not retried, the message reappears after its invisible duration",
                    what, message.MessageId);
                return;
            }

            try
            {
                await Task.Delay(TimeSpan.FromSeconds(1), _settle.Token).ConfigureAwait(false);
            }
            catch (OperationCanceledException)
            {
                return;
            }
        }
    }

    /// <summary>Stops receiving and waits for the handlers in flight (and their acks) to finish. If
    /// <paramref name="cancellationToken"/> is cancelled first, the handlers' token is cancelled, and StopAsync waits at
    /// most 5 s more: handlers still running then (one that ignores its token) are logged and left behind, and their
    /// messages reappear after their invisible duration.</summary>
    public async Task StopAsync(CancellationToken cancellationToken = default)
    {
        if (Interlocked.Exchange(ref _stopped, 1) != 0)
        {
            return;
        }

        Task[] loops;
        lock (_assigned)
        {
            _receiving.Cancel();
            loops = [.. _loops];
        }

        await Task.WhenAll(loops).ConfigureAwait(false);
        if (_scanLoop is not null)
        {
            await _scanLoop.ConfigureAwait(false);
        }
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
            Task all = Task.WhenAll(inFlight);
            bool finished = await Task.WhenAny(all, Task.Delay(AbortGrace)).ConfigureAwait(false) == all;
            // The grace is over: acks still retrying (a broker that does not answer) stop too.
            await _settle.CancelAsync().ConfigureAwait(false);
            if (!finished)
            {
                string running = string.Join(", ", _handling.Select(h => $"{h.Key.MessageId} (for {DateTime.UtcNow - h.Value:g})"));
                _logger.LogWarning(
                    "Stopping without waiting for {Count} message task(s) still running {Grace} after their cancellation (a handler that ignores its CancellationToken?); handlers still running: {Running}. Their messages are redelivered after their invisible duration",
                    inFlight.Count(t => !t.IsCompleted), AbortGrace, running.Length == 0 ? "none (acks in progress)" : running);
            }
        }
    }

    /// <summary>Stops gracefully (see <see cref="StopAsync"/>, waiting up to 30 s, then at most 5 s more for handlers
    /// that ignore their token), notifies the broker and closes the connections.</summary>
    public async ValueTask DisposeAsync()
    {
        using (var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(30)))
        {
            await StopAsync(timeout.Token).ConfigureAwait(false);
        }

        await _core.DisposeAsync().ConfigureAwait(false);
        lock (_assigned)
        {
            foreach ((_, CancellationTokenSource cts) in _assigned.Values)
            {
                cts.Dispose();
            }

            _assigned.Clear();
        }

        _receiving.Dispose();
        // _abort and _settle are not disposed: a handler or an ack left running by StopAsync may still read its token (they
        // have no timer to free).
    }
}
