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
    /// (SOURCE_SERVER_CHECK), or "unknown" (an unspecified resolution: changes nothing, but counts as an answer to the
    /// check). A conflicting decision comes back as INVALID_TRANSACTION_ID and an id the broker does not know (never
    /// sent, or its decision forgotten) as NOT_FOUND (see <see cref="V5Status"/>), so the Node client's
    /// commit()/rollback() throws with the core's message.
    /// </summary>
    public override async Task<EndTransactionResponse> EndTransaction(EndTransactionRequest request, ServerCallContext context)
    {
        DecisionRequest d = ToDecision(request, V5Namespace.Of(context));
        HalfMsg.Broker.Core.Diagnostics.BrokerTracing.SetRemoteParent(d.TraceParent); // trace hook (issue 12)
        DecisionResult result = await _engine.EndTransactionAsync(d, context.CancellationToken).ConfigureAwait(false);
        return new EndTransactionResponse { Status = V5Status.From(result.Error) };
    }

    /// <summary>
    /// Several decisions (HalfMsgBroker's own EndTransactions, <see cref="TransactionBatchService"/>): the core carries
    /// them out under one lock hold with one durable wait, each with the status <see cref="EndTransaction"/> would give it.
    /// </summary>
    internal async Task<Status[]> EndTransactionsAsync(IReadOnlyList<EndTransactionRequest> requests, ServerCallContext context)
    {
        string ns = V5Namespace.Of(context);
        var decisions = new DecisionRequest[requests.Count];
        for (int i = 0; i < decisions.Length; i++) decisions[i] = ToDecision(requests[i], ns);
        DecisionResult[] results = await _engine.EndTransactionsAsync(decisions, context.CancellationToken).ConfigureAwait(false);
        return Array.ConvertAll(results, r => V5Status.From(r.Error));
    }

    /// <summary>The request as the core takes it: the topic it names (if any) in the caller's namespace, or the caller's
    /// namespace's prefix when it names none, so the decision reaches only a half of that namespace, and a transaction
    /// already decided in another namespace is answered as one never sent.</summary>
    private static DecisionRequest ToDecision(EndTransactionRequest request, string ns) => new(
        request.TransactionId,
        string.IsNullOrEmpty(request.MessageId) ? null : request.MessageId,
        request.Resolution switch
        {
            Apache.Rocketmq.V2.TransactionResolution.Commit => TransactionResolution.Commit,
            Apache.Rocketmq.V2.TransactionResolution.Rollback => TransactionResolution.Rollback,
            _ => TransactionResolution.Unknown,
        },
        request.Source == TransactionSource.SourceServerCheck ? DecisionSource.CheckBack : DecisionSource.Client,
        string.IsNullOrEmpty(request.TraceContext) ? null : request.TraceContext,
        string.IsNullOrEmpty(request.Topic?.Name) ? null : V5Namespace.Wrap(ns, request.Topic.Name),
        // No topic named: a caller in a namespace still reaches only its namespace's halves.
        string.IsNullOrEmpty(request.Topic?.Name) && ns.Length > 0 ? ns + "%" : null);
}
