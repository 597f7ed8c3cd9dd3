using System.Data.Common;
using HalfMsg.Client.Tests.Infrastructure;
using HalfMsg.ClientCore;
using HalfMsg.ConsumerClient;
using HalfMsg.ConsumerClient.Idempotency;
using HalfMsg.ProducerClient;
using HalfMsg.ProducerClient.Barrier;
using Microsoft.Data.Sqlite;
using ProducerMessage = HalfMsg.ProducerClient.Message;
using HalfMsg.TestKit;

namespace HalfMsg.Client.Tests;

/// <summary>One real broker (child process) shared by the end-to-end tests; each test uses its own topic and group.</summary>
public sealed class BrokerFixture : IAsyncLifetime
{
    public BrokerProcess Broker { get; private set; } = null!;

    public async Task InitializeAsync() => Broker = await BrokerProcess.StartAsync();

    public async Task DisposeAsync() => await Broker.DisposeAsync();
}

[Trait("Category", "E2E")]
public sealed class EndToEndTests(BrokerFixture fixture) : IClassFixture<BrokerFixture>
{
    private static readonly TimeSpan Invisible = TimeSpan.FromSeconds(30);

    private string Endpoint => fixture.Broker.Endpoint;

    private static string Unique(string prefix) => prefix + "-" + Guid.NewGuid().ToString("N")[..10];

    private Task<Producer> ProducerAsync(string topic, ITransactionChecker? checker = null) =>
        Producer.StartAsync(ProducerOptions.Default with { Endpoints = Endpoint, Topics = [topic], TransactionChecker = checker });

    private Task<SimpleConsumer> ConsumerAsync(string topic, string group) =>
        SimpleConsumer.StartAsync(SimpleConsumerOptions.Default with
        {
            Endpoints = Endpoint,
            ConsumerGroup = group,
            Subscriptions = new Dictionary<string, string> { [topic] = "*" },
            AwaitDuration = TimeSpan.FromSeconds(2),
        });

    private static async Task<List<ReceivedMessage>> DrainAsync(SimpleConsumer consumer, int expected, TimeSpan within)
    {
        var all = new List<ReceivedMessage>();
        var deadline = DateTime.UtcNow + within;
        while (all.Count < expected && DateTime.UtcNow < deadline)
        {
            all.AddRange(await consumer.ReceiveAsync(16, Invisible));
        }

        return all;
    }

    [Fact]
    public async Task A_delay_message_recalled_with_its_receipts_handle_is_not_delivered()
    {
        string topic = Unique("recall");
        await using Producer producer = await ProducerAsync(topic);
        await using SimpleConsumer consumer = await ConsumerAsync(topic, Unique("g"));
        // Long enough that the recall comes first on a busy machine; the test waits for the control, never for the time.
        var due = DateTimeOffset.UtcNow.AddSeconds(8);

        SendReceipt recalled = await producer.SendAsync(new ProducerMessage(topic, "recalled") { DeliveryTimestamp = due });
        SendReceipt normal = await producer.SendAsync(new ProducerMessage(topic, "now"));
        await producer.SendAsync(new ProducerMessage(topic, "control") { DeliveryTimestamp = due.AddMilliseconds(1) });
        Assert.NotNull(recalled.RecallHandle);
        Assert.Null(normal.RecallHandle);

        Assert.Equal(recalled.MessageId, await producer.RecallAsync(topic, recalled.RecallHandle));
        Assert.Equal(recalled.MessageId, await producer.RecallAsync(topic, recalled.RecallHandle)); // again: fine
        await Assert.ThrowsAsync<InternalErrorException>(() => producer.RecallAsync(topic, "not-a-handle"));

        // The control is due 1 ms after the recalled message and released after it: once it came, the other would have.
        List<ReceivedMessage> got = await DrainAsync(consumer, 2, TimeSpan.FromSeconds(30));
        foreach (ReceivedMessage m in got) await m.AckAsync();
        got.AddRange(await consumer.ReceiveAsync(16, Invisible)); // one more look (its 2 s long poll) for a late one
        Assert.Equal(["control", "now"], got.Select(m => m.BodyAsString()).Order());
    }

    [Fact]
    public async Task A_committed_transaction_is_delivered_and_a_rolled_back_one_is_not()
    {
        string topic = Unique("tx");
        await using Producer producer = await ProducerAsync(topic);
        await using SimpleConsumer consumer = await ConsumerAsync(topic, Unique("g"));

        ITransaction rolledBack = producer.BeginTransaction();
        await rolledBack.SendAsync(new ProducerMessage(topic, "nope"));
        await rolledBack.RollbackAsync();

        ITransaction committed = producer.BeginTransaction();
        SendReceipt receipt = await committed.SendAsync(new ProducerMessage(topic, "yes")
        {
            Tag = "T", Keys = ["k1"], Properties = new Dictionary<string, string> { ["order"] = "42" },
        });
        Assert.False(string.IsNullOrEmpty(receipt.TransactionId));
        await committed.CommitAsync();

        List<ReceivedMessage> got = await DrainAsync(consumer, 1, TimeSpan.FromSeconds(10));
        ReceivedMessage m = Assert.Single(got);
        Assert.Equal("yes", m.BodyAsString());
        Assert.Equal(receipt.MessageId, m.MessageId);
        Assert.Equal("T", m.Tag);
        Assert.Equal(["k1"], m.Keys);
        Assert.Equal("42", m.Properties["order"]);
        Assert.Equal(1, m.DeliveryAttempt);
        await m.AckAsync();

        Assert.Empty(await consumer.ReceiveAsync(16, Invisible)); // nothing else, ever
    }

    private const int ConcurrentTransactions = 64;

    /// <summary>
    /// <see cref="ConcurrentTransactions"/> concurrent transactions of <paramref name="producer"/> on
    /// <paramref name="topic"/>, one in three rolled back: each has its own transaction id, and exactly the committed
    /// ones are delivered, once.
    /// </summary>
    private async Task ConcurrentTransactionsEachKeepTheirOwnOutcomeAsync(Producer producer, string topic)
    {
        await using SimpleConsumer consumer = await ConsumerAsync(topic, Unique("g"));
        var outcomes = await Task.WhenAll(Enumerable.Range(0, ConcurrentTransactions).Select(async i =>
        {
            ITransaction tx = producer.BeginTransaction();
            SendReceipt receipt = await tx.SendAsync(new ProducerMessage(topic, "m" + i));
            bool commit = i % 3 != 0;
            if (commit)
            {
                await tx.CommitAsync();
            }
            else
            {
                await tx.RollbackAsync();
            }

            return (receipt, commit);
        }));

        Assert.Equal(ConcurrentTransactions, outcomes.Select(o => o.receipt.TransactionId).Distinct().Count());
        var committed = outcomes.Where(o => o.commit).Select(o => o.receipt.MessageId).ToHashSet();
        List<ReceivedMessage> got = await DrainAsync(consumer, committed.Count, TimeSpan.FromSeconds(30));
        Assert.Equal(committed.Order(), got.Select(m => m.MessageId).Order());
        foreach (ReceivedMessage m in got)
        {
            await m.AckAsync();
        }

        Assert.Empty(await consumer.ReceiveAsync(16, Invisible)); // no rolled-back half, no duplicate
    }

    [Fact]
    public async Task Concurrent_transactions_of_one_producer_share_coalesced_half_sends_and_each_keeps_its_own_outcome()
    {
        string topic = Unique("txmany");
        // Two send calls at most: 64 concurrent transactions make most halves wait and go several to a call.
        await using Producer producer = await Producer.StartAsync(ProducerOptions.Default with
        {
            Endpoints = Endpoint, Topics = [topic], HalfSendCallsInFlight = 2,
        });
        Assert.True(producer.CoalescesHalfSends); // the broker's Settings reply said it is a HalfMsgBroker

        await ConcurrentTransactionsEachKeepTheirOwnOutcomeAsync(producer, topic);
    }

    [Fact]
    public async Task A_body_buffer_reused_once_each_send_returned_delivers_every_message_as_it_was_sent()
    {
        // The producer sends Message.Body without copying it. Each writer below refills one buffer for every
        // transaction and scribbles over it as soon as the half send returned, before the commit, while other writers'
        // halves wait to go several to a call (one call in flight): every delivered body must still be the one sent.
        string topic = Unique("txreuse");
        await using Producer producer = await Producer.StartAsync(ProducerOptions.Default with
        {
            Endpoints = Endpoint, Topics = [topic], HalfSendCallsInFlight = 1,
        });
        await using SimpleConsumer consumer = await ConsumerAsync(topic, Unique("g"));
        const int writers = 16, each = 8, size = 512;
        var sent = new System.Collections.Concurrent.ConcurrentDictionary<string, byte[]>();
        await Task.WhenAll(Enumerable.Range(0, writers).Select(w => Task.Run(async () =>
        {
            var buffer = new byte[size];
            for (int i = 0; i < each; i++)
            {
                Random.Shared.NextBytes(buffer);
                byte[] expected = buffer.ToArray();
                ITransaction tx = producer.BeginTransaction();
                SendReceipt receipt = await tx.SendAsync(new ProducerMessage(topic, buffer));
                Array.Fill(buffer, (byte)0xEE); // the send returned: the buffer is ours again
                sent[receipt.MessageId] = expected;
                await tx.CommitAsync();
            }
        })));

        List<ReceivedMessage> got = await DrainAsync(consumer, writers * each, TimeSpan.FromSeconds(30));
        Assert.Equal(writers * each, got.Count);
        foreach (ReceivedMessage m in got)
        {
            Assert.True(sent.TryGetValue(m.MessageId, out byte[]? expected), $"unexpected message {m.MessageId}");
            Assert.False(m.IsCorrupted);
            Assert.Equal(expected, m.Body.ToArray());
        }

        Assert.Empty(got[0].Keys); // (no assertion on Properties: a tracing test's listener may add a traceparent)
    }

    [Fact]
    public async Task Concurrent_transactions_of_one_producer_share_coalesced_decisions_and_each_keeps_its_own_outcome()
    {
        string topic = Unique("txdecide");
        // Two EndTransactions calls at most: decisions made meanwhile wait and go several to a call.
        await using Producer producer = await Producer.StartAsync(ProducerOptions.Default with
        {
            Endpoints = Endpoint, Topics = [topic], HalfSendCallsInFlight = 2, DecisionCallsInFlight = 2,
        });
        Assert.True(producer.CoalescesDecisions); // a HalfMsgBroker, which serves EndTransactions

        await ConcurrentTransactionsEachKeepTheirOwnOutcomeAsync(producer, topic);

        Assert.True(producer.CoalescesDecisions); // never answered UNIMPLEMENTED
        Assert.InRange(producer.DecisionCallsMade, 1, ConcurrentTransactions - 1); // some decisions shared a call
    }

    [Fact]
    public async Task ExecuteAsync_with_sqlite_commits_both_sides_and_a_throwing_business_step_publishes_nothing()
    {
        string topic = Unique("barrier");
        using var db = new SqliteDatabase();
        await using Producer producer = await ProducerAsync(topic, new BarrierChecker(db.Factory, BarrierDialects.Sqlite));
        await using SimpleConsumer consumer = await ConsumerAsync(topic, Unique("g"));
        await using var connection = new SqliteConnection(db.ConnectionString);
        await connection.OpenAsync();
        await using (DbCommand ddl = connection.CreateCommand())
        {
            ddl.CommandText = "CREATE TABLE orders (id TEXT PRIMARY KEY)";
            await ddl.ExecuteNonQueryAsync();
        }

        Task InsertOrder(DbTransaction tx, string id)
        {
            DbCommand cmd = connection.CreateCommand();
            cmd.Transaction = tx;
            cmd.CommandText = $"INSERT INTO orders (id) VALUES ('{id}')";
            return cmd.ExecuteNonQueryAsync();
        }

        SendReceipt ok = await producer.ExecuteAsync(connection, new ProducerMessage(topic, "order-1"), (tx, _) => InsertOrder(tx, "order-1"));
        await Assert.ThrowsAsync<InvalidOperationException>(() => producer.ExecuteAsync(connection, new ProducerMessage(topic, "order-2"),
            async (tx, _) =>
            {
                await InsertOrder(tx, "order-2");
                throw new InvalidOperationException("business says no");
            }));

        List<ReceivedMessage> got = await DrainAsync(consumer, 2, TimeSpan.FromSeconds(8));
        ReceivedMessage m = Assert.Single(got);
        Assert.Equal("order-1", m.BodyAsString());
        Assert.Equal(ok.MessageId, m.MessageId);
        await using DbCommand count = connection.CreateCommand();
        count.CommandText = "SELECT group_concat(id) FROM orders";
        Assert.Equal("order-1", await count.ExecuteScalarAsync());
        Assert.Equal(TransactionResolution.Commit, await new BarrierChecker(db.Factory, BarrierDialects.Sqlite).CheckAsync(ok.TransactionId!, default));
    }

    [Fact]
    public async Task An_orphaned_half_message_is_resolved_by_the_check_back_through_the_barrier()
    {
        string topic = Unique("orphan");
        using var db = new SqliteDatabase();
        var checker = new CountingChecker(new BarrierChecker(db.Factory, BarrierDialects.Sqlite));
        await using Producer producer = await ProducerAsync(topic, checker);
        await using SimpleConsumer consumer = await ConsumerAsync(topic, Unique("g"));

        // Local transaction committed with its barrier row, but the producer "crashed" before EndTransaction.
        ITransaction tx = producer.BeginTransaction();
        SendReceipt receipt = await tx.SendAsync(new ProducerMessage(topic, "orphan"));
        await using (var c = new SqliteConnection(db.ConnectionString))
        {
            await c.OpenAsync();
            await BarrierSchema.EnsureCreatedAsync(c, BarrierDialects.Sqlite);
            await LocalBarrier.RunAsync(c, BarrierDialects.Sqlite, receipt.TransactionId!, (_, _) => Task.CompletedTask, null, default);
        }

        List<ReceivedMessage> got = await DrainAsync(consumer, 1, TimeSpan.FromSeconds(20));
        Assert.Equal("orphan", Assert.Single(got).BodyAsString());
        Assert.True(checker.Calls > 0);
    }

    [Fact]
    public async Task A_push_consumer_retries_a_failed_message_and_then_succeeds()
    {
        string topic = Unique("push");
        await using Producer producer = await ProducerAsync(topic);
        await producer.SendAsync(new ProducerMessage(topic, "work"));
        var attempts = new List<int>();
        var done = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        await using PushConsumer consumer = await PushConsumer.StartAsync(PushConsumerOptions.Default with
        {
            Endpoints = Endpoint,
            ConsumerGroup = Unique("g"),
            Subscriptions = new Dictionary<string, string> { [topic] = "*" },
            RetryBackoff = new RetryBackoff(TimeSpan.FromMilliseconds(200), TimeSpan.FromSeconds(1), 2),
            AwaitDuration = TimeSpan.FromSeconds(2),
            Handler = (m, _) =>
            {
                lock (attempts)
                {
                    attempts.Add(m.DeliveryAttempt);
                }

                if (m.DeliveryAttempt < 3)
                {
                    throw new InvalidOperationException("transient");
                }

                done.TrySetResult();
                return Task.FromResult(ConsumeResult.Success);
            },
        });

        await done.Task.WaitAsync(TimeSpan.FromSeconds(30));
        await consumer.StopAsync();
        lock (attempts)
        {
            Assert.Equal([1, 2, 3], attempts);
        }
    }

    [Fact]
    public async Task Idempotent_consumption_runs_the_writes_once_under_forced_redelivery()
    {
        string topic = Unique("idem");
        string group = Unique("g");
        using var db = new SqliteDatabase();
        await using Producer producer = await ProducerAsync(topic);
        await using SimpleConsumer consumer = await ConsumerAsync(topic, group);
        await producer.SendAsync(new ProducerMessage(topic, "pay"));

        int writes = 0;
        int deliveries = 0;
        var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(20);
        while (deliveries < 2 && DateTime.UtcNow < deadline)
        {
            foreach (ReceivedMessage m in await consumer.ReceiveAsync(1, Invisible))
            {
                deliveries++;
                await using var c = new SqliteConnection(db.ConnectionString);
                await ConsumeOnce.ExecuteAsync(c, group, m, (_, _) => { writes++; return Task.CompletedTask; });
                if (deliveries == 1)
                {
                    // The "ack got lost": make it visible again right away.
                    await m.ChangeInvisibleDurationAsync(TimeSpan.Zero);
                }
                else
                {
                    Assert.True(m.DeliveryAttempt >= 2);
                    await m.AckAsync();
                }
            }
        }

        Assert.Equal(2, deliveries);
        Assert.Equal(1, writes);
    }

    private sealed class CountingChecker(ITransactionChecker inner) : ITransactionChecker
    {
        private int _calls;

        public int Calls => Volatile.Read(ref _calls);

        public ValueTask<TransactionResolution> CheckAsync(ProducerClient.MessageView message, CancellationToken cancellationToken)
        {
            Interlocked.Increment(ref _calls);
            return inner.CheckAsync(message, cancellationToken);
        }
    }
}
