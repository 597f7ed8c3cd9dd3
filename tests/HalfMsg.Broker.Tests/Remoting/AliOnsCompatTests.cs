using HalfMsg.TestKit;
using System.Text.Json;
using HalfMsg.Broker.Tests.Infrastructure;
using HalfMsg.Protocol.Remoting;
using static HalfMsg.Broker.Tests.Infrastructure.RemotingBroker;

namespace HalfMsg.Broker.Tests.Remoting;

public sealed class RemotingCompatFixture : IAsyncLifetime
{
    private BrokerProcess? _broker;
    public BrokerProcess Broker => _broker ?? throw new InvalidOperationException("broker not started");
    public async Task InitializeAsync() => _broker = await BrokerProcess.StartAsync();
    public async Task DisposeAsync()
    {
        if (_broker is not null) await _broker.DisposeAsync();
    }
}

/// <summary>
/// The unmodified <c>ali-ons</c> 3.12.0 npm client (RocketMQ 4 Remoting, routed through the embedded name server)
/// against the real broker process, plus the cross-protocol flows with the official gRPC Node client.
/// Scripts: tests/compat/node/ons.js (ali-ons), simple.js / produce.js / tx.js (gRPC).
/// </summary>
[Trait("Category", "Compat")]
public sealed class AliOnsCompatTests(RemotingCompatFixture fixture) : IClassFixture<RemotingCompatFixture>
{
    private static readonly TimeSpan ScriptTimeout = TimeSpan.FromSeconds(60);
    private BrokerProcess Broker => fixture.Broker;

    private async Task<NodeScript.Result> Run(string script, params string[] args)
    {
        NodeScript.Result r = await NodeScript.RunAsync(script, ScriptTimeout, args);
        string tail = Broker.Output.Length <= 3000 ? Broker.Output : Broker.Output[^3000..];
        Assert.True(r.ExitCode == 0 && r.Final.ValueKind != JsonValueKind.Undefined, $"{script} {string.Join(' ', args)} failed: {r.Describe()}\n--- broker ---\n{tail}");
        return r;
    }

    private Task<NodeScript.Result> OnsProduce(string topic, int count, string prefix, string tag)
        => Run("ons.js", "produce", Broker.NameServer, topic, JsonSerializer.Serialize(new { count, prefix, tag }));

    private Task<NodeScript.Result> OnsConsume(string topic, string group, int count, string tag = "*", string[]? failOnce = null, int timeoutMs = 40_000)
        => Run("ons.js", "consume", Broker.NameServer, topic, group, JsonSerializer.Serialize(new { count, timeoutMs, tag, failOnce = failOnce ?? [] }));

    private static List<JsonElement> Got(NodeScript.Result r) => [.. r.Final.GetProperty("got").EnumerateArray()];
    private static List<string> Bodies(NodeScript.Result r) => Got(r).Select(m => m.GetProperty("body").GetString()!).Order().ToList();

    [Fact]
    public async Task Ali_ons_sends_through_the_name_server_and_a_tag_subscription_receives_only_its_tag()
    {
        string topic = Unique("OnsTag");
        var a = await OnsProduce(topic, 2, "a", "TagA");
        await OnsProduce(topic, 1, "b", "TagB");
        foreach (var s in a.Final.GetProperty("sent").EnumerateArray())
        {
            Assert.Equal("SEND_OK", s.GetProperty("status").GetString());
            Assert.True(OffsetMessageId.TryDecode(s.GetProperty("msgId").GetString(), out var host, out _));
            Assert.Equal(Broker.RemotingPort, host.Port);
        }

        var got = await OnsConsume(topic, Unique("CG"), 1, "TagB", timeoutMs: 30_000);
        Assert.Equal("done", got.Final.GetProperty("result").GetString());
        var m = Assert.Single(Got(got));
        Assert.Equal(("b-0", "TagB", "key-0"), (m.GetProperty("body").GetString(), m.GetProperty("tags").GetString(), m.GetProperty("keys").GetString()));
    }

    [Fact]
    public async Task Ali_ons_committed_offsets_survive_a_consumer_restart()
    {
        string topic = Unique("OnsOff");
        string group = Unique("CG");
        await OnsProduce(topic, 3, "first", "T");
        var first = await OnsConsume(topic, group, 3);
        Assert.Equal(["first-0", "first-1", "first-2"], Bodies(first));

        await OnsProduce(topic, 2, "second", "T");
        // A new consumer process of the same group starts from the committed offsets: only the new messages, nothing again.
        var second = await OnsConsume(topic, group, 2);
        Assert.Equal(["second-0", "second-1"], Bodies(second));
    }

    [Fact]
    public async Task Ali_ons_consume_failure_is_retried_through_the_retry_topic_and_then_succeeds()
    {
        string topic = Unique("OnsRetry");
        await OnsProduce(topic, 2, "r", "T");
        var got = await OnsConsume(topic, Unique("CG"), 2, failOnce: ["r-1"], timeoutMs: 45_000);
        Assert.Equal(["r-0", "r-1"], Bodies(got));
        var retried = Got(got).Single(m => m.GetProperty("body").GetString() == "r-1");
        Assert.Equal(1, retried.GetProperty("reconsumeTimes").GetInt32());
        Assert.Equal(topic, retried.GetProperty("topic").GetString());
        Assert.Contains(got.Lines, l => l.TryGetProperty("failing", out var f) && f.GetString() == "r-1");
    }

    [Fact]
    public async Task A_message_sent_by_ali_ons_is_received_by_the_official_gRPC_client_and_the_reverse()
    {
        string topic = Unique("OnsGrpc");
        await OnsProduce(topic, 1, "from-ons", "T");
        var viaGrpc = await Run("simple.js", Broker.Endpoint, topic, Unique("G"), "collect", JsonSerializer.Serialize(new { count = 1, timeoutMs = 15_000, tag = "*" }));
        Assert.Equal("from-ons-0", Assert.Single(viaGrpc.Final.GetProperty("got").EnumerateArray()).GetProperty("body").GetString());

        string topic2 = Unique("GrpcOns");
        await Run("produce.js", Broker.Endpoint, topic2, JsonSerializer.Serialize(new { count = 1, prefix = "from-grpc" }));
        var viaOns = await OnsConsume(topic2, Unique("CG"), 1);
        Assert.Equal(["from-grpc-0"], Bodies(viaOns));
    }

    [Fact]
    public async Task Half_sent_over_Remoting_is_committed_by_a_check_back_answered_over_gRPC()
    {
        string topic = Unique("TxR2G");
        string uniq;
        // The gRPC front-end's producer group of a topic is the topic itself (as the Apache proxy does), so a Remoting
        // producer that names the same group shares its check-back channels.
        await using (var c = await RemotingTestClient.ConnectAsync(Broker.RemotingPort))
        {
            var p = new RemotingTransactionProducer(c, topic);
            (uniq, var sent) = await p.SendHalfAsync(topic, "decided-over-grpc");
            Assert.Equal(ResponseCode.Success, sent.Code);
        }
        // The Remoting producer is gone; a gRPC instance of the group answers the check with COMMIT.
        var checker = await Run("tx.js", Broker.Endpoint, topic, "checker-commit", "30000");
        var check = Assert.Single(checker.Final.GetProperty("checks").EnumerateArray());
        Assert.Equal(uniq, check.GetProperty("id").GetString());

        await using var consumer = await RemotingTestClient.ConnectAsync(Broker.RemotingPort);
        var got = await EventuallyAsync(() => PullAllAsync(consumer, "G", topic, queues: 8), l => l.Count == 1, TimeSpan.FromSeconds(15), "the committed half");
        Assert.Equal("decided-over-grpc", BodyOf(got[0]));
    }

    [Fact]
    public async Task Half_sent_over_gRPC_is_committed_by_a_check_back_answered_over_Remoting()
    {
        string topic = Unique("TxG2R");
        var orphan = await Run("tx.js", Broker.Endpoint, topic, "orphan");
        string id = orphan.Final.GetProperty("id").GetString()!;

        await using var c = await RemotingTestClient.ConnectAsync(Broker.RemotingPort);
        var p = new RemotingTransactionProducer(c, topic);
        await p.HeartbeatAsync();
        var (check, message) = await p.AnswerCheckAsync(MessageSysFlag.TransactionCommitType, TimeSpan.FromSeconds(30));
        Assert.Equal(id, message.Properties[MessageConst.UniqueKey]);
        Assert.Equal(topic, check.Get("topic"));

        var viaGrpc = await Run("simple.js", Broker.Endpoint, topic, Unique("G"), "collect", JsonSerializer.Serialize(new { count = 1, timeoutMs = 15_000, tag = "*" }));
        var m = Assert.Single(viaGrpc.Final.GetProperty("got").EnumerateArray());
        Assert.Equal(id, m.GetProperty("id").GetString());
    }
}
