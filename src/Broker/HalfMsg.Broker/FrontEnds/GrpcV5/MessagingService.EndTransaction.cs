using Apache.Rocketmq.V2;
using Grpc.Core;
using Status = Apache.Rocketmq.V2.Status;
using HalfMsg.Broker.Core.Model;
using TransactionResolution = HalfMsg.Broker.Core.Model.TransactionResolution;

namespace HalfMsg.Broker.FrontEnds.GrpcV5;

internal sealed partial class MessagingService
{
    /// <summary>
    /// Commit or roll back a half message, from the producer itself (SOURCE_CLIENT) or in answer to a check-back
    /// (SOURCE_SERVER_CHECK). Unknown and conflicting decisions come back as INVALID_TRANSACTION_ID (see
    /// <see cref="V5Status"/>), so the Node client's commit()/rollback() throws with the core's message.
    /// </summary>
    public override async Task<EndTransactionResponse> EndTransaction(EndTransactionRequest request, ServerCallContext context)
    {
        TransactionResolution resolution = request.Resolution switch
        {
            Apache.Rocketmq.V2.TransactionResolution.Commit => TransactionResolution.Commit,
            Apache.Rocketmq.V2.TransactionResolution.Rollback => TransactionResolution.Rollback,
            _ => TransactionResolution.Unknown,
        };
        DecisionSource source = request.Source == TransactionSource.SourceServerCheck ? DecisionSource.CheckBack : DecisionSource.Client;
        string? messageId = string.IsNullOrEmpty(request.MessageId) ? null : request.MessageId;

        HalfMsg.Broker.Core.Diagnostics.BrokerTracing.SetRemoteParent(request.TraceContext); // trace hook (issue 12)
        DecisionResult result = await _engine.EndTransactionAsync(request.TransactionId, messageId, resolution, source, context.CancellationToken)
            .ConfigureAwait(false);
        return new EndTransactionResponse { Status = V5Status.From(result.Error) };
    }
}
