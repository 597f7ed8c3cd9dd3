using HalfMsg.Client.Tests.Infrastructure;
using HalfMsg.ConsumerClient;
using HalfMsg.ProducerClient;
using HalfMsg.TestKit;
using ProducerMessage = HalfMsg.ProducerClient.Message;

namespace HalfMsg.Client.Tests;

/// <summary>Found by a review of our clients (2026-12-06 afternoon): each failed on the code before its fix.</summary>
[Trait("Category", "E2E")]
public sealed class ClientEdgeTests(BrokerFixture fixture) : IClassFixture<BrokerFixture>
{
    private string Endpoint => fixture.Broker.Endpoint;

    /// <summary>StopAsync documents that, once its token is cancelled, it still waits up to 5 s "for handlers (and their
    /// acks) to finish". A handler that finishes with Success inside that grace must have its ack sent: the work is done.</summary>
    [Fact]
    public async Task A_handler_that_succeeds_within_the_stop_grace_has_its_message_acknowledged()
    {
        string topic = E2E.Unique("stopack");
        string group = E2E.Unique("g");
        await using Producer producer = await E2E.ProducerAsync(Endpoint, topic);
        await producer.SendAsync(new ProducerMessage(topic, "x"));
        var started = new TaskCompletionSource<CancellationToken>(TaskCreationOptions.RunContinuationsAsynchronously);
        var release = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        int handled = 0;
        PushConsumer consumer = await PushConsumer.StartAsync(PushConsumerOptions.Default with
        {
            Endpoints = Endpoint,
            ConsumerGroup = group,
            Subscriptions = new Dictionary<string, string> { [topic] = "*" },
            AwaitDuration = TimeSpan.FromSeconds(1),
            InvisibleDuration = TimeSpan.FromSeconds(60),
            Handler = async (m, ct) =>
            {
                started.TrySetResult(ct);
                await release.Task; // a call made without the token
                Interlocked.Increment(ref handled);
                return ConsumeResult.Success;
            },
        });
        try
        {
            CancellationToken handlerToken = await started.Task.WaitAsync(TimeSpan.FromSeconds(20));
            using var cts = new CancellationTokenSource();
            Task stop = consumer.StopAsync(cts.Token);
            await cts.CancelAsync();
            // The stop has cancelled the handlers' token: its 5 s grace runs now.
            await E2E.EventuallyAsync(() => handlerToken.IsCancellationRequested, TimeSpan.FromSeconds(10), "the stop to cancel the handlers' token");
            release.TrySetResult(); // the handler finishes inside the grace
            await stop.WaitAsync(TimeSpan.FromSeconds(15));
            Assert.Equal(1, Volatile.Read(ref handled));
            await E2E.EventuallyAsync(() => E2E.GroupDoneAsync(fixture.Broker.AdminUrl, group, topic), TimeSpan.FromSeconds(5),
                "the message whose handler succeeded during the stop's grace is acknowledged");
        }
        finally
        {
            release.TrySetResult();
            await consumer.DisposeAsync();
        }
    }

    private sealed class SignallingChecker : ITransactionChecker
    {
        public readonly TaskCompletionSource<string> Checked = new(TaskCreationOptions.RunContinuationsAsynchronously);

        public ValueTask<TransactionResolution> CheckAsync(MessageView message, CancellationToken cancellationToken)
        {
            Checked.TrySetResult(message.Topic);
            return ValueTask.FromResult(TransactionResolution.Rollback);
        }
    }

    /// <summary>The broker makes a gRPC producer the check-back channel of a topic only when the topic is in the Settings
    /// its Telemetry stream carries. The producer re-sends its Settings for a new topic only on the first send to it;
    /// when that first send fails before the re-send (here: the topic did not exist yet), later sends never declare
    /// it, and the halves of that topic get no check-back from this producer until the 5-minute Settings resync.</summary>
    [Fact]
    public async Task A_topic_whose_first_send_failed_still_gets_its_halves_checked_back()
    {
        await using BrokerProcess broker = await BrokerProcess.StartAsync("--auto-create-topics", "false");
        using var admin = new HttpClient { BaseAddress = new Uri(broker.AdminUrl) };
        string declared = E2E.Unique("declared");
        string late = E2E.Unique("late");
        (await admin.PostAsync($"/api/topics/{declared}", null)).EnsureSuccessStatusCode();
        var checker = new SignallingChecker();
        await using Producer producer = await Producer.StartAsync(ProducerOptions.Default with
        {
            Endpoints = broker.Endpoint, Topics = [declared], TransactionChecker = checker,
        });

        // The first send to the topic fails: it does not exist yet.
        await Assert.ThrowsAnyAsync<HalfMsg.ClientCore.ClientException>(() => producer.SendAsync(new ProducerMessage(late, "early")));
        (await admin.PostAsync($"/api/topics/{late}", null)).EnsureSuccessStatusCode();

        // Now a half on it, never decided by the producer: the broker must be able to check it back with this producer.
        ITransaction tx = producer.BeginTransaction();
        await tx.SendAsync(new ProducerMessage(late, "half"));
        string? topic = null;
        Exception? timedOut = await Record.ExceptionAsync(async () => topic = await checker.Checked.Task.WaitAsync(TimeSpan.FromSeconds(30)));
        Assert.True(timedOut is null, "no check-back reached the producer within 30 s (transaction timeout and check interval 1 s)");
        Assert.Equal(late, topic);
    }

    private sealed class GateChecker : ITransactionChecker
    {
        public readonly TaskCompletionSource Gate = new(TaskCreationOptions.RunContinuationsAsynchronously);
        public int Started;

        public async ValueTask<TransactionResolution> CheckAsync(MessageView message, CancellationToken cancellationToken)
        {
            Interlocked.Increment(ref Started);
            await Gate.Task.WaitAsync(cancellationToken);
            return TransactionResolution.Commit;
        }
    }

    /// <summary>While the checker is slow (a database outage, a lock wait), the broker asks again about every pending
    /// half at each check interval. Only MaxConcurrentChecks checks run, but every command is queued (with its
    /// message body) behind them, without bound, duplicates included: here 40 checks of one transaction, each run in
    /// turn once the checker is back.</summary>
    [Fact]
    public async Task Repeated_checks_of_a_transaction_whose_check_is_still_waiting_are_not_queued_without_bound()
    {
        const int checks = 40;
        string topic = E2E.Unique("dupcheck");
        Apache.Rocketmq.V2.TelemetryCommand Check() => new()
        {
            RecoverOrphanedTransactionCommand = new Apache.Rocketmq.V2.RecoverOrphanedTransactionCommand
            {
                TransactionId = "tx-01DUP",
                Message = new Apache.Rocketmq.V2.Message
                {
                    Topic = new Apache.Rocketmq.V2.Resource { Name = topic },
                    Body = Google.Protobuf.ByteString.CopyFrom(new byte[64 * 1024]),
                    SystemProperties = new Apache.Rocketmq.V2.SystemProperties { MessageId = "01DUP", MessageType = Apache.Rocketmq.V2.MessageType.Transaction },
                },
            },
        };
        var decisions = new System.Collections.Concurrent.ConcurrentQueue<Apache.Rocketmq.V2.EndTransactionRequest>();
        await using TestGrpcServer server = await FakeBrokers.RecordingDecisionsAsync(decisions, new Apache.Rocketmq.V2.Settings(),
            [.. Enumerable.Range(0, checks).Select(_ => Check())]);
        var checker = new GateChecker();
        await using Producer producer = await Producer.StartAsync(ProducerOptions.Default with
        {
            Endpoints = server.Endpoint, Topics = [topic], TransactionChecker = checker, MaxConcurrentChecks = 1,
        });
        await E2E.EventuallyAsync(() => Volatile.Read(ref checker.Started) >= 1, TimeSpan.FromSeconds(20), "the first check to start");
        // Every later command of the same transaction is dropped while the first check runs (the broker asks again).
        await E2E.EventuallyAsync(() => producer.ChecksDropped >= checks - 1, TimeSpan.FromSeconds(20),
            $"the {checks - 1} repeated checks to be dropped (dropped {producer.ChecksDropped}, started {Volatile.Read(ref checker.Started)})");
        checker.Gate.TrySetResult();
        await E2E.EventuallyAsync(() => !decisions.IsEmpty, TimeSpan.FromSeconds(20), "the check's answer");
        Assert.Equal(1, Volatile.Read(ref checker.Started));
    }

    /// <summary>A commit that failed before the broker could act (UNAVAILABLE: the connection was refused or reset) cannot
    /// be retried: the transaction says "already committed or rolled back", which it was not.</summary>
    [Fact]
    public async Task A_commit_that_failed_with_a_transport_error_can_be_committed_again()
    {
        string topic = E2E.Unique("retrycommit");
        var decisions = new System.Collections.Concurrent.ConcurrentQueue<Apache.Rocketmq.V2.EndTransactionRequest>();
        await using TestGrpcServer server = await FakeBrokers.RecordingDecisionsAsync(decisions, new Apache.Rocketmq.V2.Settings());
        var inner = server.Service.OnEndTransaction!;
        int calls = 0;
        server.Service.OnEndTransaction = (request, ctx) => Interlocked.Increment(ref calls) == 1
            ? throw new Grpc.Core.RpcException(new Grpc.Core.Status(Grpc.Core.StatusCode.Unavailable, "broker restarting"))
            : inner(request, ctx);
        await using Producer producer = await Producer.StartAsync(ProducerOptions.Default with { Endpoints = server.Endpoint, Topics = [topic] });
        ITransaction tx = producer.BeginTransaction();
        await tx.SendAsync(new ProducerMessage(topic, "half"));
        await Assert.ThrowsAnyAsync<HalfMsg.ClientCore.ClientException>(() => tx.CommitAsync());
        Exception? again = await Record.ExceptionAsync(() => tx.CommitAsync());
        Assert.True(again is null, $"the second commit threw {again?.GetType().Name}: {again?.Message}");
        Assert.Single(decisions);
    }

    /// <summary>An Apache proxy in cluster mode answers QueryAssignment with one queue id -1 per broker group, every
    /// one with the proxy's own endpoints (RouteActivity.queryAssignment). Two broker groups give two assignments that
    /// differ only by broker name: the consumer must receive from both.</summary>
    [Fact]
    public async Task Two_broker_groups_behind_one_endpoint_each_get_a_receive_loop()
    {
        string endpoint = Endpoint;
        string topic = E2E.Unique("rvasg");
        await using (Producer producer = await E2E.ProducerAsync(endpoint, topic))
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

        Apache.Rocketmq.V2.MessageQueue a = (await consumer.AssignmentsAsync(topic, CancellationToken.None))[0].Clone();
        a.Id = -1;
        a.Broker.Name = "broker-a";
        Apache.Rocketmq.V2.MessageQueue b = a.Clone();
        b.Broker.Name = "broker-b";
        consumer.Apply(topic, [a, b]); // until the fix: ArgumentException (the same key twice)
        Assert.Equal(2, consumer.AssignedForTests().Count(x => x.Topic == topic));
    }

    /// <summary>A commit that failed on its way (connection reset) left the transaction undecided: the caller may commit
    /// again, as with the official clients (the second CommitAsync threw InvalidOperationException "already committed or
    /// rolled back").</summary>
    [Fact]
    public async Task A_commit_whose_request_failed_on_the_connection_can_be_committed_again()
    {
        string endpoint = Endpoint;
        string topic = E2E.Unique("rvretry");
        using var fail = new FailFirstClientDecision();
        await using Producer producer = await Producer.StartWithHandlerAsync(ProducerOptions.Default with
        {
            Endpoints = endpoint, Topics = [topic], DecisionCallsInFlight = 0,
        }, fail, CancellationToken.None);
        ITransaction tx = producer.BeginTransaction();
        await tx.SendAsync(new ProducerMessage(topic, "x"));
        await Assert.ThrowsAnyAsync<HalfMsg.ClientCore.ClientException>(() => tx.CommitAsync());
        await tx.CommitAsync(); // until the fix: InvalidOperationException
    }

    private sealed class FailFirstClientDecision() : DelegatingHandler(new SocketsHttpHandler { UseProxy = false, EnableMultipleHttp2Connections = true })
    {
        private int _failed;

        protected override Task<HttpResponseMessage> SendAsync(HttpRequestMessage request, CancellationToken cancellationToken)
        {
            if (request.RequestUri?.AbsolutePath == HalfMsg.Protocol.Grpc.GrpcMethods.EndTransaction && Interlocked.Exchange(ref _failed, 1) == 0)
            {
                throw new HttpRequestException("connection reset (test)");
            }

            return base.SendAsync(request, cancellationToken);
        }
    }
}
