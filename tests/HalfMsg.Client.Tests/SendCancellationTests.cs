using HalfMsg.Client.Tests.Infrastructure;
using HalfMsg.ConsumerClient;
using HalfMsg.ProducerClient;
using ProducerMessage = HalfMsg.ProducerClient.Message;

namespace HalfMsg.Client.Tests;

/// <summary>A normal send's caller that cancels once the send is on the wire, against a real broker (found by review
/// 2026-12-07).</summary>
[Trait("Category", "E2E")]
public sealed class SendCancellationTests : IAsyncLifetime
{
    private InProcessBroker _broker = null!;

    private string Endpoint => _broker.Endpoint;

    public async Task InitializeAsync() => _broker = await InProcessBroker.StartAsync("sendcancel");

    public async Task DisposeAsync() => await _broker.DisposeAsync();

    /// <summary>
    /// A send whose caller cancels once the broker has stored the message (its answer is on its way back) gets the
    /// send's receipt. Until the review of 2026-12-07 it was told OperationCanceledException for a message its consumers
    /// got: a caller that took "cancelled" for "not sent" and sent again published the event twice, under two message
    /// ids, which no consumer's dedupe by message id catches. (Halves and decisions had been fixed on 2026-12-05.)
    /// </summary>
    [Fact]
    public async Task A_send_the_broker_stored_is_not_reported_cancelled_to_a_caller_that_cancels_afterwards()
    {
        string topic = E2E.Unique("send-cancel");
        using var hold = new HoldAnsweredSends();
        await using Producer producer = await Producer.StartWithHandlerAsync(ProducerOptions.Default with
        {
            Endpoints = Endpoint, Topics = [topic], RequestTimeout = TimeSpan.FromSeconds(30),
        }, hold, CancellationToken.None);
        await using SimpleConsumer consumer = await E2E.ConsumerAsync(Endpoint, topic, E2E.Unique("g"));

        using var cancel = new CancellationTokenSource();
        Task<SendReceipt> send = producer.SendAsync(new ProducerMessage(topic, "order created"), cancel.Token);
        await hold.Answered.Task.WaitAsync(TimeSpan.FromSeconds(30)); // the broker has stored it; its answer is held
        cancel.Cancel(); // a call holding the caller's token is cancelled inside Cancel(), before the answer is let through
        hold.Release();

        Exception? told = await Record.ExceptionAsync(() => send.WaitAsync(TimeSpan.FromSeconds(30)));
        ReceivedMessage delivered = Assert.Single(await E2E.DrainAsync(consumer, 1, TimeSpan.FromSeconds(30)));
        Assert.Null(told); // before 2026-12-07: OperationCanceledException for a delivered message
        Assert.Equal((await send).MessageId, delivered.MessageId);
    }

    /// <summary>A send cancelled before it is on the wire is not sent.</summary>
    [Fact]
    public async Task A_send_cancelled_before_it_is_sent_is_not_delivered()
    {
        string topic = E2E.Unique("send-cancel");
        await using Producer producer = await E2E.ProducerAsync(Endpoint, topic);
        await using SimpleConsumer consumer = await E2E.ConsumerAsync(Endpoint, topic, E2E.Unique("g"));
        using var cancel = new CancellationTokenSource();
        await cancel.CancelAsync();

        await Assert.ThrowsAnyAsync<OperationCanceledException>(() => producer.SendAsync(new ProducerMessage(topic, "never"), cancel.Token));
        SendReceipt marker = await producer.SendAsync(new ProducerMessage(topic, "marker"));
        ReceivedMessage only = Assert.Single(await E2E.DrainAsync(consumer, 2, TimeSpan.FromSeconds(5)));
        Assert.Equal(marker.MessageId, only.MessageId);
    }

    /// <summary>A caller that cancels while an attempt that will fail is on the wire gets that failure (the message may
    /// have been stored), not "cancelled", and no further attempt is made.</summary>
    [Fact]
    public async Task A_send_cancelled_during_a_failed_attempt_gets_the_failure_and_is_not_retried()
    {
        using var cancel = new CancellationTokenSource();
        int attempts = 0;
        await using TestGrpcServer server = await FakeBrokers.ConsumingAsync(new Apache.Rocketmq.V2.Settings(), s =>
            s.OnSendMessage = (_, _) =>
            {
                Interlocked.Increment(ref attempts);
                cancel.Cancel(); // while the attempt is on the wire
                return Task.FromResult(new Apache.Rocketmq.V2.SendMessageResponse
                {
                    Status = new Apache.Rocketmq.V2.Status { Code = Apache.Rocketmq.V2.Code.InternalError, Message = "timed out storing" },
                });
            });
        await using Producer producer = await Producer.StartAsync(ProducerOptions.Default with { Endpoints = server.Endpoint, Topics = ["t"] });

        Exception told = await Assert.ThrowsAnyAsync<Exception>(() => producer.SendAsync(new ProducerMessage("t", "x"), cancel.Token));
        Assert.IsType<HalfMsg.ClientCore.InternalErrorException>(told);
        Assert.Equal(1, Volatile.Read(ref attempts));
    }

    /// <summary>Lets sends through to the broker, then holds the broker's answer until <see cref="Release"/>.</summary>
    private sealed class HoldAnsweredSends() : DelegatingHandler(new SocketsHttpHandler { UseProxy = false, EnableMultipleHttp2Connections = true })
    {
        private readonly TaskCompletionSource _release = new(TaskCreationOptions.RunContinuationsAsynchronously);

        public TaskCompletionSource Answered { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);

        public void Release() => _release.TrySetResult();

        protected override async Task<HttpResponseMessage> SendAsync(HttpRequestMessage request, CancellationToken cancellationToken)
        {
            HttpResponseMessage response = await base.SendAsync(request, cancellationToken);
            if ((request.RequestUri?.AbsolutePath ?? string.Empty).EndsWith("/SendMessage", StringComparison.Ordinal))
            {
                Answered.TrySetResult();
                await _release.Task.WaitAsync(cancellationToken);
            }

            return response;
        }
    }
}
