using System.Globalization;
using System.Net;
using System.Text.Json;
using HalfMsg.Broker.Core;
using HalfMsg.Broker.Hosting;
using HalfMsg.Broker.Tests.Infrastructure;
using HalfMsg.Protocol.Remoting;
using HalfMsg.TestKit;
using static HalfMsg.Broker.Tests.Infrastructure.RemotingBroker;

namespace HalfMsg.Broker.Tests.Remoting;

/// <summary>
/// UPDATE_AND_CREATE_TOPIC (17) of a NEW topic counts toward --max-topics: the Remoting port needs no credentials unless
/// they are configured, so until the small hours of 2026-12-08 any client reaching it could create durable topics of up
/// to 1,024 queues each until the disk or memory ran out. At the limit the creation is SYSTEM_ERROR with a remark naming
/// the count, the limit and the flag; an existing topic may still be given more queues, the admin API (the operator's,
/// authenticated when credentials are configured) still creates topics past it, and a restart keeps every topic.
/// </summary>
public sealed class RemotingTopicLimitTests
{
    private sealed record Broker(BrokerHost Host, int RemotingPort, int HttpPort, string Dir, string[] Args);

    private static async Task<Broker> StartAsync(int maxTopics)
    {
        string dir = Path.Combine(Path.GetTempPath(), "halfmsg-topiclimit-" + Guid.NewGuid().ToString("N")[..12]);
        int remoting = FreePorts.Next(), http = FreePorts.Next();
        string[] args = ["--data-dir", dir, "--grpc-port", FreePorts.Next().ToString(CultureInfo.InvariantCulture),
            "--http-port", http.ToString(CultureInfo.InvariantCulture), "--remoting-port", remoting.ToString(CultureInfo.InvariantCulture),
            "--namesrv-port", "0", "--queues-per-topic", "2", "--max-topics", maxTopics.ToString(CultureInfo.InvariantCulture)];
        return new(await BrokerHost.StartAsync(args), remoting, http, dir, args);
    }

    private static async Task StopAsync(Broker b)
    {
        await b.Host.DisposeAsync();
        try { Directory.Delete(b.Dir, recursive: true); } catch (IOException) { }
    }

    private static Task<RemotingCommand> CreateAsync(RemotingTestClient c, string topic, int queues)
    {
        string n = queues.ToString(CultureInfo.InvariantCulture);
        return c.InvokeAsync(RequestCode.UpdateAndCreateTopic, new() { ["topic"] = topic, ["readQueueNums"] = n, ["writeQueueNums"] = n, ["perm"] = "6" });
    }

    private static byte[] Heartbeat(RemotingTestClient c, string group) => JsonSerializer.SerializeToUtf8Bytes(new
    {
        clientID = c.ClientId,
        producerDataSet = Array.Empty<object>(),
        consumerDataSet = new[]
        {
            new
            {
                groupName = group, consumeType = "CONSUME_PASSIVELY", messageModel = "CLUSTERING", consumeFromWhere = "CONSUME_FROM_LAST_OFFSET",
                subscriptionDataSet = new[] { new { topic = "T", subString = "*" } }, unitMode = false,
            },
        },
    });

    [Fact]
    public async Task New_topics_over_Remoting_stop_at_max_topics_with_SYSTEM_ERROR_while_updates_and_the_admin_API_go_on()
    {
        var b = await StartAsync(maxTopics: 3);
        try
        {
            await using var c = await RemotingTestClient.ConnectAsync(b.RemotingPort);
            // A consumer's retry topic, made on first use at its heartbeat, counts as every topic does.
            Assert.Equal(ResponseCode.Success, (await c.InvokeAsync(RequestCode.HeartBeat, body: Heartbeat(c, "GA"))).Code);
            Assert.Equal(1, b.Host.Engine.QueueCount(BrokerEngine.RetryPrefix + "GA"));
            int before = b.Host.Engine.ListTopics().Count;
            Assert.True(before < 3, $"the broker starts with {before} topics");

            var created = new List<string>();
            RemotingCommand? refused = null;
            string refusedTopic = "";
            for (int i = 0; i < 10 && refused is null; i++)
            {
                string topic = $"Limited{i}";
                var r = await CreateAsync(c, topic, 2);
                if (r.Code == ResponseCode.Success) created.Add(topic);
                else (refused, refusedTopic) = (r, topic);
            }
            Assert.True(refused is not null, $"created {created.Count} topics over Remoting past --max-topics 3: {string.Join(", ", created)}");
            Assert.Equal(3 - before, created.Count);
            Assert.Equal(ResponseCode.SystemError, refused.Code);
            Assert.Contains($"'{refusedTopic}'", refused.Remark);
            Assert.Contains("holds 3 topics", refused.Remark);
            Assert.Contains("limit is 3", refused.Remark);
            Assert.Contains("--max-topics", refused.Remark);
            Assert.Contains("POST /api/topics/", refused.Remark);
            Assert.Equal(3, b.Host.Engine.ListTopics().Count);
            Assert.Equal(0, b.Host.Engine.QueueCount(refusedTopic));

            // An existing topic is still found, and grown.
            Assert.Equal(ResponseCode.Success, (await CreateAsync(c, created[0], 2)).Code);
            var grown = await CreateAsync(c, created[0], 4);
            Assert.True(grown.Code == ResponseCode.Success, $"{grown.Code} {grown.Remark}");
            Assert.Equal(4, b.Host.Engine.QueueCount(created[0]));

            // The operator's admin API still creates one past the limit; Remoting stays refused, naming the new count.
            using (var http = new HttpClient { BaseAddress = new Uri($"http://127.0.0.1:{b.HttpPort}") })
            {
                var admin = await http.PostAsync($"/api/topics/{refusedTopic}", null);
                Assert.Equal(HttpStatusCode.OK, admin.StatusCode);
            }
            Assert.Equal(2, b.Host.Engine.QueueCount(refusedTopic));
            var again = await CreateAsync(c, "LimitedAfterAdmin", 2);
            Assert.Equal(ResponseCode.SystemError, again.Code);
            Assert.Contains("holds 4 topics", again.Remark);

            // The broker keeps serving: a send to a topic made over Remoting, and to the one the operator made, are read back.
            await SendAsync(c, created[0], "to a Remoting topic", queueId: 3);
            await SendAsync(c, refusedTopic, "to the operator's topic", queueId: 0);
            Assert.Equal(["to a Remoting topic"], (await PullAllAsync(c, "PG", created[0], queues: 4)).Select(BodyOf));
            Assert.Equal(["to the operator's topic"], (await PullAllAsync(c, "PG", refusedTopic, queues: 2)).Select(BodyOf));
            var names = b.Host.Engine.ListTopics().Select(t => t.Name).ToList();

            // Replay is not a creation: all four topics (one past the limit) come back after a restart, with their queues.
            await b.Host.DisposeAsync();
            b = b with { Host = await BrokerHost.StartAsync(b.Args) };
            Assert.Equal(names, b.Host.Engine.ListTopics().Select(t => t.Name));
            Assert.Equal(4, b.Host.Engine.QueueCount(created[0]));
        }
        finally
        {
            await StopAsync(b);
        }
    }

    [Fact]
    public async Task Concurrent_creations_over_Remoting_never_pass_max_topics_together()
    {
        var b = await StartAsync(maxTopics: 5);
        try
        {
            int before = b.Host.Engine.ListTopics().Count;
            var clients = new List<RemotingTestClient>();
            for (int i = 0; i < 4; i++) clients.Add(await RemotingTestClient.ConnectAsync(b.RemotingPort));
            try
            {
                var answers = await Task.WhenAll(Enumerable.Range(0, 24).Select(i => CreateAsync(clients[i % clients.Count], $"Race{i}", 1)));
                Assert.Equal(5 - before, answers.Count(a => a.Code == ResponseCode.Success));
                Assert.All(answers.Where(a => a.Code != ResponseCode.Success), a => Assert.Equal(ResponseCode.SystemError, a.Code));
                Assert.Equal(5, b.Host.Engine.ListTopics().Count);
                Assert.Equal(ResponseCode.Success, (await clients[0].InvokeAsync(RequestCode.GetBrokerClusterInfo)).Code);
            }
            finally
            {
                foreach (var c in clients) await c.DisposeAsync();
            }
        }
        finally
        {
            await StopAsync(b);
        }
    }
}
