using HalfMsg.ClientCore;

namespace HalfMsg.ProducerClient;

/// <summary>
/// Thrown by <see cref="Producer.ExecuteAsync(System.Data.Common.DbConnection, Message, Func{System.Data.Common.DbTransaction, CancellationToken, Task}, CancellationToken)"/>
/// when the local transaction committed but the broker refused the final commit of the half message because it had
/// already rolled the transaction back (a check-back answered Rollback, or an operator rolled it back): the broker
/// answered INVALID_TRANSACTION_ID. The business writes are committed and the message will <b>not</b> be delivered: the
/// caller must repair (publish again, or compensate). Cannot happen with <see cref="Barrier.BarrierChecker"/>, whose
/// check-back waits for the local transaction and answers Commit. A broker that no longer knows the transaction (its
/// decision forgotten) gives <see cref="TransactionOutcomeUnknownException"/> instead.
/// </summary>
public sealed class TransactionCommitRejectedException : ClientException
{
    /// <summary>Creates the exception from the broker's refusal <paramref name="inner"/>.</summary>
    public TransactionCommitRejectedException(SendReceipt receipt, ClientException inner)
        : base(inner.Code, $"The local transaction committed, but the broker refused to commit half message {receipt.MessageId} " +
            $"(transaction {receipt.TransactionId}): {inner.Message}. The message will not be delivered.", inner.RequestId, inner)
    {
        Receipt = receipt;
    }

    /// <summary>The half message that was sent and will not be delivered.</summary>
    public SendReceipt Receipt { get; }
}
