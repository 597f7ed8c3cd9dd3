using HalfMsg.Client.Tests.Infrastructure;
using HalfMsg.ProducerClient;
using ProducerMessage = HalfMsg.ProducerClient.Message;

namespace HalfMsg.Client.Tests;

/// <summary>
/// Our producer publishes as the official clients do: without a body digest. None of them sends one on publish, and
/// neither the Apache proxy nor HalfMsgBroker reads one; until 2026-12-06 ours sent a CRC32 in decimal, a form only
/// Node's client verifies, computed for nobody.
/// </summary>
public sealed class PublishDigestTests
{
    [Fact]
    public async Task A_published_message_and_a_half_carry_no_body_digest()
    {
        const string topic = "publish-digest";
        var decided = new System.Collections.Concurrent.ConcurrentQueue<Apache.Rocketmq.V2.EndTransactionRequest>();
        await using TestGrpcServer server = await FakeBrokers.RecordingDecisionsAsync(decided, new Apache.Rocketmq.V2.Settings());
        var sent = new System.Collections.Concurrent.ConcurrentQueue<Apache.Rocketmq.V2.Message>();
        var store = server.Service.OnSendMessage!;
        server.Service.OnSendMessage = (request, ctx) =>
        {
            foreach (var m in request.Messages) sent.Enqueue(m);
            return store(request, ctx);
        };
        await using Producer producer = await Producer.StartAsync(ProducerOptions.Default with { Endpoints = server.Endpoint, Topics = [topic] });

        await producer.SendAsync(new ProducerMessage(topic, "plain"));
        var tx = producer.BeginTransaction();
        await tx.SendAsync(new ProducerMessage(topic, "half"));
        await tx.CommitAsync();

        Assert.Equal(2, sent.Count);
        Assert.All(sent, m => Assert.Null(m.SystemProperties.BodyDigest));
    }
}
