using HalfMsg.Client.Tests.Infrastructure;
using HalfMsg.ConsumerClient;
using HalfMsg.ProducerClient;
using ProducerMessage = HalfMsg.ProducerClient.Message;

namespace HalfMsg.Client.Tests;

/// <summary>
/// Found by review 2026-12-05: a broker started with <c>--max-message-size</c> above 16 MiB (documented, up to
/// 64 MiB) tells the producer so in its Settings (Publishing.MaxBodySize), and the producer sends such a body; until then
/// every channel of the .NET clients refused any response message above <c>RpcChannel.MaxReceiveMessageSize</c>, 16 MiB
/// (now 64 MiB + 1 MiB).
/// </summary>
[Trait("Category", "E2E")]
public sealed class LargeMessageTests : IAsyncLifetime
{
    private const int Body = 17 * 1024 * 1024;
    private InProcessBroker _broker = null!;

    private string Endpoint => _broker.Endpoint;

    public async Task InitializeAsync() => _broker = await InProcessBroker.StartAsync("cclarge", "--max-message-size", "20MiB", "--transaction-timeout", "1s", "--transaction-check-interval", "1s");

    public async Task DisposeAsync() => await _broker.DisposeAsync();

    [Fact]
    public async Task A_message_the_producer_may_send_can_be_received()
    {
        string topic = E2E.Unique("cc-large");
        await using Producer producer = await E2E.ProducerAsync(Endpoint, topic);
        await using SimpleConsumer consumer = await E2E.ConsumerAsync(Endpoint, topic, E2E.Unique("g"));
        SendReceipt sent = await producer.SendAsync(new ProducerMessage(topic, new byte[Body])); // accepted: 17 MiB < 20 MiB

        IReadOnlyList<ReceivedMessage> got = [];
        var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(20);
        Exception? last = null;
        while (got.Count == 0 && DateTime.UtcNow < deadline)
        {
            try { got = await consumer.ReceiveAsync(1, TimeSpan.FromSeconds(30)); }
            catch (HalfMsg.ClientCore.ClientException ex) { last = ex; await Task.Delay(500); }
        }

        Assert.True(got.Count == 1, $"never received; last error: {last?.Message}");
        Assert.Equal(sent.MessageId, got[0].MessageId);
        Assert.Equal(Body, got[0].Body.Length);
    }

    [Fact]
    public async Task A_half_the_producer_may_send_gets_its_check_back()
    {
        string topic = E2E.Unique("cc-large-tx");
        int checks = 0;
        await using Producer producer = await E2E.ProducerAsync(Endpoint, topic, new FuncChecker(_ =>
        {
            Interlocked.Increment(ref checks);
            return ProducerClient.TransactionResolution.Commit;
        }));
        await producer.BeginTransaction().SendAsync(new ProducerMessage(topic, new byte[Body])); // left undecided

        await E2E.EventuallyAsync(() => Volatile.Read(ref checks) > 0, TimeSpan.FromSeconds(20), "a check-back of the 17 MiB half");
    }
}

/// <summary>The producer refuses a body no client of ours could receive, whatever limit a broker advertises.</summary>
public sealed class ClientBodyLimitTests
{
    [Fact]
    public async Task A_body_over_what_the_client_can_receive_is_refused_before_it_is_sent()
    {
        const string topic = "client-body-limit";
        var decided = new System.Collections.Concurrent.ConcurrentQueue<Apache.Rocketmq.V2.EndTransactionRequest>();
        await using TestGrpcServer server = await FakeBrokers.RecordingDecisionsAsync(decided, new Apache.Rocketmq.V2.Settings
        {
            Publishing = new Apache.Rocketmq.V2.Publishing { MaxBodySize = 128 * 1024 * 1024 }, // a broker that would take it
        });
        int sends = 0;
        var store = server.Service.OnSendMessage!;
        server.Service.OnSendMessage = (request, ctx) => { Interlocked.Increment(ref sends); return store(request, ctx); };
        await using Producer producer = await Producer.StartAsync(ProducerOptions.Default with { Endpoints = server.Endpoint, Topics = [topic] });

        var tooLarge = await Assert.ThrowsAsync<HalfMsg.ClientCore.PayloadTooLargeException>(() =>
            producer.SendAsync(new ProducerMessage(topic, new byte[64 * 1024 * 1024 + 1])));
        Assert.Contains("client's limit", tooLarge.Message);
        Assert.Equal(0, Volatile.Read(ref sends));

        await producer.SendAsync(new ProducerMessage(topic, "fits"));
        Assert.Equal(1, Volatile.Read(ref sends));
    }
}
