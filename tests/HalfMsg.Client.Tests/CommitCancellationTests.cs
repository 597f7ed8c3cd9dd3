using HalfMsg.Client.Tests.Infrastructure;
using HalfMsg.ConsumerClient;
using HalfMsg.ProducerClient;
using ProducerMessage = HalfMsg.ProducerClient.Message;

namespace HalfMsg.Client.Tests;

/// <summary>A caller's cancellation and the outcome it is told, against a real broker (found by review 2026-12-05).</summary>
[Trait("Category", "E2E")]
public sealed class CommitCancellationTests : IAsyncLifetime
{
    private InProcessBroker _broker = null!;

    private string Endpoint => _broker.Endpoint;

    public async Task InitializeAsync() => _broker = await InProcessBroker.StartAsync("commitcancel");

    public async Task DisposeAsync() => await _broker.DisposeAsync();

    /// <summary>
    /// A commit whose caller cancels once the broker has carried it out (the answer is on its way back) gets the
    /// commit's answer. Until 2026-12-05 it was reported as OperationCanceledException, and the message was delivered:
    /// the caller was told "cancelled" for a commit that happened, and might compensate its local work for an event its
    /// consumers got.
    /// </summary>
    [Fact]
    public async Task A_commit_the_broker_carried_out_is_not_reported_cancelled_to_a_caller_that_cancels_afterwards()
    {
        string topic = E2E.Unique("cc-cancel");
        using var hold = new HoldAnsweredDecisions();
        await using Producer producer = await Producer.StartWithHandlerAsync(ProducerOptions.Default with
        {
            Endpoints = Endpoint, Topics = [topic], RequestTimeout = TimeSpan.FromSeconds(30),
        }, hold, CancellationToken.None);
        await using SimpleConsumer consumer = await E2E.ConsumerAsync(Endpoint, topic, E2E.Unique("g"));

        ITransaction tx = producer.BeginTransaction();
        SendReceipt receipt = await tx.SendAsync(new ProducerMessage(topic, "order"));
        using var cancel = new CancellationTokenSource();
        Task commit = tx.CommitAsync(cancel.Token);
        await hold.Answered.Task.WaitAsync(TimeSpan.FromSeconds(30)); // the broker has committed; its answer is held
        // No pause before the release: the token's callbacks run inside Cancel(), and a call that took the caller's token
        // (the bug) is cancelled there, before the held answer is let through.
        cancel.Cancel();
        hold.Release();

        Exception? told = await Record.ExceptionAsync(() => commit.WaitAsync(TimeSpan.FromSeconds(30)));
        ReceivedMessage delivered = Assert.Single(await E2E.DrainAsync(consumer, 1, TimeSpan.FromSeconds(30)));
        Assert.Equal(receipt.MessageId, delivered.MessageId);
        Assert.Null(told); // before 2026-12-05: OperationCanceledException for a delivered message
    }

    /// <summary>Lets decision calls through to the broker, then holds the broker's answer until <see cref="Release"/>.</summary>
    private sealed class HoldAnsweredDecisions() : DelegatingHandler(new SocketsHttpHandler { UseProxy = false, EnableMultipleHttp2Connections = true })
    {
        private readonly TaskCompletionSource _release = new(TaskCreationOptions.RunContinuationsAsynchronously);

        public TaskCompletionSource Answered { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);

        public void Release() => _release.TrySetResult();

        protected override async Task<HttpResponseMessage> SendAsync(HttpRequestMessage request, CancellationToken cancellationToken)
        {
            HttpResponseMessage response = await base.SendAsync(request, cancellationToken);
            string path = request.RequestUri?.AbsolutePath ?? string.Empty;
            if (path.EndsWith("/EndTransactions", StringComparison.Ordinal) || path.EndsWith("/EndTransaction", StringComparison.Ordinal))
            {
                Answered.TrySetResult();
                await _release.Task.WaitAsync(cancellationToken);
            }

            return response;
        }
    }
}
