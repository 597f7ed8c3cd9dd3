using System.Collections.Concurrent;
using System.Data.Common;

namespace HalfMsg.ClientCore.Sql;

/// <summary>
/// Plain-ADO.NET plumbing shared by the producer's barrier table and the consumer's dedupe table (in HalfMsg.ClientCore,
/// referenced by both packages): provider detection, table-name validation, and "create the table once".
/// </summary>
internal static class SqlSupport
{
    internal enum Provider { Unknown, Sqlite, PostgreSql }

    /// <summary>The built-in provider for a connection type (Microsoft.Data.Sqlite, System.Data.SQLite, Npgsql).</summary>
    public static Provider Detect(DbConnection connection, out string typeName)
    {
        ArgumentNullException.ThrowIfNull(connection);
        typeName = connection.GetType().FullName ?? string.Empty;
        if (typeName.Contains("Sqlite", StringComparison.OrdinalIgnoreCase)) return Provider.Sqlite;
        if (typeName.Contains("Npgsql", StringComparison.OrdinalIgnoreCase)) return Provider.PostgreSql;
        return Provider.Unknown;
    }

    /// <summary>Table names are spliced into SQL, so only <c>[A-Za-z0-9_.]</c> is accepted.</summary>
    public static string CheckIdentifier(string table)
    {
        ArgumentException.ThrowIfNullOrEmpty(table);
        foreach (char c in table)
        {
            if (!(char.IsAsciiLetterOrDigit(c) || c is '_' or '.'))
            {
                throw new ArgumentException($"Invalid table name '{table}'.", nameof(table));
            }
        }

        return table;
    }

    /// <summary>
    /// Runs <paramref name="deleteSql"/> (a DELETE of at most <c>@batch</c> rows, with <paramref name="parameters"/>) in
    /// a transaction of its own until a run deletes fewer than <paramref name="batchSize"/> rows; returns the rows deleted.
    /// Batches keep each transaction's locks short when pruning a large backlog.
    /// </summary>
    public static async Task<long> DeleteInBatchesAsync(DbConnection connection, string deleteSql, IReadOnlyList<(string Name, object Value)> parameters,
        int batchSize, CancellationToken ct)
    {
        long deleted = 0;
        while (true)
        {
            ct.ThrowIfCancellationRequested();
            await using DbTransaction transaction = await connection.BeginTransactionAsync(ct).ConfigureAwait(false);
            await using DbCommand delete = connection.CreateCommand();
            delete.Transaction = transaction;
            delete.CommandText = deleteSql;
            foreach (var (name, value) in parameters.Append(("@batch", batchSize)))
            {
                DbParameter p = delete.CreateParameter();
                p.ParameterName = name;
                p.Value = value;
                delete.Parameters.Add(p);
            }

            int n = await delete.ExecuteNonQueryAsync(ct).ConfigureAwait(false);
            await transaction.CommitAsync(ct).ConfigureAwait(false);
            deleted += n;
            if (n < batchSize) return deleted;
        }
    }

    /// <summary>
    /// Runs <c>SELECT 1</c> in <paramref name="transaction"/>: on a transaction that can no longer commit (PostgreSQL's
    /// aborted state after a failed statement, 25P02) it fails, and <paramref name="aborted"/>'s exception is thrown.
    /// It reads no table, so a search_path or role the caller's statements changed does not matter.
    /// </summary>
    public static async Task EnsureTransactionUsableAsync(DbConnection connection, DbTransaction transaction, Func<DbException, Exception> aborted,
        CancellationToken ct)
    {
        try
        {
            await using DbCommand probe = connection.CreateCommand();
            probe.Transaction = transaction;
            probe.CommandText = "SELECT 1";
            await probe.ExecuteScalarAsync(ct).ConfigureAwait(false);
        }
        catch (DbException ex)
        {
            throw aborted(ex);
        }
    }

    private static readonly ConcurrentDictionary<(string ConnectionString, string Table), byte> Created = new();

    /// <summary>Runs <paramref name="createTableSql"/> (idempotent DDL) on an open connection and remembers it.</summary>
    public static async Task EnsureTableAsync(DbConnection connection, string table, string createTableSql, CancellationToken ct)
    {
        ArgumentNullException.ThrowIfNull(connection);
        await using DbCommand command = connection.CreateCommand();
        command.CommandText = createTableSql;
        await command.ExecuteNonQueryAsync(ct).ConfigureAwait(false);
        Created.TryAdd((connection.ConnectionString, table), 0);
    }

    /// <summary>Like <see cref="EnsureTableAsync"/>, but skips the DDL once it ran for this database and table.</summary>
    public static Task EnsureTableOnceAsync(DbConnection connection, string table, Func<string> createTableSql, CancellationToken ct)
        => Created.ContainsKey((connection.ConnectionString, table)) ? Task.CompletedTask : EnsureTableAsync(connection, table, createTableSql(), ct);
}
