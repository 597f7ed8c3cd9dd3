using System.Globalization;
using System.Text.Json;
using HalfMsg.Broker.Core;
using HalfMsg.Broker.Hosting;
using HalfMsg.Broker.Tests.Infrastructure;
using HalfMsg.Protocol.Remoting;
using HalfMsg.TestKit;
using static HalfMsg.Broker.Tests.Infrastructure.RemotingBroker;

namespace HalfMsg.Broker.Tests.Remoting;

/// <summary>
/// The %RETRY% topics a Remoting consumer's heartbeat and send-backs make: subject to --max-topics, one queue as Java's
/// (retryQueueNums 1), and never named beyond the 127-character topic limit.
/// </summary>
public sealed class RemotingRetryTopicTests
{
    private static async Task<(BrokerHost Host, int Port, string Dir)> StartAsync(params string[] extra)
    {
        string dir = Path.Combine(Path.GetTempPath(), "halfmsg-retrytopic-" + Guid.NewGuid().ToString("N")[..12]);
        int port = FreePorts.Next();
        var host = await BrokerHost.StartAsync(["--data-dir", dir, "--grpc-port", FreePorts.Next().ToString(CultureInfo.InvariantCulture),
            "--http-port", FreePorts.Next().ToString(CultureInfo.InvariantCulture), "--remoting-port", port.ToString(CultureInfo.InvariantCulture),
            "--namesrv-port", "0", "--queues-per-topic", "4", .. extra]);
        return (host, port, dir);
    }

    private static async Task StopAsync(BrokerHost host, string dir)
    {
        await host.DisposeAsync();
        try { Directory.Delete(dir, recursive: true); } catch (IOException) { }
    }

    private static byte[] Heartbeat(RemotingTestClient c, IEnumerable<string> groups) => JsonSerializer.SerializeToUtf8Bytes(new
    {
        clientID = c.ClientId,
        producerDataSet = Array.Empty<object>(),
        consumerDataSet = groups.Select(g => new
        {
            groupName = g, consumeType = "CONSUME_PASSIVELY", messageModel = "CLUSTERING", consumeFromWhere = "CONSUME_FROM_LAST_OFFSET",
            subscriptionDataSet = new[] { new { topic = "T", subString = "*" } }, unitMode = false,
        }).ToArray(),
    });

    [Fact]
    public async Task Heartbeat_naming_many_groups_creates_no_more_topics_than_max_topics_and_is_still_answered_SUCCESS()
    {
        var (host, port, dir) = await StartAsync("--max-topics", "3");
        try
        {
            await using var c = await RemotingTestClient.ConnectAsync(port);
            var r = await c.InvokeAsync(RequestCode.HeartBeat, body: Heartbeat(c, Enumerable.Range(0, 20).Select(i => $"G{i}")));
            Assert.Equal(ResponseCode.Success, r.Code);
            var topics = host.Engine.ListTopics().Where(t => !t.System).Select(t => t.Name).ToList();
            Assert.True(topics.Count <= 3, $"{topics.Count} topics: {string.Join(", ", topics)}");
        }
        finally
        {
            await StopAsync(host, dir);
        }
    }

    [Fact]
    public async Task Retry_topics_have_one_queue_also_with_auto_creation_off_and_keep_it_after_a_restart()
    {
        var (host, port, dir) = await StartAsync("--auto-create-topics", "false");
        try
        {
            await using (var c = await RemotingTestClient.ConnectAsync(port))
            {
                Assert.Equal(ResponseCode.Success, (await c.InvokeAsync(RequestCode.HeartBeat, body: Heartbeat(c, ["GA"]))).Code);
                Assert.Equal(1, host.Engine.QueueCount(BrokerEngine.RetryPrefix + "GA"));

                // A send-back stores into it; the retry is due after its delay (level 1: 1 s) and is read from queue 0.
                Assert.True((await host.Engine.CreateTopicAsync("T")).Error.IsOk);
                var sent = await SendAsync(c, "T", "retry me");
                Assert.True(OffsetMessageId.TryDecode(sent.Get("msgId"), out _, out long physical));
                var back = await c.InvokeAsync(RequestCode.ConsumerSendMsgBack, new()
                {
                    ["group"] = "GA", ["offset"] = physical.ToString(CultureInfo.InvariantCulture), ["delayLevel"] = "1", ["originTopic"] = "T",
                    ["originMsgId"] = sent.Get("msgId")!, ["maxReconsumeTimes"] = "16",
                });
                Assert.True(back.Code == ResponseCode.Success, $"{back.Code} {back.Remark}");
                var pulled = await EventuallyAsync(() => PullAsync(c, "GA", BrokerEngine.RetryPrefix + "GA", 0, 0), p => p.Code == ResponseCode.Success,
                    TimeSpan.FromSeconds(30), "the retry in queue 0");
                Assert.Equal("retry me", BodyOf(Assert.Single(StoredMessageCodec.DecodeAll(pulled.Body.Span))));
            }
            await host.DisposeAsync();
            host = await BrokerHost.StartAsync(["--data-dir", dir, "--grpc-port", FreePorts.Next().ToString(CultureInfo.InvariantCulture),
                "--http-port", FreePorts.Next().ToString(CultureInfo.InvariantCulture), "--remoting-port", "0", "--namesrv-port", "0",
                "--queues-per-topic", "4", "--auto-create-topics", "false"]);
            Assert.Equal(1, host.Engine.QueueCount(BrokerEngine.RetryPrefix + "GA"));
            Assert.True(host.Engine.TryGetQueueOffsets(BrokerEngine.RetryPrefix + "GA", 0, out _, out long max));
            Assert.Equal(1, max);
        }
        finally
        {
            await StopAsync(host, dir);
        }
    }

    [Fact]
    public async Task Send_back_for_a_group_whose_retry_topic_name_would_exceed_127_characters_is_refused()
    {
        var (host, port, dir) = await StartAsync();
        try
        {
            await using var c = await RemotingTestClient.ConnectAsync(port);
            var sent = await SendAsync(c, "T", "x");
            Assert.True(OffsetMessageId.TryDecode(sent.Get("msgId"), out _, out long physical));
            string group = new('g', 121);
            foreach (int level in new[] { 1, -1 }) // retry, and straight to the dead-letter topic
            {
                var result = await host.Engine.SendBackAsync(group, physical, level, 16, "T");
                Assert.Equal(BrokerStatus.IllegalConsumerGroup, result.Error.Status);
                Assert.Contains("120", result.Error.Message);
            }
            Assert.DoesNotContain(host.Engine.ListTopics(), t => t.Name.Length > 127);
            // 120 characters is the longest group that has a retry topic.
            Assert.True((await host.Engine.SendBackAsync(new string('g', 120), physical, 1, 16, "T")).Error.IsOk);
        }
        finally
        {
            await StopAsync(host, dir);
        }
    }
}
