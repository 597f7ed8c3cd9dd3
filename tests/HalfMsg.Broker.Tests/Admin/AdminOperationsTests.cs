using System.Net;
using System.Net.Http.Json;
using System.Net.Sockets;
using System.Text;
using System.Text.Json;
using HalfMsg.Broker.Core.Model;
using HalfMsg.Broker.Hosting;

namespace HalfMsg.Broker.Tests.Admin;

/// <summary>Topic deletion, dead-letter re-drive and the message preview through the admin API, against a real in-process host.</summary>
public sealed class AdminOperationsTests() : InProcessAdminHost("adminops")
{

    private async Task<JsonElement> Preview(string id) => (await _http.GetFromJsonAsync<JsonElement>($"/api/messages/{id}")).GetProperty("message");

    private async Task Send(string id, byte[] body, string topic = "ops-preview")
        => Assert.True((await _host.Engine.SendAsync(new MessageDraft { Topic = topic, MessageId = id, Body = body })).IsOk);

    [Fact]
    public async Task A_group_started_from_latest_over_http_receives_only_new_messages_and_is_not_moved_twice()
    {
        await Send("gs-old", Encoding.UTF8.GetBytes("old"), topic: "ops-start");
        var start = await _http.PostAsync("/api/groups/ops-late/start?topic=ops-start&from=latest", null);
        Assert.Equal(HttpStatusCode.OK, start.StatusCode);
        var again = await _http.PostAsync("/api/groups/ops-late/start?topic=ops-start&from=earliest", null);
        Assert.Equal(HttpStatusCode.BadRequest, again.StatusCode);
        Assert.Equal(HttpStatusCode.BadRequest, (await _http.PostAsync("/api/groups/ops-late2/start?topic=ops-start&from=yesterday-ish", null)).StatusCode);
        Assert.Equal(HttpStatusCode.NotFound, (await _http.PostAsync("/api/groups/ops-late2/start?topic=no-such-topic", null)).StatusCode);
        await Send("gs-new", Encoding.UTF8.GetBytes("new"), topic: "ops-start");
        using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(30));
        var got = await _host.Engine.ReceiveAsync(new ReceiveRequest { ConsumerGroup = "ops-late", Topic = "ops-start", BatchSize = 10, LongPollTimeout = TimeSpan.FromSeconds(20) }, cts.Token);
        Assert.Equal(new[] { "gs-new" }, got.Messages.Select(m => m.Message.MessageId));
    }

    [Fact]
    public async Task The_message_preview_is_text_or_hex_and_stops_at_4_KiB()
    {
        await Send("pv-long", Encoding.UTF8.GetBytes(new string('a', 5000)));
        var text = await Preview("pv-long");
        Assert.Equal("text", text.GetProperty("bodyEncoding").GetString());
        Assert.Equal(5000, text.GetProperty("bodySize").GetInt32());
        Assert.True(text.GetProperty("bodyTruncated").GetBoolean());
        Assert.Equal(4096, text.GetProperty("bodyPreview").GetString()!.Length);

        // The cut splits a two-byte character: the preview stays text and ends before it.
        await Send("pv-split", Encoding.UTF8.GetBytes(new string('b', 4095) + "é" + "tail"));
        var split = await Preview("pv-split");
        Assert.Equal("text", split.GetProperty("bodyEncoding").GetString());
        Assert.Equal(new string('b', 4095), split.GetProperty("bodyPreview").GetString());

        await Send("pv-binary", [0x00, 0x01, 0xfe, 0xff, .. Enumerable.Repeat((byte)0x20, 14)]);
        var hex = await Preview("pv-binary");
        Assert.Equal("hex", hex.GetProperty("bodyEncoding").GetString());
        Assert.Equal("00 01 fe ff 20 20 20 20 20 20 20 20 20 20 20 20\n20 20", hex.GetProperty("bodyPreview").GetString());
        Assert.False(hex.GetProperty("bodyTruncated").GetBoolean());

        // A rolled-back half has no stored message to show.
        Assert.True((await _host.Engine.SendHalfAsync(new MessageDraft { Topic = "ops-preview", MessageId = "pv-rolled", Body = new byte[] { 1 } }, "pv-producers", null, null)).IsOk);
        Assert.Equal("01", (await Preview("pv-rolled")).GetProperty("bodyPreview").GetString());   // pending: the stored half
        Assert.True((await _host.Engine.EndTransactionAsync("pv-rolled", null, TransactionResolution.Rollback, DecisionSource.Operator)).IsOk);
        Assert.Equal(JsonValueKind.Null, (await Preview("pv-rolled")).ValueKind);
    }

    [Fact]
    public async Task A_topic_is_deleted_by_post_and_a_second_delete_is_404()
    {
        await Send("del-1", [1], topic: "ops-doomed");
        var deleted = await _http.PostAsync("/api/topics/ops-doomed/delete", null);
        Assert.Equal(HttpStatusCode.OK, deleted.StatusCode);
        Assert.DoesNotContain(_host.Engine.ListTopics(), t => t.Name == "ops-doomed");
        var again = await _http.PostAsync("/api/topics/ops-doomed/delete", null);
        Assert.Equal(HttpStatusCode.NotFound, again.StatusCode);
        Assert.Contains("does not exist", (await again.Content.ReadFromJsonAsync<JsonElement>()).GetProperty("error").GetString());
    }

    [Fact]
    public async Task Dead_letters_are_redriven_to_their_topic_once()
    {
        var engine = _host.Engine;
        for (int i = 0; i < 3; i++) await Send($"dl-{i}", [(byte)i], topic: "ops-dl");
        var got = await engine.ReceiveAsync(new ReceiveRequest { ConsumerGroup = "dl-group", Topic = "ops-dl", BatchSize = 3, LongPollTimeout = TimeSpan.FromSeconds(5) });
        Assert.Equal(3, got.Messages.Count);
        foreach (var d in got.Messages) Assert.True((await engine.ForwardToDeadLetterAsync("dl-group", "ops-dl", d.ReceiptHandle)).IsOk);

        Assert.Equal(HttpStatusCode.BadRequest, (await _http.PostAsync("/api/dlq/dl-group/redrive?max=0", null)).StatusCode);
        Assert.Equal(HttpStatusCode.NotFound, (await _http.PostAsync("/api/dlq/nobody/redrive", null)).StatusCode);

        var first = await (await _http.PostAsync("/api/dlq/dl-group/redrive?max=2", null)).Content.ReadFromJsonAsync<JsonElement>();
        Assert.Equal(2, first.GetProperty("redriven").GetInt32());
        var rest = await (await _http.PostAsync("/api/dlq/dl-group/redrive", null)).Content.ReadFromJsonAsync<JsonElement>();
        Assert.Equal(1, rest.GetProperty("redriven").GetInt32());
        var none = await (await _http.PostAsync("/api/dlq/dl-group/redrive", null)).Content.ReadFromJsonAsync<JsonElement>();
        Assert.Equal(0, none.GetProperty("redriven").GetInt32());

        var again = await engine.ReceiveAsync(new ReceiveRequest { ConsumerGroup = "dl-group", Topic = "ops-dl", BatchSize = 10, LongPollTimeout = TimeSpan.FromSeconds(5) });
        Assert.Equal(["dl-0", "dl-1", "dl-2"], again.Messages.Select(m => m.Message.MessageId).Order().ToArray());
        // The index follows the message to its new place.
        var located = await _http.GetFromJsonAsync<JsonElement>("/api/messages/dl-1");
        Assert.Equal("ops-dl", located.GetProperty("topic").GetString());
        Assert.True(located.GetProperty("queueOffset").GetInt64() >= 3);
    }
}
