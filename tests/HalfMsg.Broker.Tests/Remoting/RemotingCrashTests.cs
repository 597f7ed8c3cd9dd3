using HalfMsg.TestKit;
using System.Collections.Concurrent;
using System.Globalization;
using HalfMsg.Broker.Tests.Infrastructure;
using HalfMsg.Protocol.Remoting;
using static HalfMsg.Broker.Tests.Infrastructure.RemotingBroker;

namespace HalfMsg.Broker.Tests.Remoting;

/// <summary>kill -9 of the real broker process under Remoting load.</summary>
[Trait("Category", "Crash")]
public sealed class RemotingCrashTests : IAsyncLifetime
{
    private BrokerProcess _broker = null!;

    public async Task InitializeAsync() => _broker = await BrokerProcess.StartAsync("--transaction-check-interval", "1s");

    public async Task DisposeAsync() => await _broker.DisposeAsync();

    [Fact]
    public async Task After_kill_9_every_acknowledged_send_and_decision_is_there_committed_offsets_are_kept_and_pending_halves_are_checked_again()
    {
        string topic = Unique("Crash");
        string group = Unique("PG");
        var acked = new ConcurrentBag<string>();
        await using (var c = await RemotingTestClient.ConnectAsync(_broker.RemotingPort))
        {
            // Concurrent sends in flight while the broker dies; only acknowledged ones must survive.
            using var stop = new CancellationTokenSource();
            var senders = Enumerable.Range(0, 4).Select(w => Task.Run(async () =>
            {
                for (int i = 0; !stop.IsCancellationRequested; i++)
                {
                    string body = $"w{w}-{i}";
                    try
                    {
                        var r = await c.InvokeAsync(RequestCode.SendMessageV2, SendHeader("P", topic, Props()), System.Text.Encoding.UTF8.GetBytes(body), TimeSpan.FromSeconds(5));
                        if (r.Code == ResponseCode.Success) acked.Add(body);
                    }
                    catch (Exception)
                    {
                        return;
                    }
                }
            })).ToArray();

            // A committed transaction, a pending one, and a committed consumer offset, all acknowledged before the kill.
            var p = new RemotingTransactionProducer(c, group);
            var (committedId, committedSent) = await p.SendHalfAsync(topic, "tx-committed");
            var commit = await p.EndAsync(committedId, committedSent.Get("queueOffset")!, committedSent.Get("msgId")!, MessageSysFlag.TransactionCommitType, false, oneway: false);
            Assert.Equal(ResponseCode.Success, commit!.Code);
            var (pendingId, _) = await p.SendHalfAsync(topic, "tx-pending");
            var upd = await c.InvokeAsync(RemotingCommand.Request(RequestCode.UpdateConsumerOffset)
                .Set("consumerGroup", "CG").Set("topic", topic).Set("queueId", 0L).Set("commitOffset", 3L));
            Assert.Equal(ResponseCode.Success, upd.Code);

            await EventuallyAsync(() => Task.FromResult(acked.Count), n => n >= 200, TimeSpan.FromSeconds(60), "200 acknowledged sends");
            // Last before the kill, each twice at once, as a client's retry races its first try: a topic created as
            // mqadmin updateTopic does, and an offset commit. Both answers count, also the one that found the work done.
            string created = Unique("Made");
            var creates = Enumerable.Range(0, 2).Select(_ => c.InvokeAsync(RequestCode.UpdateAndCreateTopic,
                new() { ["topic"] = created, ["readQueueNums"] = "8", ["writeQueueNums"] = "8", ["perm"] = "6" })).ToArray();
            var commits = Enumerable.Range(0, 2).Select(_ => c.InvokeAsync(RemotingCommand.Request(RequestCode.UpdateConsumerOffset)
                .Set("consumerGroup", "CG").Set("topic", topic).Set("queueId", 1L).Set("commitOffset", 5L))).ToArray();
            Assert.All(await Task.WhenAll(creates), r => Assert.Equal(ResponseCode.Success, r.Code));
            Assert.All(await Task.WhenAll(commits), r => Assert.Equal(ResponseCode.Success, r.Code));
            _broker.Kill();
            stop.Cancel();
            await Task.WhenAll(senders);

            await _broker.RestartAsync();

            await using var after = await RemotingTestClient.ConnectAsync(_broker.RemotingPort);
            var bodies = (await PullAllAsync(after, "Verify", topic, queues: 8)).Select(BodyOf).ToHashSet();
            var missing = acked.Where(b => !bodies.Contains(b)).ToList();
            Assert.True(missing.Count == 0, $"{missing.Count} of {acked.Count} acknowledged sends are gone after kill -9: {string.Join(", ", missing.Take(10))}");
            Assert.Contains("tx-committed", bodies);
            Assert.DoesNotContain("tx-pending", bodies);

            var q = await after.InvokeAsync(RemotingCommand.Request(RequestCode.QueryConsumerOffset).Set("consumerGroup", "CG").Set("topic", topic).Set("queueId", 0L));
            Assert.Equal("3", q.Get("offset"));
            var q1 = await after.InvokeAsync(RemotingCommand.Request(RequestCode.QueryConsumerOffset).Set("consumerGroup", "CG").Set("topic", topic).Set("queueId", 1L));
            Assert.Equal("5", q1.Get("offset"));
            using (var list = System.Text.Json.JsonDocument.Parse((await after.InvokeAsync(RequestCode.GetAllTopicListFromNameServer)).Body))
                Assert.Contains(created, list.RootElement.GetProperty("topicList").EnumerateArray().Select(e => e.GetString()));

            // The pending half is checked again after the restart, and the answer decides it.
            var p2 = new RemotingTransactionProducer(after, group);
            await p2.HeartbeatAsync();
            var (_, message) = await p2.AnswerCheckAsync(MessageSysFlag.TransactionCommitType, TimeSpan.FromSeconds(30));
            Assert.Equal(pendingId, message.Properties[MessageConst.UniqueKey]);
            await EventuallyAsync(async () => (await PullAllAsync(after, "Verify2", topic, queues: 8)).Select(BodyOf).ToList(),
                l => l.Contains("tx-pending"), TimeSpan.FromSeconds(15), "the pending half committed after restart");
        }
    }
}
