using System.Net;
using System.Net.Http.Json;
using System.Text.Json;
using Apache.Rocketmq.V2;
using Google.Protobuf.WellKnownTypes;
using HalfMsg.Broker.Tests.Infrastructure;
using HalfMsg.Protocol.Grpc;
using HalfMsg.Protocol.Remoting;
using HalfMsg.TestKit;
using static HalfMsg.Broker.Tests.Infrastructure.RemotingBroker;

namespace HalfMsg.Broker.Tests.Admin;

/// <summary>The message index survives a kill -9: it is rebuilt from the retained log of a real broker process.</summary>
[Trait("Category", "Crash")]
public sealed class MessageIndexRestartTests : IAsyncLifetime
{
    private BrokerProcess _broker = null!;
    private HttpClient _http = null!;

    public async Task InitializeAsync()
    {
        _broker = await BrokerProcess.StartAsync("--queues-per-topic", "1");
        _http = new HttpClient { BaseAddress = new Uri($"http://127.0.0.1:{_broker.HttpPort}") };
    }

    public async Task DisposeAsync()
    {
        _http.Dispose();
        await _broker.DisposeAsync();
    }

    /// <summary>GET /api/messages/{id} until it answers 200; while the index warms up it answers 404 with code IndexWarming.</summary>
    private async Task<JsonElement> FoundAsync(string id)
    {
        var deadline = DateTime.UtcNow.AddSeconds(120);
        while (true)
        {
            var r = await _http.GetAsync($"/api/messages/{id}");
            if (r.StatusCode == HttpStatusCode.OK) return await r.Content.ReadFromJsonAsync<JsonElement>();
            Assert.Equal(HttpStatusCode.NotFound, r.StatusCode);
            if (DateTime.UtcNow > deadline)
                throw new TimeoutException($"message {id} not found after the restart: {await r.Content.ReadAsStringAsync()}\n{_broker.Output}");
            await Task.Delay(50);
        }
    }

    private static string Kinds(JsonElement m) => string.Join(",", m.GetProperty("history").EnumerateArray().Select(s => s.GetProperty("kind").GetString()));

    [Fact]
    public async Task After_kill_9_messages_still_in_the_log_are_found_by_id_and_key_with_their_history()
    {
        string topic = Unique("IdxCrash");
        string committedId, pendingId, plainId = Guid.NewGuid().ToString("N").ToUpperInvariant();
        await using (var c = await RemotingTestClient.ConnectAsync(_broker.RemotingPort))
        {
            var p = new RemotingTransactionProducer(c, Unique("PG"));
            await p.HeartbeatAsync();
            (committedId, var sent) = await p.SendHalfAsync(topic, "tx-committed");
            var commit = await p.EndAsync(committedId, sent.Get("queueOffset")!, sent.Get("msgId")!, MessageSysFlag.TransactionCommitType, false, oneway: false);
            Assert.Equal(ResponseCode.Success, commit!.Code);
            (pendingId, _) = await p.SendHalfAsync(topic, "tx-pending");
            var plain = await c.InvokeAsync(RequestCode.SendMessageV2, SendHeader("PG", topic, Props(keys: "order-77", uniq: plainId)), "plain"u8.ToArray());
            Assert.Equal(ResponseCode.Success, plain.Code);
        }
        // Both visible messages are leased once over gRPC (not acknowledged).
        using (var grpc = new GrpcTestClient(_broker.Endpoint, "idx-consumer"))
        {
            var received = await grpc.ServerStreamAsync(GrpcMethods.ReceiveMessage, new ReceiveMessageRequest
            {
                Group = new Resource { Name = "idx-group" },
                MessageQueue = new MessageQueue { Topic = new Resource { Name = topic } },
                FilterExpression = new FilterExpression { Type = FilterType.Tag, Expression = "*" },
                BatchSize = 4,
                InvisibleDuration = Duration.FromTimeSpan(TimeSpan.FromMinutes(5)),
                LongPollingTimeout = Duration.FromTimeSpan(TimeSpan.FromSeconds(5)),
            }, ReceiveMessageResponse.Parser);
            Assert.Equal(2, received.Responses.Count(r => r.ContentCase == ReceiveMessageResponse.ContentOneofCase.Message));
        }
        // A lease record is appended without waiting for the disk (lost in a crash, the message is simply delivered
        // again), so a kill right after the receive may lose it. A send is acknowledged only once the log is durable
        // past it, and the log commits in order: once this answers, the two lease records are on disk too.
        await using (var fence = await RemotingTestClient.ConnectAsync(_broker.RemotingPort))
        {
            var sent = await fence.InvokeAsync(RequestCode.SendMessageV2, SendHeader("PG", Unique("IdxFence"), Props()), "fence"u8.ToArray());
            Assert.Equal(ResponseCode.Success, sent.Code);
        }
        Assert.Equal("half_stored,committed,delivered", Kinds(await FoundAsync(committedId)));

        _broker.Kill();
        await _broker.RestartAsync();

        var committed = await FoundAsync(committedId);
        Assert.Equal("committed", committed.GetProperty("state").GetString());
        Assert.Equal("Client", committed.GetProperty("decidedBy").GetString());
        Assert.Equal("tx-committed", committed.GetProperty("message").GetProperty("bodyPreview").GetString());
        Assert.Equal("half_stored,committed,delivered", Kinds(committed));
        var delivered = committed.GetProperty("history")[2];
        Assert.Equal("idx-group", delivered.GetProperty("group").GetString());
        Assert.Equal(1, delivered.GetProperty("attempt").GetInt32());
        // Rebuilt from a record without a time or a client id: neither is invented.
        Assert.Equal(JsonValueKind.Null, delivered.GetProperty("at").ValueKind);
        Assert.Equal(JsonValueKind.Null, delivered.GetProperty("clientId").ValueKind);
        Assert.NotEqual(JsonValueKind.Null, committed.GetProperty("history")[0].GetProperty("at").ValueKind);

        var pending = await FoundAsync(pendingId);
        Assert.Contains(pending.GetProperty("state").GetString(), new[] { "pending", "parked" });
        Assert.Equal("half_stored", Kinds(pending));

        var byKey = await _http.GetFromJsonAsync<JsonElement>($"/api/messages?key=order-77&topic={topic}");
        Assert.Equal(plainId, Assert.Single(byKey.EnumerateArray()).GetProperty("messageId").GetString());
        Assert.Equal("stored,delivered", Kinds(await FoundAsync(plainId)));

        var index = await _http.GetFromJsonAsync<JsonElement>("/api/message-index");
        Assert.False(index.GetProperty("warming").GetBoolean());
        Assert.True(index.GetProperty("messages").GetInt32() >= 3);
        Assert.True(index.GetProperty("recordsScanned").GetInt64() >= 6);
        Assert.Equal(0, index.GetProperty("failedSteps").GetInt64());
        Assert.Equal(JsonValueKind.Null, index.GetProperty("firstFailure").ValueKind);
    }
}
