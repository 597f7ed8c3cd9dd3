namespace HalfMsg.ProducerClient;

/// <summary>The producer's answer to a transaction check-back.</summary>
public enum TransactionResolution
{
    /// <summary>The local transaction committed: deliver the half message.</summary>
    Commit,

    /// <summary>The local transaction rolled back (or never happened): drop the half message.</summary>
    Rollback,

    /// <summary>Not known yet (e.g. the local transaction is still running): the producer tells the broker so, and the
    /// broker asks this instance again at its next check interval.</summary>
    Unknown,
}

/// <summary>
/// Answers the broker's check-back for a half message whose outcome it never heard (producer crashed between the
/// half send and the commit, or the commit was lost). Called on a background thread; may be called concurrently
/// and more than once for the same transaction, so it must be idempotent. See <see cref="Barrier.BarrierChecker"/>
/// for a checker that is correct by construction.
/// </summary>
public interface ITransactionChecker
{
    /// <summary>Decides the fate of <paramref name="message"/>.</summary>
    ValueTask<TransactionResolution> CheckAsync(MessageView message, CancellationToken cancellationToken);
}

/// <summary>
/// A transaction holding exactly one half message (as in the official clients): send it, run your local
/// transaction, then commit or roll back. If neither happens (crash), the broker's check-back asks the
/// <see cref="ITransactionChecker"/>.
/// </summary>
public interface ITransaction
{
    /// <summary>Sends the half message: stored by the broker, invisible to consumers until committed. Not retried:
    /// a retry after an ambiguous failure (timeout) could leave a second, orphaned half message that only the
    /// check-back would resolve, and the caller could not know which transaction id its local work belongs to.
    /// <para><paramref name="cancellationToken"/> cancels only until the half is on the wire: an
    /// <see cref="OperationCanceledException"/> means it was not sent. Once sent, the call is not cancelled (the broker
    /// may have stored it) and its answer comes back, at most the request timeout later.</para></summary>
    Task<SendReceipt> SendAsync(Message message, CancellationToken cancellationToken = default);

    /// <summary>Makes the half message visible (EndTransaction COMMIT, source client). A broker that already rolled the
    /// transaction back answers INVALID_TRANSACTION_ID (a <see cref="ClientCore.BadRequestException"/>: the message will
    /// not be delivered); one that no longer knows it answers NOT_FOUND (a <see cref="ClientCore.NotFoundException"/>:
    /// a check-back decided it and the broker has forgotten that decision, so the outcome is unknown here).
    /// <para><paramref name="cancellationToken"/> cancels only until the decision is on the wire: an
    /// <see cref="OperationCanceledException"/> means it was not sent, and the transaction may still be committed or
    /// rolled back. Once sent, the call is not cancelled (the broker may have carried it out) and its answer comes back,
    /// at most the request timeout later.</para></summary>
    Task CommitAsync(CancellationToken cancellationToken = default);

    /// <summary>Drops the half message (EndTransaction ROLLBACK, source client). Cancellation as for
    /// <see cref="CommitAsync"/>.</summary>
    Task RollbackAsync(CancellationToken cancellationToken = default);
}
