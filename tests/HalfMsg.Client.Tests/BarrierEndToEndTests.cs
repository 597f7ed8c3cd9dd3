using System.Data.Common;
using HalfMsg.Client.Tests.Infrastructure;
using HalfMsg.ConsumerClient;
using HalfMsg.ConsumerClient.Idempotency;
using HalfMsg.ProducerClient;
using HalfMsg.ProducerClient.Barrier;
using ProducerMessage = HalfMsg.ProducerClient.Message;

namespace HalfMsg.Client.Tests;

/// <summary>
/// The four check-back cases of the barrier, end to end: a real broker (1 s transaction timeout and check interval)
/// sends the check-back over Telemetry, <see cref="BarrierChecker"/> answers from the real database, and a consumer
/// observes what was delivered.
/// </summary>
public abstract class BarrierEndToEndContract
{
    private static readonly TimeSpan CheckWait = TimeSpan.FromSeconds(20);

    protected abstract ITestDatabase Db { get; }

    protected abstract string Endpoint { get; }

    private async Task<DbConnection> OpenAsync()
    {
        DbConnection c = Db.Factory();
        await c.OpenAsync();
        await BarrierSchema.EnsureCreatedAsync(c, Db.BarrierDialect);
        await E2E.ExecAsync(c, null, "CREATE TABLE IF NOT EXISTS orders (id VARCHAR(64) PRIMARY KEY)");
        return c;
    }

    private static Func<DbTransaction, CancellationToken, Task> InsertOrder(DbConnection c, string id) =>
        (tx, _) => E2E.ExecAsync(c, tx, "INSERT INTO orders (id) VALUES (@id)", ("@id", id));

    private Task<long> OrdersAsync(string id) => E2E.CountAsync(Db.Factory, $"SELECT COUNT(*) FROM orders WHERE id = '{id}'");

    private async Task<(Producer, SimpleConsumer, RecordingChecker, string Topic)> StartAsync()
    {
        string topic = E2E.Unique("btx");
        var checker = new RecordingChecker(new BarrierChecker(Db.Factory, Db.BarrierDialect));
        Producer producer = await E2E.ProducerAsync(Endpoint, topic, checker);
        SimpleConsumer consumer = await E2E.ConsumerAsync(Endpoint, topic, E2E.Unique("g"));
        return (producer, consumer, checker, topic);
    }

    /// <summary>(a) The process "died" right after the half send: no local transaction ever started.</summary>
    protected async Task Half_sent_and_no_local_transaction_is_rolled_back_by_the_check_and_a_late_attempt_conflicts()
    {
        (Producer producer, SimpleConsumer consumer, RecordingChecker checker, string topic) = await StartAsync();
        await using var p = producer;
        await using var sc = consumer;
        await using DbConnection c = await OpenAsync();

        SendReceipt receipt = await producer.BeginTransaction().SendAsync(new ProducerMessage(topic, "a"));
        string tid = receipt.TransactionId!;

        await E2E.EventuallyAsync(() => checker.For(tid).Any(x => x.Result is not null), CheckWait, "a check-back for " + tid);
        Assert.All(checker.For(tid).Where(x => x.Result is not null), x => Assert.Equal(TransactionResolution.Rollback, x.Result));
        Assert.Empty(await E2E.DrainAsync(consumer, 1, TimeSpan.FromSeconds(3)));

        // The "resurrected" business code tries its local transaction with that id: the barrier refuses it.
        var ex = await Assert.ThrowsAsync<BarrierConflictException>(() =>
            LocalBarrier.RunAsync(c, Db.BarrierDialect, tid, InsertOrder(c, tid), null, default));
        Assert.Equal(tid, ex.TransactionId);
        Assert.Equal(0, await OrdersAsync(tid));
    }

    /// <summary>(b) Check-backs arrive while the business transaction is open (held over &gt; 2 check intervals): they
    /// wait on its locks, then answer Commit; the message is delivered once.</summary>
    protected async Task Check_during_a_long_local_transaction_waits_and_commits_and_the_message_is_delivered_once()
    {
        (Producer producer, SimpleConsumer consumer, RecordingChecker checker, string topic) = await StartAsync();
        await using var p = producer;
        await using var sc = consumer;
        await using DbConnection c = await OpenAsync();
        string orderId = Guid.NewGuid().ToString("N");
        DateTime localCommitAt = default;

        SendReceipt receipt = await producer.ExecuteAsync(c, new ProducerMessage(topic, "b"), async (tx, ct) =>
        {
            await InsertOrder(c, orderId)(tx, ct);
            checker.Flag = true;
            // Hold the transaction (and its locks) open across several check intervals.
            await Task.Delay(TimeSpan.FromMilliseconds(3500), ct);
            localCommitAt = DateTime.UtcNow;
            checker.Flag = false;
        });
        string tid = receipt.TransactionId!;

        List<ReceivedMessage> got = await E2E.DrainAsync(consumer, 1, TimeSpan.FromSeconds(10));
        Assert.Equal("b", Assert.Single(got).BodyAsString());
        Assert.Empty(await E2E.DrainAsync(consumer, 1, TimeSpan.FromSeconds(3))); // once

        IReadOnlyList<RecordingChecker.Call> calls = checker.For(tid);
        Assert.Contains(calls, x => x.FlagAtStart && x.StartedAt < localCommitAt); // a check really overlapped the open transaction
        Assert.All(calls, x => Assert.Equal(TransactionResolution.Commit, x.Result));
        Assert.Equal(1, await OrdersAsync(orderId));
    }

    /// <summary>(c) The local transaction rolled back, and the client never sent the half rollback.</summary>
    protected async Task Local_rollback_without_a_half_rollback_is_rolled_back_by_the_check()
    {
        (Producer producer, SimpleConsumer consumer, RecordingChecker checker, string topic) = await StartAsync();
        await using var p = producer;
        await using var sc = consumer;
        await using DbConnection c = await OpenAsync();

        SendReceipt receipt = await producer.BeginTransaction().SendAsync(new ProducerMessage(topic, "c"));
        string tid = receipt.TransactionId!;
        await Assert.ThrowsAsync<InvalidOperationException>(() => LocalBarrier.RunAsync(c, Db.BarrierDialect, tid, async (tx, ct) =>
        {
            await InsertOrder(c, tid)(tx, ct);
            throw new InvalidOperationException("business failure");
        }, null, default));

        await E2E.EventuallyAsync(() => checker.For(tid).Any(x => x.Result is not null), CheckWait, "a check-back for " + tid);
        Assert.All(checker.For(tid), x => Assert.Equal(TransactionResolution.Rollback, x.Result));
        Assert.Empty(await E2E.DrainAsync(consumer, 1, TimeSpan.FromSeconds(3)));
        Assert.Equal(0, await OrdersAsync(tid));
    }

    /// <summary>(d) The local transaction committed, then the process "crashed" before the half commit.</summary>
    protected async Task Local_commit_without_a_half_commit_is_committed_by_the_check_and_delivered_once()
    {
        (Producer producer, SimpleConsumer consumer, RecordingChecker checker, string topic) = await StartAsync();
        await using var p = producer;
        await using var sc = consumer;
        await using DbConnection c = await OpenAsync();

        SendReceipt receipt = await producer.BeginTransaction().SendAsync(new ProducerMessage(topic, "d"));
        string tid = receipt.TransactionId!;
        await LocalBarrier.RunAsync(c, Db.BarrierDialect, tid, InsertOrder(c, tid), null, default);

        List<ReceivedMessage> got = await E2E.DrainAsync(consumer, 1, CheckWait);
        ReceivedMessage m = Assert.Single(got);
        Assert.Equal("d", m.BodyAsString());
        Assert.Equal(receipt.MessageId, m.MessageId);
        Assert.Empty(await E2E.DrainAsync(consumer, 1, TimeSpan.FromSeconds(3))); // once
        Assert.Contains(checker.For(tid), x => x.Result == TransactionResolution.Commit);
        Assert.All(checker.For(tid), x => Assert.Equal(TransactionResolution.Commit, x.Result));
        Assert.Equal(1, await OrdersAsync(tid));
    }

    /// <summary>Consumer side: ConsumeOnce into this database under forced redelivery runs the writes once.</summary>
    protected async Task Consume_once_into_the_database_runs_the_writes_once_under_forced_redelivery()
    {
        string topic = E2E.Unique("idem");
        string group = E2E.Unique("g");
        await using Producer producer = await E2E.ProducerAsync(Endpoint, topic);
        await using SimpleConsumer consumer = await E2E.ConsumerAsync(Endpoint, topic, group);
        await producer.SendAsync(new ProducerMessage(topic, "pay"));
        string table = "ledger_" + Guid.NewGuid().ToString("N")[..8];
        await using (DbConnection c = Db.Factory())
        {
            await c.OpenAsync();
            await E2E.ExecAsync(c, null, $"CREATE TABLE {table} (message_id VARCHAR(128), body VARCHAR(64))");
        }

        int deliveries = 0;
        var fresh = new List<bool>();
        var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(20);
        while (deliveries < 3 && DateTime.UtcNow < deadline)
        {
            foreach (ReceivedMessage m in await consumer.ReceiveAsync(1, E2E.Invisible))
            {
                deliveries++;
                Assert.Equal(deliveries, m.DeliveryAttempt);
                await using DbConnection c = Db.Factory();
                fresh.Add(await ConsumeOnce.ExecuteAsync(c, group, m, (tx, _) =>
                    E2E.ExecAsync(c, tx, $"INSERT INTO {table} (message_id, body) VALUES (@id, @body)", ("@id", m.MessageId), ("@body", m.BodyAsString()))));
                if (deliveries < 3)
                {
                    await m.ChangeInvisibleDurationAsync(TimeSpan.Zero); // "the ack got lost": redeliver now
                }
                else
                {
                    await m.AckAsync();
                }
            }
        }

        Assert.Equal(3, deliveries);
        Assert.Equal([true, false, false], fresh);
        Assert.Equal(1, await E2E.CountAsync(Db.Factory, $"SELECT COUNT(*) FROM {table}"));
    }
}

[Trait("Category", "E2E")]
public sealed class SqliteBarrierEndToEndTests(BrokerFixture fixture) : BarrierEndToEndContract, IClassFixture<BrokerFixture>, IDisposable
{
    private readonly SqliteDatabase _db = new();

    protected override ITestDatabase Db => _db;

    protected override string Endpoint => fixture.Broker.Endpoint;

    public void Dispose() => _db.Dispose();

    [Fact]
    public Task Sqlite_a_half_without_local_transaction_is_rolled_back_and_a_late_attempt_conflicts() =>
        Half_sent_and_no_local_transaction_is_rolled_back_by_the_check_and_a_late_attempt_conflicts();

    [Fact]
    public Task Sqlite_a_check_during_a_long_local_transaction_waits_then_commits_once() =>
        Check_during_a_long_local_transaction_waits_and_commits_and_the_message_is_delivered_once();

    [Fact]
    public Task Sqlite_a_local_rollback_without_half_rollback_is_rolled_back() =>
        Local_rollback_without_a_half_rollback_is_rolled_back_by_the_check();

    [Fact]
    public Task Sqlite_a_local_commit_without_half_commit_is_committed_once() =>
        Local_commit_without_a_half_commit_is_committed_by_the_check_and_delivered_once();
}

[Trait("Category", "E2E")]
public sealed class PostgresBarrierEndToEndTests(BrokerFixture fixture, PostgresDatabase db)
    : BarrierEndToEndContract, IClassFixture<BrokerFixture>, IClassFixture<PostgresDatabase>
{
    protected override ITestDatabase Db => db;

    protected override string Endpoint => fixture.Broker.Endpoint;

    [PostgresFact]
    public Task Postgres_a_check_during_a_long_local_transaction_waits_then_commits_once() =>
        Check_during_a_long_local_transaction_waits_and_commits_and_the_message_is_delivered_once();

    [PostgresFact]
    public Task Postgres_a_local_commit_without_half_commit_is_committed_once() =>
        Local_commit_without_a_half_commit_is_committed_by_the_check_and_delivered_once();

    [PostgresFact]
    public Task Postgres_consume_once_runs_the_writes_once_under_forced_redelivery() =>
        Consume_once_into_the_database_runs_the_writes_once_under_forced_redelivery();
}
