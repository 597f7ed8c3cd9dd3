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
    /// Each decision is carried out exactly as <see cref="MessagingService.EndTransaction"/> would carry it out alone;
    /// the core does them all under one lock hold and waits once for them to be durable. Entries are in request order;
    /// one that fails does not fail the others; a storage failure fails the call (the interceptor answers it).
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

        var response = new EndTransactionsResponse { Status = V5Status.Of(Code.Ok, "OK") };
        response.Entries.AddRange(await messaging.EndTransactionsAsync(request.Decisions, context).ConfigureAwait(false));
        return response;
    }
}
