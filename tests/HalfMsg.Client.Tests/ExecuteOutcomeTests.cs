using System.Collections.Concurrent;
using System.Data.Common;
using Apache.Rocketmq.V2;
using HalfMsg.Client.Tests.Infrastructure;
using HalfMsg.ProducerClient;
using HalfMsg.ProducerClient.Barrier;
using Npgsql;
using ProducerMessage = HalfMsg.ProducerClient.Message;

namespace HalfMsg.Client.Tests;

/// <summary>
/// What <see cref="Producer.ExecuteAsync(DbConnection, ProducerMessage, Func{DbTransaction, CancellationToken, Task}, CancellationToken)"/>
/// tells its caller, and the broker, when the local transaction cannot commit or the producer goes away under it
/// (found by review on 2026-12-05).
/// </summary>
public sealed class ExecuteOutcomeTests(PostgresDatabase postgres) : IClassFixture<PostgresDatabase>, IDisposable
{
    private readonly SqliteDatabase _sqlite = new();

    public void Dispose() => _sqlite.Dispose();

    // A plain RocketMQ broker as far as the producer can tell: one EndTransaction per decision, each recorded.
    private static async Task<(TestGrpcServer Server, Producer Producer)> StartAsync(ConcurrentQueue<EndTransactionRequest> decisions)
    {
        TestGrpcServer server = await FakeBrokers.RecordingDecisionsAsync(decisions, new Settings());
        Producer producer = await Producer.StartAsync(ProducerOptions.Default with { Endpoints = server.Endpoint, Topics = ["orders"] });
        return (server, producer);
    }

    private static async Task<long> CountAsync(DbConnection c, string table, string id)
    {
        await using DbCommand cmd = c.CreateCommand();
        cmd.CommandText = $"SELECT COUNT(*) FROM {table} WHERE id = @id";
        DbParameter p = cmd.CreateParameter();
        p.ParameterName = "@id";
        p.Value = id;
        cmd.Parameters.Add(p);
        return Convert.ToInt64(await cmd.ExecuteScalarAsync());
    }

    [PostgresFact]
    public async Task A_PostgreSQL_transaction_aborted_by_a_caught_error_is_not_published_and_the_caller_is_told()
    {
        var decisions = new ConcurrentQueue<EndTransactionRequest>();
        var (server, producer) = await StartAsync(decisions);
        await using var _ = server;
        await using var __ = producer;
        await using var c = new NpgsqlConnection(postgres.ConnectionString);
        await c.OpenAsync();
        await E2E.ExecAsync(c, null, "CREATE TABLE IF NOT EXISTS orders_aborted (id VARCHAR(64) PRIMARY KEY)");
        await E2E.ExecAsync(c, null, "INSERT INTO orders_aborted (id) VALUES ('existing') ON CONFLICT DO NOTHING");
        string orderId = Guid.NewGuid().ToString("N");

        var thrown = await Assert.ThrowsAsync<LocalTransactionAbortedException>(() => producer.ExecuteAsync(c, new ProducerMessage("orders", "created"),
            async (tx, ct) =>
            {
                await E2E.ExecAsync(c, tx, "INSERT INTO orders_aborted (id) VALUES (@id)", ("@id", orderId));
                try
                {
                    // "Insert, ignore it if it exists": on PostgreSQL the failed statement aborts the whole transaction,
                    // and its COMMIT then rolls back without an error.
                    await E2E.ExecAsync(c, tx, "INSERT INTO orders_aborted (id) VALUES ('existing')");
                }
                catch (PostgresException e) when (e.SqlState == PostgresErrorCodes.UniqueViolation)
                {
                }
            }, BarrierDialects.PostgreSql));

        Assert.Equal(PostgresErrorCodes.InFailedSqlTransaction, Assert.IsType<PostgresException>(thrown.InnerException).SqlState);
        Assert.Equal(0, await CountAsync(c, "orders_aborted", orderId));
        EndTransactionRequest decision = Assert.Single(decisions);
        Assert.Equal(Apache.Rocketmq.V2.TransactionResolution.Rollback, decision.Resolution);
        Assert.Equal(thrown.TransactionId, decision.TransactionId);
    }

    [PostgresFact]
    public async Task A_PostgreSQL_transaction_whose_writes_change_search_path_commits_and_is_published()
    {
        var decisions = new ConcurrentQueue<EndTransactionRequest>();
        var (server, producer) = await StartAsync(decisions);
        await using var _ = server;
        await using var __ = producer;
        await using var c = new NpgsqlConnection(postgres.ConnectionString);
        await c.OpenAsync();
        string orderId = Guid.NewGuid().ToString("N");

        // One schema per tenant: the barrier table is not on the writes' search_path any more when they return.
        SendReceipt receipt = await producer.ExecuteAsync(c, new ProducerMessage("orders", "created"), async (tx, ct) =>
        {
            await E2E.ExecAsync(c, tx, "CREATE SCHEMA IF NOT EXISTS tenant_x");
            await E2E.ExecAsync(c, tx, "SET LOCAL search_path = tenant_x");
            await E2E.ExecAsync(c, tx, "CREATE TABLE IF NOT EXISTS orders_tenant (id VARCHAR(64) PRIMARY KEY)");
            await E2E.ExecAsync(c, tx, "INSERT INTO orders_tenant (id) VALUES (@id)", ("@id", orderId));
        }, BarrierDialects.PostgreSql);

        Assert.True(receipt.CommitConfirmed);
        Assert.Equal(1, await CountAsync(c, "tenant_x.orders_tenant", orderId));
        Assert.Equal(Apache.Rocketmq.V2.TransactionResolution.Commit, Assert.Single(decisions).Resolution);
    }

    [Fact]
    public async Task A_producer_disposed_while_the_local_transaction_runs_returns_an_unconfirmed_receipt_after_the_local_commit()
    {
        var decisions = new ConcurrentQueue<EndTransactionRequest>();
        var (server, producer) = await StartAsync(decisions);
        await using var _ = server;
        await using DbConnection c = _sqlite.Factory();
        await c.OpenAsync();
        await E2E.ExecAsync(c, null, "CREATE TABLE orders (id VARCHAR(64) PRIMARY KEY)");
        string orderId = Guid.NewGuid().ToString("N");

        // As a host stopping while a request is in flight: the local transaction commits, the half's commit cannot go.
        SendReceipt receipt = await producer.ExecuteAsync(c, new ProducerMessage("orders", "created"), async (tx, ct) =>
        {
            await E2E.ExecAsync(c, tx, "INSERT INTO orders (id) VALUES (@id)", ("@id", orderId));
            await producer.DisposeAsync();
        }, BarrierDialects.Sqlite);

        Assert.Equal(1, await CountAsync(c, "orders", orderId));
        Assert.False(receipt.CommitConfirmed); // the check-back of a live producer decides (Commit with BarrierChecker)
        Assert.Empty(decisions);
        Assert.Equal(HalfMsg.ProducerClient.TransactionResolution.Commit, await new BarrierChecker(_sqlite.Factory, BarrierDialects.Sqlite)
            .CheckAsync(receipt.TransactionId!, DateTimeOffset.UtcNow, default));
    }
}
