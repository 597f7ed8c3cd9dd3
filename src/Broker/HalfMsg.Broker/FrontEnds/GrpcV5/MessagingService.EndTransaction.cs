using Apache.Rocketmq.V2;
using Grpc.Core;
using HalfMsg.Protocol.Grpc;
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
        if (!TryToDecision(request, V5Namespace.Of(context), out DecisionRequest d, out Status? invalid))
        {
            return new EndTransactionResponse { Status = invalid };
        }

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
        var statuses = new Status[requests.Count];
        var decisions = new List<DecisionRequest>(requests.Count);
        var at = new List<int>(requests.Count);
        for (int i = 0; i < statuses.Length; i++)
        {
            if (TryToDecision(requests[i], ns, out DecisionRequest d, out Status? invalid))
            {
                decisions.Add(d);
                at.Add(i);
            }
            else
            {
                statuses[i] = invalid;
            }
        }

        if (decisions.Count > 0)
        {
            DecisionResult[] results = await _engine.EndTransactionsAsync(decisions, context.CancellationToken).ConfigureAwait(false);
            for (int j = 0; j < results.Length; j++) statuses[at[j]] = V5Status.From(results[j].Error);
        }

        return statuses;
    }

    /// <summary>
    /// The decision a request asks for, or (false) the status of a check-back answer whose transaction id carries a
    /// malformed check token. An answer to a check-back (SOURCE_SERVER_CHECK) whose transaction id carries the half's check
    /// token (<see cref="CheckTokenIds"/>, as a check sent with <see cref="TelemetrySession.SendsCheckTokens"/> gave it) is
    /// judged by it: the engine refuses it when it names another half of the id (a late answer to the check of an earlier
    /// half, decided and forgotten). Until the afternoon session of 2026-12-07 no gRPC answer carried a token, and such an
    /// answer decided the new half once it had had its own check. An answer without one is judged as before.
    /// The official Go client echoes the check's id but names no source (TRANSACTION_SOURCE_UNSPECIFIED): an id that carries
    /// a token after the answer's message id is an answer to a check whatever its source says, and is judged as one. Until
    /// the afternoon session of 2026-12-07 it was read whole, as the id of no transaction, and every check answer of a Go
    /// producer was refused: its halves were never decided by their checks (found by review).
    /// </summary>
    private bool TryToDecision(EndTransactionRequest request, string ns, out DecisionRequest decision, [System.Diagnostics.CodeAnalysis.NotNullWhen(false)] out Status? invalid)
    {
        invalid = null;
        string transactionId = request.TransactionId;
        long? checkToken = null;
        if (transactionId.Contains(CheckTokenIds.Separator, StringComparison.Ordinal)
            // Without a message id the last separator splits the id of an answer to a check, unless the whole id is a
            // pending transaction of its own; a decision that names no source, or the client's, needs the message id.
            && (!string.IsNullOrEmpty(request.MessageId)
                || (request.Source == TransactionSource.SourceServerCheck && _engine.FindTransaction(transactionId) is null)))
        {
            switch (CheckTokenIds.Parse(transactionId, request.MessageId, out string id, out long token))
            {
                case CheckTokenIds.Kind.Token:
                    transactionId = id;
                    checkToken = token;
                    break;
                case CheckTokenIds.Kind.Malformed:
                    decision = default;
                    invalid = V5Status.Of(Code.InvalidTransactionId,
                        $"transaction_id '{(transactionId.Length <= 160 ? transactionId : transactionId[..160] + "…")}' carries a malformed check token: after '{CheckTokenIds.Separator}' a check sends the decimal token the answer must echo");
                    return false;
            }
        }

        decision = ToDecision(request, transactionId, checkToken, ns);
        return true;
    }

    /// <summary>The request as the core takes it: the topic it names (if any) in the caller's namespace, or the caller's
    /// namespace's prefix when it names none, so the decision reaches only a half of that namespace, and a transaction
    /// already decided in another namespace is answered as one never sent.</summary>
    private static DecisionRequest ToDecision(EndTransactionRequest request, string transactionId, long? checkToken, string ns) => new(
        transactionId,
        string.IsNullOrEmpty(request.MessageId) ? null : request.MessageId,
        request.Resolution switch
        {
            Apache.Rocketmq.V2.TransactionResolution.Commit => TransactionResolution.Commit,
            Apache.Rocketmq.V2.TransactionResolution.Rollback => TransactionResolution.Rollback,
            _ => TransactionResolution.Unknown,
        },
        // An echoed check token makes it an answer to a check, whatever source it names (the Go client names none).
        request.Source == TransactionSource.SourceServerCheck || checkToken is not null ? DecisionSource.CheckBack : DecisionSource.Client,
        string.IsNullOrEmpty(request.TraceContext) ? null : request.TraceContext,
        string.IsNullOrEmpty(request.Topic?.Name) ? null : V5Namespace.Wrap(ns, request.Topic.Name),
        // No topic named: a caller in a namespace still reaches only its namespace's halves.
        string.IsNullOrEmpty(request.Topic?.Name) && ns.Length > 0 ? ns + "%" : null,
        CheckToken: checkToken);
}
