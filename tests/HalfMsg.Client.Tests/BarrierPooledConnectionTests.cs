using System.Data.Common;
using HalfMsg.Client.Tests.Infrastructure;
using HalfMsg.ProducerClient;
using HalfMsg.ProducerClient.Barrier;
using Microsoft.Data.Sqlite;
using Npgsql;

namespace HalfMsg.Client.Tests;

/// <summary>
/// A check sets its lock wait on its connection (PostgreSQL <c>lock_timeout</c>, SQLite <c>busy_timeout</c>); once
/// done, the connection has its own setting back, so a pooled connection the application takes next does not wait
/// (or fail) by the checker's rule. Until 2026-12-07 the setting stayed: on PostgreSQL with
/// <c>No Reset On Close=true</c> (no DISCARD ALL when a connection goes back to the pool), and on SQLite, whose
/// Microsoft.Data.Sqlite pools connections by default (review of our clients).
/// </summary>
public sealed class BarrierPooledConnectionTests(PostgresDatabase postgres) : IClassFixture<PostgresDatabase>, IDisposable
{
    private readonly SqliteDatabase _sqlite = new();

    public void Dispose() => _sqlite.Dispose();

    private static async Task<string> ScalarAsync(DbConnection connection, string sql)
    {
        await using DbCommand command = connection.CreateCommand();
        command.CommandText = sql;
        return Convert.ToString(await command.ExecuteScalarAsync(), System.Globalization.CultureInfo.InvariantCulture)!;
    }

    [PostgresFact]
    public async Task Postgres_a_pooled_connection_kept_without_reset_has_its_own_lock_timeout_after_a_check()
    {
        // One pooled connection, never reset on close: what a session sets stays for the pool's next user.
        string connectionString = new NpgsqlConnectionStringBuilder(postgres.ConnectionString)
        {
            NoResetOnClose = true, MaxPoolSize = 1, ApplicationName = "barrier-pool-" + Guid.NewGuid().ToString("N")[..8],
        }.ToString();

        await using (var app = new NpgsqlConnection(connectionString))
        {
            await app.OpenAsync();
            Assert.Equal("0", await ScalarAsync(app, "SHOW lock_timeout")); // the server default: wait without limit
        }

        var checker = new BarrierChecker(() => new NpgsqlConnection(connectionString), BarrierDialects.PostgreSql, lockWait: TimeSpan.FromSeconds(7));
        Assert.Equal(TransactionResolution.Rollback, await checker.CheckAsync(Guid.NewGuid().ToString("N"), CancellationToken.None));

        await using (var app = new NpgsqlConnection(connectionString))
        {
            await app.OpenAsync();
            Assert.Equal("0", await ScalarAsync(app, "SHOW lock_timeout"));

            // The application's own setting survives a check on its pooled connection too.
            await ScalarAsync(app, "SET lock_timeout = '3s'");
        }

        // A check that gives up on a held lock (the error path) restores it as well.
        string tid = Guid.NewGuid().ToString("N");
        await using var business = new NpgsqlConnection(postgres.ConnectionString);
        await business.OpenAsync();
        await using DbTransaction held = await business.BeginTransactionAsync();
        await E2E.ExecAsync(business, held, "INSERT INTO halfmsg_barrier (transaction_id, state) VALUES (@id, 'committed')", ("@id", tid));
        var shortChecker = new BarrierChecker(() => new NpgsqlConnection(connectionString), BarrierDialects.PostgreSql, lockWait: TimeSpan.FromMilliseconds(300));
        Assert.Equal(TransactionResolution.Unknown, await shortChecker.CheckAsync(tid, CancellationToken.None));
        await held.RollbackAsync();

        await using (var app = new NpgsqlConnection(connectionString))
        {
            await app.OpenAsync();
            Assert.Equal("3s", await ScalarAsync(app, "SHOW lock_timeout"));
        }
    }

    [Fact]
    public async Task Sqlite_a_pooled_connection_has_its_own_busy_timeout_after_a_check()
    {
        string connectionString = new SqliteConnectionStringBuilder(_sqlite.ConnectionString) { Pooling = true }.ToString();
        string before;
        await using (var app = new SqliteConnection(connectionString))
        {
            await app.OpenAsync();
            before = await ScalarAsync(app, "PRAGMA busy_timeout");
        }

        var checker = new BarrierChecker(() => new SqliteConnection(connectionString), BarrierDialects.Sqlite, lockWait: TimeSpan.FromSeconds(7));
        Assert.Equal(TransactionResolution.Rollback, await checker.CheckAsync(Guid.NewGuid().ToString("N"), CancellationToken.None));

        await using (var app = new SqliteConnection(connectionString))
        {
            await app.OpenAsync();
            Assert.Equal(before, await ScalarAsync(app, "PRAGMA busy_timeout"));
        }

        SqliteConnection.ClearAllPools();
    }
}
