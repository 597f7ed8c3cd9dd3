using System.Data.Common;

namespace HalfMsg.ProducerClient.Barrier;

/// <summary>The local half of <see cref="Producer.ExecuteAsync(DbConnection, Message, Func{DbTransaction, CancellationToken, Task}, CancellationToken)"/>:
/// business writes plus the <c>committed</c> barrier row in one database transaction.</summary>
internal static class LocalBarrier
{
    /// <summary>Runs the local transaction. <paramref name="onCommitting"/> is called just before COMMIT: a failure after
    /// that point has an unknown outcome and must be left to the check-back.</summary>
    public static async Task RunAsync(DbConnection connection, IBarrierDialect dialect, string transactionId,
        Func<DbTransaction, CancellationToken, Task> businessWrites, Action? onCommitting, CancellationToken ct)
    {
        await using DbTransaction transaction = await connection.BeginTransactionAsync(ct).ConfigureAwait(false);
        bool committing = false;
        try
        {
            // First (as dtm's barrier does): from here on the uncommitted row makes every concurrent check-back wait
            // for this transaction's outcome, however long the business writes take. A checker that got here first
            // (it inserted "rolled_back") makes this insert affect 0 rows: give up before doing any business work.
            if (!await BarrierStore.TryInsertAsync(connection, transaction, dialect, transactionId, BarrierStore.Committed, ct).ConfigureAwait(false))
            {
                throw new BarrierConflictException(transactionId);
            }

            await businessWrites(transaction, ct).ConfigureAwait(false);

            // The transaction must still be the one that holds the barrier row. PostgreSQL aborts a transaction at its
            // first failed statement, and a COMMIT of it rolls back without an error (Npgsql reports none): business code
            // that caught such a failure and carried on would have the half committed for writes that never were. On
            // an aborted transaction this read fails (25P02); after a ROLLBACK issued as SQL it finds no row.
            string? state;
            try
            {
                state = await BarrierStore.GetStateAsync(connection, transaction, dialect, transactionId, ct).ConfigureAwait(false);
            }
            catch (DbException ex)
            {
                throw new LocalTransactionAbortedException(transactionId, ex);
            }

            if (state != BarrierStore.Committed) throw new LocalTransactionAbortedException(transactionId, null);

            committing = true;
            onCommitting?.Invoke();
            await transaction.CommitAsync(ct).ConfigureAwait(false);
        }
        catch (Exception) when (!committing)
        {
            try
            {
                await transaction.RollbackAsync(CancellationToken.None).ConfigureAwait(false);
            }
            catch (Exception)
            {
                // The connection may be broken; the database discards an unfinished transaction on its own.
            }

            throw;
        }
    }
}
