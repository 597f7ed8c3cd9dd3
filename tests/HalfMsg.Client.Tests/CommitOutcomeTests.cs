using System.Data.Common;
using HalfMsg.Client.Tests.Infrastructure;
using HalfMsg.ConsumerClient;
using HalfMsg.ProducerClient;
using HalfMsg.ProducerClient.Barrier;
using ProducerMessage = HalfMsg.ProducerClient.Message;
using HalfMsg.TestKit;

namespace HalfMsg.Client.Tests;

/// <summary>
/// What <see cref="Producer.ExecuteAsync(DbConnection, ProducerMessage, Func{DbTransaction, CancellationToken, Task}, CancellationToken)"/>
/// tells its caller when the final commit of the half message fails after the local transaction committed.
/// </summary>
[Trait("Category", "E2E")]
public sealed class CommitOutcomeTests(BrokerFixture fixture) : IClassFixture<BrokerFixture>, IDisposable
{
    private static readonly TimeSpan CheckWait = TimeSpan.FromSeconds(20);
    private readonly SqliteDatabase _db = new();

    public void Dispose() => _db.Dispose();

    private async Task<DbConnection> OpenAsync()
    {
        DbConnection c = _db.Factory();
        await c.OpenAsync();
        await E2E.ExecAsync(c, null, "CREATE TABLE IF NOT EXISTS orders (id VARCHAR(64) PRIMARY KEY)");
        return c;
    }

    private static readonly HttpClient Admin = new() { Timeout = TimeSpan.FromSeconds(5) };

    /// <summary>Whether the broker's admin API says the transaction was rolled back.</summary>
    private async Task<bool> BrokerRolledBackAsync(string transactionId)
    {
        using HttpResponseMessage response = await Admin.GetAsync($"{fixture.Broker.AdminUrl}/api/transactions/{transactionId}");
        return response.IsSuccessStatusCode && (await response.Content.ReadAsStringAsync()).Contains("\"resolution\":\"Rollback\"", StringComparison.Ordinal);
    }

    private Task<long> OrdersAsync(string id) => E2E.CountAsync(_db.Factory, $"SELECT COUNT(*) FROM orders WHERE id = '{id}'");

    [Fact]
    public async Task A_checker_that_answers_Rollback_during_the_local_transaction_makes_ExecuteAsync_throw_with_the_receipt()
    {
        // Not BarrierChecker: a checker that does not wait for the local transaction and answers Rollback.
        string topic = E2E.Unique("rej");
        var checker = new RecordingChecker(new FuncChecker(_ => TransactionResolution.Rollback));
        await using Producer producer = await E2E.ProducerAsync(fixture.Broker.Endpoint, topic, checker);
        await using SimpleConsumer consumer = await E2E.ConsumerAsync(fixture.Broker.Endpoint, topic, E2E.Unique("g"));
        await using DbConnection c = await OpenAsync();
        string orderId = Guid.NewGuid().ToString("N");

        var ex = await Assert.ThrowsAsync<TransactionCommitRejectedException>(() => producer.ExecuteAsync(c, new ProducerMessage(topic, "rej"),
            async (tx, ct) =>
            {
                await E2E.ExecAsync(c, tx, "INSERT INTO orders (id) VALUES (@id)", ("@id", orderId));
                // Keep the local transaction open until the broker's check-back has been answered Rollback and the
                // broker has taken that answer (the checker returning is not enough: the producer sends the decision
                // after it, and on a busy machine our own commit could otherwise reach the broker first).
                await E2E.EventuallyAsync(async () => checker.Calls.FirstOrDefault(x => x.Result == TransactionResolution.Rollback) is { } answered
                    && await BrokerRolledBackAsync(answered.TransactionId), CheckWait, "a Rollback check-back taken by the broker");
            }, BarrierDialects.Sqlite));

        Assert.Equal(1, await OrdersAsync(orderId)); // the business write is committed...
        Assert.Empty(await E2E.DrainAsync(consumer, 1, TimeSpan.FromSeconds(3))); // ...and the event is not delivered
        Assert.Equal(ex.Receipt.TransactionId, checker.Calls.First(x => x.Result == TransactionResolution.Rollback).TransactionId);
        Assert.Equal(Apache.Rocketmq.V2.Code.InvalidTransactionId, ex.Code);
    }

    [Fact]
    public async Task A_commit_lost_with_the_broker_returns_an_unconfirmed_receipt_and_BarrierChecker_still_delivers_the_event()
    {
        await using BrokerProcess broker = await BrokerProcess.StartAsync();
        string topic = E2E.Unique("lost");
        var checker = new BarrierChecker(_db.Factory, BarrierDialects.Sqlite);
        await using DbConnection c = await OpenAsync();
        string orderId = Guid.NewGuid().ToString("N");
        SendReceipt receipt;
        await using (Producer producer = await E2E.ProducerAsync(broker.Endpoint, topic, checker))
        {
            receipt = await producer.ExecuteAsync(c, new ProducerMessage(topic, "lost"), async (tx, ct) =>
            {
                await E2E.ExecAsync(c, tx, "INSERT INTO orders (id) VALUES (@id)", ("@id", orderId));
                broker.Kill(); // the broker goes away between the local commit and the message commit
            }, BarrierDialects.Sqlite);
        }

        Assert.False(receipt.CommitConfirmed);
        Assert.Equal(1, await OrdersAsync(orderId));

        // The half survived on disk; the broker's check-back asks BarrierChecker, which answers Commit.
        await broker.RestartAsync();
        await using Producer again = await E2E.ProducerAsync(broker.Endpoint, topic, checker);
        await using SimpleConsumer consumer = await E2E.ConsumerAsync(broker.Endpoint, topic, E2E.Unique("g"));
        ReceivedMessage delivered = Assert.Single(await E2E.DrainAsync(consumer, 1, CheckWait));
        Assert.Equal(receipt.MessageId, delivered.MessageId);
    }
}
