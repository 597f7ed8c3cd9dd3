using System.Collections.Concurrent;
using HalfMsg.Client.Tests.Infrastructure;
using HalfMsg.ConsumerClient;
using HalfMsg.ProducerClient;
using HalfMsg.TestKit;
using ProducerMessage = HalfMsg.ProducerClient.Message;

namespace HalfMsg.Client.Tests;

/// <summary>SimpleConsumer.ConsumeAsync receives continuously until cancelled, across a broker restart.</summary>
[Trait("Category", "E2E")]
public sealed class SimpleConsumerRestartTests
{
    [Fact]
    public async Task ConsumeAsync_keeps_receiving_across_a_broker_restart()
    {
        await using BrokerProcess broker = await BrokerProcess.StartAsync();
        string topic = E2E.Unique("restart");
        await using SimpleConsumer consumer = await E2E.ConsumerAsync(broker.Endpoint, topic, E2E.Unique("g"));
        var bodies = new ConcurrentQueue<string>();
        using var cts = new CancellationTokenSource();
        Task consuming = Task.Run(async () =>
        {
            await foreach (ReceivedMessage m in consumer.ConsumeAsync(TimeSpan.FromSeconds(30), 16, cts.Token))
            {
                // Acked first: the kill below must not land on this ack (the test's own call, not ConsumeAsync's; it
                // failed a stressed CI round on 2026-12-06 with Unavailable, ending the enumeration from the loop body).
                await m.AckAsync();
                bodies.Enqueue(m.BodyAsString());
            }
        });
        try
        {
            await using (Producer producer = await E2E.ProducerAsync(broker.Endpoint, topic))
            {
                await producer.SendAsync(new ProducerMessage(topic, "before"));
            }

            await E2E.EventuallyAsync(() => bodies.Contains("before") || consuming.IsCompleted, TimeSpan.FromSeconds(20), "the message sent before the restart");
            Assert.Contains("before", bodies);

            broker.Kill(); // the long poll in flight fails, and so does every receive until the broker is back
            await broker.RestartAsync();
            await using (Producer producer = await E2E.ProducerAsync(broker.Endpoint, topic))
            {
                await producer.SendAsync(new ProducerMessage(topic, "after"));
            }

            await E2E.EventuallyAsync(() => bodies.Contains("after") || consuming.IsCompleted, TimeSpan.FromSeconds(40), "the message sent after the restart");
            Assert.False(consuming.IsCompleted, $"ConsumeAsync ended during the broker restart: {consuming.Exception?.InnerException?.GetType().Name}: {consuming.Exception?.InnerException?.Message}");
            Assert.Contains("after", bodies);
        }
        finally
        {
            await cts.CancelAsync();
            await Task.WhenAny(consuming, Task.Delay(TimeSpan.FromSeconds(10)));
        }
    }
}
