using System.Collections.Concurrent;
using Apache.Rocketmq.V2;
using HalfMsg.Client.Tests.Infrastructure;
using HalfMsg.ClientCore;
using HalfMsg.ProducerClient;
using HalfMsg.Protocol.Grpc;
using ProducerMessage = HalfMsg.ProducerClient.Message;
using Status = Apache.Rocketmq.V2.Status;

namespace HalfMsg.Client.Tests;

/// <summary>A caller's cancellation and its coalesced call's outcome (found by review 2026-12-05).</summary>
public sealed class CoalescedCallOutcomeTests
{
    private static readonly TimeSpan Within = TimeSpan.FromSeconds(30);

    /// <summary>
    /// The coalescer's contract: "cancelled" means "not sent" (a cancelled caller may reuse its buffer; a caller whose
    /// item a call took gets that call's answer). An item that found a free slot goes in a call of its own; until
    /// 2026-12-05 that call was made with the caller's token: like gRPC, cancelling it aborted the call on the wire,
    /// after the server may have stored the item, and the caller was told "cancelled".
    /// </summary>
    [Fact]
    public async Task A_caller_cancelled_while_its_own_call_is_on_the_wire_gets_that_calls_answer_not_a_cancellation()
    {
        var answer = new TaskCompletionSource<string[]>(TaskCreationOptions.RunContinuationsAsynchronously);
        var onTheWire = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var coalescer = new CallCoalescer<string, string, string[], string>(maxCallsInFlight: 1, maxItems: 32, maxBytes: 1 << 20,
            size: _ => 1,
            call: (_, items, ct) =>
            {
                onTheWire.TrySetResult();
                // As a gRPC unary call does: the call's token aborts it, whatever the server did with the request.
                ct.Register(() => answer.TrySetCanceled(ct));
                return answer.Task;
            },
            pick: (response, index, _) => response[index]);

        using var cancel = new CancellationTokenSource();
        Task<string> p0 = coalescer.SendAsync("lane", "p0", cancel.Token);
        await onTheWire.Task.WaitAsync(Within);
        cancel.Cancel();              // the item is already in the server's hands
        answer.TrySetResult(["p0"]);  // and the server stored it

        Assert.Equal("p0", await p0.WaitAsync(Within)); // before 2026-12-05: TaskCanceledException
    }

    /// <summary>"Cancelled" means "not sent" for a decision too: the transaction is still open, and the caller may
    /// commit (or roll back) it after all. Coalesced (a HalfMsgBroker) or not.</summary>
    [Theory]
    [InlineData(true)]
    [InlineData(false)]
    public async Task A_decision_cancelled_before_it_was_sent_leaves_the_transaction_open(bool halfMsgBroker)
    {
        const string topic = "cancelled-decision";
        var decided = new ConcurrentQueue<EndTransactionRequest>();
        await using TestGrpcServer server = await FakeBrokers.RecordingDecisionsAsync(decided,
            halfMsgBroker ? new Settings { UserAgent = BrokerAgent.Create("test") } : new Settings());
        await using Producer producer = await Producer.StartAsync(ProducerOptions.Default with { Endpoints = server.Endpoint, Topics = [topic] });
        Assert.Equal(halfMsgBroker, producer.CoalescesDecisions);

        ITransaction tx = producer.BeginTransaction();
        await tx.SendAsync(new ProducerMessage(topic, "m"));
        await Assert.ThrowsAnyAsync<OperationCanceledException>(() => tx.CommitAsync(new CancellationToken(canceled: true)));
        Assert.Empty(decided);

        await tx.CommitAsync().WaitAsync(Within);
        Assert.Single(decided);
    }
}
