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
