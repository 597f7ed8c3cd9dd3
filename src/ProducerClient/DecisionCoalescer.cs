using Apache.Rocketmq.V2;
using HalfMsg.ClientCore;
using HalfMsg.ClientCore.Transport;
using HalfMsg.Protocol.V1;

namespace HalfMsg.ProducerClient;

/// <summary>
/// Coalesces the decisions (commit or rollback) of concurrent transactions: per broker endpoint, at most
/// <c>maxCallsInFlight</c> calls are outstanding; a decision made while they all are waits, and goes with the others
/// that waited meanwhile in one <c>halfmsg.v1.TransactionService/EndTransactions</c> call (up to <c>maxDecisions</c>).
/// Below that many transactions in flight nothing waits.
/// </summary>
/// <remarks>
/// With half sends coalesced (<see cref="HalfSendCoalescer"/>), the decision was the one call every transaction still
/// made alone. RocketMQ 5's EndTransaction has no batch form, so this is HalfMsgBroker's own RPC
/// (<c>src/Protocol/Protos/halfmsg/v1/transactions.proto</c>); the producer uses it only against a HalfMsgBroker, and
/// each decision's answer is the one EndTransaction would have given it.
/// </remarks>
internal sealed class DecisionCoalescer
{
    private readonly CallCoalescer<Endpoint, EndTransactionRequest, DecisionReply, Status> _calls;

    /// <param name="maxCallsInFlight">Calls outstanding per endpoint before decisions wait.</param>
    /// <param name="maxDecisions">Most decisions in one call.</param>
    /// <param name="call">One EndTransactions call.</param>
    public DecisionCoalescer(int maxCallsInFlight, int maxDecisions,
        Func<Endpoint, EndTransactionsRequest, CancellationToken, Task<EndTransactionsResponse>> call)
        : this(maxCallsInFlight, maxDecisions,
            async (endpoint, request, ct) => new DecisionReply(await call(endpoint, request, ct).ConfigureAwait(false)))
    {
    }

    /// <param name="maxCallsInFlight">Calls outstanding per endpoint before decisions wait.</param>
    /// <param name="maxDecisions">Most decisions in one call.</param>
    /// <param name="call">One call for the decisions: EndTransactions, or anything that answers each decision on its
    /// own (<see cref="DecisionReply.Failures"/>: one EndTransaction per decision against a broker without it).</param>
    public DecisionCoalescer(int maxCallsInFlight, int maxDecisions,
        Func<Endpoint, EndTransactionsRequest, CancellationToken, Task<DecisionReply>> call)
    {
        _calls = new(maxCallsInFlight, maxDecisions, long.MaxValue, static _ => 0,
            (endpoint, decisions, ct) => call(endpoint, new EndTransactionsRequest { Decisions = { decisions } }, ct),
            StatusAt);
    }

    /// <summary>EndTransactions calls made so far.</summary>
    public long CallsMade => _calls.CallsMade;

    /// <summary>Decisions that went in a call with at least one other.</summary>
    public long SharedCallDecisions => _calls.ItemsInSharedCalls;

    /// <summary>Sends one decision and returns its own status (the caller's to check).</summary>
    public Task<Status> EndAsync(Endpoint endpoint, EndTransactionRequest decision, CancellationToken ct)
        => _calls.SendAsync(endpoint, decision, ct);

    /// <summary>Decision <paramref name="index"/>'s status in a reply to <paramref name="count"/> decisions; a reply
    /// without one entry per decision throws the call's error, else UNSUPPORTED.</summary>
    internal static Status StatusAt(EndTransactionsResponse response, int index, int count)
        => CoalescedReply.EntryAt(response.Entries, response.Status, index, count, "EndTransactions", "decisions");

    /// <summary>Decision <paramref name="index"/>'s own failure if it had one, else its status.</summary>
    private static Status StatusAt(DecisionReply reply, int index, int count)
    {
        if (reply.Failures is { } failures && failures.Count == count && failures[index] is { } failure)
        {
            System.Runtime.ExceptionServices.ExceptionDispatchInfo.Throw(failure);
        }

        return StatusAt(reply.Response, index, count);
    }
}

/// <summary>The answer to one call for decisions: its response, and, when the decisions went one per call, each
/// decision's own failure (null where that decision got its entry in <see cref="Response"/>).</summary>
internal sealed record DecisionReply(EndTransactionsResponse Response, IReadOnlyList<Exception?>? Failures = null);
