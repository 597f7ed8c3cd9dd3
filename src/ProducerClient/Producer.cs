using System.Collections.Concurrent;
using System.Data.Common;
using System.Diagnostics;
using Apache.Rocketmq.V2;
using Google.Protobuf;
using Google.Protobuf.WellKnownTypes;
using HalfMsg.ProducerClient.Barrier;
using HalfMsg.ClientCore;
using HalfMsg.ClientCore.Tracing;
using HalfMsg.ClientCore.Transport;
using HalfMsg.Protocol.Grpc;
using HalfMsg.Protocol.Identifiers;
using HalfMsg.Protocol.V1;
using Microsoft.Extensions.Logging;

namespace HalfMsg.ProducerClient;

/// <summary>
/// A RocketMQ 5 producer: normal, FIFO, delay and transactional (half) messages, check-back handling, and the
/// database barrier (<see cref="ExecuteAsync(DbConnection, Message, Func{DbTransaction, CancellationToken, Task}, CancellationToken)"/>).
/// Thread-safe. Create with <see cref="StartAsync"/>, release with <c>await using</c>.
/// </summary>
public sealed class Producer : IAsyncDisposable
{
    /// <summary>This machine's name, read once: <see cref="Environment.MachineName"/> asks the system on every call.</summary>
    private static readonly string BornHost = Environment.MachineName;

    private readonly ProducerOptions _options;
    private readonly ClientSession _session;
    // Topics named in our Settings, each with the write that first declared it (complete for the configured ones). A topic
    // is never removed: once a send may have used it, a half of it may be waiting for a check-back to this producer.
    private readonly ConcurrentDictionary<string, Task> _topics = new(StringComparer.Ordinal);
    private readonly ILogger _logger;
    private readonly HalfSendCoalescer? _halfSends;
    private readonly DecisionCoalescer? _decisions;
    private readonly SemaphoreSlim _checkSlots;
    private volatile bool _decisionBatchUnimplemented;
    private int _roundRobin;
    private int _disposed;

    private Producer(ProducerOptions options, HttpMessageHandler? handler)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(options.MaxConcurrentChecks, 1, nameof(options.MaxConcurrentChecks));
        _options = options;
        _checkSlots = new SemaphoreSlim(options.MaxConcurrentChecks);
        foreach (string topic in options.Topics)
        {
            _topics.TryAdd(topic, Task.CompletedTask);
        }

        var config = new ClientConfig(options.Endpoints, options.Credentials, options.RequestTimeout, options.Namespace, options.LoggerFactory,
            ClientTls.Create(nameof(ProducerOptions), options.Endpoints, options.UseTls, options.Tls, options.LoggerFactory),
            options.ConnectTimeout, options.FailbackInterval, nameof(ProducerOptions))
        {
            // Check-backs from a HalfMsgBroker name their half, not only its id: see CheckAndAnswerAsync.
            AcceptsCheckTokens = true,
        };
        _session = new ClientSession(config, ClientType.Producer, group: null, BuildSettings, OnServerCommandAsync, handler);
        _logger = _session.Logger;
        if (options.HalfSendCallsInFlight > 0)
        {
            _halfSends = new HalfSendCoalescer(options.HalfSendCallsInFlight, maxMessages: 32, maxBytes: 1024 * 1024,
                (endpoint, request, ct) => _session.Channel.UnaryAsync(endpoint, (c, o) => c.SendMessageAsync(request, o), null, ct));
        }

        if (options.DecisionCallsInFlight > 0)
        {
            _decisions = new DecisionCoalescer(options.DecisionCallsInFlight, maxDecisions: 128, EndTransactionsAsync);
        }
    }

    /// <summary>Whether concurrent decisions are coalesced (<see cref="ProducerOptions.DecisionCallsInFlight"/>): only
    /// when the option allows it, the broker's Settings reply says it is a HalfMsgBroker, and it has not answered the
    /// batch call UNIMPLEMENTED (an older HalfMsgBroker).</summary>
    [System.Diagnostics.CodeAnalysis.MemberNotNullWhen(true, nameof(_decisions))]
    public bool CoalescesDecisions => _decisions is not null && !_decisionBatchUnimplemented && BrokerAgent.IsHalfMsgBroker(_session.ServerSettings);

    /// <summary>Calls made so far for coalesced decisions (EndTransactions, or EndTransaction batches after a fallback);
    /// for tests.</summary>
    internal long DecisionCallsMade => _decisions?.CallsMade ?? 0;

    /// <summary>Decisions that went in an EndTransactions call with others; for tests.</summary>
    internal long SharedCallDecisions => _decisions?.SharedCallDecisions ?? 0;

    /// <summary>One EndTransactions call; against a broker without it, EndTransaction per decision from then on, each
    /// decision with its own answer or failure.</summary>
    private async Task<DecisionReply> EndTransactionsAsync(Endpoint endpoint, EndTransactionsRequest request, CancellationToken ct)
    {
        if (!_decisionBatchUnimplemented)
        {
            try
            {
                return new DecisionReply(await _session.Channel.TransactionsUnaryAsync(endpoint, (c, o) => c.EndTransactionsAsync(request, o), null, ct)
                    .ConfigureAwait(false));
            }
            catch (TransportException ex) when (ex.GrpcStatus == Grpc.Core.StatusCode.Unimplemented)
            {
                _decisionBatchUnimplemented = true;
                _logger.LogInformation("The broker at {Endpoint} has no EndTransactions; decisions go one per call", endpoint);
            }
        }

        // Each call's failure is its decision's alone. Until 2026-12-05 these were joined with Task.WhenAll, whose
        // first failure became the answer of every decision of the batch, those the broker carried out too (found by
        // review).
        var failures = new Exception?[request.Decisions.Count];
        var response = new EndTransactionsResponse { Status = new Apache.Rocketmq.V2.Status { Code = Code.Ok, Message = "OK" } };
        Task<EndTransactionResponse>[] calls = [.. request.Decisions.Select(EndOneAsync)];
        for (int i = 0; i < calls.Length; i++)
        {
            try
            {
                response.Entries.Add((await calls[i].ConfigureAwait(false)).Status);
            }
            catch (Exception ex)
            {
                failures[i] = ex;
                response.Entries.Add(new Apache.Rocketmq.V2.Status { Code = Code.InternalError, Message = ex.Message });
            }
        }

        return new DecisionReply(response, failures);

        // Async, so that a failure to start one call (a disposed channel) is that decision's too.
        async Task<EndTransactionResponse> EndOneAsync(EndTransactionRequest decision) =>
            await _session.Channel.UnaryAsync(endpoint, (c, o) => c.EndTransactionAsync(decision, o), null, ct).ConfigureAwait(false);
    }

    /// <summary>Whether concurrent half sends are coalesced (<see cref="ProducerOptions.HalfSendCallsInFlight"/>): only
    /// when the option allows it and the broker's Settings reply says it is a HalfMsgBroker.</summary>
    [System.Diagnostics.CodeAnalysis.MemberNotNullWhen(true, nameof(_halfSends))]
    public bool CoalescesHalfSends => _halfSends is not null && BrokerAgent.IsHalfMsgBroker(_session.ServerSettings);

    /// <summary>The <c>x-mq-client-id</c> this producer is known by.</summary>
    public string ClientId => _session.Config.ClientId;

    /// <summary>Creates a producer, resolves the routes of <see cref="ProducerOptions.Topics"/>, opens Telemetry to
    /// their brokers and waits for the broker's Settings.</summary>
    public static Task<Producer> StartAsync(ProducerOptions options, CancellationToken cancellationToken = default) =>
        StartWithHandlerAsync(options, handler: null, cancellationToken);

    internal static async Task<Producer> StartWithHandlerAsync(ProducerOptions options, HttpMessageHandler? handler, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(options);
        var producer = new Producer(options, handler);
        try
        {
            await producer._session.StartAsync(options.Topics, cancellationToken).ConfigureAwait(false);
        }
        catch
        {
            await producer.DisposeAsync().ConfigureAwait(false);
            throw;
        }

        return producer;
    }

    /// <summary>Publishes a normal (or FIFO / delay) message. Transport errors, TOO_MANY_REQUESTS and internal errors
    /// are retried up to <see cref="ProducerOptions.MaxSendAttempts"/> times with the same message id.
    /// <para><paramref name="cancellationToken"/> cancels only until the message is on the wire: an
    /// <see cref="OperationCanceledException"/> means it was not sent. Once sent, the call is not cancelled (the broker
    /// may have stored the message) and its answer comes back, at most the request timeout later; a cancellation after a
    /// failed attempt stops the retries and throws that attempt's failure.</para></summary>
    public async Task<SendReceipt> SendAsync(Message message, CancellationToken cancellationToken = default)
    {
        (SendReceipt receipt, _) = await SendCoreAsync(message, transactional: false, cancellationToken).ConfigureAwait(false);
        return receipt;
    }

    /// <summary>
    /// Recalls a delay message before its delivery time by the <see cref="SendReceipt.RecallHandle"/> its send returned
    /// (RocketMQ 5.3's RecallMessage), and returns its message id: once this returns, the message is never delivered.
    /// Recalling it again is fine. A handle whose delivery time has passed (the message was delivered), or for another
    /// topic, or one the broker cannot read, throws <see cref="InternalErrorException"/> (the broker answers as Apache's
    /// proxy does). Not retried: a recall whose answer was lost may have gone through, and the caller knows whether
    /// asking again before the delivery time is worth it.
    /// </summary>
    public async Task<string> RecallAsync(string topic, string recallHandle, CancellationToken cancellationToken = default)
    {
        ArgumentException.ThrowIfNullOrEmpty(topic);
        ArgumentException.ThrowIfNullOrEmpty(recallHandle);
        ThrowIfDisposed();
        IReadOnlyList<MessageQueue> route = await _session.GetRouteAsync(topic, cancellationToken).ConfigureAwait(false);
        PublishTargets targets = PublishTargets.For(route, MessageType.Delay, validateType: false);
        if (targets.Endpoints.Length == 0)
        {
            throw new ForbiddenException(Code.Forbidden, $"Topic '{topic}' has no writable queue.");
        }

        var request = new RecallMessageRequest { Topic = _session.Resource(topic), RecallHandle = recallHandle };
        RecallMessageResponse response = await _session.Channel.UnaryAsync(targets.Endpoints[0], (c, o) => c.RecallMessageAsync(request, o), null, cancellationToken)
            .ConfigureAwait(false);
        StatusChecker.Check(response.Status, null);
        return response.MessageId;
    }

    /// <summary>Begins a transaction holding one half message.</summary>
    public ITransaction BeginTransaction()
    {
        ThrowIfDisposed();
        return new Transaction(this);
    }

    /// <summary>
    /// Two-phase message with a database barrier (dtm's "msg" pattern): sends <paramref name="message"/> as a half
    /// message, then in ONE local transaction on <paramref name="connection"/> inserts the barrier row (transaction id,
    /// <c>committed</c>; first, so a concurrent check-back waits for this transaction's outcome) and runs
    /// <paramref name="businessWrites"/>, commits it, and finally commits the half message.
    /// <para>If the business code throws, the local transaction and the half message are rolled back and the exception
    /// is rethrown. If the final half commit is lost, nothing is wrong: the broker's check-back reaches a
    /// <see cref="BarrierChecker"/>, which finds the committed row. If that check-back ran first and already decided
    /// "rolled back", the barrier insert conflicts and <see cref="BarrierConflictException"/> is thrown after the local
    /// rollback, so the business writes and the message are both discarded.</para>
    /// <para><paramref name="cancellationToken"/> cancels the half send only until it is on the wire (see
    /// <see cref="ITransaction.SendAsync"/>) and the local transaction until its commit; the final half commit is never
    /// cancelled.</para>
    /// </summary>
    /// <returns>The half message's receipt.</returns>
    public Task<SendReceipt> ExecuteAsync(DbConnection connection, Message message,
        Func<DbTransaction, CancellationToken, Task> businessWrites, CancellationToken cancellationToken = default) =>
        ExecuteAsync(connection, message, businessWrites, _options.BarrierDialect, cancellationToken);

    /// <summary>As <see cref="ExecuteAsync(DbConnection, Message, Func{DbTransaction, CancellationToken, Task}, CancellationToken)"/>
    /// with an explicit barrier dialect (null: detect from the connection).</summary>
    public async Task<SendReceipt> ExecuteAsync(DbConnection connection, Message message,
        Func<DbTransaction, CancellationToken, Task> businessWrites, IBarrierDialect? dialect, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(connection);
        ArgumentNullException.ThrowIfNull(message);
        ArgumentNullException.ThrowIfNull(businessWrites);
        dialect ??= BarrierDialects.Detect(connection);
        using Activity? span = ProducerTracing.StartInternal("execute", message.Topic, null); // the trace covers the local transaction
        if (connection.State != System.Data.ConnectionState.Open)
        {
            await connection.OpenAsync(cancellationToken).ConfigureAwait(false);
        }

        await BarrierSchema.EnsureCreatedOnceAsync(connection, dialect, cancellationToken).ConfigureAwait(false);
        // Stamped with this barrier table's owner: a checker on another database answers Unknown for it, not Rollback.
        string owner = await BarrierOwner.GetAsync(connection, dialect, BarrierSchema.DefaultTable, cancellationToken).ConfigureAwait(false);
        message = message.WithProperty(BarrierOwner.Property, owner);

        // The transaction id is only known once the broker accepted the half message, so the half goes first.
        ITransaction transaction = BeginTransaction();
        SendReceipt receipt = await transaction.SendAsync(message, cancellationToken).ConfigureAwait(false);
        string transactionId = receipt.TransactionId ?? receipt.MessageId;

        bool committing = false;
        try
        {
            await LocalBarrier.RunAsync(connection, dialect, transactionId, businessWrites, () => committing = true, cancellationToken).ConfigureAwait(false);
        }
        catch (Exception failure) when (!committing)
        {
            try
            {
                await transaction.RollbackAsync(CancellationToken.None).ConfigureAwait(false);
            }
            catch (Exception ex) when (ex is ClientException or ObjectDisposedException)
            {
                // The check-back resolves it: the checker inserts "rolled_back" (the business row never committed).
                _logger.LogWarning(ex, "Rolling back half message {MessageId} failed; the check-back will roll it back", receipt.MessageId);
            }

            ProducerTracing.Fail(span, failure);
            throw;
        }

        // A commit whose outcome we do not know (connection lost during COMMIT) ends here as an exception, without
        // a rollback of the half message: only the check-back can learn the truth from the barrier table.
        try
        {
            await transaction.CommitAsync(CancellationToken.None).ConfigureAwait(false);
        }
        catch (ClientException ex) when (ex.Code == Code.InvalidTransactionId)
        {
            // The broker rolled the half back without this commit: a check-back was answered Rollback while the local
            // transaction was still running. The business writes are committed and the message will never be
            // delivered. BarrierChecker cannot answer so (it waits for this transaction's barrier row).
            _logger.LogWarning(ex, "Committing half message {MessageId} was refused: the broker already resolved transaction {TransactionId} " +
                "without this commit; the local transaction is committed but the message will not be delivered", receipt.MessageId, transactionId);
            throw new TransactionCommitRejectedException(receipt, ex);
        }
        catch (ClientException ex) when (ex.Code == Code.NotFound)
        {
            // The broker no longer knows the transaction: a check-back decided it while this commit was on its way, and
            // the broker has since forgotten that decision (it keeps them for a bounded time and number). The outcome
            // was the checker's answer, which the broker cannot tell us: not "rejected", not "delivered" either.
            _logger.LogWarning(ex, "Committing half message {MessageId} found no transaction {TransactionId} at the broker: a check-back " +
                "decided it and the broker has forgotten the decision; the local transaction is committed and the message was delivered " +
                "only if the check-back answered Commit (BarrierChecker does)", receipt.MessageId, transactionId);
            throw new TransactionOutcomeUnknownException(receipt, ex);
        }
        catch (Exception ex) when (ex is ClientException or ObjectDisposedException)
        {
            // ObjectDisposedException: the producer was disposed (a host stopping) while the local transaction ran. The
            // local commit happened, so the caller must not take it for "nothing done" (the exception a call on a
            // disposed producer throws before anything happens): the check-back of a live producer decides.
            _logger.LogWarning(ex, "Committing half message {MessageId} failed; the broker's check-back decides transaction {TransactionId} " +
                "(Commit with BarrierChecker)", receipt.MessageId, transactionId);
            return receipt with { CommitConfirmed = false };
        }

        return receipt;
    }

    internal async Task<(SendReceipt Receipt, Endpoint Endpoint)> SendCoreAsync(Message message, bool transactional, CancellationToken ct)
    {
        ArgumentNullException.ThrowIfNull(message);
        ThrowIfDisposed();
        MessageType type = Classify(message, transactional);
        using Activity? span = ProducerTracing.StartSend(message, transactional, null);
        Settings? server = _session.ServerSettings;
        int maxBody = server?.Publishing?.MaxBodySize ?? 0;
        if (maxBody > 0 && message.Body.Length > maxBody)
        {
            throw new PayloadTooLargeException(Code.MessageBodyTooLarge, $"Message body of {message.Body.Length} bytes exceeds the broker's limit of {maxBody} bytes.");
        }

        if (message.Body.Length > RpcChannel.MaxBodySize)
        {
            // A broker that takes more (not a HalfMsgBroker) would store a message no client of ours can receive.
            throw new PayloadTooLargeException(Code.MessageBodyTooLarge,
                $"Message body of {message.Body.Length} bytes exceeds the client's limit of {RpcChannel.MaxBodySize} bytes (the largest body it can receive).");
        }

        IReadOnlyList<MessageQueue> route = await _session.GetRouteAsync(message.Topic, ct).ConfigureAwait(false);
        // A topic the broker did not hear about in our Settings: declare it so check-backs for it reach us. It is added
        // only after the route look-up (a first send to a topic not created yet declares nothing), and is never taken
        // back: until 2026-12-07 a first send cancelled while its Settings write waited removed it again, though the
        // write went on and a concurrent send to the topic (which did not wait) had stored its half; the next reconnect or
        // resync then left that half without a check-back path to this producer (found by review). Every send to the
        // topic now waits for that write (its own token stops only its own wait).
        Task declared = _topics.TryGetValue(message.Topic, out Task? known) ? known : Declare(message.Topic);
        if (!declared.IsCompleted)
        {
            // Bounded by the request timeout: a stream whose write never completes (a broker that stopped reading it)
            // does not hold every send to the topic until the stream ends. The topic stays declared; the write goes on.
            try
            {
                await declared.WaitAsync(_session.Config.RequestTimeout, ct).ConfigureAwait(false);
            }
            catch (TimeoutException)
            {
                _logger.LogDebug("The settings naming topic {Topic} are not written yet after {Timeout}; sending anyway", message.Topic, _session.Config.RequestTimeout);
            }
        }

        PublishTargets writable = PublishTargets.For(route, type, server?.Publishing?.ValidateMessageType == true);
        if (writable.Queues.Length == 0)
        {
            throw writable.NoWritableQueue
                ? new ForbiddenException(Code.Forbidden, $"Topic '{message.Topic}' has no writable queue.")
                : new BadRequestException(Code.MessagePropertyConflictWithType, $"Topic '{message.Topic}' does not accept {type} messages.");
        }

        string messageId = MessageIdGenerator.Shared.Next();
        span?.SetTag("messaging.message.id", messageId);
        int maxAttempts = transactional ? 1 : Math.Max(1, _options.MaxSendAttempts);
        int start = Interlocked.Increment(ref _roundRobin);
        ClientException? lastFailure = null; // the failure of the last attempt that went out, if one did
        for (int attempt = 1; ; attempt++)
        {
            // Each retry goes to the next queue (and possibly another broker), as the official clients do.
            int at = (int)((uint)(start + attempt - 1) % (uint)writable.Queues.Length);
            MessageQueue mq = writable.Queues[at];
            Endpoint endpoint = writable.Endpoints[at];
            Apache.Rocketmq.V2.Message proto = ToProto(message, messageId, type, mq.Id);
            try
            {
                SendResultEntry entry;
                if (transactional && CoalescesHalfSends)
                {
                    entry = await _halfSends.SendAsync(endpoint, proto, ct).ConfigureAwait(false);
                }
                else
                {
                    var request = new SendMessageRequest { Messages = { proto } };
                    // A message on the wire, a half or not, is not cancelled by its caller (see SendAsync and
                    // ITransaction.SendAsync): the caller gets the broker's answer, bounded by the request timeout;
                    // "cancelled" means it was not sent. Until the review of 2026-12-07 a normal send kept the caller's
                    // token, and a message the broker had stored could be reported cancelled (found by review).
                    ThrowIfCancelledBeforeAttempt(ct, lastFailure);
                    SendMessageResponse response = await _session.Channel.UnaryAsync(endpoint, (c, o) => c.SendMessageAsync(request, o), null, CancellationToken.None)
                        .ConfigureAwait(false);
                    entry = HalfSendCoalescer.EntryAt(response, 0, 1);
                }

                StatusChecker.Check(entry.Status, null);
                string? transactionId = string.IsNullOrEmpty(entry.TransactionId) ? null : entry.TransactionId;
                if (transactional && transactionId is null)
                {
                    throw new BadRequestException(Code.InvalidTransactionId, "The broker returned no transaction id for a half message.");
                }

                string id = string.IsNullOrEmpty(entry.MessageId) ? messageId : entry.MessageId;
                return (new SendReceipt(id, transactionId, entry.Offset) { RecallHandle = string.IsNullOrEmpty(entry.RecallHandle) ? null : entry.RecallHandle }, endpoint);
            }
            catch (ClientException ex) when (attempt < maxAttempts && ex.IsRetryable && !ct.IsCancellationRequested)
            {
                _logger.LogDebug(ex, "Send of {MessageId} attempt {Attempt} failed; retrying", messageId, attempt);
                span?.AddEvent(new ActivityEvent("retry", tags: new ActivityTagsCollection { ["attempt"] = attempt, ["error.type"] = ex.Code.ToString() }));
                lastFailure = ex;
                if (ex is TooManyRequestsException)
                {
                    try
                    {
                        await Task.Delay(ThrottleDelay(server, attempt), ct).ConfigureAwait(false);
                    }
                    catch (OperationCanceledException) when (ct.IsCancellationRequested)
                    {
                        ThrowIfCancelledBeforeAttempt(ct, lastFailure);
                    }
                }
            }
        }
    }

    /// <summary>Before an attempt of a send: a cancelled caller gets <see cref="OperationCanceledException"/> ("not sent")
    /// only when no earlier attempt went out; after one that failed (a timeout may have stored the message), that
    /// failure, not "cancelled".</summary>
    private static void ThrowIfCancelledBeforeAttempt(CancellationToken ct, ClientException? lastFailure)
    {
        if (!ct.IsCancellationRequested)
        {
            return;
        }

        if (lastFailure is not null)
        {
            System.Runtime.ExceptionServices.ExceptionDispatchInfo.Throw(lastFailure);
        }

        ct.ThrowIfCancellationRequested();
    }

    /// <summary>delay(n) = min(initial * multiplier^(n-1), max) from the server's backoff policy (defaults 10 ms, 2, 1 s,
    /// the Java proxy's producer values).</summary>
    private static TimeSpan ThrottleDelay(Settings? settings, int attempt)
    {
        ExponentialBackoff? b = settings?.BackoffPolicy?.ExponentialBackoff;
        TimeSpan initial = b?.Initial?.ToTimeSpan() ?? TimeSpan.FromMilliseconds(10);
        TimeSpan max = b?.Max?.ToTimeSpan() ?? TimeSpan.FromSeconds(1);
        double multiplier = b is { Multiplier: > 0 } ? b.Multiplier : 2;
        double ms = initial.TotalMilliseconds * Math.Pow(multiplier, attempt - 1);
        return TimeSpan.FromMilliseconds(Math.Min(ms, max.TotalMilliseconds));
    }

    private static MessageType Classify(Message message, bool transactional)
    {
        if (transactional)
        {
            if (message.MessageGroup is not null || message.DeliveryTimestamp is not null)
            {
                throw new ArgumentException("A transactional message cannot have a message group or a delivery timestamp.", nameof(message));
            }

            return MessageType.Transaction;
        }

        if (message.MessageGroup is not null && message.DeliveryTimestamp is not null)
        {
            throw new ArgumentException("A message cannot be both FIFO (message group) and delayed (delivery timestamp).", nameof(message));
        }

        return message.MessageGroup is not null ? MessageType.Fifo
            : message.DeliveryTimestamp is not null ? MessageType.Delay
            : MessageType.Normal;
    }

    private Apache.Rocketmq.V2.Message ToProto(Message message, string messageId, MessageType type, int queueId)
    {
        var sp = new SystemProperties
        {
            MessageId = messageId,
            BodyEncoding = Apache.Rocketmq.V2.Encoding.Identity,
            MessageType = type,
            BornTimestamp = Timestamp.FromDateTimeOffset(DateTimeOffset.UtcNow),
            BornHost = BornHost,
            QueueId = queueId,
            // No body digest: no official client sends one on publish, and neither the Apache proxy nor HalfMsgBroker
            // reads one (until 2026-12-06 this producer sent a CRC32 in decimal, a form only Node's client verifies).
        };
        sp.Keys.AddRange(message.Keys);
        if (message.Tag is { } tag)
        {
            sp.Tag = tag;
        }

        if (message.MessageGroup is { } group)
        {
            sp.MessageGroup = group;
        }

        if (message.DeliveryTimestamp is { } at)
        {
            sp.DeliveryTimestamp = Timestamp.FromDateTimeOffset(at);
        }

        var m = new Apache.Rocketmq.V2.Message
        {
            Topic = _session.Resource(message.Topic),
            SystemProperties = sp,
            // Wrapped, not copied: Message.Body documents that the caller leaves it unchanged until the send completes.
            Body = UnsafeByteOperations.UnsafeWrap(message.Body),
        };
        foreach (KeyValuePair<string, string> p in message.Properties)
        {
            m.UserProperties[p.Key] = p.Value;
        }

        // The send span's context (or the caller's, with no listener on our source) unless the user set one.
        TraceContextProperties.Inject(Activity.Current, message.Properties, m.UserProperties);

        return m;
    }

    internal async Task EndTransactionAsync(Endpoint endpoint, string topic, string messageId, string transactionId,
        TransactionResolution resolution, TransactionSource source, CancellationToken ct)
    {
        using Activity? span = ProducerTracing.StartInternal("end_transaction", topic, null, ActivityKind.Client);
        span?.SetTag("messaging.message.id", messageId);
        span?.SetTag("messaging.rocketmq.transaction.resolution", resolution.ToString().ToLowerInvariant());
        var request = new EndTransactionRequest
        {
            Topic = _session.Resource(topic),
            MessageId = messageId,
            TransactionId = transactionId,
            Resolution = resolution switch
            {
                TransactionResolution.Commit => Apache.Rocketmq.V2.TransactionResolution.Commit,
                TransactionResolution.Rollback => Apache.Rocketmq.V2.TransactionResolution.Rollback,
                // The protocol has no UNKNOWN value: unspecified is "unknown" to the Apache proxy (EndTransactionActivity
                // maps it to TransactionStatus.UNKNOWN, which changes nothing) and to HalfMsgBroker alike.
                _ => Apache.Rocketmq.V2.TransactionResolution.Unspecified,
            },
            Source = source,
            TraceContext = Activity.Current?.Id ?? string.Empty,
        };
        // A decision on the wire is not cancelled by its caller (see ITransaction.CommitAsync): the broker may already
        // have carried it out. The caller gets its answer, bounded by the request timeout; "cancelled" means not sent.
        Apache.Rocketmq.V2.Status status;
        if (CoalescesDecisions)
        {
            status = await _decisions.EndAsync(endpoint, request, ct).ConfigureAwait(false);
        }
        else
        {
            ct.ThrowIfCancellationRequested();
            status = (await _session.Channel.UnaryAsync(endpoint, (c, o) => c.EndTransactionAsync(request, o), null, CancellationToken.None)
                .ConfigureAwait(false)).Status;
        }

        StatusChecker.Check(status, null);
    }

    /// <summary>Adds <paramref name="topic"/> to the Settings and re-sends them on every Telemetry stream; returns the
    /// write's task (or the one a concurrent send started). The write is not the caller's: it goes on if the caller stops
    /// waiting, and a failed write leaves the topic declared (a reconnect re-sends the Settings).</summary>
    private Task Declare(string topic)
    {
        var written = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        Task declared = _topics.GetOrAdd(topic, written.Task);
        if (ReferenceEquals(declared, written.Task))
        {
            _ = WriteDeclarationAsync(written); // the topic is in _topics now, so the Settings written name it
        }

        return declared;
    }

    private async Task WriteDeclarationAsync(TaskCompletionSource written)
    {
        try
        {
            await _session.ResendSettingsAsync(CancellationToken.None).ConfigureAwait(false);
        }
        catch (Exception ex)
        {
            _logger.LogDebug(ex, "Re-sending the settings for a new topic failed; the next reconnect or resync sends them");
        }
        finally
        {
            written.TrySetResult();
        }
    }

    private Settings BuildSettings()
    {
        var publishing = new Publishing { ValidateMessageType = true };
        foreach (string topic in _topics.Keys)
        {
            publishing.Topics.Add(_session.Resource(topic));
        }

        return new Settings
        {
            ClientType = ClientType.Producer,
            AccessPoint = _session.Config.AccessPoint.ToProto(),
            RequestTimeout = Duration.FromTimeSpan(_session.Config.RequestTimeout),
            Publishing = publishing,
            UserAgent = ClientSession.UserAgent(),
        };
    }

    private async Task OnServerCommandAsync(Endpoint endpoint, TelemetryCommand command, CancellationToken ct)
    {
        if (command.CommandCase != TelemetryCommand.CommandOneofCase.RecoverOrphanedTransactionCommand)
        {
            return;
        }

        RecoverOrphanedTransactionCommand check = command.RecoverOrphanedTransactionCommand;
        if (_options.TransactionChecker is not { } checker)
        {
            _logger.LogWarning("Check-back for transaction {TransactionId} ignored: no TransactionChecker configured", check.TransactionId);
            return;
        }

        if (check.Message?.SystemProperties is null || check.Message.Topic is null)
        {
            _logger.LogWarning("Check-back for transaction {TransactionId} ignored: the message has no topic or system properties", check.TransactionId);
            return;
        }

        // One check of a transaction at a time: while a check waits for a slot or runs, the broker asks again about the
        // same half at each check interval; each command holds the half's body. Until the afternoon session of
        // 2026-12-06 every one was queued behind MaxConcurrentChecks without bound, and a slow checker (a database
        // outage) piled up the same halves again and again (found by review). A check dropped here is asked again.
        if (Volatile.Read(ref _checksWaiting) >= MaxChecksWaiting || !_checksInProgress.TryAdd(check.TransactionId, 0))
        {
            Interlocked.Increment(ref _checksDropped);
            _logger.LogDebug("Check-back for transaction {TransactionId} dropped: a check of it is already waiting or running, or {Max} are; the broker asks again",
                check.TransactionId, MaxChecksWaiting);
            return;
        }

        Interlocked.Increment(ref _checksWaiting);
        try
        {
            await CheckAndAnswerAsync(endpoint, check, checker, ct).ConfigureAwait(false);
        }
        finally
        {
            Interlocked.Decrement(ref _checksWaiting);
            _checksInProgress.TryRemove(check.TransactionId, out _);
        }
    }

    // Transactions whose check-back waits for a slot or runs (OnServerCommandAsync), and how many; past the bound new
    // checks are dropped (the broker asks again at its next check).
    private readonly System.Collections.Concurrent.ConcurrentDictionary<string, byte> _checksInProgress = new(StringComparer.Ordinal);
    private int _checksWaiting;
    private long _checksDropped;
    private const int MaxChecksWaiting = 10_000;

    /// <summary>Check-back commands dropped because a check of the same transaction was waiting or running, or too many were.</summary>
    internal long ChecksDropped => Interlocked.Read(ref _checksDropped);

    private async Task CheckAndAnswerAsync(Endpoint endpoint, RecoverOrphanedTransactionCommand check, ITransactionChecker checker, CancellationToken ct)
    {
        // The checker gets the transaction id the send gave, without the check token a HalfMsgBroker adds after it
        // (CheckTokenIds; asked for by ClientConfig.AcceptsCheckTokens); the answer echoes the whole id, so the broker
        // refuses it if it is late and the id has been taken again by a newer half meanwhile.
        MessageView view = MessageView.FromProto(check.Message, CheckTokenIds.Strip(check.TransactionId, check.Message.SystemProperties.MessageId));
        TraceContextProperties.TryExtract(view.Properties, out ActivityContext halfContext);
        using Activity? span = ProducerTracing.StartInternal("check_transaction", view.Topic, null, ActivityKind.Consumer, halfContext);
        span?.SetTag("messaging.message.id", view.MessageId);
        TransactionResolution resolution;
        // Until 2026-12-05 every check ran at once (found by review): a burst could take every pooled connection the
        // business writes need, or, on SQLite, a pool thread each while waiting for the write lock.
        await _checkSlots.WaitAsync(ct).ConfigureAwait(false);
        try
        {
            resolution = await checker.CheckAsync(view, ct).ConfigureAwait(false);
        }
        catch (Exception ex) when (ex is not OperationCanceledException || !ct.IsCancellationRequested)
        {
            // A checker that fails (a pool timeout, a database restart, a statement timeout) has no answer: say Unknown.
            // Until 2026-12-05 the exception left the check unanswered, and the broker took its next check to another
            // instance of the group, possibly another service whose barrier knows nothing of this transaction and
            // answers Rollback: a committed local transaction lost its event (found by review).
            _logger.LogWarning(ex, "The transaction checker failed for transaction {TransactionId}; answering Unknown (the broker asks again)", check.TransactionId);
            resolution = TransactionResolution.Unknown;
        }
        finally
        {
            _checkSlots.Release();
        }

        if (resolution != TransactionResolution.Unknown)
        {
            try
            {
                await EndTransactionAsync(endpoint, view.Topic, view.MessageId, check.TransactionId, resolution,
                    TransactionSource.SourceServerCheck, ct).ConfigureAwait(false);
            }
            catch (ClientException ex) when (ex.Code == Code.NotFound)
            {
                // The half the check asked about is gone: decided meanwhile, or (the check token says so) an earlier half
                // of an id sent again since. The answer changed nothing, which is what the token is for: no failure. Until
                // the afternoon session of 2026-12-07 it was logged as an Error of the Telemetry handler, token and all.
                _logger.LogInformation(ex, "The check-back answer {Resolution} for transaction {TransactionId} was refused: the half it was asked about (check {CheckTransactionId}) is no longer pending, and nothing changed",
                    resolution, view.TransactionId, check.TransactionId);
            }

            return;
        }

        // "Unknown" is said, not left unsaid (the official Java and Node clients send nothing). HalfMsgBroker takes a
        // check left unanswered until the half is due again for an unreachable instance and asks another instance of
        // the group next; with group = topic that can be another service, whose checker knows nothing of this local
        // transaction (a BarrierChecker there answers Rollback). Answered, this instance stays first for the half.
        try
        {
            await EndTransactionAsync(endpoint, view.Topic, view.MessageId, check.TransactionId, resolution,
                TransactionSource.SourceServerCheck, ct).ConfigureAwait(false);
        }
        catch (ClientException ex)
        {
            // Nothing is lost: the half stays pending and the broker asks again at its next check.
            _logger.LogInformation(ex, "Answering Unknown to the check-back of transaction {TransactionId} failed; the broker asks again later",
                check.TransactionId);
        }
    }

    private void ThrowIfDisposed() => ObjectDisposedException.ThrowIf(Volatile.Read(ref _disposed) != 0, this);

    /// <summary>Notifies the brokers (NotifyClientTermination), waits briefly for running check-backs, and closes the
    /// connections.</summary>
    public async ValueTask DisposeAsync()
    {
        if (Interlocked.Exchange(ref _disposed, 1) != 0)
        {
            return;
        }

        await _session.DisposeAsync().ConfigureAwait(false);
    }

    private sealed class Transaction(Producer producer) : ITransaction
    {
        private string? _topic;
        private SendReceipt? _receipt;
        private Endpoint? _endpoint;
        private int _state; // 0 new, 1 sending, 2 sent, 3 ended

        public async Task<SendReceipt> SendAsync(Message message, CancellationToken cancellationToken = default)
        {
            if (Interlocked.CompareExchange(ref _state, 1, 0) != 0)
            {
                throw new InvalidOperationException("A transaction holds exactly one message.");
            }

            try
            {
                (SendReceipt receipt, Endpoint endpoint) = await producer.SendCoreAsync(message, transactional: true, cancellationToken).ConfigureAwait(false);
                _topic = message.Topic;
                _receipt = receipt;
                _endpoint = endpoint;
                Volatile.Write(ref _state, 2);
                return receipt;
            }
            catch
            {
                Volatile.Write(ref _state, 3);
                throw;
            }
        }

        public Task CommitAsync(CancellationToken cancellationToken = default) => EndAsync(TransactionResolution.Commit, cancellationToken);

        public Task RollbackAsync(CancellationToken cancellationToken = default) => EndAsync(TransactionResolution.Rollback, cancellationToken);

        private Task EndAsync(TransactionResolution resolution, CancellationToken ct)
        {
            if (Interlocked.CompareExchange(ref _state, 3, 2) != 2)
            {
                throw new InvalidOperationException("The transaction has no sent message, or was already committed or rolled back.");
            }

            return EndCoreAsync(resolution, ct);
        }

        private async Task EndCoreAsync(TransactionResolution resolution, CancellationToken ct)
        {
            try
            {
                await producer.EndTransactionAsync(_endpoint!, _topic!, _receipt!.MessageId, _receipt.TransactionId!,
                    resolution, TransactionSource.SourceClient, ct).ConfigureAwait(false);
            }
            catch (OperationCanceledException) when (ct.IsCancellationRequested)
            {
                // Cancelled before the decision went on the wire (once sent, a decision is not cancelled): nothing was
                // decided, so the caller may still commit or roll back.
                Volatile.Write(ref _state, 2);
                throw;
            }
            catch (ClientException)
            {
                // The decision failed (a broker that could not be reached, a timeout, an error answer): whether it took
                // effect is not known, and the broker takes a repeated identical decision as success and keeps the first
                // of two different ones, so the caller may decide again, as the official clients allow (until the
                // afternoon session of 2026-12-06 a second commit threw "already committed or rolled back", which it
                // was not; found by review). Left alone, the broker's check-back decides.
                Volatile.Write(ref _state, 2);
                throw;
            }
        }
    }
}
