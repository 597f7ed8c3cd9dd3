using System.Data.Common;
using HalfMsg.Client.Tests.Infrastructure;
using HalfMsg.ProducerClient;
using HalfMsg.ProducerClient.Barrier;

namespace HalfMsg.Client.Tests;

/// <summary>
/// <see cref="BarrierSchema.PruneAsync"/>: old barrier rows go, and a check-back of a transaction whose row may have
/// gone is answered Unknown, never Rollback (a Rollback there would drop an event whose local transaction committed).
/// </summary>
public abstract class BarrierPruneContract
{
    protected abstract ITestDatabase Db { get; }

    private BarrierChecker Checker() => new(Db.Factory, Db.BarrierDialect);

    private async Task<DbConnection> OpenAsync()
    {
        DbConnection c = Db.Factory();
        await c.OpenAsync();
        await BarrierSchema.EnsureCreatedAsync(c, Db.BarrierDialect);
        return c;
    }

    // A barrier row as the producer's local transaction would have written it, at a chosen time.
    private async Task InsertRowAsync(DbConnection c, string tid, string state, DateTime createdUtc)
    {
        await using DbCommand cmd = c.CreateCommand();
        cmd.CommandText = $"INSERT INTO {BarrierSchema.DefaultTable} (transaction_id, state, created_at) VALUES (@id, @state, @at)";
        foreach (var (name, value) in new (string, object)[] { ("@id", tid), ("@state", state), ("@at", Db.BarrierDialect.CreatedAtValue(createdUtc)) })
        {
            DbParameter p = cmd.CreateParameter();
            p.ParameterName = name;
            p.Value = value;
            cmd.Parameters.Add(p);
        }

        await cmd.ExecuteNonQueryAsync();
    }

    private static async Task<long> CountAsync(DbConnection c)
    {
        await using DbCommand cmd = c.CreateCommand();
        cmd.CommandText = $"SELECT COUNT(*) FROM {BarrierSchema.DefaultTable}";
        return Convert.ToInt64(await cmd.ExecuteScalarAsync());
    }

    private static string NewId() => Guid.NewGuid().ToString("N");

    protected async Task Prune_deletes_old_rows_in_batches_and_keeps_new_rows_and_the_owner()
    {
        await using DbConnection c = await OpenAsync();
        string owner = await BarrierOwner.GetAsync(c, Db.BarrierDialect, BarrierSchema.DefaultTable, default);
        DateTime old = DateTime.UtcNow.AddDays(-3);
        for (int i = 0; i < 25; i++) await InsertRowAsync(c, NewId(), i % 2 == 0 ? BarrierStore.Committed : BarrierStore.RolledBack, old);
        string fresh = NewId();
        await LocalBarrier.RunAsync(c, Db.BarrierDialect, fresh, (_, _) => Task.CompletedTask, null, default);

        Assert.Equal(25, await BarrierSchema.PruneAsync(c, Db.BarrierDialect, TimeSpan.FromDays(1), batchSize: 4));
        // Left: the fresh row, the owner row and the prune's cut-off row.
        Assert.Equal(3, await CountAsync(c));
        Assert.Equal(owner, await BarrierOwner.GetAsync(c, Db.BarrierDialect, BarrierSchema.DefaultTable, default));
        Assert.Equal(TransactionResolution.Commit, await Checker().CheckAsync(fresh, DateTimeOffset.UtcNow, default));
        Assert.Equal(0, await BarrierSchema.PruneAsync(c, Db.BarrierDialect, TimeSpan.FromDays(1)));
    }

    protected async Task A_check_of_a_transaction_whose_row_was_pruned_is_answered_Unknown_never_Rollback()
    {
        await using DbConnection c = await OpenAsync();
        DateTime old = DateTime.UtcNow.AddDays(-3);
        string committedLongAgo = NewId();
        await InsertRowAsync(c, committedLongAgo, BarrierStore.Committed, old);
        string keptOld = NewId();
        await InsertRowAsync(c, keptOld, BarrierStore.Committed, DateTime.UtcNow.AddHours(-1));
        // Before any prune a missing row means the local transaction never committed: Rollback, as before.
        Assert.Equal(TransactionResolution.Rollback, await Checker().CheckAsync(NewId(), old, default));

        Assert.Equal(1, await BarrierSchema.PruneAsync(c, Db.BarrierDialect, TimeSpan.FromDays(1)));

        // Its committed row is gone: the answer is Unknown (the broker asks again and at its limit gives up), and the
        // check leaves no rolled_back row behind that would answer Rollback next time.
        Assert.Equal(TransactionResolution.Unknown, await Checker().CheckAsync(committedLongAgo, old.AddMinutes(-1), default));
        Assert.Equal(TransactionResolution.Unknown, await Checker().CheckAsync(committedLongAgo, old.AddMinutes(-1), default));
        // Within the clock-skew allowance of the cut-off still Unknown; a row that survived still decides.
        Assert.Equal(TransactionResolution.Unknown, await Checker().CheckAsync(NewId(), DateTimeOffset.UtcNow.AddDays(-1).AddMinutes(5), default));
        Assert.Equal(TransactionResolution.Commit, await Checker().CheckAsync(keptOld, DateTimeOffset.UtcNow.AddHours(-1), default));
        // A half born after the cut-off (plus the allowance) without a row never committed: Rollback, and it stays so.
        string recent = NewId();
        Assert.Equal(TransactionResolution.Rollback, await Checker().CheckAsync(recent, DateTimeOffset.UtcNow, default));
        await Assert.ThrowsAsync<BarrierConflictException>(() =>
            LocalBarrier.RunAsync(c, Db.BarrierDialect, recent, (_, _) => Task.CompletedTask, null, default));
        // A check that does not know the half's birth cannot tell once a prune has run.
        Assert.Equal(TransactionResolution.Unknown, await Checker().CheckAsync(NewId(), default));
        // A later prune with a shorter age moves the cut-off forward, never back.
        Assert.Equal(1, await BarrierSchema.PruneAsync(c, Db.BarrierDialect, TimeSpan.FromMinutes(30)));
        Assert.Equal(0, await BarrierSchema.PruneAsync(c, Db.BarrierDialect, TimeSpan.FromDays(2)));
        Assert.Equal(TransactionResolution.Unknown, await Checker().CheckAsync(keptOld, DateTimeOffset.UtcNow.AddHours(-1), default));
    }

    protected async Task Prune_refuses_bad_arguments()
    {
        await using DbConnection c = await OpenAsync();
        await Assert.ThrowsAsync<ArgumentOutOfRangeException>(() => BarrierSchema.PruneAsync(c, Db.BarrierDialect, TimeSpan.Zero));
        await Assert.ThrowsAsync<ArgumentOutOfRangeException>(() => BarrierSchema.PruneAsync(c, Db.BarrierDialect, TimeSpan.FromDays(1), batchSize: 0));
        await Assert.ThrowsAsync<ArgumentOutOfRangeException>(() => BarrierSchema.PruneAsync(c, Db.BarrierDialect, TimeSpan.FromDays(1), batchSize: 100_001));
    }
}

public sealed class SqliteBarrierPruneTests : BarrierPruneContract, IDisposable
{
    private readonly SqliteDatabase _db = new();

    protected override ITestDatabase Db => _db;

    public void Dispose() => _db.Dispose();

    [Fact]
    public Task Sqlite_prune_deletes_old_rows_in_batches_and_keeps_new_rows_and_the_owner() =>
        Prune_deletes_old_rows_in_batches_and_keeps_new_rows_and_the_owner();

    [Fact]
    public Task Sqlite_check_of_a_transaction_whose_row_was_pruned_is_answered_Unknown_never_Rollback() =>
        A_check_of_a_transaction_whose_row_was_pruned_is_answered_Unknown_never_Rollback();

    [Fact]
    public Task Sqlite_prune_refuses_bad_arguments() => Prune_refuses_bad_arguments();
}

// Each test gets its own server: a prune's cut-off changes every later check's answer in that database.
public sealed class PostgresBarrierPruneTests : BarrierPruneContract, IAsyncLifetime
{
    private readonly PostgresDatabase _db = new();

    protected override ITestDatabase Db => _db;

    public Task InitializeAsync() => _db.InitializeAsync();

    public Task DisposeAsync() => _db.DisposeAsync();

    [PostgresFact]
    public Task Postgres_prune_deletes_old_rows_in_batches_and_keeps_new_rows_and_the_owner() =>
        Prune_deletes_old_rows_in_batches_and_keeps_new_rows_and_the_owner();

    [PostgresFact]
    public Task Postgres_check_of_a_transaction_whose_row_was_pruned_is_answered_Unknown_never_Rollback() =>
        A_check_of_a_transaction_whose_row_was_pruned_is_answered_Unknown_never_Rollback();
}
