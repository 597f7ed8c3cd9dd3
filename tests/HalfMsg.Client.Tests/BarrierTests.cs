using System.Data.Common;
using HalfMsg.Client.Tests.Infrastructure;
using HalfMsg.ProducerClient;
using HalfMsg.ProducerClient.Barrier;

namespace HalfMsg.Client.Tests;

/// <summary>The four check-back cases of the barrier, written once and run against each database.</summary>
public abstract class BarrierContract
{
    protected abstract ITestDatabase Db { get; }

    /// <summary>Starts a check of <paramref name="transactionId"/> and returns it once it waits for the lock that the open
    /// transaction on <paramref name="holder"/> holds (see <see cref="LockWaits"/>).</summary>
    protected abstract Task<Task<TransactionResolution>> StartCheckBlockedByAsync(string transactionId, DbConnection holder);

    private BarrierChecker Checker() => new(Db.Factory, Db.BarrierDialect);

    private async Task<DbConnection> OpenAsync()
    {
        DbConnection c = Db.Factory();
        await c.OpenAsync();
        await BarrierSchema.EnsureCreatedAsync(c, Db.BarrierDialect);
        await Exec(c, null, "CREATE TABLE IF NOT EXISTS orders (id VARCHAR(64) PRIMARY KEY, note VARCHAR(64))");
        return c;
    }

    private static async Task Exec(DbConnection c, DbTransaction? tx, string sql, string? id = null)
    {
        await using DbCommand cmd = c.CreateCommand();
        cmd.Transaction = tx;
        cmd.CommandText = sql;
        if (id is not null)
        {
            DbParameter p = cmd.CreateParameter();
            p.ParameterName = "@id";
            p.Value = id;
            cmd.Parameters.Add(p);
        }

        await cmd.ExecuteNonQueryAsync();
    }

    private async Task<bool> OrderExists(string id)
    {
        await using DbConnection c = await OpenAsync();
        await using DbCommand cmd = c.CreateCommand();
        cmd.CommandText = "SELECT COUNT(*) FROM orders WHERE id = @id";
        DbParameter p = cmd.CreateParameter();
        p.ParameterName = "@id";
        p.Value = id;
        cmd.Parameters.Add(p);
        return Convert.ToInt64(await cmd.ExecuteScalarAsync()) == 1;
    }

    private static Func<DbTransaction, CancellationToken, Task> InsertOrder(DbConnection c, string id) =>
        (tx, _) => Exec(c, tx, "INSERT INTO orders (id, note) VALUES (@id, 'x')", id);

    protected async Task Check_before_the_local_transaction_started_rolls_back_and_the_late_transaction_fails_cleanly()
    {
        string tid = Guid.NewGuid().ToString("N");
        await using DbConnection c = await OpenAsync();

        Assert.Equal(TransactionResolution.Rollback, await Checker().CheckAsync(tid, default));

        var ex = await Assert.ThrowsAsync<BarrierConflictException>(() =>
            LocalBarrier.RunAsync(c, Db.BarrierDialect, tid, InsertOrder(c, tid), null, default));
        Assert.Equal(tid, ex.TransactionId);
        Assert.False(await OrderExists(tid)); // business writes rolled back with the barrier
        Assert.Equal(TransactionResolution.Rollback, await Checker().CheckAsync(tid, default)); // and it stays so
    }

    protected async Task Check_during_the_local_transaction_waits_for_its_commit_then_commits()
    {
        string tid = Guid.NewGuid().ToString("N");
        await using DbConnection c = await OpenAsync();
        await using DbTransaction tx = await c.BeginTransactionAsync();
        await InsertOrder(c, tid)(tx, default);
        Assert.True(await BarrierStore.TryInsertAsync(c, tx, Db.BarrierDialect, tid, BarrierStore.Committed, default));

        Task<TransactionResolution> check = await StartCheckBlockedByAsync(tid, c);
        Assert.False(check.IsCompleted, "the check must block on the open business transaction");

        await tx.CommitAsync();
        Assert.Equal(TransactionResolution.Commit, await check.WaitAsync(TimeSpan.FromSeconds(30)));
        Assert.True(await OrderExists(tid));
    }

    protected async Task Check_during_the_local_transaction_waits_for_its_rollback_then_rolls_back()
    {
        string tid = Guid.NewGuid().ToString("N");
        await using DbConnection c = await OpenAsync();
        await using DbTransaction tx = await c.BeginTransactionAsync();
        await InsertOrder(c, tid)(tx, default);
        Assert.True(await BarrierStore.TryInsertAsync(c, tx, Db.BarrierDialect, tid, BarrierStore.Committed, default));

        Task<TransactionResolution> check = await StartCheckBlockedByAsync(tid, c);
        Assert.False(check.IsCompleted, "the check must block on the open business transaction");

        await tx.RollbackAsync();
        Assert.Equal(TransactionResolution.Rollback, await check.WaitAsync(TimeSpan.FromSeconds(30)));
        Assert.False(await OrderExists(tid));
    }

    protected async Task Check_after_the_local_transaction_rolled_back_rolls_back()
    {
        string tid = Guid.NewGuid().ToString("N");
        await using DbConnection c = await OpenAsync();
        await Assert.ThrowsAsync<InvalidOperationException>(() => LocalBarrier.RunAsync(c, Db.BarrierDialect, tid,
            async (tx, ct) =>
            {
                await InsertOrder(c, tid)(tx, ct);
                throw new InvalidOperationException("business failure");
            }, null, default));

        Assert.Equal(TransactionResolution.Rollback, await Checker().CheckAsync(tid, default));
        Assert.Equal(TransactionResolution.Rollback, await Checker().CheckAsync(tid, default)); // repeated checks agree
        Assert.False(await OrderExists(tid));
    }

    protected async Task Check_after_the_local_transaction_committed_commits()
    {
        string tid = Guid.NewGuid().ToString("N");
        await using DbConnection c = await OpenAsync();
        await LocalBarrier.RunAsync(c, Db.BarrierDialect, tid, InsertOrder(c, tid), null, default);

        Assert.Equal(TransactionResolution.Commit, await Checker().CheckAsync(tid, default));
        Assert.Equal(TransactionResolution.Commit, await Checker().CheckAsync(tid, default));
        Assert.True(await OrderExists(tid));
    }
}

public sealed class SqliteBarrierTests : BarrierContract, IDisposable
{
    private readonly SqliteDatabase _db = new();

    protected override ITestDatabase Db => _db;

    public void Dispose() => _db.Dispose();

    protected override async Task<Task<TransactionResolution>> StartCheckBlockedByAsync(string transactionId, DbConnection holder)
    {
        var write = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var checker = new BarrierChecker(LockWaits.SqliteSignallingWrites(_db.ConnectionString, write), _db.BarrierDialect);
        // Microsoft.Data.Sqlite's async methods complete synchronously: run the check on another thread.
        Task<TransactionResolution> check = Task.Run(() => checker.CheckAsync(transactionId, default));
        await LockWaits.UntilBlockedOnSqliteAsync(check, write, TimeSpan.FromSeconds(30), TimeSpan.FromMilliseconds(300));
        return check;
    }

    [Fact]
    public Task Sqlite_check_before_the_local_transaction_started_rolls_back_and_the_late_transaction_fails_cleanly() =>
        Check_before_the_local_transaction_started_rolls_back_and_the_late_transaction_fails_cleanly();

    [Fact]
    public Task Sqlite_check_during_the_local_transaction_waits_for_its_commit_then_commits() =>
        Check_during_the_local_transaction_waits_for_its_commit_then_commits();

    [Fact]
    public Task Sqlite_check_during_the_local_transaction_waits_for_its_rollback_then_rolls_back() =>
        Check_during_the_local_transaction_waits_for_its_rollback_then_rolls_back();

    [Fact]
    public Task Sqlite_check_after_the_local_transaction_rolled_back_rolls_back() =>
        Check_after_the_local_transaction_rolled_back_rolls_back();

    [Fact]
    public Task Sqlite_check_after_the_local_transaction_committed_commits() =>
        Check_after_the_local_transaction_committed_commits();
}

public sealed class PostgresBarrierTests(PostgresDatabase db) : BarrierContract, IClassFixture<PostgresDatabase>
{
    protected override ITestDatabase Db => db;

    protected override async Task<Task<TransactionResolution>> StartCheckBlockedByAsync(string transactionId, DbConnection holder)
    {
        var checker = new BarrierChecker(db.Factory, db.BarrierDialect);
        Task<TransactionResolution> check = Task.Run(() => checker.CheckAsync(transactionId, default));
        await LockWaits.UntilBlockedOnPostgresAsync(db.Factory, holder, check, TimeSpan.FromSeconds(30));
        return check;
    }

    [PostgresFact]
    public Task Postgres_check_before_the_local_transaction_started_rolls_back_and_the_late_transaction_fails_cleanly() =>
        Check_before_the_local_transaction_started_rolls_back_and_the_late_transaction_fails_cleanly();

    [PostgresFact]
    public Task Postgres_check_during_the_local_transaction_waits_for_its_commit_then_commits() =>
        Check_during_the_local_transaction_waits_for_its_commit_then_commits();

    [PostgresFact]
    public Task Postgres_check_during_the_local_transaction_waits_for_its_rollback_then_rolls_back() =>
        Check_during_the_local_transaction_waits_for_its_rollback_then_rolls_back();

    [PostgresFact]
    public Task Postgres_check_after_the_local_transaction_rolled_back_rolls_back() =>
        Check_after_the_local_transaction_rolled_back_rolls_back();

    [PostgresFact]
    public Task Postgres_check_after_the_local_transaction_committed_commits() =>
        Check_after_the_local_transaction_committed_commits();
}
