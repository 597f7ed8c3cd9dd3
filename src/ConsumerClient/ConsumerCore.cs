using Apache.Rocketmq.V2;
using Google.Protobuf.WellKnownTypes;
using HalfMsg.ClientCore;
using HalfMsg.ClientCore.Transport;
using HalfMsg.Protocol.Grpc;

namespace HalfMsg.ConsumerClient;

/// <summary>The consumer RPCs shared by <see cref="SimpleConsumer"/> and <see cref="PushConsumer"/>.</summary>
internal sealed class ConsumerCore : IAsyncDisposable
{
    private readonly Resource _group;
    private readonly IReadOnlyDictionary<string, string> _subscriptions;
    private readonly ClientType _clientType;
    private readonly TimeSpan? _longPolling;

    public ConsumerCore(ClientConfig config, ClientType clientType, string group, IReadOnlyDictionary<string, string> subscriptions,
        TimeSpan? longPolling, HttpMessageHandler? handler)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(group);
        ArgumentNullException.ThrowIfNull(subscriptions);
        if (subscriptions.Count == 0)
        {
            throw new ArgumentException("At least one subscription is required.", nameof(subscriptions));
        }

        _clientType = clientType;
        _subscriptions = subscriptions;
        _longPolling = longPolling;
        _group = new Resource { Name = group, ResourceNamespace = config.Namespace ?? string.Empty };
        Session = new ClientSession(config, clientType, _group, BuildSettings, onCommand: null, handler);
    }

    public ClientSession Session { get; }

    public Resource Group => _group;

    public IReadOnlyDictionary<string, string> Subscriptions => _subscriptions;

    public Task StartAsync(CancellationToken ct) => Session.StartAsync(_subscriptions.Keys, ct);

    private Settings BuildSettings()
    {
        var subscription = new Subscription { Group = _group };
        foreach ((string topic, string expression) in _subscriptions)
        {
            subscription.Subscriptions.Add(new SubscriptionEntry { Topic = Session.Resource(topic), Expression = Filter(expression) });
        }

        if (_longPolling is { } lp)
        {
            subscription.LongPollingTimeout = Duration.FromTimeSpan(lp);
        }

        return new Settings
        {
            ClientType = _clientType,
            AccessPoint = Session.Config.AccessPoint.ToProto(),
            RequestTimeout = Duration.FromTimeSpan(Session.Config.RequestTimeout),
            Subscription = subscription,
            UserAgent = ClientSession.UserAgent(),
        };
    }

    /// <summary><c>SQL92:</c> prefix selects SQL filtering; anything else is a tag expression.</summary>
    private static FilterExpression Filter(string expression)
    {
        const string sqlPrefix = "SQL92:";
        return expression.StartsWith(sqlPrefix, StringComparison.OrdinalIgnoreCase)
            ? new FilterExpression { Type = FilterType.Sql, Expression = expression[sqlPrefix.Length..] }
            : new FilterExpression { Type = FilterType.Tag, Expression = string.IsNullOrWhiteSpace(expression) ? "*" : expression };
    }

    public async Task<IReadOnlyList<MessageQueue>> ReadableQueuesAsync(string topic, CancellationToken ct)
    {
        IReadOnlyList<MessageQueue> route = await Session.GetRouteAsync(topic, ct).ConfigureAwait(false);
        List<MessageQueue> readable = route.Where(q => q.Permission is Permission.Read or Permission.ReadWrite).ToList();
        if (readable.Count == 0)
        {
            throw new ForbiddenException(Code.Forbidden, $"Topic '{topic}' has no readable queue.");
        }

        return readable;
    }

    /// <summary>One ReceiveMessage call. MESSAGE_NOT_FOUND is an empty result; other non-OK statuses throw.</summary>
    public async Task<IReadOnlyList<ReceivedMessage>> ReceiveAsync(MessageQueue queue, int batchSize, TimeSpan? invisibleDuration,
        TimeSpan longPolling, CancellationToken ct)
    {
        Endpoint endpoint = Endpoint.FromProto(queue.Broker.Endpoints);
        string topic = queue.Topic.Name;
        var request = new ReceiveMessageRequest
        {
            Group = _group,
            MessageQueue = queue,
            FilterExpression = Filter(_subscriptions.TryGetValue(topic, out string? e) ? e : "*"),
            BatchSize = batchSize,
            AutoRenew = false,
            LongPollingTimeout = Duration.FromTimeSpan(longPolling),
            AttemptId = Guid.NewGuid().ToString(),
        };
        if (invisibleDuration is { } d)
        {
            request.InvisibleDuration = Duration.FromTimeSpan(d);
        }

        // The broker holds the call up to the long-polling time; the deadline leaves a request timeout on top.
        TimeSpan deadline = longPolling + Session.Config.RequestTimeout;
        await using StreamingCall<ReceiveMessageResponse> call = Session.Channel.ServerStreaming(endpoint,
            (c, o) => c.ReceiveMessage(request, o), deadline, ct);
        Status? status = null;
        var messages = new List<ReceivedMessage>();
        while (await call.MoveNextAsync(ct).ConfigureAwait(false))
        {
            ReceiveMessageResponse response = call.Current;
            switch (response.ContentCase)
            {
                case ReceiveMessageResponse.ContentOneofCase.Status:
                    status = response.Status;
                    break;
                case ReceiveMessageResponse.ContentOneofCase.Message:
                    messages.Add(new ReceivedMessage(this, endpoint, response.Message));
                    break;
            }
        }

        StatusChecker.Check(status, null, messageNotFoundIsSuccess: true);
        return messages;
    }

    public async Task AckAsync(ReceivedMessage message, CancellationToken ct)
    {
        var request = new AckMessageRequest
        {
            Group = _group,
            Topic = Session.Resource(message.Topic),
            Entries = { new AckMessageEntry { MessageId = message.MessageId, ReceiptHandle = message.ReceiptHandle } },
        };
        AckMessageResponse response = await Session.Channel.UnaryAsync(message.Endpoint, (c, o) => c.AckMessageAsync(request, o), null, ct)
            .ConfigureAwait(false);
        StatusChecker.Check(response.Status, null);
        foreach (AckMessageResultEntry entry in response.Entries)
        {
            StatusChecker.Check(entry.Status, null);
        }
    }

    /// <summary>Most entries the broker takes in one AckMessage call (HalfMsgBroker refuses a larger call as a whole).</summary>
    internal const int MaxAckEntriesPerCall = 1024;

    /// <summary>One AckMessage call per endpoint and topic for the whole batch (split into calls of at most
    /// <see cref="MaxAckEntriesPerCall"/> entries): the broker appends all the acks and waits for one group commit.
    /// Every entry is acknowledged or reported; the first failure is thrown after all. A call the broker refuses as a
    /// whole (a top-level error status with no entries, or fewer entries than sent) is a failure of each of its
    /// messages.</summary>
    public async Task AckAsync(IReadOnlyList<ReceivedMessage> messages, CancellationToken ct)
    {
        Exception? first = null;
        foreach (var batch in messages.GroupBy(m => (m.Endpoint, m.Topic)))
        {
            foreach (ReceivedMessage[] chunk in batch.Chunk(MaxAckEntriesPerCall))
            {
                var request = new AckMessageRequest { Group = _group, Topic = Session.Resource(batch.Key.Topic) };
                foreach (var message in chunk)
                    request.Entries.Add(new AckMessageEntry { MessageId = message.MessageId, ReceiptHandle = message.ReceiptHandle });
                try
                {
                    AckMessageResponse response = await Session.Channel.UnaryAsync(batch.Key.Endpoint, (c, o) => c.AckMessageAsync(request, o), null, ct)
                        .ConfigureAwait(false);
                    Exception? entryError = null;
                    foreach (AckMessageResultEntry entry in response.Entries)
                    {
                        try { StatusChecker.Check(entry.Status, null); }
                        catch (ClientException ex) { entryError ??= ex; }
                    }

                    if (entryError is null && response.Entries.Count < request.Entries.Count)
                    {
                        // Refused as a whole (too many entries, storage fault, authentication...), or an answer that does
                        // not cover every entry: the entries without an answer were not acknowledged.
                        entryError = response.Status is { } status && !StatusChecker.IsSuccess(status)
                            ? StatusChecker.ToException(status, null)
                            : new ClientException(Code.Unspecified,
                                $"AckMessage answered {response.Entries.Count} of {request.Entries.Count} entries; the others were not acknowledged");
                    }
                    else if (entryError is null && response.Status is { } status && !StatusChecker.IsSuccess(status))
                    {
                        entryError = StatusChecker.ToException(status, null);
                    }

                    first ??= entryError;
                }
                catch (Exception ex) when (ex is not OperationCanceledException)
                {
                    first ??= ex;
                }
            }
        }
        if (first is not null) System.Runtime.ExceptionServices.ExceptionDispatchInfo.Throw(first);
    }

    public async Task<string> ChangeInvisibleDurationAsync(ReceivedMessage message, TimeSpan duration, CancellationToken ct)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(duration, TimeSpan.Zero);
        var request = new ChangeInvisibleDurationRequest
        {
            Group = _group,
            Topic = Session.Resource(message.Topic),
            ReceiptHandle = message.ReceiptHandle,
            InvisibleDuration = Duration.FromTimeSpan(duration),
            MessageId = message.MessageId,
        };
        ChangeInvisibleDurationResponse response = await Session.Channel.UnaryAsync(message.Endpoint,
            (c, o) => c.ChangeInvisibleDurationAsync(request, o), null, ct).ConfigureAwait(false);
        StatusChecker.Check(response.Status, null);
        return response.ReceiptHandle;
    }

    public async Task ForwardToDeadLetterQueueAsync(ReceivedMessage message, int maxAttempts, CancellationToken ct)
    {
        var request = new ForwardMessageToDeadLetterQueueRequest
        {
            Group = _group,
            Topic = Session.Resource(message.Topic),
            ReceiptHandle = message.ReceiptHandle,
            MessageId = message.MessageId,
            DeliveryAttempt = message.DeliveryAttempt,
            MaxDeliveryAttempts = maxAttempts,
        };
        ForwardMessageToDeadLetterQueueResponse response = await Session.Channel.UnaryAsync(message.Endpoint,
            (c, o) => c.ForwardMessageToDeadLetterQueueAsync(request, o), null, ct).ConfigureAwait(false);
        if (response.Status is null)
        {
            throw new UnsupportedException(Code.Unspecified, "ForwardMessageToDeadLetterQueue returned no status.");
        }

        StatusChecker.Check(response.Status, null);
    }

    public async Task<IReadOnlyList<MessageQueue>> QueryAssignmentAsync(string topic, CancellationToken ct)
    {
        IReadOnlyList<MessageQueue> route = await Session.GetRouteAsync(topic, ct).ConfigureAwait(false);
        Endpoint endpoint = Endpoint.FromProto(route[0].Broker.Endpoints);
        var request = new QueryAssignmentRequest
        {
            Topic = Session.Resource(topic),
            Group = _group,
            Endpoints = Session.Config.AccessPoint.ToProto(),
        };
        QueryAssignmentResponse response = await Session.Channel.UnaryAsync(endpoint, (c, o) => c.QueryAssignmentAsync(request, o), null, ct)
            .ConfigureAwait(false);
        StatusChecker.Check(response.Status, null);
        return response.Assignments.Select(a => a.MessageQueue).Where(q => q?.Broker?.Endpoints is not null).ToList();
    }

    public ValueTask DisposeAsync() => Session.DisposeAsync();
}
