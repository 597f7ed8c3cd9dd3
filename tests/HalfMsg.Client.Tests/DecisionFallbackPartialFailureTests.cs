using System.Collections.Concurrent;
using Apache.Rocketmq.V2;
using HalfMsg.Client.Tests.Infrastructure;
using HalfMsg.ClientCore;
using HalfMsg.ProducerClient;
using HalfMsg.Protocol.Grpc;
using ProducerMessage = HalfMsg.ProducerClient.Message;
using Status = Apache.Rocketmq.V2.Status;

namespace HalfMsg.Client.Tests;

/// <summary>The EndTransaction fallback: each decision gets its own outcome (found by review 2026-12-05).</summary>
public sealed class DecisionFallbackPartialFailureTests
{
    private static readonly TimeSpan Within = TimeSpan.FromSeconds(30);

    /// <summary>
    /// Against a HalfMsgBroker without EndTransactions, a coalesced batch falls back to one EndTransaction per
    /// decision. Until 2026-12-05 they were awaited with Task.WhenAll: one decision's transport failure became every
    /// decision's answer, although the others were carried out.
    /// </summary>
    [Fact]
    public async Task In_the_EndTransaction_fallback_one_failed_decision_does_not_fail_the_others_of_its_batch()
    {
        const string topic = "fallback-partial";
        var decided = new ConcurrentQueue<EndTransactionRequest>();
        await using TestGrpcServer server = await FakeBrokers.RecordingDecisionsAsync(decided, new Settings { UserAgent = BrokerAgent.Create("test") });
        string? bad = null;
        server.Service.OnEndTransaction = (request, _) =>
        {
            if (request.MessageId == Volatile.Read(ref bad))
            {
                throw new Grpc.Core.RpcException(new Grpc.Core.Status(Grpc.Core.StatusCode.Unavailable, "this one was lost"));
            }

            decided.Enqueue(request);
            return Task.FromResult(new EndTransactionResponse { Status = new Status { Code = Code.Ok } });
        };

        using var hold = new HoldEndTransactions();
        await using Producer producer = await Producer.StartWithHandlerAsync(ProducerOptions.Default with
        {
            Endpoints = server.Endpoint, Topics = [topic], DecisionCallsInFlight = 1,
        }, hold, CancellationToken.None);
        Assert.True(producer.CoalescesDecisions);

        var txs = new List<(ITransaction Tx, SendReceipt Receipt)>();
        for (int i = 0; i < 4; i++)
        {
            ITransaction tx = producer.BeginTransaction();
            txs.Add((tx, await tx.SendAsync(new ProducerMessage(topic, "m" + i))));
        }

        Volatile.Write(ref bad, txs[1].Receipt.MessageId);
        Task first = txs[0].Tx.CommitAsync();            // the one call in flight: EndTransactions, held
        await hold.Held.Task.WaitAsync(Within);
        Task[] waiting = [.. txs.Skip(1).Select(t => t.Tx.CommitAsync())]; // wait, and go together next
        hold.Release();                                   // UNIMPLEMENTED: fall back

        await first.WaitAsync(Within);
        await Assert.ThrowsAsync<TransportException>(() => waiting[0].WaitAsync(Within)); // its own failure
        // The other two were carried out by the broker: their callers must hear so.
        await waiting[1].WaitAsync(Within);
        await waiting[2].WaitAsync(Within);
        Assert.Contains(decided, d => d.MessageId == txs[2].Receipt.MessageId);
        Assert.Contains(decided, d => d.MessageId == txs[3].Receipt.MessageId);
    }

    /// <summary>Holds the first EndTransactions call until <see cref="Release"/>.</summary>
    private sealed class HoldEndTransactions() : DelegatingHandler(new SocketsHttpHandler { UseProxy = false, EnableMultipleHttp2Connections = true })
    {
        private readonly TaskCompletionSource _release = new(TaskCreationOptions.RunContinuationsAsynchronously);

        public TaskCompletionSource Held { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);

        public void Release() => _release.TrySetResult();

        protected override async Task<HttpResponseMessage> SendAsync(HttpRequestMessage request, CancellationToken cancellationToken)
        {
            if (request.RequestUri?.AbsolutePath == "/halfmsg.v1.TransactionService/EndTransactions" && Held.TrySetResult())
            {
                await _release.Task.WaitAsync(cancellationToken);
            }

            return await base.SendAsync(request, cancellationToken);
        }
    }
}
