using System.Globalization;
using System.Text.Json;
using HalfMsg.Broker.Tests.Infrastructure;
using HalfMsg.Protocol.Remoting;
using HalfMsg.TestKit;
using static HalfMsg.Broker.Tests.Infrastructure.RemotingBroker;

namespace HalfMsg.Broker.Tests.Remoting;

/// <summary>
/// kill -9 of the real broker process after an operator gave a topic more queues (UPDATE_AND_CREATE_TOPIC, as
/// <c>mqadmin updateTopic -r 4 -w 4</c> sends it): the growth was durable before its SUCCESS, so after the restart the
/// topic has its four queues and every acknowledged send, on old and new queues, is there, and a pull group's offset on
/// a new queue. Checked twice: on a whole checkpoint from before the growth with a delta written after it, then on a
/// whole checkpoint written after it (the first after a start is whole); each time with sends after the checkpoint
/// that only the log holds (replayed).
/// </summary>
[Trait("Category", "Crash")]
public sealed class RemotingTopicGrowthCrashTests : IAsyncLifetime
{
    private BrokerProcess _broker = null!;

    // A checkpoint every 100 records: a few hundred sends make a whole one and deltas.
    public async Task InitializeAsync() => _broker = await BrokerProcess.StartAsync("--checkpoint-every", "100");

    public async Task DisposeAsync() => await _broker.DisposeAsync();

    private async Task<(long Whole, long Delta)> CheckpointsAsync()
    {
        using var http = new HttpClient();
        using var stats = JsonDocument.Parse(await http.GetStringAsync($"{_broker.AdminUrl}/api/stats"));
        return (stats.RootElement.GetProperty("checkpointsWhole").GetInt64(), stats.RootElement.GetProperty("checkpointsDelta").GetInt64());
    }

    /// <summary>Sends (round-robin over the queues named) until <paramref name="done"/> holds for the checkpoint counts.</summary>
    private async Task SendUntilAsync(RemotingTestClient c, string topic, int[] queues, List<string> acked, Func<(long Whole, long Delta), bool> done, string what)
    {
        var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(120);
        while (!done(await CheckpointsAsync()))
        {
            if (DateTime.UtcNow > deadline) Assert.Fail($"timed out waiting for {what}; checkpoints {await CheckpointsAsync()}");
            await SendSomeAsync(c, topic, queues, acked, 20);
        }
    }

    private static async Task SendSomeAsync(RemotingTestClient c, string topic, int[] queues, List<string> acked, int n)
    {
        for (int i = 0; i < n; i++)
        {
            int q = queues[acked.Count % queues.Length];
            string body = $"q{q}-{acked.Count.ToString(CultureInfo.InvariantCulture)}";
            var sent = await SendAsync(c, topic, body, queueId: q);
            Assert.Equal(q.ToString(CultureInfo.InvariantCulture), sent.Get("queueId"));
            acked.Add(body);
        }
    }

    private static Task<RemotingCommand> UpdateTopicAsync(RemotingTestClient c, string topic, int queues)
        => c.InvokeAsync(RequestCode.UpdateAndCreateTopic, new()
        {
            ["topic"] = topic, ["readQueueNums"] = queues.ToString(CultureInfo.InvariantCulture),
            ["writeQueueNums"] = queues.ToString(CultureInfo.InvariantCulture), ["perm"] = "6",
        });

    private async Task AssertAfterRestartAsync(string topic, List<string> acked, string when)
    {
        await using var c = await RemotingTestClient.ConnectAsync(_broker.RemotingPort);
        var route = await c.InvokeAsync(RemotingCommand.Request(RequestCode.GetRouteInfoByTopic).Set("topic", topic));
        Assert.Equal(ResponseCode.Success, route.Code);
        using (var doc = JsonDocument.Parse(route.Body))
            Assert.Equal(4, doc.RootElement.GetProperty("queueDatas")[0].GetProperty("writeQueueNums").GetInt32());
        var bodies = (await PullAllAsync(c, "Verify", topic, queues: 4)).Select(BodyOf).ToList();
        var missing = acked.Except(bodies).ToList();
        Assert.True(missing.Count == 0, $"{when}: {missing.Count} of {acked.Count} acknowledged sends are gone: {string.Join(", ", missing.Take(10))}");
        Assert.Equal(bodies.Count, bodies.Distinct().Count());
        Assert.Contains(bodies, b => b.StartsWith("q3-", StringComparison.Ordinal));
        var offset = await c.InvokeAsync(RemotingCommand.Request(RequestCode.QueryConsumerOffset).Set("consumerGroup", "CG").Set("topic", topic).Set("queueId", 3L));
        Assert.Equal("2", offset.Get("offset"));
    }

    [Fact]
    public async Task After_kill_9_a_grown_topic_has_its_queues_and_every_acknowledged_send_via_a_delta_a_whole_checkpoint_and_the_log()
    {
        string topic = Unique("Grown");
        var acked = new List<string>();
        await using (var c = await RemotingTestClient.ConnectAsync(_broker.RemotingPort))
        {
            Assert.Equal(ResponseCode.Success, (await UpdateTopicAsync(c, topic, 2)).Code);
            await SendUntilAsync(c, topic, [0, 1], acked, n => n.Whole >= 1, "a whole checkpoint before the growth");

            var grown = await UpdateTopicAsync(c, topic, 4);
            Assert.True(grown.Code == ResponseCode.Success, $"growth refused: {grown.Code} {grown.Remark}"); // before: refused, "has 2 queues"
            long deltas = (await CheckpointsAsync()).Delta;
            await SendUntilAsync(c, topic, [2, 3, 0, 1], acked, n => n.Delta > deltas, "a delta checkpoint after the growth");
            Assert.Equal(ResponseCode.Success, (await c.InvokeAsync(RemotingCommand.Request(RequestCode.UpdateConsumerOffset)
                .Set("consumerGroup", "CG").Set("topic", topic).Set("queueId", 3L).Set("commitOffset", 2L))).Code);
            await SendSomeAsync(c, topic, [3, 2], acked, 4); // only the log holds these
            _broker.Kill();
        }
        await _broker.RestartAsync();
        await AssertAfterRestartAsync(topic, acked, "after whole + delta + replay");

        // The first checkpoint after a start is whole: it holds the grown topic.
        await using (var c = await RemotingTestClient.ConnectAsync(_broker.RemotingPort))
        {
            await SendUntilAsync(c, topic, [3, 2, 1, 0], acked, n => n.Whole >= 1, "a whole checkpoint after the restart");
            await SendSomeAsync(c, topic, [2, 3], acked, 4);
            _broker.Kill();
        }
        await _broker.RestartAsync();
        await AssertAfterRestartAsync(topic, acked, "after a whole checkpoint with the grown topic + replay");
    }
}
