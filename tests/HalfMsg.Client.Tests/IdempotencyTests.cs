using System.Data.Common;
using HalfMsg.Client.Tests.Infrastructure;
using HalfMsg.ConsumerClient.Idempotency;

namespace HalfMsg.Client.Tests;

public abstract class IdempotencyContract
{
    protected abstract ITestDatabase Db { get; }

    protected async Task Same_message_twice_runs_the_writes_once()
    {
        string group = "g-" + Guid.NewGuid().ToString("N")[..8];
        string messageId = Guid.NewGuid().ToString("N");
        int runs = 0;
        Task Writes(DbTransaction tx, CancellationToken ct)
        {
            Interlocked.Increment(ref runs);
            return Task.CompletedTask;
        }

        await using (DbConnection c = Db.Factory())
        {
            Assert.True(await ConsumeOnce.ExecuteAsync(c, group, messageId, Writes, Db.ConsumedDialect));
        }

        await using (DbConnection c = Db.Factory())
        {
            Assert.False(await ConsumeOnce.ExecuteAsync(c, group, messageId, Writes, Db.ConsumedDialect));
        }

        // Another group consumes the same message independently.
        await using (DbConnection c = Db.Factory())
        {
            Assert.True(await ConsumeOnce.ExecuteAsync(c, group + "-other", messageId, Writes, Db.ConsumedDialect));
        }

        Assert.Equal(2, runs);
    }

    protected async Task Failed_writes_leave_no_trace_so_the_redelivery_runs_them()
    {
        string group = "g-" + Guid.NewGuid().ToString("N")[..8];
        string messageId = Guid.NewGuid().ToString("N");
        await using (DbConnection c = Db.Factory())
        {
            await Assert.ThrowsAsync<InvalidOperationException>(() => ConsumeOnce.ExecuteAsync(c, group, messageId,
                (_, _) => throw new InvalidOperationException("boom"), Db.ConsumedDialect));
        }

        bool ran = false;
        await using (DbConnection c = Db.Factory())
        {
            Assert.True(await ConsumeOnce.ExecuteAsync(c, group, messageId, (_, _) => { ran = true; return Task.CompletedTask; }, Db.ConsumedDialect));
        }

        Assert.True(ran);
    }

    protected async Task Concurrent_duplicates_run_the_writes_once()
    {
        string group = "g-" + Guid.NewGuid().ToString("N")[..8];
        string messageId = Guid.NewGuid().ToString("N");
        int runs = 0;
        await using (DbConnection c = Db.Factory())
        {
            await c.OpenAsync();
            await ConsumedSchema.EnsureCreatedAsync(c, Db.ConsumedDialect);
        }

        Task<bool>[] all = Enumerable.Range(0, 4).Select(_ => Task.Run(async () =>
        {
            await using DbConnection c = Db.Factory();
            return await ConsumeOnce.ExecuteAsync(c, group, messageId, async (_, _) =>
            {
                Interlocked.Increment(ref runs);
                await Task.Delay(100);
            }, Db.ConsumedDialect);
        })).ToArray();
        bool[] results = await Task.WhenAll(all);
        Assert.Equal(1, runs);
        Assert.Single(results, r => r);
    }
}

public sealed class SqliteIdempotencyTests : IdempotencyContract, IDisposable
{
    private readonly SqliteDatabase _db = new();

    protected override ITestDatabase Db => _db;

    public void Dispose() => _db.Dispose();

    [Fact]
    public Task Sqlite_same_message_twice_runs_the_writes_once() => Same_message_twice_runs_the_writes_once();

    [Fact]
    public Task Sqlite_failed_writes_leave_no_trace_so_the_redelivery_runs_them() => Failed_writes_leave_no_trace_so_the_redelivery_runs_them();

    [Fact]
    public Task Sqlite_concurrent_duplicates_run_the_writes_once() => Concurrent_duplicates_run_the_writes_once();
}

public sealed class PostgresIdempotencyTests(PostgresDatabase db) : IdempotencyContract, IClassFixture<PostgresDatabase>
{
    protected override ITestDatabase Db => db;

    [PostgresFact]
    public Task Postgres_same_message_twice_runs_the_writes_once() => Same_message_twice_runs_the_writes_once();

    [PostgresFact]
    public Task Postgres_failed_writes_leave_no_trace_so_the_redelivery_runs_them() => Failed_writes_leave_no_trace_so_the_redelivery_runs_them();

    [PostgresFact]
    public Task Postgres_concurrent_duplicates_run_the_writes_once() => Concurrent_duplicates_run_the_writes_once();
}
