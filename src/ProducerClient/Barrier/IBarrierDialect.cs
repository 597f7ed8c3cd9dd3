using HalfMsg.ClientCore.Sql;
using System.Data.Common;

namespace HalfMsg.ProducerClient.Barrier;

/// <summary>
/// The SQL a database needs to host the transaction barrier. The barrier relies on one property only: an
/// "insert unless the key exists" statement that, when another open transaction inserted the same key, WAITS for
/// that transaction to end and then reports 0 rows if it committed (1 row if it rolled back). SQLite gets this from
/// its database write lock, PostgreSQL from the unique index. Implement this interface for other databases.
/// </summary>
public interface IBarrierDialect
{
    /// <summary>Display name.</summary>
    string Name { get; }

    /// <summary>DDL creating <paramref name="table"/> if it does not exist, with columns <c>transaction_id</c>
    /// (primary key, up to 128 characters), <c>state</c> (up to 16) and <c>created_at</c>.</summary>
    string CreateTableSql(string table);

    /// <summary>Inserts (<c>@transaction_id</c>, <c>@state</c>) and affects 0 rows when the key exists.</summary>
    string InsertIfAbsentSql(string table);

    /// <summary>Selects <c>state</c> for <c>@transaction_id</c>.</summary>
    string SelectStateSql(string table);

    /// <summary>Prepares a freshly opened connection used by the checker (e.g. a lock wait timeout); may do nothing.</summary>
    Task PrepareConnectionAsync(DbConnection connection, CancellationToken cancellationToken);

    /// <summary>Prepares a checker connection to wait at most <paramref name="lockWait"/> for a lock held by another
    /// transaction. The default ignores the wait and calls <see cref="PrepareConnectionAsync(DbConnection, CancellationToken)"/>.</summary>
    Task PrepareConnectionAsync(DbConnection connection, TimeSpan lockWait, CancellationToken cancellationToken)
        => PrepareConnectionAsync(connection, cancellationToken);

    /// <summary>Undoes <see cref="PrepareConnectionAsync(DbConnection, TimeSpan, CancellationToken)"/> when the check is
    /// done, before the connection is closed: a pooled connection must not keep the checker's lock wait for the
    /// application's next use of it. The built-in dialects put back the session's own value. Default: does nothing.</summary>
    Task RestoreConnectionAsync(DbConnection connection, CancellationToken cancellationToken) => Task.CompletedTask;

    /// <summary>True when <paramref name="exception"/> means "gave up waiting for another transaction's lock" (the
    /// checker then answers <see cref="TransactionResolution.Unknown"/> and the broker asks again later). Default: false.</summary>
    bool IsLockWaitTimeout(DbException exception) => false;

    /// <summary>The parameter value to compare <c>created_at</c> with for a UTC time (<see cref="BarrierSchema.PruneAsync"/>).
    /// Default: the <see cref="DateTime"/> itself (kind UTC).</summary>
    object CreatedAtValue(DateTime utc) => utc;
}

/// <summary>The built-in dialects and detection from a connection type.</summary>
public static class BarrierDialects
{
    /// <summary>SQLite 3.24+ (<c>INSERT ... ON CONFLICT DO NOTHING</c>). SQLite has one writer per database file, so a
    /// check waits for the <b>database</b> write lock: for any write transaction in the file, not only the business
    /// transaction of its own id. The checker sets <c>PRAGMA busy_timeout</c> to its lock wait, and puts the connection's own back when done. Microsoft.Data.Sqlite
    /// also retries a busy <c>BEGIN</c> for the connection's <c>Default Timeout</c> (30 s unless the connection string
    /// says otherwise), so a wait shorter than that also needs <c>Default Timeout</c> in the connection string.</summary>
    public static IBarrierDialect Sqlite { get; } = new SqliteBarrierDialect();

    /// <summary>PostgreSQL 9.5+ (<c>INSERT ... ON CONFLICT DO NOTHING</c>, which waits on the unique index for a concurrent
    /// inserter, at READ COMMITTED). A check waits only for the transaction that inserted the same id (the business
    /// transaction of that message), bounded by <c>lock_timeout</c>, which the checker sets to its lock wait (and puts the session's own back when done).</summary>
    public static IBarrierDialect PostgreSql { get; } = new PostgreSqlBarrierDialect();

    /// <summary>Picks a built-in dialect from the provider type (Microsoft.Data.Sqlite, System.Data.SQLite, Npgsql).</summary>
    /// <exception cref="NotSupportedException">Unknown provider: pass a dialect explicitly.</exception>
    public static IBarrierDialect Detect(DbConnection connection) => SqlSupport.Detect(connection, out string name) switch
    {
        SqlSupport.Provider.Sqlite => Sqlite,
        SqlSupport.Provider.PostgreSql => PostgreSql,
        _ => throw new NotSupportedException($"No built-in barrier dialect for {name}; pass an {nameof(IBarrierDialect)}."),
    };

    internal static string CheckIdentifier(string table) => SqlSupport.CheckIdentifier(table);

    // The session's own lock wait, read by PrepareConnectionAsync and put back by RestoreConnectionAsync (per connection
    // object; a pooled connection's next user opens a new one). Until 2026-12-07 the checker's value stayed on the
    // session: a pooled connection (PostgreSQL with No Reset On Close=true, which skips DISCARD ALL; Microsoft.Data.Sqlite,
    // which pools by default and resets no pragma) kept it for the application (review of our clients).
    private static readonly System.Runtime.CompilerServices.ConditionalWeakTable<DbConnection, string> SavedLockWait = new();

    private static async Task<string?> ScalarAsync(DbConnection connection, string sql, CancellationToken cancellationToken)
    {
        await using DbCommand command = connection.CreateCommand();
        command.CommandText = sql;
        return Convert.ToString(await command.ExecuteScalarAsync(cancellationToken).ConfigureAwait(false), System.Globalization.CultureInfo.InvariantCulture);
    }

    private static async Task SaveAndSetAsync(DbConnection connection, string readSql, string setSql, CancellationToken cancellationToken)
    {
        if (!SavedLockWait.TryGetValue(connection, out _) && await ScalarAsync(connection, readSql, cancellationToken).ConfigureAwait(false) is { } own)
        {
            SavedLockWait.AddOrUpdate(connection, own);
        }

        await ScalarAsync(connection, setSql, cancellationToken).ConfigureAwait(false);
    }

    private static async Task RestoreAsync(DbConnection connection, Func<string, (string Sql, string? Parameter)> restore, CancellationToken cancellationToken)
    {
        if (!SavedLockWait.TryGetValue(connection, out string? own))
        {
            return;
        }

        (string sql, string? parameter) = restore(own);
        await using DbCommand command = connection.CreateCommand();
        command.CommandText = sql;
        if (parameter is not null)
        {
            DbParameter p = command.CreateParameter();
            p.ParameterName = "@value";
            p.Value = parameter;
            command.Parameters.Add(p);
        }

        await command.ExecuteScalarAsync(cancellationToken).ConfigureAwait(false);
        SavedLockWait.Remove(connection);
    }

    private sealed class SqliteBarrierDialect : IBarrierDialect
    {
        public string Name => "SQLite";

        public string CreateTableSql(string table) =>
            $"CREATE TABLE IF NOT EXISTS {CheckIdentifier(table)} (transaction_id VARCHAR(128) NOT NULL PRIMARY KEY, " +
            "state VARCHAR(16) NOT NULL, created_at TEXT NOT NULL DEFAULT CURRENT_TIMESTAMP)";

        public string InsertIfAbsentSql(string table) =>
            $"INSERT INTO {CheckIdentifier(table)} (transaction_id, state) VALUES (@transaction_id, @state) ON CONFLICT DO NOTHING";

        public string SelectStateSql(string table) =>
            $"SELECT state FROM {CheckIdentifier(table)} WHERE transaction_id = @transaction_id";

        public Task PrepareConnectionAsync(DbConnection connection, CancellationToken cancellationToken)
            => PrepareConnectionAsync(connection, BarrierChecker.DefaultLockWait, cancellationToken);

        public Task PrepareConnectionAsync(DbConnection connection, TimeSpan lockWait, CancellationToken cancellationToken) =>
            SaveAndSetAsync(connection, "PRAGMA busy_timeout",
                FormattableString.Invariant($"PRAGMA busy_timeout = {(long)lockWait.TotalMilliseconds}"), cancellationToken);

        // PRAGMA takes no parameter: the saved value is the integer SQLite itself reported.
        public Task RestoreConnectionAsync(DbConnection connection, CancellationToken cancellationToken) =>
            RestoreAsync(connection, own => (FormattableString.Invariant($"PRAGMA busy_timeout = {long.Parse(own, System.Globalization.NumberStyles.AllowLeadingSign, System.Globalization.CultureInfo.InvariantCulture)}"), null),
                cancellationToken);

        // CURRENT_TIMESTAMP's text form, in UTC: text order is time order.
        public object CreatedAtValue(DateTime utc) => utc.ToString("yyyy-MM-dd HH:mm:ss", System.Globalization.CultureInfo.InvariantCulture);

        // SQLITE_BUSY (5) and SQLITE_LOCKED (6): Microsoft.Data.Sqlite reports the result code as SqliteErrorCode,
        // System.Data.SQLite as ErrorCode. (No reference to either provider here, so read the property by name.)
        public bool IsLockWaitTimeout(DbException exception)
        {
            int code = exception.GetType().GetProperty("SqliteErrorCode")?.GetValue(exception) is int sqlite ? sqlite : exception.ErrorCode;
            return code is 5 or 6;
        }
    }

    private sealed class PostgreSqlBarrierDialect : IBarrierDialect
    {
        public string Name => "PostgreSQL";

        public string CreateTableSql(string table) =>
            $"CREATE TABLE IF NOT EXISTS {CheckIdentifier(table)} (transaction_id VARCHAR(128) NOT NULL PRIMARY KEY, " +
            "state VARCHAR(16) NOT NULL, created_at TIMESTAMPTZ NOT NULL DEFAULT now())";

        public string InsertIfAbsentSql(string table) =>
            $"INSERT INTO {CheckIdentifier(table)} (transaction_id, state) VALUES (@transaction_id, @state) ON CONFLICT DO NOTHING";

        public string SelectStateSql(string table) =>
            $"SELECT state FROM {CheckIdentifier(table)} WHERE transaction_id = @transaction_id";

        public Task PrepareConnectionAsync(DbConnection connection, CancellationToken cancellationToken) => Task.CompletedTask;

        public Task PrepareConnectionAsync(DbConnection connection, TimeSpan lockWait, CancellationToken cancellationToken) =>
            SaveAndSetAsync(connection, "SELECT current_setting('lock_timeout')",
                FormattableString.Invariant($"SET lock_timeout = {(long)lockWait.TotalMilliseconds}"), cancellationToken);

        public Task RestoreConnectionAsync(DbConnection connection, CancellationToken cancellationToken) =>
            RestoreAsync(connection, own => ("SELECT set_config('lock_timeout', @value, false)", own), cancellationToken);

        // 55P03 lock_not_available: lock_timeout expired.
        public bool IsLockWaitTimeout(DbException exception) => exception.SqlState == "55P03";
    }
}
