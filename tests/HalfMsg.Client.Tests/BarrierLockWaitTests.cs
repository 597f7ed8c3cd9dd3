using System.Data.Common;
using System.Diagnostics;
using HalfMsg.Client.Tests.Infrastructure;
using HalfMsg.ProducerClient;
using HalfMsg.ProducerClient.Barrier;
using Microsoft.Data.Sqlite;

namespace HalfMsg.Client.Tests;

/// <summary>
/// What a check waits for: on SQLite any write transaction in the file (one writer per database), on PostgreSQL only
/// the transaction holding the same barrier key; and for how long (<see cref="BarrierChecker.LockWait"/>), after which
/// it answers Unknown instead of failing.
/// </summary>
public sealed class BarrierLockWaitTests(PostgresDatabase postgres) : IClassFixture<PostgresDatabase>, IDisposable
{
    private readonly SqliteDatabase _sqlite = new();

    public void Dispose() => _sqlite.Dispose();

    private static async Task<(DbConnection Connection, DbTransaction Transaction)> HoldWriteAsync(ITestDatabase db, string table, string id)
    {
        DbConnection c = db.Factory();
        await c.OpenAsync();
        await BarrierSchema.EnsureCreatedAsync(c, db.BarrierDialect);
        await E2E.ExecAsync(c, null, $"CREATE TABLE IF NOT EXISTS {table} (id VARCHAR(64) PRIMARY KEY)");
        DbTransaction tx = await c.BeginTransactionAsync();
        await E2E.ExecAsync(c, tx, $"INSERT INTO {table} (id) VALUES (@id)", ("@id", id));
        return (c, tx);
    }

    [Fact]
    public async Task Sqlite_check_during_a_long_unrelated_write_transaction_waits_for_it_then_answers()
    {
        var (c, tx) = await HoldWriteAsync(_sqlite, "unrelated", "u1");
        await using var _ = c;
        var write = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var checker = new BarrierChecker(LockWaits.SqliteSignallingWrites(_sqlite.ConnectionString, write), BarrierDialects.Sqlite,
            lockWait: TimeSpan.FromSeconds(60));

        // Microsoft.Data.Sqlite's async methods complete synchronously: run the check on another thread.
        Task<TransactionResolution> check = Task.Run(() => checker.CheckAsync(Guid.NewGuid().ToString("N"), CancellationToken.None));

        // SQLite's single writer: the check waits although the open transaction has nothing to do with its key.
        await LockWaits.UntilBlockedOnSqliteAsync(check, write, TimeSpan.FromSeconds(30), TimeSpan.FromMilliseconds(300));
        await tx.CommitAsync();
        Assert.Equal(TransactionResolution.Rollback, await check.WaitAsync(TimeSpan.FromSeconds(20)));
    }

    [Fact]
    public async Task Sqlite_check_gives_up_after_its_lock_wait_and_answers_Unknown_then_decides_once_the_lock_is_free()
    {
        // Microsoft.Data.Sqlite retries a busy BEGIN for Default Timeout as well: keep both short (see BarrierDialects.Sqlite).
        string connectionString = new SqliteConnectionStringBuilder(_sqlite.ConnectionString) { DefaultTimeout = 1 }.ToString();
        var checker = new BarrierChecker(() => new SqliteConnection(connectionString), BarrierDialects.Sqlite, lockWait: TimeSpan.FromSeconds(1));
        var (c, tx) = await HoldWriteAsync(_sqlite, "unrelated", "u2");
        await using var _ = c;
        string tid = Guid.NewGuid().ToString("N");

        var clock = Stopwatch.StartNew();
        Assert.Equal(TransactionResolution.Unknown, await checker.CheckAsync(tid, CancellationToken.None));
        Assert.InRange(clock.Elapsed, TimeSpan.FromSeconds(0.9), TimeSpan.FromSeconds(10)); // not the old hard-coded 30 s

        await tx.RollbackAsync();
        Assert.Equal(TransactionResolution.Rollback, await checker.CheckAsync(tid, CancellationToken.None));
    }

    [PostgresFact]
    public async Task Postgres_check_is_not_held_up_by_an_unrelated_transaction_only_by_its_own_key()
    {
        var (c, tx) = await HoldWriteAsync(postgres, "unrelated", Guid.NewGuid().ToString("N"));
        await using var _ = c;
        var checker = new BarrierChecker(postgres.Factory, BarrierDialects.PostgreSql, lockWait: TimeSpan.FromSeconds(1));

        Assert.Equal(TransactionResolution.Rollback, await checker.CheckAsync(Guid.NewGuid().ToString("N"), CancellationToken.None)
            .WaitAsync(TimeSpan.FromSeconds(5)));

        // The same key held by an open business transaction: the check waits for it, up to its lock wait.
        string tid = Guid.NewGuid().ToString("N");
        DbConnection business = postgres.Factory();
        await using var __ = business;
        await business.OpenAsync();
        await using DbTransaction btx = await business.BeginTransactionAsync();
        await E2E.ExecAsync(business, btx, "INSERT INTO halfmsg_barrier (transaction_id, state) VALUES (@id, 'committed')", ("@id", tid));
        Assert.Equal(TransactionResolution.Unknown, await checker.CheckAsync(tid, CancellationToken.None));
        await btx.CommitAsync();
        Assert.Equal(TransactionResolution.Commit, await checker.CheckAsync(tid, CancellationToken.None));
        await tx.RollbackAsync();
    }
}
