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

        string clientId = ClientId(context);
        var inflateBudget = new StrongBox<long>(_options.MaxReceiveMessageSize);
        var response = new SendMessageResponse();
        var statuses = new List<Status>(request.Messages.Count);
        foreach (Message message in request.Messages)
        {
            SendResultEntry entry = await SendOneAsync(message, clientId, inflateBudget, context.CancellationToken).ConfigureAwait(false);
            response.Entries.Add(entry);
            statuses.Add(entry.Status);
        }

        response.Status = V5Status.Combine(statuses);
        return response;
    }

    private async ValueTask<SendResultEntry> SendOneAsync(Message message, string clientId, StrongBox<long> inflateBudget, CancellationToken ct)
    {
        SystemProperties? sp = message.SystemProperties;
        string messageId = sp?.MessageId ?? string.Empty;
        if (!V5MessageConverter.TryToDraft(message, _engine.Options.MaxMessageSize, ref inflateBudget.Value, out MessageDraft? draft, out Status? invalid))
        {
            return new SendResultEntry { Status = invalid, MessageId = messageId };
        }

        if (sp!.MessageType == MessageType.Transaction)
        {
            if (!V5Time.TryToTimeSpan(sp.OrphanedTransactionRecoveryDuration, out TimeSpan? immunity))
            {
                return new SendResultEntry
                {
                    Status = V5Status.Of(Code.BadRequest, "system_properties.orphaned_transaction_recovery_duration is not a valid duration"),
                    MessageId = messageId,
                };
            }

            SendHalfResult half = await _engine.SendHalfAsync(draft, draft.Topic, clientId, immunity, ct).ConfigureAwait(false);
            return new SendResultEntry
            {
                Status = V5Status.From(half.Error),
                MessageId = half.IsOk ? half.MessageId : messageId,
                TransactionId = half.TransactionId ?? string.Empty,
            };
        }

        SendResult sent = await _engine.SendAsync(draft, ct).ConfigureAwait(false);
        return new SendResultEntry
        {
            Status = V5Status.From(sent.Error),
            MessageId = sent.IsOk ? sent.MessageId : messageId,
            Offset = sent.QueueOffset,
        };
    }
}
