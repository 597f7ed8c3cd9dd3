using Apache.Rocketmq.V2;
using Grpc.Core;
using HalfMsg.Protocol.V1;

namespace HalfMsg.Broker.FrontEnds.GrpcV5;

/// <summary>
/// HalfMsgBroker's own <c>halfmsg.v1.TransactionService</c> (<c>src/Protocol/Protos/halfmsg/v1/transactions.proto</c>):
/// several decisions in one call, which our producer makes when it has more concurrent transactions than calls in
/// flight. Served on the gRPC port beside MessagingService, through the same interceptor (authentication, storage
/// failure, handler failures).
/// </summary>
internal sealed class TransactionBatchService(MessagingService messaging) : TransactionService.TransactionServiceBase
{
    /// <summary>Most decisions one call may carry (our producer sends at most 128). A decision is ~150 bytes, so the
    /// request size cap alone would let a call carry tens of thousands.</summary>
    public const int MaxDecisions = 1024;

    /// <summary>
    /// Each decision goes through <see cref="MessagingService.EndTransaction"/>, exactly as if it had come alone, and
    /// all of them at once, so they share group commits. Entries are in request order; one that fails does not fail
    /// the others.
    /// </summary>
    public override async Task<EndTransactionsResponse> EndTransactions(EndTransactionsRequest request, ServerCallContext context)
    {
        if (request.Decisions.Count == 0)
        {
            return new EndTransactionsResponse { Status = V5Status.Of(Code.BadRequest, "no decision to carry out") };
        }

        if (request.Decisions.Count > MaxDecisions)
        {
            return new EndTransactionsResponse
            {
                Status = V5Status.Of(Code.BadRequest, $"{request.Decisions.Count} decisions in one call; at most {MaxDecisions}"),
            };
        }

        var decided = new Task<EndTransactionResponse>[request.Decisions.Count];
        for (int i = 0; i < decided.Length; i++)
        {
            // Each in its own async flow, so the trace parent it sets is its own.
            decided[i] = messaging.EndTransaction(request.Decisions[i], context);
        }

        var response = new EndTransactionsResponse { Status = V5Status.Of(Code.Ok, "OK") };
        foreach (Task<EndTransactionResponse> d in decided)
        {
            // A storage failure escapes as it would from EndTransaction: the interceptor answers the whole call with it.
            response.Entries.Add((await d.ConfigureAwait(false)).Status);
        }

        return response;
    }
}
