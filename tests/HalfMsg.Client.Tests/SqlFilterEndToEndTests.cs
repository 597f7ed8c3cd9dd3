using System.Diagnostics;
using Apache.Rocketmq.V2;
using HalfMsg.Client.Tests.Infrastructure;
using HalfMsg.ClientCore;
using HalfMsg.ConsumerClient;
using HalfMsg.ProducerClient;
using ProducerMessage = HalfMsg.ProducerClient.Message;

namespace HalfMsg.Client.Tests;

/// <summary>
/// A simple consumer subscribed with <c>SQL92:</c> (gRPC FilterType.SQL) gets only the messages whose properties match,
/// committed transactions' as normal messages'; the others are consumed for its group and never come back to it. Until
/// 2026-12-06 the broker refused every SQL92 receive (ILLEGAL_FILTER_EXPRESSION).
/// </summary>
[Trait("Category", "E2E")]
public sealed class SqlFilterEndToEndTests(BrokerFixture fixture) : IClassFixture<BrokerFixture>
{
    private static readonly TimeSpan ShortLease = TimeSpan.FromSeconds(2);

    private string Endpoint => fixture.Broker.Endpoint;

    private Task<SimpleConsumer> SqlConsumerAsync(string topic, string group, string sql) =>
        SimpleConsumer.StartAsync(SimpleConsumerOptions.Default with
        {
            Endpoints = Endpoint,
            ConsumerGroup = group,
            Subscriptions = new Dictionary<string, string> { [topic] = "SQL92:" + sql },
            AwaitDuration = TimeSpan.FromSeconds(1),
        });

    private static ProducerMessage With(string topic, string body, string region, int amount, string? tag = null) => new(topic, body)
    {
        Tag = tag,
        Properties = new Dictionary<string, string> { ["region"] = region, ["amount"] = amount.ToString(System.Globalization.CultureInfo.InvariantCulture) },
    };

    [Fact]
    public async Task Only_matching_messages_arrive_and_the_others_never_come_back()
    {
        string topic = E2E.Unique("sql");
        await using Producer producer = await E2E.ProducerAsync(Endpoint, topic);
        await using SimpleConsumer consumer = await SqlConsumerAsync(topic, E2E.Unique("g"), "region = 'eu' AND amount >= 100");

        // More than one receive's batch of messages that do not match before and between the ones that do.
        for (int i = 0; i < 40; i++) await producer.SendAsync(With(topic, $"us-{i}", "us", 500));
        await producer.SendAsync(With(topic, "eu-small", "eu", 5));
        await producer.SendAsync(With(topic, "eu-big", "eu", 150));
        await producer.SendAsync(new ProducerMessage(topic, "no-properties"));
        ITransaction tx = producer.BeginTransaction();
        await tx.SendAsync(With(topic, "eu-committed", "eu", 100, tag: "tx"));
        await tx.CommitAsync();
        ITransaction rolledBack = producer.BeginTransaction();
        await rolledBack.SendAsync(With(topic, "eu-rolled-back", "eu", 100));
        await rolledBack.RollbackAsync();

        // Leased for a short time and not acknowledged: what came is seen again after the lease, what did not match never.
        var got = new List<ReceivedMessage>();
        var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(30);
        while (got.Select(m => m.BodyAsString()).Distinct().Count() < 2 && DateTime.UtcNow < deadline)
            got.AddRange(await consumer.ReceiveAsync(8, ShortLease));
        Assert.Equal(["eu-big", "eu-committed"], got.Select(m => m.BodyAsString()).Distinct().Order());
        ReceivedMessage committed = got.First(m => m.BodyAsString() == "eu-committed");
        Assert.Equal("tx", committed.Tag);
        Assert.Equal("100", committed.Properties["amount"]);

        // A negative check needs a window: receive on for at least three lease lengths, and until a message that matched
        // came back (its lease ran out unacknowledged), which shows that leases of this group did end within the window.
        // The messages that did not match were settled for the group: none of them may come.
        var again = new List<ReceivedMessage>();
        var watch = Stopwatch.StartNew();
        while ((watch.Elapsed < ShortLease * 3 || !again.Any(m => m.BodyAsString() == "eu-big")) && watch.Elapsed < TimeSpan.FromSeconds(30))
            again.AddRange(await consumer.ReceiveAsync(8, ShortLease));
        Assert.Contains(again, m => m.BodyAsString() == "eu-big");
        Assert.All(again, m => Assert.Contains(m.BodyAsString(), new[] { "eu-big", "eu-committed" }));
    }

    [Fact]
    public async Task A_subscription_that_does_not_parse_is_refused_with_the_reason()
    {
        string topic = E2E.Unique("sqlbad");
        await using Producer producer = await E2E.ProducerAsync(Endpoint, topic);
        await producer.SendAsync(With(topic, "x", "eu", 1));
        await using SimpleConsumer consumer = await SqlConsumerAsync(topic, E2E.Unique("g"), "region = 'eu' AND");

        var error = await Assert.ThrowsAsync<BadRequestException>(() => consumer.ReceiveAsync(8, ShortLease));
        Assert.Equal(Code.IllegalFilterExpression, error.Code);
        Assert.Contains("at position 18", error.Message, StringComparison.Ordinal);

        // The broker serves on: a consumer with a good filter gets the message.
        await using SimpleConsumer good = await SqlConsumerAsync(topic, E2E.Unique("g"), "region = 'eu'");
        Assert.Equal(["x"], (await E2E.DrainAsync(good, 1, TimeSpan.FromSeconds(20))).Select(m => m.BodyAsString()));
    }
}
