using HalfMsg.ClientCore;

namespace HalfMsg.ProducerClient;

/// <summary>
/// Thrown by <see cref="Producer.ExecuteAsync(System.Data.Common.DbConnection, Message, Func{System.Data.Common.DbTransaction, CancellationToken, Task}, CancellationToken)"/>
/// when the local transaction committed but the broker no longer knew the transaction when the final commit of the
/// half message reached it (NOT_FOUND). The half was decided without this commit, by a check-back's answer (or an
/// operator), and the broker has since forgotten that decision: it remembers decisions for a bounded time and number
/// (by default one hour, at most the last 1,000,000). So the outcome was decided by that answer and is unknown here. With
/// <see cref="Barrier.BarrierChecker"/> the check-back waits for the local transaction and answers Commit, so the
/// message was delivered; with another checker, only if it answered Commit. Unlike
/// <see cref="TransactionCommitRejectedException"/>, this does <b>not</b> say the message will not be delivered: do not
/// publish it again without finding out (your checker's records, the consumer side, the broker's message lookup).
/// </summary>
/// <remarks>A broker that lost the half itself (flushed asynchronously and crashed before the half was on disk) gives
/// the same answer; then no check-back ever decided it.</remarks>
public sealed class TransactionOutcomeUnknownException : ClientException
{
    /// <summary>Creates the exception from the broker's answer <paramref name="inner"/>.</summary>
    public TransactionOutcomeUnknownException(SendReceipt receipt, ClientException inner)
        : base(inner.Code, $"The local transaction committed, but the broker no longer knows transaction {receipt.TransactionId} " +
            $"(half message {receipt.MessageId}): {inner.Message}. Its outcome was decided earlier by the check-back's answer " +
            "(Commit with BarrierChecker: delivered) and is unknown here; do not publish it again without finding out.",
            inner.RequestId, inner)
    {
        Receipt = receipt;
    }

    /// <summary>The half message whose outcome the check-back decided.</summary>
    public SendReceipt Receipt { get; }
}
