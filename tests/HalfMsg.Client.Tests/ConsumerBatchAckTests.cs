using Apache.Rocketmq.V2;
using HalfMsg.Client.Tests.Infrastructure;
using HalfMsg.ClientCore;
using HalfMsg.ConsumerClient;
using HalfMsg.ProducerClient;
using ProducerMessage = HalfMsg.ProducerClient.Message;
using Status = Apache.Rocketmq.V2.Status;

namespace HalfMsg.Client.Tests;

/// <summary>SimpleConsumer.AckAsync(batch): a call the broker refuses as a whole is reported, and a batch above the
/// broker's 1024 entries per call is split.</summary>
[Trait("Category", "E2E")]
public sealed class ConsumerBatchAckTests(BrokerFixture fixture) : IClassFixture<BrokerFixture>
{
    private string Endpoint => fixture.Broker.Endpoint;

    [Fact]
    public async Task Batch_ack_of_more_than_1024_messages_acknowledges_every_one_of_them()
    {
        const int count = 1025; // one above the broker's 1024 entries per AckMessage call
        string topic = E2E.Unique("ackcap");
        await using Producer producer = await E2E.ProducerAsync(Endpoint, topic);
        await Task.WhenAll(Enumerable.Range(0, count).Select(i => producer.SendAsync(new ProducerMessage(topic, "m" + i))));
        await using SimpleConsumer consumer = await E2E.ConsumerAsync(Endpoint, topic, E2E.Unique("g"));
        var received = new List<ReceivedMessage>();
        await E2E.EventuallyAsync(async () =>
        {
            received.AddRange(await consumer.ReceiveAsync(32, TimeSpan.FromMinutes(5)));
            return received.Count >= count;
        }, TimeSpan.FromSeconds(60), $"{count} messages received");
        Assert.Equal(count, received.Count);

        await consumer.AckAsync(received);

        // An acknowledged message's handle is stale: acknowledging it again is refused with INVALID_RECEIPT_HANDLE.
        foreach (int i in new[] { 0, 1023, 1024 })
        {
            Exception? again = await Record.ExceptionAsync(() => received[i].AckAsync());
            Assert.True(again is BadRequestException { Code: Code.InvalidReceiptHandle },
                $"message {i + 1} of {count} was not acknowledged by the batch ack (acknowledging it again gave {again?.GetType().Name ?? "success"})");
        }
    }

    private static async Task<(TestGrpcServer Server, SimpleConsumer Consumer, ReceivedMessage Message)> FakeAsync(
        Func<AckMessageRequest, AckMessageResponse> ack)
    {
        string topic = E2E.Unique("fake");
        int delivered = 0;
        TestGrpcServer server = await FakeBrokers.ConsumingAsync(new Settings(), s =>
        {
            s.OnReceive = (_, stream, ctx) => FakeBrokers.AnswerReceiveAsync(stream, ctx,
                Interlocked.Exchange(ref delivered, 1) == 0 ? [FakeBrokers.Delivered(topic, "id-1", "rh-1")] : [], TimeSpan.FromMilliseconds(200));
            s.OnAckMessage = (request, _) => Task.FromResult(ack(request));
        });
        SimpleConsumer consumer = await SimpleConsumer.StartAsync(SimpleConsumerOptions.Default with
        {
            Endpoints = server.Endpoint,
            ConsumerGroup = "g",
            Subscriptions = new Dictionary<string, string> { [topic] = "*" },
            AwaitDuration = TimeSpan.FromSeconds(1),
        });
        ReceivedMessage m = Assert.Single(await consumer.ReceiveAsync(16, TimeSpan.FromSeconds(30)));
        return (server, consumer, m);
    }

    [Fact]
    public async Task Batch_ack_refused_as_a_whole_throws_the_brokers_status()
    {
        // A storage fault (or authentication failure, or too many entries) is answered with a top-level status and no entry.
        (TestGrpcServer server, SimpleConsumer consumer, ReceivedMessage m) = await FakeAsync(_ =>
            new AckMessageResponse { Status = new Status { Code = Code.InternalError, Message = "disk full" } });
        await using (server)
        await using (consumer)
        {
            Exception? error = await Record.ExceptionAsync(() => consumer.AckAsync([m]));
            Assert.True(error is InternalErrorException { Code: Code.InternalError },
                $"a batch ack refused as a whole with INTERNAL_ERROR gave {error?.GetType().Name ?? "success"}");
        }
    }

    [Fact]
    public async Task Batch_ack_answered_for_fewer_entries_than_sent_throws()
    {
        (TestGrpcServer server, SimpleConsumer consumer, ReceivedMessage m) = await FakeAsync(_ =>
            new AckMessageResponse { Status = new Status { Code = Code.Ok } });
        await using (server)
        await using (consumer)
        {
            Exception? error = await Record.ExceptionAsync(() => consumer.AckAsync([m]));
            Assert.True(error is ClientException, $"a batch ack answered OK with no entry gave {error?.GetType().Name ?? "success"}");
        }
    }
}
