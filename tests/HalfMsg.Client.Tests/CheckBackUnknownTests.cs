using System.Data.Common;
using HalfMsg.Client.Tests.Infrastructure;
using HalfMsg.ConsumerClient;
using HalfMsg.ProducerClient;
using HalfMsg.ProducerClient.Barrier;
using HalfMsg.TestKit;
using Microsoft.Data.Sqlite;
using ProducerMessage = HalfMsg.ProducerClient.Message;

namespace HalfMsg.Client.Tests;

/// <summary>A broker whose check interval (3 s) is well above the checkers' lock wait (1 s): a check answered
/// "unknown" after waiting out its lock is answered before the half is due again, even on a busy machine.</summary>
public sealed class UnknownAnswerBrokerFixture : IAsyncLifetime
{
    public BrokerProcess Broker { get; private set; } = null!;

    public async Task InitializeAsync() => Broker = await BrokerProcess.StartAsync("--transaction-check-interval", "3s");

    public async Task DisposeAsync() => await Broker.DisposeAsync();
}

/// <summary>
/// A check-back answered "unknown" is an answer: the producer says so to the broker, so the broker keeps asking the
/// instance that sent the half instead of taking it for a dead instance and asking another one of the group (review
/// 2026-12-02, transactions #8). With RocketMQ 5's group = topic, that other instance can belong to another service
/// and answer for a local transaction it knows nothing about.
/// </summary>
[Trait("Category", "E2E")]
public sealed class CheckBackUnknownTests(UnknownAnswerBrokerFixture fixture) : IClassFixture<UnknownAnswerBrokerFixture>
{
    private static readonly TimeSpan ChecksWait = TimeSpan.FromSeconds(40);
    private static readonly HttpClient Admin = new() { Timeout = TimeSpan.FromSeconds(5) };

    private string Endpoint => fixture.Broker.Endpoint;

    /// <summary>A <see cref="BarrierChecker"/> that waits at most 1 s for a lock (Microsoft.Data.Sqlite's own busy
    /// retry bounded to 1 s as well, see <see cref="BarrierDialects.Sqlite"/>).</summary>
    private static BarrierChecker ShortWaitChecker(SqliteDatabase db)
    {
        string connectionString = new SqliteConnectionStringBuilder(db.ConnectionString) { DefaultTimeout = 1 }.ToString();
        return new BarrierChecker(() => new SqliteConnection(connectionString), BarrierDialects.Sqlite, lockWait: TimeSpan.FromSeconds(1));
    }

    [Theory]
    [InlineData(0)] // one EndTransaction per answer, as against an Apache broker
    [InlineData(4)] // answers coalesced into HalfMsgBroker's EndTransactions
    public async Task A_check_answered_Unknown_goes_back_to_the_instance_that_sent_the_half_not_to_another_of_its_group(int decisionCallsInFlight)
    {
        string topic = E2E.Unique("unk");
        var sender = new RecordingChecker(new FuncChecker(_ => TransactionResolution.Unknown));
        var other = new RecordingChecker(new FuncChecker(_ => TransactionResolution.Unknown));
        await using Producer a = await Producer.StartAsync(ProducerOptions.Default with
        {
            Endpoints = Endpoint, Topics = [topic], TransactionChecker = sender, DecisionCallsInFlight = decisionCallsInFlight,
        });
        await using Producer b = await E2E.ProducerAsync(Endpoint, topic, other); // same topic, so the same producer group

        ITransaction transaction = a.BeginTransaction();
        SendReceipt receipt = await transaction.SendAsync(new ProducerMessage(topic, "undecided"));
        string id = receipt.TransactionId!;

        // Without an explicit "unknown" the second check already went to the other instance.
        await E2E.EventuallyAsync(() => sender.For(id).Count >= 3 || other.For(id).Count > 0, ChecksWait,
            "three checks of the half at its sender, or one at the other instance");

        Assert.Empty(other.For(id));
        Assert.True(sender.For(id).Count >= 3);
        // The broker took the answer (what the admin API shows as the producer's last answer).
        using HttpResponseMessage view = await Admin.GetAsync($"{fixture.Broker.AdminUrl}/api/transactions/{id}");
        Assert.Contains("unknown (check-back)", await view.Content.ReadAsStringAsync(), StringComparison.Ordinal);

        await transaction.RollbackAsync();
    }

    [Fact]
    public async Task Two_services_on_one_topic_the_one_running_the_local_transaction_keeps_its_checks_and_its_event_is_delivered()
    {
        // The review's scenario: two services (each its own SQLite database and BarrierChecker) publish to one topic.
        using var dbA = new SqliteDatabase();
        using var dbB = new SqliteDatabase();
        string topic = E2E.Unique("two");
        var checkerA = new RecordingChecker(ShortWaitChecker(dbA));
        var checkerB = new RecordingChecker(ShortWaitChecker(dbB));
        await using Producer a = await E2E.ProducerAsync(Endpoint, topic, checkerA);
        await using Producer b = await E2E.ProducerAsync(Endpoint, topic, checkerB);
        await using SimpleConsumer consumer = await E2E.ConsumerAsync(Endpoint, topic, E2E.Unique("g"));
        await using DbConnection c = dbA.Factory();
        await c.OpenAsync();
        await E2E.ExecAsync(c, null, "CREATE TABLE IF NOT EXISTS orders (id VARCHAR(64) PRIMARY KEY)");
        string orderId = Guid.NewGuid().ToString("N");

        SendReceipt receipt = await a.ExecuteAsync(c, new ProducerMessage(topic, "order"), async (tx, ct) =>
        {
            await E2E.ExecAsync(c, tx, "INSERT INTO orders (id) VALUES (@id)", ("@id", orderId));
            // A local transaction longer than A's lock wait, across two checks: each waits 1 s for it and answers Unknown.
            await E2E.EventuallyAsync(() => checkerA.Calls.Count(x => x.Result == TransactionResolution.Unknown) >= 2 || checkerB.Calls.Count > 0,
                ChecksWait, "two Unknown answers from A, or a check at B");
        }, BarrierDialects.Sqlite);

        // B, which knows nothing of A's transaction (it would have answered Rollback), was never asked.
        Assert.Empty(checkerB.Calls);
        Assert.True(receipt.CommitConfirmed);
        ReceivedMessage delivered = Assert.Single(await E2E.DrainAsync(consumer, 1, TimeSpan.FromSeconds(20)));
        Assert.Equal(receipt.MessageId, delivered.MessageId);
    }

    /// <summary>
    /// A checker that fails is answered Unknown, so the broker keeps asking the instance that sent the half. Until
    /// 2026-12-05 its exception left the check unanswered, the next check went to another service on the topic, and
    /// that service's barrier rolled back a transaction whose local writes were committing (found by review).
    /// </summary>
    [Fact]
    public async Task A_checker_that_fails_answers_Unknown_and_the_next_check_comes_back_to_the_same_instance()
    {
        using var dbA = new SqliteDatabase();
        using var dbB = new SqliteDatabase();
        string topic = E2E.Unique("thr");
        int calls = 0;
        var checkerA = new RecordingChecker(new FailOnceChecker(ShortWaitChecker(dbA), () => Interlocked.Increment(ref calls) == 1));
        var checkerB = new RecordingChecker(ShortWaitChecker(dbB));
        await using Producer a = await E2E.ProducerAsync(Endpoint, topic, checkerA);
        await using Producer b = await E2E.ProducerAsync(Endpoint, topic, checkerB);
        await using DbConnection c = dbA.Factory();
        await c.OpenAsync();
        await E2E.ExecAsync(c, null, "CREATE TABLE IF NOT EXISTS orders (id VARCHAR(64) PRIMARY KEY)");

        Exception? ex = await Record.ExceptionAsync(() => a.ExecuteAsync(c, new ProducerMessage(topic, "order"), async (tx, ct) =>
        {
            await E2E.ExecAsync(c, tx, "INSERT INTO orders (id) VALUES (@id)", ("@id", Guid.NewGuid().ToString("N")));
            // Held open until A was asked again after its failure (or B was asked instead).
            await E2E.EventuallyAsync(() => checkerB.Calls.Count > 0 || Volatile.Read(ref calls) >= 2, ChecksWait, "a second check");
        }, BarrierDialects.Sqlite));

        Assert.Null(ex);
        Assert.Empty(checkerB.Calls);
        Assert.Equal(1L, await E2E.CountAsync(dbA.Factory, "SELECT COUNT(*) FROM orders"));
    }

    /// <summary>
    /// The instance that sent the half is gone after its local commit, before its decision: the check goes to another
    /// service on the topic, whose barrier has never seen the transaction. It answers Unknown (the half carries its
    /// barrier's owner), and an instance on the right database answers Commit. Until 2026-12-05 the other service
    /// answered Rollback and the committed event was lost (found by review; this test failed).
    /// </summary>
    [Fact]
    public async Task Another_services_barrier_answers_Unknown_for_a_half_of_another_database_and_its_own_instance_Commit()
    {
        using var dbA = new SqliteDatabase();
        using var dbB = new SqliteDatabase();
        string topic = E2E.Unique("own");
        var checkerB = new RecordingChecker(ShortWaitChecker(dbB));
        await using Producer b = await E2E.ProducerAsync(Endpoint, topic, checkerB);
        string txId;
        await using (Producer a = await E2E.ProducerAsync(Endpoint, topic, new FuncChecker(_ => TransactionResolution.Unknown)))
        {
            await using DbConnection c = dbA.Factory();
            await c.OpenAsync();
            await BarrierSchema.EnsureCreatedAsync(c, BarrierDialects.Sqlite);
            // What ExecuteAsync does, stopped where a crash would stop it: stamped half, local commit, no decision.
            string owner = await BarrierOwner.GetAsync(c, BarrierDialects.Sqlite, BarrierSchema.DefaultTable, CancellationToken.None);
            ITransaction t = a.BeginTransaction();
            SendReceipt receipt = await t.SendAsync(new ProducerMessage(topic, "order").WithProperty(BarrierOwner.Property, owner));
            txId = receipt.TransactionId!;
            await LocalBarrier.RunAsync(c, BarrierDialects.Sqlite, txId, (tx, ct) => Task.CompletedTask, null, CancellationToken.None);
        }

        await E2E.EventuallyAsync(() => checkerB.For(txId).Count > 0, ChecksWait, "a check at B");
        Assert.Equal(TransactionResolution.Unknown, checkerB.For(txId)[0].Result);
        var checkerA2 = new RecordingChecker(ShortWaitChecker(dbA)); // the service comes back (a new instance, same database)
        await using Producer a2 = await E2E.ProducerAsync(Endpoint, topic, checkerA2);
        await E2E.EventuallyAsync(() => checkerA2.For(txId).Any(call => call.Result == TransactionResolution.Commit), ChecksWait, "Commit from A's database");
        Assert.DoesNotContain(checkerB.For(txId), call => call.Result != TransactionResolution.Unknown);
    }

    private sealed class FailOnceChecker(ITransactionChecker inner, Func<bool> fail) : ITransactionChecker
    {
        public ValueTask<TransactionResolution> CheckAsync(MessageView message, CancellationToken ct) =>
            fail() ? throw new InvalidOperationException("transient database failure (pool timeout)") : inner.CheckAsync(message, ct);
    }
}
