using HalfMsg.Broker.Core;
using HalfMsg.Broker.Core.Model;

namespace HalfMsg.Core.Tests;

/// <summary>Issue 8 structure: batch entry points append under one lock hold and wait once.</summary>
public sealed class BatchTests
{
    [Fact]
    public async Task A_batch_of_acks_costs_one_group_commit_and_each_handle_gets_its_own_answer()
    {
        await using var h = await EngineHarness.StartAsync();
        for (int i = 0; i < 32; i++) await h.Engine.SendAsync(h.Draft("events", $"m{i}"));
        var got = await h.ReceiveAsync("g", "events", batch: 32);
        Assert.Equal(32, got.Count);
        var handles = got.Select(m => m.ReceiptHandle).ToList();
        handles.Insert(5, "v1.0.0.1");                           // a stale handle in the middle
        long before = h.Engine.LogCommits;
        var results = await h.Engine.AckBatchAsync("g", "events", handles);
        long commits = h.Engine.LogCommits - before;
        Assert.InRange(commits, 1, 2);                            // one commit for the batch (32 one at a time take 32)
        Assert.Equal(BrokerStatus.InvalidReceiptHandle, results[5].Status);
        Assert.Equal(32, results.Count(r => r.IsOk));
        await h.RestartAsync();
        h.Clock.Advance(TimeSpan.FromMinutes(5));
        h.Engine.RunSweep();
        Assert.Empty(await h.ReceiveAsync("g", "events"));         // every acked message stays acked after a restart
    }

    [Fact]
    public async Task A_batch_of_sends_costs_one_group_commit_and_a_bad_message_fails_alone()
    {
        await using var h = await EngineHarness.StartAsync();
        await h.Engine.SendAsync(h.Draft("events", "warm-up"));
        var drafts = Enumerable.Range(0, 16).Select(i => h.Draft("events", $"b{i}")).ToList();
        drafts[3] = new MessageDraft { Topic = "bad topic!", MessageId = h.NextId(), Body = new byte[1] };
        long before = h.Engine.LogCommits;
        var results = await h.Engine.SendBatchAsync(drafts);
        Assert.InRange(h.Engine.LogCommits - before, 1, 2);
        Assert.Equal(BrokerStatus.IllegalTopic, results[3].Error.Status);
        Assert.Equal(15, results.Count(r => r.IsOk));
        Assert.Equal(16, (await h.ReceiveAsync("g", "events")).Count);  // warm-up + 15
    }
}
