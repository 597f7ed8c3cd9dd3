using System.Data;
using System.Data.Common;
using HalfMsg.ProducerClient;
using Microsoft.Data.Sqlite;

namespace HalfMsg.Client.Tests.Infrastructure;

/// <summary>Signals that a check is waiting for a lock another transaction holds, for the tests that check it waits.</summary>
internal static class LockWaits
{
    /// <summary>
    /// PostgreSQL: returns once a backend waits for a lock (<c>pg_stat_activity.wait_event_type = 'Lock'</c>) held by
    /// <paramref name="holder"/>'s backend, asked on a connection of its own. Fails if <paramref name="check"/> returns
    /// first (it did not wait) or nothing waits within <paramref name="within"/>.
    /// </summary>
    public static async Task UntilBlockedOnPostgresAsync(Func<DbConnection> factory, DbConnection holder, Task check, TimeSpan within)
    {
        int holderPid;
        await using (DbCommand pid = holder.CreateCommand())
        {
            pid.CommandText = "SELECT pg_backend_pid()";
            holderPid = Convert.ToInt32(await pid.ExecuteScalarAsync());
        }

        await using DbConnection watcher = factory();
        await watcher.OpenAsync();
        await using DbCommand waiting = watcher.CreateCommand();
        waiting.CommandText = "SELECT COUNT(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND @holder = ANY(pg_blocking_pids(pid))";
        DbParameter p = waiting.CreateParameter();
        p.ParameterName = "@holder";
        p.Value = holderPid;
        waiting.Parameters.Add(p);
        var deadline = DateTime.UtcNow + within;
        while (Convert.ToInt64(await waiting.ExecuteScalarAsync()) == 0)
        {
            Assert.False(check.IsCompleted, "the check returned without waiting for the lock");
            Assert.True(DateTime.UtcNow < deadline, $"no backend waited for the lock within {within}");
            await Task.Delay(10); // the poll interval
        }
    }

    /// <summary>
    /// SQLite: a connection factory whose connections complete <paramref name="writeStarted"/> when they start their first
    /// write (a <c>BEGIN IMMEDIATE</c>, or an <c>INSERT</c>), the statement that waits for the database write lock
    /// (sqlite3_trace, set when the connection opens).
    /// </summary>
    public static Func<DbConnection> SqliteSignallingWrites(string connectionString, TaskCompletionSource writeStarted) => () =>
    {
        var connection = new SqliteConnection(connectionString);
        connection.StateChange += (_, e) =>
        {
            if (e.CurrentState == ConnectionState.Open)
            {
                SQLitePCL.raw.sqlite3_trace(connection.Handle, (_, sql) =>
                {
                    if (sql.StartsWith("BEGIN IMMEDIATE", StringComparison.OrdinalIgnoreCase) || sql.StartsWith("INSERT", StringComparison.OrdinalIgnoreCase))
                    {
                        writeStarted.TrySetResult();
                    }
                }, null);
            }
        };
        return connection;
    };

    /// <summary>
    /// SQLite: returns once <paramref name="check"/> started its write (<paramref name="writeStarted"/>) and then did not
    /// return within <paramref name="window"/>. SQLite shows nothing while a statement waits in its busy handler
    /// (SQLitePCLRaw has no sqlite3_busy_handler, and the checker's busy_timeout would replace one), so past the start of
    /// the write this stays a bounded window: a write that did not wait returns within microseconds of starting.
    /// </summary>
    public static async Task UntilBlockedOnSqliteAsync(Task check, TaskCompletionSource writeStarted, TimeSpan within, TimeSpan window)
    {
        Task first = await Task.WhenAny(check, writeStarted.Task.WaitAsync(within));
        Assert.False(first == check && !writeStarted.Task.IsCompleted, "the check returned without starting a write");
        await writeStarted.Task; // throws TimeoutException after `within`
        Assert.False(await Task.WhenAny(check, Task.Delay(window)) == check, "the check returned although the write lock is held");
    }
}
