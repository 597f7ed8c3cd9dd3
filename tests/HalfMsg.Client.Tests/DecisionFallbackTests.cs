using System.Collections.Concurrent;
using Apache.Rocketmq.V2;
using HalfMsg.Client.Tests.Infrastructure;
using HalfMsg.ProducerClient;
using HalfMsg.Protocol.Grpc;
using ProducerMessage = HalfMsg.ProducerClient.Message;
using Status = Apache.Rocketmq.V2.Status;

namespace HalfMsg.Client.Tests;

/// <summary>The producer against a broker that says it is a HalfMsgBroker but does not serve
/// <c>halfmsg.v1.TransactionService</c> (an older HalfMsgBroker): decisions fall back to EndTransaction each.</summary>
public sealed class DecisionFallbackTests
{
    private const string EndTransactionsPath = "/halfmsg.v1.TransactionService/EndTransactions";

    private static Task<TestGrpcServer> OlderHalfMsgBrokerAsync(ConcurrentQueue<EndTransactionRequest> decisions) =>
        FakeBrokers.RecordingDecisionsAsync(decisions, new Settings { UserAgent = BrokerAgent.Create("test") });

    [Fact]
    public async Task Against_a_broker_without_EndTransactions_every_decision_goes_as_an_EndTransaction_of_its_own_from_then_on()
    {
        var decisions = new ConcurrentQueue<EndTransactionRequest>();
        await using TestGrpcServer server = await OlderHalfMsgBrokerAsync(decisions);
        const string topic = "fallback";
        await using Producer producer = await Producer.StartAsync(ProducerOptions.Default with
        {
            Endpoints = server.Endpoint, Topics = [topic], DecisionCallsInFlight = 1,
        });
        Assert.True(producer.CoalescesDecisions); // the Settings reply named a HalfMsgBroker

        SendReceipt[] receipts = await Task.WhenAll(Enumerable.Range(0, 16).Select(async i =>
        {
            ITransaction tx = producer.BeginTransaction();
            SendReceipt receipt = await tx.SendAsync(new ProducerMessage(topic, "m" + i));
            await tx.CommitAsync(); // succeeds although the batch call is UNIMPLEMENTED
            return receipt;
        }));

        Assert.False(producer.CoalescesDecisions); // and stays off
        Assert.Equal(16, decisions.Count); // one EndTransaction per decision, none lost, none repeated
        Assert.Equal(receipts.Select(r => r.TransactionId).Order(), decisions.Select(d => d.TransactionId).Order());
        Assert.Equal(receipts.Select(r => r.MessageId).Order(), decisions.Select(d => d.MessageId).Order());
        Assert.All(decisions, d => Assert.Equal(Apache.Rocketmq.V2.TransactionResolution.Commit, d.Resolution));
        Assert.Single(server.Paths, p => p == EndTransactionsPath); // asked once, never again
        Assert.InRange(producer.DecisionCallsMade, 1, 16);
    }
}
