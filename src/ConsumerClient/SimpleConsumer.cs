using System.Runtime.CompilerServices;
using Apache.Rocketmq.V2;
using HalfMsg.ClientCore;
using HalfMsg.ClientCore.Transport;
using Microsoft.Extensions.Logging;

namespace HalfMsg.ConsumerClient;

/// <summary>
/// A RocketMQ 5 simple consumer: the application asks for messages (<see cref="ReceiveAsync"/>), processes them, and
/// acknowledges each (<see cref="ReceivedMessage.AckAsync"/>). Unacknowledged messages reappear after their invisible
/// duration. Thread-safe.
/// </summary>
public sealed class SimpleConsumer : IAsyncDisposable
{
    private readonly ConsumerCore _core;
    private readonly SimpleConsumerOptions _options;
    private readonly string[] _topics;
    private int _next;

    private SimpleConsumer(SimpleConsumerOptions options, HttpMessageHandler? handler)
    {
        _options = options;
        var config = new ClientConfig(options.Endpoints, options.Credentials, options.RequestTimeout, options.Namespace, options.LoggerFactory,
            ClientTls.Create(nameof(SimpleConsumerOptions), options.Endpoints, options.UseTls, options.Tls, options.LoggerFactory),
            options.ConnectTimeout, options.FailbackInterval, nameof(SimpleConsumerOptions));
        _core = new ConsumerCore(config, ClientType.SimpleConsumer, options.ConsumerGroup, options.Subscriptions, options.AwaitDuration, handler);
        _topics = [.. options.Subscriptions.Keys];
    }

    /// <summary>The consumer group.</summary>
    public string ConsumerGroup => _options.ConsumerGroup;

    /// <summary>Creates the consumer, resolves the subscribed topics' routes, and registers with the broker.</summary>
    public static async Task<SimpleConsumer> StartAsync(SimpleConsumerOptions options, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(options);
        options.Validate();
        var consumer = new SimpleConsumer(options, handler: null);
        try
        {
            await consumer._core.StartAsync(cancellationToken).ConfigureAwait(false);
        }
        catch
        {
            await consumer.DisposeAsync().ConfigureAwait(false);
            throw;
        }

        return consumer;
    }

    /// <summary>Receives up to <paramref name="maxMessages"/> messages, waiting up to
    /// <see cref="SimpleConsumerOptions.AwaitDuration"/> for the first. Each stays invisible to the group for
    /// <paramref name="invisibleDuration"/>. Returns an empty list when nothing arrived. Subscribed topics are polled
    /// round-robin. Internal server errors are retried twice, 1 s apart, as the official clients do.</summary>
    public async Task<IReadOnlyList<ReceivedMessage>> ReceiveAsync(int maxMessages, TimeSpan invisibleDuration,
        CancellationToken cancellationToken = default)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(maxMessages, 1);
        ArgumentOutOfRangeException.ThrowIfLessThanOrEqual(invisibleDuration, TimeSpan.Zero);
        int n = Interlocked.Increment(ref _next);
        string topic = _topics[(int)((uint)n % (uint)_topics.Length)];
        IReadOnlyList<MessageQueue> queues = await _core.ReadableQueuesAsync(topic, cancellationToken).ConfigureAwait(false);
        MessageQueue queue = queues[(int)((uint)(n / _topics.Length) % (uint)queues.Count)];
        for (int attempt = 1; ; attempt++)
        {
            try
            {
                return await _core.ReceiveAsync(queue, maxMessages, invisibleDuration, _options.AwaitDuration, cancellationToken).ConfigureAwait(false);
            }
            catch (InternalErrorException) when (attempt < 3)
            {
                await Task.Delay(TimeSpan.FromSeconds(1), cancellationToken).ConfigureAwait(false);
            }
        }
    }

    /// <summary>Acknowledges a batch of received messages with one call per broker endpoint and topic (the broker waits
    /// for one group commit for all of them), instead of one call per message; more than 1024 messages (the broker's
    /// limit per call) take several calls. Throws the first failure after every message was tried, including a call the
    /// broker refused as a whole (its top-level status); a message whose ack failed comes back after its invisible
    /// duration.</summary>
    public Task AckAsync(IReadOnlyList<ReceivedMessage> messages, CancellationToken cancellationToken = default)
        => messages.Count == 0 ? Task.CompletedTask : _core.AckAsync(messages, cancellationToken);

    /// <summary>First and longest wait of <see cref="ConsumeAsync"/> after a failed receive that may succeed later.</summary>
    private static readonly TimeSpan ConsumeRetryFirst = TimeSpan.FromMilliseconds(500), ConsumeRetryMax = TimeSpan.FromSeconds(10);

    /// <summary>Receives continuously until <paramref name="cancellationToken"/> is cancelled, yielding messages one by
    /// one (each must still be acknowledged). A failure that may pass (<see cref="ClientException.IsRetryable"/>: the
    /// broker restarting or unreachable, throttling, internal errors, timeouts) is logged and retried after 0.5 s,
    /// doubling up to 10 s; any other failure (bad request, unauthorized, forbidden, not found...) ends the enumeration
    /// with its exception.</summary>
    public async IAsyncEnumerable<ReceivedMessage> ConsumeAsync(TimeSpan invisibleDuration, int batchSize = 16,
        [EnumeratorCancellation] CancellationToken cancellationToken = default)
    {
        TimeSpan backoff = TimeSpan.Zero;
        while (!cancellationToken.IsCancellationRequested)
        {
            IReadOnlyList<ReceivedMessage> batch;
            try
            {
                batch = await ReceiveAsync(batchSize, invisibleDuration, cancellationToken).ConfigureAwait(false);
                if (backoff > TimeSpan.Zero)
                {
                    _core.Session.Logger.LogInformation("Receiving for group {Group} works again", _options.ConsumerGroup);
                }

                backoff = TimeSpan.Zero;
            }
            catch (OperationCanceledException) when (cancellationToken.IsCancellationRequested)
            {
                yield break;
            }
            catch (ClientException ex) when (ex.IsRetryable)
            {
                bool first = backoff == TimeSpan.Zero;
                backoff = first ? ConsumeRetryFirst : TimeSpan.FromTicks(Math.Min(backoff.Ticks * 2, ConsumeRetryMax.Ticks));
                if (first)
                {
                    _core.Session.Logger.LogWarning(ex, "Receive for group {Group} failed: {Error}; retrying (0.5 s, doubling up to 10 s)",
                        _options.ConsumerGroup, ex.Message);
                }
                else
                {
                    _core.Session.Logger.LogDebug(ex, "Receive for group {Group} failed again; retrying in {Backoff}", _options.ConsumerGroup, backoff);
                }

                batch = [];
            }

            if (batch.Count == 0 && backoff > TimeSpan.Zero)
            {
                try
                {
                    await Task.Delay(backoff, cancellationToken).ConfigureAwait(false);
                }
                catch (OperationCanceledException)
                {
                    yield break;
                }

                continue;
            }

            foreach (ReceivedMessage message in batch)
            {
                yield return message;
            }
        }
    }

    /// <summary>Notifies the broker (NotifyClientTermination) and closes the connections.</summary>
    public ValueTask DisposeAsync() => _core.DisposeAsync();
}
