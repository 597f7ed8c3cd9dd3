using System.Runtime.CompilerServices;
using Apache.Rocketmq.V2;
using Grpc.Core;
using Status = Apache.Rocketmq.V2.Status;
using HalfMsg.Broker.Core.Model;

namespace HalfMsg.Broker.FrontEnds.GrpcV5;

internal sealed partial class MessagingService
{
    /// <summary>
    /// Publishes each message (NORMAL, FIFO, DELAY, or a TRANSACTION half) and answers exactly one entry per message,
    /// in order: the Node client builds one receipt per entry and a transaction's commit() uses it. A half's producer
    /// group is its topic name and its transaction id is whatever the core returns, as with the Apache proxy.
    /// </summary>
    public override async Task<SendMessageResponse> SendMessage(SendMessageRequest request, ServerCallContext context)
    {
        if (request.Messages.Count == 0)
        {
            return new SendMessageResponse { Status = V5Status.Of(Code.BadRequest, "no message to send") };
        }
        if (request.Messages.Count > MaxEntriesPerCall)
        {
            return new SendMessageResponse { Status = V5Status.Of(Code.BadRequest, $"{request.Messages.Count} messages in one call; at most {MaxEntriesPerCall}") };
        }

        string clientId = ClientId(context);
        string ns = V5Namespace.Of(context);
        var inflateBudget = new StrongBox<long>(_options.MaxReceiveMessageSize);
        var response = new SendMessageResponse();
        if (request.Messages.Count > 1 && !request.Messages.Any(m => m.SystemProperties?.MessageType == MessageType.Transaction))
        {
            await SendBatchAsync(request, response, ns, inflateBudget, context.CancellationToken).ConfigureAwait(false);
        }
        else if (request.Messages.Count > 1 && request.Messages.All(m => m.SystemProperties?.MessageType == MessageType.Transaction))
        {
            await SendHalvesAsync(request, response, clientId, ns, inflateBudget, context.CancellationToken).ConfigureAwait(false);
        }
        else
        {
            // One message, or halves mixed with other kinds (our producer only sends halves together): each is stored
            // on its own, as if sent alone, but all at once, so they share group commits instead of waiting for one
            // after another. Entries stay in request order. Each
            // SendOneAsync converts its message (and charges the shared inflate budget) before its first await, so the
            // budget is charged in order on this thread.
            var sends = new Task<SendResultEntry>[request.Messages.Count];
            for (int i = 0; i < sends.Length; i++)
            {
                sends[i] = SendOneAsync(request.Messages[i], clientId, ns, inflateBudget, context.CancellationToken).AsTask();
            }

            foreach (Task<SendResultEntry> send in sends)
            {
                response.Entries.Add(await send.ConfigureAwait(false));
            }
        }

        response.Status = V5Status.Combine(response.Entries.Select(e => e.Status).ToList());
        return response;
    }

    /// <summary>
    /// Several non-transactional messages in one request go to the core's batch entry point: appended under one lock
    /// hold, ONE durable wait for the whole request (as AckMessage does), instead of one group commit per message in
    /// a row. A message that fails conversion gets its own entry and does not stop the others.
    /// </summary>
    private async Task SendBatchAsync(SendMessageRequest request, SendMessageResponse response, string ns, StrongBox<long> inflateBudget, CancellationToken ct)
    {
        var entries = new SendResultEntry?[request.Messages.Count];
        var drafts = new List<MessageDraft>(request.Messages.Count);
        var draftIndex = new List<int>(request.Messages.Count);
        for (int i = 0; i < entries.Length; i++)
        {
            Message message = request.Messages[i];
            if (V5MessageConverter.TryToDraft(message, ns, _engine.Options.MaxMessageSize, ref inflateBudget.Value, out MessageDraft? draft, out Status? invalid))
            {
                drafts.Add(draft);
                draftIndex.Add(i);
            }
            else
            {
                entries[i] = new SendResultEntry { Status = invalid, MessageId = message.SystemProperties?.MessageId ?? string.Empty };
            }
        }

        if (drafts.Count > 0)
        {
            SendResult[] sent = await _engine.SendBatchAsync(drafts, ct).ConfigureAwait(false);
            for (int j = 0; j < sent.Length; j++)
            {
                int i = draftIndex[j];
                entries[i] = new SendResultEntry
                {
                    Status = V5Status.From(sent[j].Error),
                    MessageId = sent[j].IsOk ? sent[j].MessageId : request.Messages[i].SystemProperties?.MessageId ?? string.Empty,
                    Offset = sent[j].QueueOffset,
                    RecallHandle = RecallHandleOf(sent[j], drafts[j]),
                };
            }
        }

        foreach (SendResultEntry? entry in entries) response.Entries.Add(entry!);
    }

    /// <summary>
    /// Several halves in one request (our producer coalesces concurrent transactions' sends; the Apache broker refuses
    /// such a batch): each is stored as if sent alone, with its own transaction and entry, but all under one hold of
    /// the core's lock and ONE durable wait. A half that fails conversion or is refused gets its own entry and does not
    /// stop the others.
    /// </summary>
    private async Task SendHalvesAsync(SendMessageRequest request, SendMessageResponse response, string clientId, string ns, StrongBox<long> inflateBudget, CancellationToken ct)
    {
        var entries = new SendResultEntry?[request.Messages.Count];
        var halves = new List<HalfDraft>(entries.Length);
        var halfIndex = new List<int>(entries.Length);
        for (int i = 0; i < entries.Length; i++)
        {
            Message message = request.Messages[i];
            string messageId = message.SystemProperties?.MessageId ?? string.Empty;
            if (!V5MessageConverter.TryToDraft(message, ns, _engine.Options.MaxMessageSize, ref inflateBudget.Value, out MessageDraft? draft, out Status? invalid))
            {
                entries[i] = new SendResultEntry { Status = invalid, MessageId = messageId };
            }
            else if (!TryGetImmunity(message, out TimeSpan? immunity))
            {
                entries[i] = InvalidImmunity(messageId);
            }
            else
            {
                halves.Add(new HalfDraft(draft, draft.Topic, clientId, immunity));
                halfIndex.Add(i);
            }
        }

        if (halves.Count > 0)
        {
            SendHalfResult[] stored = await _engine.SendHalvesAsync(halves, ct).ConfigureAwait(false);
            for (int j = 0; j < stored.Length; j++)
            {
                entries[halfIndex[j]] = HalfEntry(stored[j], halves[j].Message.MessageId);
            }
        }

        foreach (SendResultEntry? entry in entries) response.Entries.Add(entry!);
    }

    /// <summary>
    /// The time before a half's first check-back that its producer asks for: <c>orphaned_transaction_recovery_duration</c>
    /// when set (it wins, as in the Apache proxy), else the CHECK_IMMUNITY_TIME_IN_SECONDS user property, which is how the
    /// RocketMQ 5 clients (ours included) ask for it, read as the Remoting path reads it. False when the duration is not a
    /// valid protobuf Duration.
    /// </summary>
    private static bool TryGetImmunity(Message message, out TimeSpan? immunity)
    {
        if (!V5Time.TryToTimeSpan(message.SystemProperties!.OrphanedTransactionRecoveryDuration, out immunity))
        {
            return false;
        }

        immunity ??= CheckImmunityProperty.Of(message.UserProperties);
        return true;
    }

    private static SendResultEntry InvalidImmunity(string messageId) => new()
    {
        Status = V5Status.Of(Code.BadRequest, "system_properties.orphaned_transaction_recovery_duration is not a valid duration"),
        MessageId = messageId,
    };

    private static SendResultEntry HalfEntry(SendHalfResult half, string messageId) => new()
    {
        Status = V5Status.From(half.Error),
        MessageId = half.IsOk ? half.MessageId : messageId,
        TransactionId = half.TransactionId ?? string.Empty,
    };

    private async ValueTask<SendResultEntry> SendOneAsync(Message message, string clientId, string ns, StrongBox<long> inflateBudget, CancellationToken ct)
    {
        SystemProperties? sp = message.SystemProperties;
        string messageId = sp?.MessageId ?? string.Empty;
        if (!V5MessageConverter.TryToDraft(message, ns, _engine.Options.MaxMessageSize, ref inflateBudget.Value, out MessageDraft? draft, out Status? invalid))
        {
            return new SendResultEntry { Status = invalid, MessageId = messageId };
        }

        if (sp!.MessageType == MessageType.Transaction)
        {
            if (!TryGetImmunity(message, out TimeSpan? immunity))
            {
                return InvalidImmunity(messageId);
            }

            return HalfEntry(await _engine.SendHalfAsync(draft, draft.Topic, clientId, immunity, ct).ConfigureAwait(false), messageId);
        }

        SendResult sent = await _engine.SendAsync(draft, ct).ConfigureAwait(false);
        return new SendResultEntry
        {
            Status = V5Status.From(sent.Error),
            MessageId = sent.IsOk ? sent.MessageId : messageId,
            Offset = sent.QueueOffset,
            RecallHandle = RecallHandleOf(sent, draft),
        };
    }

    /// <summary>
    /// The handle RecallMessage takes (<see cref="V5RecallHandle"/>) for a message that waits for its delivery time (the
    /// core put it on no queue), empty for any other, as the Apache broker leaves it: only a timer message can be recalled.
    /// </summary>
    private string RecallHandleOf(SendResult sent, MessageDraft draft)
        => sent.IsOk && sent.QueueId < 0 && sent.LogAddress >= 0 && draft.DeliveryTimestampMs is long deliverAt
            ? new V5RecallHandle(draft.Topic, deliverAt, sent.MessageId, sent.LogAddress).Encode(BrokerName)
            : string.Empty;
}
