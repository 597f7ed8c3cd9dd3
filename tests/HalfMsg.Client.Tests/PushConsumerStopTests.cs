using HalfMsg.Client.Tests.Infrastructure;
using HalfMsg.ConsumerClient;
using HalfMsg.ProducerClient;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using ProducerMessage = HalfMsg.ProducerClient.Message;

namespace HalfMsg.Client.Tests;

/// <summary>Stopping a push consumer whose handler ignores its token is bounded: StopAsync(token) returns a short grace
/// after the token is cancelled, and a host's shutdown token reaches it.</summary>
[Trait("Category", "E2E")]
public sealed class PushConsumerStopTests(BrokerFixture fixture) : IClassFixture<BrokerFixture>
{
    /// <summary>How long after its token is cancelled a stop may still run: the 5 s grace plus slack for a busy machine.</summary>
    private static readonly TimeSpan StopBound = TimeSpan.FromSeconds(15);

    private string Endpoint => fixture.Broker.Endpoint;

    private PushConsumerOptions Options(string topic, TaskCompletionSource started, Task release, ILoggerFactory? logs = null) =>
        PushConsumerOptions.Default with
        {
            Endpoints = Endpoint,
            ConsumerGroup = E2E.Unique("g"),
            Subscriptions = new Dictionary<string, string> { [topic] = "*" },
            AwaitDuration = TimeSpan.FromSeconds(1),
            LoggerFactory = logs,
            Handler = async (m, _) =>
            {
                started.TrySetResult();
                await release; // e.g. a call made without the token: cancelling it does not end the handler
                return ConsumeResult.Success;
            },
        };

    [Fact]
    public async Task StopAsync_returns_a_bounded_grace_after_its_token_is_cancelled_even_if_a_handler_ignores_it()
    {
        string topic = E2E.Unique("stop");
        await using Producer producer = await E2E.ProducerAsync(Endpoint, topic);
        SendReceipt sent = await producer.SendAsync(new ProducerMessage(topic, "x"));
        var started = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var release = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var logs = new RecordingLoggerFactory();
        PushConsumer consumer = await PushConsumer.StartAsync(Options(topic, started, release.Task, logs));
        try
        {
            await started.Task.WaitAsync(TimeSpan.FromSeconds(20));

            using var cts = new CancellationTokenSource();
            Task stop = consumer.StopAsync(cts.Token);
            await cts.CancelAsync();
            Exception? timedOut = await Record.ExceptionAsync(() => stop.WaitAsync(StopBound));
            Assert.True(timedOut is null, $"StopAsync still running {StopBound} after its token was cancelled (DisposeAsync would hang the same way)");
            Assert.Contains(logs.AtLeast(LogLevel.Warning, "still running"), e => e.Contains(sent.MessageId, StringComparison.Ordinal));

            Exception? disposeTimedOut = await Record.ExceptionAsync(() => consumer.DisposeAsync().AsTask().WaitAsync(StopBound));
            Assert.True(disposeTimedOut is null, "DisposeAsync after a StopAsync that left a handler running did not return");
        }
        finally
        {
            release.TrySetResult();
        }
    }

    [Fact]
    public async Task A_hosts_shutdown_token_bounds_the_push_consumers_stop()
    {
        string topic = E2E.Unique("hoststop");
        await using Producer producer = await E2E.ProducerAsync(Endpoint, topic);
        await producer.SendAsync(new ProducerMessage(topic, "x"));
        var started = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var release = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        try
        {
            HostApplicationBuilder builder = Host.CreateApplicationBuilder();
            builder.Logging.ClearProviders();
            builder.Services.AddHalfMsgPushConsumer((_, _) => Options(topic, started, release.Task));
            using IHost host = builder.Build();
            await host.StartAsync();
            await started.Task.WaitAsync(TimeSpan.FromSeconds(20));

            // The host's token is cancelled at once; the consumer's own 30 s (DisposeAsync) must not be what bounds the stop.
            using var cts = new CancellationTokenSource();
            await cts.CancelAsync();
            Task stop = host.StopAsync(cts.Token);
            Exception? timedOut = await Record.ExceptionAsync(() => stop.WaitAsync(StopBound));
            Assert.True(timedOut is null, $"IHost.StopAsync still running {StopBound} after the host's shutdown token was cancelled");
        }
        finally
        {
            release.TrySetResult();
        }
    }
}
