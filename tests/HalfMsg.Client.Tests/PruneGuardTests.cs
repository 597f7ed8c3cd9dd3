using System.Data.Common;
using HalfMsg.Client.Tests.Infrastructure;
using HalfMsg.ConsumerClient.Idempotency;

namespace HalfMsg.Client.Tests;

/// <summary>The pruned-row guard of ConsumeOnce (afternoon of 2026-12-06), found by a review of its merge: each failed
/// on the code before its fix.</summary>
public abstract class PruneGuardContract
{
    protected abstract ITestDatabase Db { get; }

    // One group whose rows were pruned (one row consumed 2 h ago; prune olderThan).
    protected async Task<string> PrunedGroupAsync(DbConnection c, TimeSpan olderThan)
    {
        string group = "g-" + Guid.NewGuid().ToString("N")[..8];
        Assert.True(await ConsumeOnce.ExecuteAsync(c, group, Guid.NewGuid().ToString("N"), (_, _) => Task.CompletedTask, Db.ConsumedDialect));
        await E2E.ExecAsync(c, null, $"UPDATE {ConsumedSchema.DefaultTable} SET consumed_at = @at WHERE consumer_group = @g",
            ("@at", Db.ConsumedDialect.ConsumedAtValue(DateTime.UtcNow.AddHours(-2))), ("@g", group));
        Assert.Equal(1, await ConsumedSchema.PruneAsync(c, Db.ConsumedDialect, olderThan));
        return group;
    }

    // A short age would refuse every message of the group still in flight (born before the cut-off plus the clock
    // allowance): refused with the reason (found by review: with 5 minutes, a fresh message was refused).
    protected async Task A_prune_age_shorter_than_an_hour_is_refused_with_the_reason()
    {
        await using DbConnection c = Db.Factory();
        await c.OpenAsync();
        var e = await Assert.ThrowsAsync<ArgumentOutOfRangeException>(() => ConsumedSchema.PruneAsync(c, Db.ConsumedDialect, TimeSpan.FromMinutes(5)));
        Assert.Contains("at least", e.Message);
    }

    // A message whose producer set no born time: the broker stores 0 and delivers born = 1970-01-01 (V5MessageConverter).
    protected async Task A_fresh_message_without_a_born_time_is_applied_after_a_prune()
    {
        await using DbConnection c = Db.Factory();
        await c.OpenAsync();
        string group = await PrunedGroupAsync(c, TimeSpan.FromHours(1));
        var e = await Record.ExceptionAsync(() => ConsumeOnce.ExecuteAsync(c, group, IdempotencyContract.Received(Guid.NewGuid().ToString("N"), DateTime.UnixEpoch),
            (_, _) => Task.CompletedTask, Db.ConsumedDialect, ConsumedSchema.DefaultTable));
        Assert.Null(e);
    }

    // Two scheduled prune jobs (two instances of a service) at once.
    protected async Task Two_concurrent_prunes_both_succeed()
    {
        for (int round = 0; round < 20; round++)
        {
            string group = "g-" + Guid.NewGuid().ToString("N")[..8];
            await using (DbConnection c = Db.Factory())
            {
                await c.OpenAsync();
                for (int i = 0; i < 50; i++)
                    Assert.True(await ConsumeOnce.ExecuteAsync(c, group, Guid.NewGuid().ToString("N"), (_, _) => Task.CompletedTask, Db.ConsumedDialect));
                await E2E.ExecAsync(c, null, $"UPDATE {ConsumedSchema.DefaultTable} SET consumed_at = @at WHERE consumer_group = @g",
                    ("@at", Db.ConsumedDialect.ConsumedAtValue(DateTime.UtcNow.AddHours(-2))), ("@g", group));
            }
            async Task<long> One()
            {
                await using DbConnection c = Db.Factory();
                await c.OpenAsync();
                return await ConsumedSchema.PruneAsync(c, Db.ConsumedDialect, TimeSpan.FromHours(1));
            }
            var tasks = new[] { Task.Run(One), Task.Run(One) };
            var all = Task.WhenAll(tasks);
            var e = await Record.ExceptionAsync(() => all);
            Assert.True(e is null, $"round {round}: {e}");
        }
    }
}

public sealed class SqlitePruneGuardTests : PruneGuardContract, IDisposable
{
    private readonly SqliteDatabase _db = new();
    protected override ITestDatabase Db => _db;
    public void Dispose() => _db.Dispose();

    [Fact] public Task Sqlite_short_age_refused() => A_prune_age_shorter_than_an_hour_is_refused_with_the_reason();
    [Fact] public Task Sqlite_no_born_time() => A_fresh_message_without_a_born_time_is_applied_after_a_prune();
    [Fact] public Task Sqlite_concurrent_prunes() => Two_concurrent_prunes_both_succeed();
}

public sealed class PostgresPruneGuardTests(PostgresDatabase db) : PruneGuardContract, IClassFixture<PostgresDatabase>
{
    protected override ITestDatabase Db => db;

    [PostgresFact] public Task Postgres_short_age_refused() => A_prune_age_shorter_than_an_hour_is_refused_with_the_reason();
    [PostgresFact] public Task Postgres_no_born_time() => A_fresh_message_without_a_born_time_is_applied_after_a_prune();
    [PostgresFact] public Task Postgres_concurrent_prunes() => Two_concurrent_prunes_both_succeed();
}
