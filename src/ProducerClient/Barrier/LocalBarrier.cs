using HalfMsg.ClientCore.Sql;
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

            // The transaction must still be able to commit. PostgreSQL aborts a transaction at its first failed statement,
            // and a COMMIT of it rolls back without an error (Npgsql reports none): business code that caught such a
            // failure and carried on would have the half committed for writes that never were. Any statement fails on
            // an aborted transaction (25P02); one that reads no table also works after the writes changed search_path
            // or role (a first version read the barrier row, and refused such healthy transactions; found by review).
            await SqlSupport.EnsureTransactionUsableAsync(connection, transaction, ex => new LocalTransactionAbortedException(transactionId, ex), ct)
                .ConfigureAwait(false);

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
