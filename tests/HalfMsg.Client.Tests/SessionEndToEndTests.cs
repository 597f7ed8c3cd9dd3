using System.Collections.Concurrent;
using HalfMsg.Client.Tests.Infrastructure;
using HalfMsg.ConsumerClient;
using HalfMsg.ProducerClient;
using Xunit.Abstractions;
using ProducerMessage = HalfMsg.ProducerClient.Message;
using HalfMsg.TestKit;

namespace HalfMsg.Client.Tests;

/// <summary>Broker killed (SIGKILL) and restarted on the same data dir and ports while clients are running.</summary>
[Trait("Category", "E2E")]
public sealed class BrokerRestartTests(ITestOutputHelper output)
{
    [Fact]
    public async Task Clients_survive_a_broker_kill_and_restart_and_nothing_acknowledged_is_lost()
    {
        await using BrokerProcess broker = await BrokerProcess.StartAsync();
        string topic = E2E.Unique("restart");
        string group = E2E.Unique("g");

        // The undecided half: Unknown before the kill, Commit once the broker came back (proves check-backs reach the
        // producer over its re-opened Telemetry stream).
        string? undecidedTid = null;
        var restarted = false;
        var checksAfterRestart = new ConcurrentBag<string>();
        var checker = new FuncChecker(view =>
        {
            if (view.TransactionId != Volatile.Read(ref undecidedTid))
            {
                return TransactionResolution.Unknown;
            }

            if (!Volatile.Read(ref restarted))
            {
                return TransactionResolution.Unknown;
            }

            checksAfterRestart.Add(view.TransactionId!);
            return TransactionResolution.Commit;
        });

        await using Producer producer = await E2E.ProducerAsync(broker.Endpoint, topic, checker);
        var consumed = new ConcurrentDictionary<string, int>();
        await using PushConsumer consumer = await PushConsumer.StartAsync(PushConsumerOptions.Default with
        {
            Endpoints = broker.Endpoint,
            ConsumerGroup = group,
            Subscriptions = new Dictionary<string, string> { [topic] = "*" },
            AwaitDuration = TimeSpan.FromSeconds(2),
            InvisibleDuration = TimeSpan.FromSeconds(5),
            MaxConcurrency = 2,
            Handler = async (m, _) =>
            {
                await Task.Delay(100); // slow enough that messages are in flight (received, not acked) at the kill
                consumed.AddOrUpdate(m.MessageId, 1, (_, n) => n + 1);
                return ConsumeResult.Success;
            },
        });

        var expected = new List<string>();
        for (int i = 0; i < 20; i++)
        {
            expected.Add((await producer.SendAsync(new ProducerMessage(topic, "before-" + i))).MessageId);
        }

        ITransaction committed = producer.BeginTransaction();
        expected.Add((await committed.SendAsync(new ProducerMessage(topic, "committed-before-kill"))).MessageId);
        await committed.CommitAsync();

        SendReceipt undecided = await producer.BeginTransaction().SendAsync(new ProducerMessage(topic, "undecided"));
        Volatile.Write(ref undecidedTid, undecided.TransactionId);
        expected.Add(undecided.MessageId);

        // Not a pause: kill once the consumer has consumed one. With 22 messages at 100 ms each, two at a time, the
        // others are then in flight or not received yet.
        await E2E.EventuallyAsync(() => !consumed.IsEmpty, TimeSpan.FromSeconds(60), "a message consumed before the kill");
        output.WriteLine($"consumed before the kill: {consumed.Count}");
        broker.Kill();
        Volatile.Write(ref restarted, true);
        await broker.RestartAsync();

        int failedAttempts = 0;
        var sw = System.Diagnostics.Stopwatch.StartNew();
        for (int i = 0; i < 20; i++)
        {
            var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(30);
            while (true)
            {
                try
                {
                    expected.Add((await producer.SendAsync(new ProducerMessage(topic, "after-" + i))).MessageId);
                    break;
                }
                catch (HalfMsg.ClientCore.ClientException ex) when (DateTime.UtcNow < deadline)
                {
                    failedAttempts++;
                    output.WriteLine($"send after restart failed ({sw.ElapsedMilliseconds} ms): {ex.GetType().Name} {ex.Message}");
                    await Task.Delay(200);
                }
            }

            if (i == 0)
            {
                output.WriteLine($"first send after restart succeeded after {sw.ElapsedMilliseconds} ms and {failedAttempts} failed attempts");
            }
        }

        try
        {
            await E2E.EventuallyAsync(() => !checksAfterRestart.IsEmpty, TimeSpan.FromSeconds(40), "a check-back of the undecided half after the restart");
            await E2E.EventuallyAsync(() => expected.All(consumed.ContainsKey), TimeSpan.FromSeconds(60), "every acknowledged send consumed");
        }
        catch (TimeoutException)
        {
            output.WriteLine("missing: " + string.Join(", ", expected.Where(id => !consumed.ContainsKey(id))));
            output.WriteLine(broker.Output);
            throw;
        }

        int duplicates = consumed.Values.Sum(n => n - 1);
        output.WriteLine($"{expected.Count} sent, {consumed.Count} distinct consumed, {duplicates} duplicate deliveries");
        Assert.Equal(expected.Count, expected.Distinct().Count());
    }
}

/// <summary>A broker with <c>--max-delivery-attempts 3</c>.</summary>
public sealed class DlqBrokerFixture : IAsyncLifetime
{
    public BrokerProcess Broker { get; private set; } = null!;

    public async Task InitializeAsync() => Broker = await BrokerProcess.StartAsync("--max-delivery-attempts", "3");

    public async Task DisposeAsync() => await Broker.DisposeAsync();
}

[Trait("Category", "E2E")]
public sealed class PushConsumerEndToEndTests(DlqBrokerFixture fixture) : IClassFixture<DlqBrokerFixture>
{
    [Fact]
    public async Task A_message_whose_handler_always_fails_ends_in_the_groups_dead_letter_queue()
    {
        string endpoint = fixture.Broker.Endpoint;
        string topic = E2E.Unique("dlq");
        string group = E2E.Unique("g");
        await using Producer producer = await E2E.ProducerAsync(endpoint, topic);
        SendReceipt receipt = await producer.SendAsync(new ProducerMessage(topic, "poison") { Tag = "P" });

        var attempts = new ConcurrentQueue<int>();
        await using (PushConsumer consumer = await PushConsumer.StartAsync(PushConsumerOptions.Default with
        {
            Endpoints = endpoint,
            ConsumerGroup = group,
            Subscriptions = new Dictionary<string, string> { [topic] = "*" },
            RetryBackoff = new RetryBackoff(TimeSpan.FromMilliseconds(200), TimeSpan.FromSeconds(1), 2),
            AwaitDuration = TimeSpan.FromSeconds(1),
            Handler = (m, _) =>
            {
                attempts.Enqueue(m.DeliveryAttempt);
                throw new InvalidOperationException("always fails");
            },
        }))
        {
            await E2E.EventuallyAsync(() => attempts.Count >= 3, TimeSpan.FromSeconds(30), "three delivery attempts");
            Assert.Equal(3, consumer.MaxAttempts);
        }

        Assert.Equal([1, 2, 3], attempts.Take(3));

        string dlq = "%DLQ%" + group;
        await using SimpleConsumer reader = await E2E.ConsumerAsync(endpoint, dlq, E2E.Unique("dlq-reader"));
        List<ReceivedMessage> got = await E2E.DrainAsync(reader, 1, TimeSpan.FromSeconds(20));
        ReceivedMessage m = Assert.Single(got);
        Assert.Equal("poison", m.BodyAsString());
        Assert.Equal(receipt.MessageId, m.MessageId);
        Assert.Equal(3, attempts.Count); // never delivered a 4th time
    }

    [Fact]
    public async Task A_handler_running_longer_than_the_invisible_duration_keeps_its_lease_and_is_delivered_once()
    {
        string endpoint = fixture.Broker.Endpoint;
        string topic = E2E.Unique("lease");
        await using Producer producer = await E2E.ProducerAsync(endpoint, topic);
        await producer.SendAsync(new ProducerMessage(topic, "slow"));
        int calls = 0;
        var done = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        string group = E2E.Unique("g");
        await using PushConsumer consumer = await PushConsumer.StartAsync(PushConsumerOptions.Default with
        {
            Endpoints = endpoint,
            ConsumerGroup = group,
            Subscriptions = new Dictionary<string, string> { [topic] = "*" },
            InvisibleDuration = TimeSpan.FromSeconds(2),
            AwaitDuration = TimeSpan.FromSeconds(1),
            Handler = async (m, ct) =>
            {
                Interlocked.Increment(ref calls);
                await Task.Delay(TimeSpan.FromSeconds(5), ct); // 2.5 invisible durations
                done.TrySetResult();
                return ConsumeResult.Success;
            },
        });

        await done.Task.WaitAsync(TimeSpan.FromSeconds(30));
        // Wait for the broker to have the message done (not a pause): only the live lease's ack is accepted, so an expired
        // lease (redelivered, or due for it) leaves the message in flight until a later delivery is handled and acked, and
        // that delivery calls the handler first. Once done, the message is not delivered again.
        await E2E.EventuallyAsync(() => E2E.GroupDoneAsync(fixture.Broker.AdminUrl, group, topic), TimeSpan.FromSeconds(30), "the broker to have the ack");
        Assert.Equal(1, Volatile.Read(ref calls));
    }
}
