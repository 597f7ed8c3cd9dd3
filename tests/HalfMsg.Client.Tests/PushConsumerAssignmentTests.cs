using Apache.Rocketmq.V2;
using HalfMsg.Client.Tests.Infrastructure;
using HalfMsg.ConsumerClient;
using HalfMsg.ProducerClient;
using ProducerMessage = HalfMsg.ProducerClient.Message;

namespace HalfMsg.Client.Tests;

/// <summary>A change of one topic's assignment stops only that topic's receive loops.</summary>
[Trait("Category", "E2E")]
public sealed class PushConsumerAssignmentTests(BrokerFixture fixture) : IClassFixture<BrokerFixture>
{
    /// <summary>
    /// A '|' is valid in a topic name. Until 2026-12-06 the consumer found a topic's loops by the key prefix
    /// "&lt;topic&gt;|", so a change of topic t's queues also stopped the loops of a subscribed topic "t|x" (found by
    /// review): that topic was then not received from until its own next scan re-started them.
    /// </summary>
    [Fact]
    public async Task A_change_of_one_topics_queues_leaves_the_loops_of_a_topic_whose_name_starts_with_it_and_a_bar()
    {
        string endpoint = fixture.Broker.Endpoint;
        string topic = E2E.Unique("asg");
        string barred = topic + "|x";
        foreach (string t in new[] { topic, barred })
        {
            await using Producer producer = await E2E.ProducerAsync(endpoint, t); // creates the topic
            await producer.SendAsync(new ProducerMessage(t, "x"));
        }

        await using PushConsumer consumer = await PushConsumer.StartAsync(PushConsumerOptions.Default with
        {
            Endpoints = endpoint,
            ConsumerGroup = E2E.Unique("g"),
            Subscriptions = new Dictionary<string, string> { [topic] = "*", [barred] = "*" },
            AwaitDuration = TimeSpan.FromSeconds(1),
            Handler = (_, _) => Task.FromResult(ConsumeResult.Success),
        });
        Assert.Contains(consumer.AssignedForTests(), a => a.Topic == barred);

        // Topic t's assignment changes: another queue of it instead of the one it had.
        MessageQueue other = (await consumer.AssignmentsAsync(topic, CancellationToken.None))[0].Clone();
        other.Id += 1_000;
        consumer.Apply(topic, [other]);

        var assigned = consumer.AssignedForTests();
        Assert.Contains(assigned, a => a.Topic == barred);
        Assert.Single(assigned, a => a.Topic == topic);
    }

    /// <summary>
    /// Until 2026-12-06 the token source of a queue's receive loop was disposed only with the consumer: each queue a
    /// reassignment took away left its source (registered with the consumer's own source) and its finished loop behind,
    /// a little memory per reassignment for the consumer's life. Now a loop's source is disposed when the loop ends.
    /// </summary>
    [Fact]
    public async Task The_token_source_of_a_queue_taken_away_is_disposed_when_its_loop_ends()
    {
        string endpoint = fixture.Broker.Endpoint;
        string topic = E2E.Unique("asgcts");
        await using (Producer producer = await E2E.ProducerAsync(endpoint, topic)) // creates the topic
        {
            await producer.SendAsync(new ProducerMessage(topic, "x"));
        }

        await using PushConsumer consumer = await PushConsumer.StartAsync(PushConsumerOptions.Default with
        {
            Endpoints = endpoint,
            ConsumerGroup = E2E.Unique("g"),
            Subscriptions = new Dictionary<string, string> { [topic] = "*" },
            AwaitDuration = TimeSpan.FromSeconds(1),
            Handler = (_, _) => Task.FromResult(ConsumeResult.Success),
        });
        var sources = new System.Collections.Concurrent.ConcurrentQueue<CancellationTokenSource>();
        consumer.QueueSourceCreatedForTests = sources.Enqueue;

        // 50 reassignments, each to a queue the topic did not have before: each takes the previous queue away.
        MessageQueue first = (await consumer.AssignmentsAsync(topic, CancellationToken.None))[0];
        const int reassignments = 50;
        for (int i = 1; i <= reassignments; i++)
        {
            MessageQueue next = first.Clone();
            next.Id += 1_000 + i;
            consumer.Apply(topic, [next]);
        }

        Assert.Equal(reassignments, sources.Count);
        CancellationTokenSource[] takenAway = [.. sources.Take(reassignments - 1)];
        // A disposed source refuses its Token.
        static bool Disposed(CancellationTokenSource cts)
        {
            try
            {
                _ = cts.Token;
                return false;
            }
            catch (ObjectDisposedException)
            {
                return true;
            }
        }

        await E2E.EventuallyAsync(() => takenAway.All(Disposed), TimeSpan.FromSeconds(20),
            "the token sources of the queues taken away are disposed");
        Assert.False(Disposed(sources.Last()), "the current queue's source is still in use");
        Assert.Single(consumer.AssignedForTests());
    }
}
