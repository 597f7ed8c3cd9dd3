using System.Net;
using System.Net.Http.Json;
using System.Text.Json;
using HalfMsg.Broker.Core.Model;

namespace HalfMsg.Broker.Tests.Admin;

/// <summary>
/// A re-drive through the admin API goes past a dead letter whose topic was deleted (auto-creation off): 200 with the
/// rest put back, the letter counted in <c>notRedriven</c> with its reason, and put back by a later re-drive once its
/// topic exists again. Until 2026-12-06 the answer was a 404 (TopicNotFound) that moved nothing behind the letter.
/// </summary>
public sealed class AdminRedriveSkipTests() : InProcessAdminHost("adminredriveskip", "--auto-create-topics", "false")
{
    [Fact]
    public async Task A_redrive_answers_the_dead_letter_it_could_not_put_back_and_moves_the_rest()
    {
        var engine = _host.Engine;
        foreach (var t in new[] { "skip-gone", "skip-kept" }) Assert.True((await engine.CreateTopicAsync(t)).Error.IsOk);
        Assert.True((await engine.SendAsync(new MessageDraft { Topic = "skip-gone", MessageId = "skip-0", Body = new byte[] { 0 } })).IsOk);
        for (int i = 1; i <= 2; i++)
            Assert.True((await engine.SendAsync(new MessageDraft { Topic = "skip-kept", MessageId = $"skip-{i}", Body = new byte[] { (byte)i } })).IsOk);
        // skip-0 first: the oldest dead letter, the first a re-drive meets.
        foreach (var t in new[] { "skip-gone", "skip-kept" })
        {
            var got = await engine.ReceiveAsync(new ReceiveRequest { ConsumerGroup = "skip-group", Topic = t, BatchSize = 10, LongPollTimeout = TimeSpan.FromSeconds(5) });
            Assert.NotEmpty(got.Messages);
            foreach (var d in got.Messages) Assert.True((await engine.ForwardToDeadLetterAsync("skip-group", t, d.ReceiptHandle)).IsOk);
        }
        Assert.True((await engine.DeleteTopicAsync("skip-gone")).IsOk);

        var first = await _http.PostAsync("/api/dlq/skip-group/redrive", null);
        Assert.Equal(HttpStatusCode.OK, first.StatusCode);
        var body = await first.Content.ReadFromJsonAsync<JsonElement>();
        Assert.Equal(2, body.GetProperty("redriven").GetInt32());
        Assert.Equal(1, body.GetProperty("notRedriven").GetInt32());
        var left = Assert.Single(body.GetProperty("notRedrivenLetters").EnumerateArray());
        Assert.Equal("skip-0", left.GetProperty("messageId").GetString());
        Assert.Equal("skip-gone", left.GetProperty("target").GetString());
        Assert.Equal("TopicNotFound", left.GetProperty("status").GetString());
        Assert.Contains("does not exist", left.GetProperty("reason").GetString());
        Assert.Equal(JsonValueKind.Null, body.GetProperty("error").ValueKind);

        Assert.True((await engine.CreateTopicAsync("skip-gone")).Error.IsOk);
        var second = await (await _http.PostAsync("/api/dlq/skip-group/redrive", null)).Content.ReadFromJsonAsync<JsonElement>();
        Assert.Equal(1, second.GetProperty("redriven").GetInt32());
        Assert.Equal("skip-0", second.GetProperty("messageIds")[0].GetString());
        Assert.Equal(0, second.GetProperty("notRedriven").GetInt32());
    }

    /// <summary>
    /// A call that leaves its limit of letters (1,000 for max=100) answers more=true and a continuation; the next call
    /// passing it goes on past them (the other 200 only), and a call without it is offered them again.
    /// </summary>
    [Fact]
    public async Task A_redrive_stopped_at_its_limit_answers_a_continuation_that_goes_on_past_the_letters_left()
    {
        var engine = _host.Engine;
        Assert.True((await engine.CreateTopicAsync("limit-gone")).Error.IsOk);
        for (int i = 0; i < 1200; i++)
            Assert.True((await engine.SendAsync(new MessageDraft { Topic = "limit-gone", MessageId = $"limit-{i}", Body = new byte[] { 1 } })).IsOk);
        int forwarded = 0;
        while (forwarded < 1200)
        {
            var got = await engine.ReceiveAsync(new ReceiveRequest { ConsumerGroup = "limit-group", Topic = "limit-gone", BatchSize = 1000, LongPollTimeout = TimeSpan.FromSeconds(5) });
            Assert.NotEmpty(got.Messages);
            foreach (var d in got.Messages) Assert.True((await engine.ForwardToDeadLetterAsync("limit-group", "limit-gone", d.ReceiptHandle)).IsOk);
            forwarded += got.Messages.Count;
        }
        Assert.True((await engine.DeleteTopicAsync("limit-gone")).IsOk);

        var first = await (await _http.PostAsync("/api/dlq/limit-group/redrive?max=100", null)).Content.ReadFromJsonAsync<JsonElement>();
        Assert.Equal((0, 1024, true), (first.GetProperty("redriven").GetInt32(), first.GetProperty("notRedriven").GetInt32(), first.GetProperty("more").GetBoolean()));
        long continuation = first.GetProperty("continuation").GetInt64();
        var next = await _http.PostAsync($"/api/dlq/limit-group/redrive?max=100&continuation={continuation}", null);
        Assert.Equal(HttpStatusCode.OK, next.StatusCode);
        var second = await next.Content.ReadFromJsonAsync<JsonElement>();
        Assert.Equal((0, 176, false), (second.GetProperty("redriven").GetInt32(), second.GetProperty("notRedriven").GetInt32(), second.GetProperty("more").GetBoolean()));
        Assert.Equal(continuation, second.GetProperty("continuation").GetInt64());
        var again = await (await _http.PostAsync("/api/dlq/limit-group/redrive?max=100", null)).Content.ReadFromJsonAsync<JsonElement>();
        Assert.Equal(1024, again.GetProperty("notRedriven").GetInt32());
    }
}
