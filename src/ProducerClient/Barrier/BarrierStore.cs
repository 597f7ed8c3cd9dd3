using HalfMsg.ClientCore.Sql;
using System.Data.Common;

namespace HalfMsg.ProducerClient.Barrier;

/// <summary>Creates the barrier table.</summary>
public static class BarrierSchema
{
    /// <summary>The default barrier table name.</summary>
    public const string DefaultTable = "halfmsg_barrier";

    /// <summary>Creates <paramref name="table"/> if missing (idempotent). <paramref name="connection"/> must be open.</summary>
    public static Task EnsureCreatedAsync(DbConnection connection, IBarrierDialect dialect, string table = DefaultTable,
        CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(dialect);
        return SqlSupport.EnsureTableAsync(connection, table, dialect.CreateTableSql(table), cancellationToken);
    }

    internal static Task EnsureCreatedOnceAsync(DbConnection connection, IBarrierDialect dialect, CancellationToken ct,
        string table = DefaultTable) =>
        SqlSupport.EnsureTableOnceAsync(connection, table, () => dialect.CreateTableSql(table), ct);

    /// <summary>
    /// Deletes the barrier rows of transactions older than <paramref name="olderThan"/> (by their <c>created_at</c>),
    /// <paramref name="batchSize"/> rows per database transaction, and returns how many it deleted. Run it from a
    /// scheduled job; <see cref="BarrierChecker"/> and <see cref="Producer.ExecuteAsync(DbConnection, Message, Func{DbTransaction, CancellationToken, Task}, CancellationToken)"/>
    /// may run meanwhile.
    /// <para>Safe for any <paramref name="olderThan"/>: before deleting, it records the cut-off in the table, and a check
    /// of a half born before that cut-off (plus <see cref="PruneClockSkew"/>) that finds no row answers
    /// <see cref="TransactionResolution.Unknown"/>, never Rollback, since its committed row may be one of those deleted.
    /// Choose <paramref name="olderThan"/> above the broker's longest check-back window (its check limit times the check
    /// interval, plus any time the broker or every producer of the group may be down), so that no check-back of a pruned
    /// transaction comes: one that does is answered Unknown until the broker's check limit discards the half.</para>
    /// </summary>
    /// <param name="connection">An open connection to the database <see cref="Producer.ExecuteAsync(DbConnection, Message, Func{DbTransaction, CancellationToken, Task}, CancellationToken)"/> writes.</param>
    /// <param name="dialect">The database's barrier SQL.</param>
    /// <param name="olderThan">Rows created longer ago than this are deleted; more than zero.</param>
    /// <param name="batchSize">Rows deleted per database transaction (1 to 100,000), so a large backlog does not hold
    /// the table's locks for long.</param>
    /// <param name="cancellationToken">Stops between batches (a batch in flight is rolled back).</param>
    public static Task<long> PruneAsync(DbConnection connection, IBarrierDialect dialect, TimeSpan olderThan, int batchSize = 1000,
        CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(connection);
        ArgumentNullException.ThrowIfNull(dialect);
        ArgumentOutOfRangeException.ThrowIfLessThanOrEqual(olderThan, TimeSpan.Zero);
        ArgumentOutOfRangeException.ThrowIfLessThan(batchSize, 1);
        ArgumentOutOfRangeException.ThrowIfGreaterThan(batchSize, 100_000);
        return BarrierStore.PruneAsync(connection, dialect, DateTime.UtcNow - olderThan, batchSize, cancellationToken);
    }

    /// <summary>How far a producer's clock (a half's born time) may be behind the database's (a barrier row's
    /// <c>created_at</c>) for <see cref="PruneAsync"/>'s guard: 10 minutes.</summary>
    public static readonly TimeSpan PruneClockSkew = TimeSpan.FromMinutes(10);
}

internal static class BarrierStore
{
    public const string Committed = "committed";
    public const string RolledBack = "rolled_back";

    public static async Task<bool> TryInsertAsync(DbConnection connection, DbTransaction transaction, IBarrierDialect dialect,
        string transactionId, string state, CancellationToken ct, string table = BarrierSchema.DefaultTable, TimeSpan? lockWait = null)
    {
        await using DbCommand command = connection.CreateCommand();
        command.Transaction = transaction;
        command.CommandText = dialect.InsertIfAbsentSql(table);
        // The insert may wait for another transaction's lock (bounded by the dialect's lock wait); the client-side
        // timeout stays above it, so the database reports the lock timeout rather than the driver a generic one.
        command.CommandTimeout = lockWait is { } wait ? (int)Math.Ceiling(wait.TotalSeconds) + 10 : 60;
        AddParameter(command, "@transaction_id", transactionId);
        AddParameter(command, "@state", state);
        return await command.ExecuteNonQueryAsync(ct).ConfigureAwait(false) == 1;
    }

    public static async Task<string?> GetStateAsync(DbConnection connection, DbTransaction transaction, IBarrierDialect dialect,
        string transactionId, CancellationToken ct, string table = BarrierSchema.DefaultTable)
    {
        await using DbCommand command = connection.CreateCommand();
        command.Transaction = transaction;
        command.CommandText = dialect.SelectStateSql(table);
        AddParameter(command, "@transaction_id", transactionId);
        object? value = await command.ExecuteScalarAsync(ct).ConfigureAwait(false);
        return value as string;
    }

    /// <summary>The row that holds the newest prune cut-off, as 12-digit Unix seconds (so text order is time order).</summary>
    public const string PrunedBeforeRow = "halfmsg:pruned-before";

    /// <summary>True when the transaction's row may have been deleted by a prune: the half was born (by the producer's
    /// clock) before the newest prune cut-off plus <see cref="BarrierSchema.PruneClockSkew"/>, or its birth is not known
    /// and some prune has run.</summary>
    public static async Task<bool> MayBePrunedAsync(DbConnection connection, DbTransaction transaction, IBarrierDialect dialect,
        DateTimeOffset? bornTimestamp, CancellationToken ct, string table = BarrierSchema.DefaultTable)
    {
        string? cutOff = await GetStateAsync(connection, transaction, dialect, PrunedBeforeRow, ct, table).ConfigureAwait(false);
        if (cutOff is null) return false;
        if (bornTimestamp is not { } born) return true;
        return !long.TryParse(cutOff, System.Globalization.NumberStyles.None, System.Globalization.CultureInfo.InvariantCulture, out long seconds)
            || born < DateTimeOffset.FromUnixTimeSeconds(seconds) + BarrierSchema.PruneClockSkew;
    }

    public static async Task<long> PruneAsync(DbConnection connection, IBarrierDialect dialect, DateTime cutOffUtc, int batchSize, CancellationToken ct,
        string table = BarrierSchema.DefaultTable)
    {
        await BarrierSchema.EnsureCreatedOnceAsync(connection, dialect, ct, table).ConfigureAwait(false);
        // The cut-off is durable before any row goes: a check that then finds a row missing also finds the cut-off.
        string cutOff = new DateTimeOffset(cutOffUtc, TimeSpan.Zero).ToUnixTimeSeconds().ToString("D12", System.Globalization.CultureInfo.InvariantCulture);
        await using (DbTransaction transaction = await connection.BeginTransactionAsync(ct).ConfigureAwait(false))
        {
            if (!await TryInsertAsync(connection, transaction, dialect, PrunedBeforeRow, cutOff, ct, table).ConfigureAwait(false))
            {
                await using DbCommand raise = connection.CreateCommand();
                raise.Transaction = transaction;
                raise.CommandText = $"UPDATE {BarrierDialects.CheckIdentifier(table)} SET state = @state WHERE transaction_id = @transaction_id AND state < @state";
                AddParameter(raise, "@transaction_id", PrunedBeforeRow);
                AddParameter(raise, "@state", cutOff);
                await raise.ExecuteNonQueryAsync(ct).ConfigureAwait(false);
            }

            await transaction.CommitAsync(ct).ConfigureAwait(false);
        }

        string t = BarrierDialects.CheckIdentifier(table);
        // The owner and cut-off rows ("halfmsg:" ids; transaction ids never have a colon) stay.
        return await SqlSupport.DeleteInBatchesAsync(connection,
            $"DELETE FROM {t} WHERE transaction_id IN (SELECT transaction_id FROM {t} " +
            "WHERE created_at < @cut_off AND transaction_id NOT LIKE 'halfmsg:%' LIMIT @batch)",
            [("@cut_off", dialect.CreatedAtValue(cutOffUtc))], batchSize, ct).ConfigureAwait(false);
    }

    private static void AddParameter(DbCommand command, string name, string value)
    {
        DbParameter p = command.CreateParameter();
        p.ParameterName = name;
        p.Value = value;
        command.Parameters.Add(p);
    }
}

/// <summary>
/// Thrown by <see cref="Producer.ExecuteAsync(DbConnection, Message, Func{DbTransaction, CancellationToken, Task}, CancellationToken)"/>
/// when the broker's check-back resolved the transaction as rolled back before the local transaction could commit
/// (its barrier row already exists). The local transaction was rolled back; nothing was published. Safe to retry
/// the whole operation (it gets a new transaction id).
/// </summary>
public sealed class BarrierConflictException : Exception
{
    /// <summary>Creates the exception for <paramref name="transactionId"/>.</summary>
    public BarrierConflictException(string transactionId)
        : base($"Transaction {transactionId} was already resolved as rolled back by a broker check-back; the local transaction was rolled back.")
    {
        TransactionId = transactionId;
    }

    /// <summary>The half message's transaction id.</summary>
    public string TransactionId { get; }
}

/// <summary>
/// Thrown by <see cref="Producer.ExecuteAsync(DbConnection, Message, Func{DbTransaction, CancellationToken, Task}, CancellationToken)"/>
/// when, after your writes returned, the local transaction could no longer commit: on PostgreSQL a statement in it failed
/// (the error was caught and the writes carried on, which leaves the transaction aborted, and PostgreSQL would turn the
/// COMMIT into a rollback without an error). Nothing was committed; the half message
/// was rolled back, so nothing is published. Fix the writes (a savepoint around a statement that may fail) and retry.
/// </summary>
public sealed class LocalTransactionAbortedException : Exception
{
    /// <summary>Creates the exception for <paramref name="transactionId"/>.</summary>
    public LocalTransactionAbortedException(string transactionId, Exception? innerException)
        : base($"The local transaction of {transactionId} can no longer commit (a statement in it failed and the transaction was aborted); " +
            "nothing was committed and the half message was rolled back.", innerException)
    {
        TransactionId = transactionId;
    }

    /// <summary>The half message's transaction id.</summary>
    public string TransactionId { get; }
}
