using Apache.Rocketmq.V2;
using HalfMsg.Client.Tests.Infrastructure;
using HalfMsg.ConsumerClient;
using Status = Apache.Rocketmq.V2.Status;

namespace HalfMsg.Client.Tests;

/// <summary>The FIFO path of a push consumer against a scripted broker whose Settings say the group is FIFO.</summary>
public sealed class PushConsumerFifoTests
{
    [Fact]
    public async Task Messages_without_a_message_group_are_handled_independently_in_a_fifo_group()
    {
        int delivered = 0;
        var settings = new Settings { Subscription = new Subscription { Fifo = true } };
        await using TestGrpcServer server = await FakeBrokers.ConsumingAsync(settings, s =>
        {
            s.OnReceive = (_, stream, ctx) => FakeBrokers.AnswerReceiveAsync(stream, ctx,
                Interlocked.Exchange(ref delivered, 1) == 0
                    ? [FakeBrokers.Delivered("t", "id-1", "rh-1"), FakeBrokers.Delivered("t", "id-2", "rh-2")] // no message group
                    : [],
                TimeSpan.FromMilliseconds(500));
            s.OnAckMessage = (_, _) => Task.FromResult(new AckMessageResponse { Status = new Status { Code = Code.Ok } });
        });
        var first = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var second = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        await using PushConsumer consumer = await PushConsumer.StartAsync(PushConsumerOptions.Default with
        {
            Endpoints = server.Endpoint,
            ConsumerGroup = "g",
            Subscriptions = new Dictionary<string, string> { ["t"] = "*" },
            AwaitDuration = TimeSpan.FromSeconds(1),
            Handler = async (m, ct) =>
            {
                // Each handler waits for the other to have started: only possible if they run side by side.
                (m.MessageId == "id-1" ? first : second).TrySetResult();
                await (m.MessageId == "id-1" ? second : first).Task.WaitAsync(TimeSpan.FromSeconds(10), ct);
                return ConsumeResult.Success;
            },
        });

        Exception? error = await Record.ExceptionAsync(() => Task.WhenAll(first.Task, second.Task).WaitAsync(TimeSpan.FromSeconds(15)));
        Assert.True(error is null,
            $"two messages without a message group were not handled side by side (first started: {first.Task.IsCompleted}, second started: {second.Task.IsCompleted})");
    }
}
