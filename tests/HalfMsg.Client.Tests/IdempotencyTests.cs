using System.Data.Common;
using HalfMsg.Client.Tests.Infrastructure;
using HalfMsg.ConsumerClient;
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

    protected async Task<long> CountAsync(string sql)
    {
        await using DbConnection c = Db.Factory();
        await c.OpenAsync();
        await using DbCommand cmd = c.CreateCommand();
        cmd.CommandText = sql;
        return Convert.ToInt64(await cmd.ExecuteScalarAsync());
    }

    protected async Task Prune_deletes_only_rows_consumed_before_its_age_in_batches()
    {
        string group = "g-" + Guid.NewGuid().ToString("N")[..8];
        await using DbConnection c = Db.Factory();
        await c.OpenAsync();
        await ConsumedSchema.EnsureCreatedAsync(c, Db.ConsumedDialect);
        for (int i = 0; i < 9; i++)
        {
            await E2E.ExecAsync(c, null, $"INSERT INTO {ConsumedSchema.DefaultTable} (consumer_group, message_id, consumed_at) VALUES (@g, @m, @at)",
                ("@g", group), ("@m", "old-" + i), ("@at", Db.ConsumedDialect.ConsumedAtValue(DateTime.UtcNow.AddDays(-3))));
        }

        Assert.True(await ConsumeOnce.ExecuteAsync(c, group, "fresh", (_, _) => Task.CompletedTask, Db.ConsumedDialect));
        Assert.Equal(9, await ConsumedSchema.PruneAsync(c, Db.ConsumedDialect, TimeSpan.FromDays(1), batchSize: 2));
        // The fresh row stays, and the row holding the group's cut-off (PruneAsync's guard) comes.
        Assert.Equal(1, await CountAsync($"SELECT COUNT(*) FROM {ConsumedSchema.DefaultTable} WHERE consumer_group = '{group}' AND message_id <> 'halfmsg:pruned-before'"));
        Assert.Equal(1, await CountAsync($"SELECT COUNT(*) FROM {ConsumedSchema.DefaultTable} WHERE consumer_group = '{group}' AND message_id = 'halfmsg:pruned-before'"));
        Assert.False(await ConsumeOnce.ExecuteAsync(c, group, "fresh", (_, _) => Task.CompletedTask, Db.ConsumedDialect)); // still a duplicate
        await Assert.ThrowsAsync<ArgumentOutOfRangeException>(() => ConsumedSchema.PruneAsync(c, Db.ConsumedDialect, TimeSpan.Zero));
    }

    // A received message as the push consumer hands it to a handler: its id and the producer's born time.
    internal static ReceivedMessage Received(string messageId, DateTime bornUtc) => new(null!, new("127.0.0.1", 8081), new Apache.Rocketmq.V2.Message
    {
        Topic = new Apache.Rocketmq.V2.Resource { Name = "t" },
        SystemProperties = new Apache.Rocketmq.V2.SystemProperties
        {
            MessageId = messageId, BornTimestamp = Google.Protobuf.WellKnownTypes.Timestamp.FromDateTime(bornUtc),
        },
    });

    /// <summary>
    /// A message whose consumed row a prune deleted comes again (a queue re-consumed from an earlier offset, a lost ack
    /// found late): it is not applied again as new. It was born before the prune's cut-off, so it may have been
    /// consumed: ConsumedRowPrunedException, nothing committed (the message comes again and ends in the
    /// DLQ, for an operator), as the barrier's check answers Unknown rather than guess. Until 2026-12-06 its writes ran a
    /// second time. A message born after the cut-off, and a group that had nothing pruned, are applied as before.
    /// </summary>
    protected async Task A_redelivery_of_a_message_whose_row_was_pruned_is_not_applied_again()
    {
        string group = "g-" + Guid.NewGuid().ToString("N")[..8];
        string old = Guid.NewGuid().ToString("N");
        int runs = 0;
        Task Writes(DbTransaction tx, CancellationToken ct)
        {
            Interlocked.Increment(ref runs);
            return Task.CompletedTask;
        }

        await using DbConnection c = Db.Factory();
        await c.OpenAsync();
        var bornOld = DateTime.UtcNow.AddDays(-3);
        Assert.True(await ConsumeOnce.ExecuteAsync(c, group, Received(old, bornOld), Writes, Db.ConsumedDialect, ConsumedSchema.DefaultTable));
        await E2E.ExecAsync(c, null, $"UPDATE {ConsumedSchema.DefaultTable} SET consumed_at = @at WHERE consumer_group = @g",
            ("@at", Db.ConsumedDialect.ConsumedAtValue(DateTime.UtcNow.AddDays(-2))), ("@g", group));
        Assert.Equal(1, await ConsumedSchema.PruneAsync(c, Db.ConsumedDialect, TimeSpan.FromDays(1)));

        Exception? refused = await Record.ExceptionAsync(() =>
            ConsumeOnce.ExecuteAsync(c, group, Received(old, bornOld), Writes, Db.ConsumedDialect, ConsumedSchema.DefaultTable));
        Assert.Equal(1, runs);                                  // before: 2, the writes applied a second time
        Assert.Equal("ConsumedRowPrunedException", refused?.GetType().Name);
        Assert.Contains(old, refused!.Message);
        Assert.Equal(0, await CountAsync($"SELECT COUNT(*) FROM {ConsumedSchema.DefaultTable} WHERE consumer_group = '{group}' AND message_id = '{old}'"));

        // Born after the cut-off (plus the clock allowance): its row cannot have been pruned; applied once, as before.
        string fresh = Guid.NewGuid().ToString("N");
        Assert.True(await ConsumeOnce.ExecuteAsync(c, group, Received(fresh, DateTime.UtcNow), Writes, Db.ConsumedDialect, ConsumedSchema.DefaultTable));
        Assert.False(await ConsumeOnce.ExecuteAsync(c, group, Received(fresh, DateTime.UtcNow), Writes, Db.ConsumedDialect, ConsumedSchema.DefaultTable));
        // Another group, which had nothing pruned, consumes the old message for the first time.
        Assert.True(await ConsumeOnce.ExecuteAsync(c, group + "-other", Received(old, bornOld), Writes, Db.ConsumedDialect, ConsumedSchema.DefaultTable));
        Assert.Equal(3, runs);
        // A later prune leaves the newer cut-off in force and keeps the pruned group's message refused.
        Assert.Equal(0, await ConsumedSchema.PruneAsync(c, Db.ConsumedDialect, TimeSpan.FromDays(5)));
        refused = await Record.ExceptionAsync(() =>
            ConsumeOnce.ExecuteAsync(c, group, Received(old, bornOld), Writes, Db.ConsumedDialect, ConsumedSchema.DefaultTable));
        Assert.Equal("ConsumedRowPrunedException", refused?.GetType().Name);
        Assert.Equal(3, runs);
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

    [Fact]
    public Task Sqlite_prune_deletes_only_rows_consumed_before_its_age_in_batches() => Prune_deletes_only_rows_consumed_before_its_age_in_batches();

    [Fact]
    public Task Sqlite_a_redelivery_of_a_message_whose_row_was_pruned_is_not_applied_again() => A_redelivery_of_a_message_whose_row_was_pruned_is_not_applied_again();
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

    [PostgresFact]
    public Task Postgres_prune_deletes_only_rows_consumed_before_its_age_in_batches() => Prune_deletes_only_rows_consumed_before_its_age_in_batches();

    [PostgresFact]
    public Task Postgres_a_redelivery_of_a_message_whose_row_was_pruned_is_not_applied_again() => A_redelivery_of_a_message_whose_row_was_pruned_is_not_applied_again();

    [PostgresFact]
    public async Task Postgres_writes_that_caught_a_failed_statement_are_not_taken_for_consumed_and_the_redelivery_applies_them()
    {
        string group = "g-" + Guid.NewGuid().ToString("N")[..8];
        string messageId = Guid.NewGuid().ToString("N");
        await using var c = new Npgsql.NpgsqlConnection(db.ConnectionString);
        await c.OpenAsync();
        await E2E.ExecAsync(c, null, "CREATE TABLE IF NOT EXISTS shipments_aborted (id VARCHAR(64) PRIMARY KEY)");
        await E2E.ExecAsync(c, null, "INSERT INTO shipments_aborted (id) VALUES ('existing') ON CONFLICT DO NOTHING");

        // "Insert, ignore it if it exists" without a savepoint: PostgreSQL aborts the transaction at the failed insert, and
        // its COMMIT then rolls back without an error. Taken for consumed, the message would be acknowledged and lost.
        var thrown = await Assert.ThrowsAsync<ConsumeAbortedException>(() => ConsumeOnce.ExecuteAsync(c, group, messageId, async (tx, _) =>
        {
            await E2E.ExecAsync(c, tx, "INSERT INTO shipments_aborted (id) VALUES (@id)", ("@id", messageId));
            try
            {
                await E2E.ExecAsync(c, tx, "INSERT INTO shipments_aborted (id) VALUES ('existing')");
            }
            catch (Npgsql.PostgresException e) when (e.SqlState == Npgsql.PostgresErrorCodes.UniqueViolation)
            {
            }
        }, Db.ConsumedDialect));
        Assert.Equal(Npgsql.PostgresErrorCodes.InFailedSqlTransaction, Assert.IsType<Npgsql.PostgresException>(thrown.InnerException).SqlState);

        // The redelivery is not a duplicate: it applies the writes.
        Assert.True(await ConsumeOnce.ExecuteAsync(c, group, messageId,
            (tx, _) => E2E.ExecAsync(c, tx, "INSERT INTO shipments_aborted (id) VALUES (@id)", ("@id", messageId)), Db.ConsumedDialect));
        Assert.Equal(1, await CountAsync($"SELECT COUNT(*) FROM shipments_aborted WHERE id = '{messageId}'"));
    }
}
