using HalfMsg.Broker.Core;
using HalfMsg.Broker.Core.Model;
using Xunit.Abstractions;

namespace HalfMsg.Core.Tests;

/// <summary>
/// What a retention cut carries of the decided ids still remembered (LogCut records), so that a replay of the log alone
/// after it still knows them: each decision once per record that carries it, and, replayed, in the live broker's
/// expiry order. Found by the review of the afternoon session of 2026-12-07.
/// </summary>
public sealed class DecisionCarryTests(ITestOutputHelper output)
{
    private static string Lines(EngineHarness h, string prefix)
        => string.Join('\n', h.Engine.DescribeState().Split('\n').Where(l => l.StartsWith(prefix, StringComparison.Ordinal)));

    private static async Task<List<string>> DecideAsync(EngineHarness h, int count, string prefix)
    {
        var ids = new List<string>();
        for (int start = 0; start < count; start += 100)
        {
            var sent = await Task.WhenAll(Enumerable.Range(start, Math.Min(100, count - start)).Select(i => h.SendHalfAsync("orders", $"{prefix}{i}")));
            var decided = await Task.WhenAll(sent.Select(tx => h.Engine.EndTransactionAsync(tx, null, TransactionResolution.Rollback, DecisionSource.Client).AsTask()));
            Assert.All(decided, d => Assert.True(d.IsOk, d.Error.ToString()));
            ids.AddRange(sent);
        }
        return ids;
    }

    /// <summary>Cuts at <paramref name="boundary"/>; the bytes and decisions it carried.</summary>
    private async Task<(long Bytes, int Decisions)> CutAsync(EngineHarness h, long boundary, string name)
    {
        int carriedBefore = h.Engine.DecisionsCarriedForTests;
        long tailBefore = h.Engine.LogTailAddress;
        Assert.True(await h.Engine.TruncateBeforeAsync(boundary) >= 0, $"{name} was postponed");
        Assert.True(h.Engine.LogBeginAddress >= boundary);
        var result = (h.Engine.LogTailAddress - tailBefore, h.Engine.DecisionsCarriedForTests - carriedBefore);
        output.WriteLine($"{name}: {result.Item2} decisions carried, {result.Item1} bytes appended to the log");
        return result;
    }

    /// <summary>
    /// A cut carries a remembered decision only when the record that carries it lies below its boundary: its own record
    /// (the first cut past it), then the record of the cut that carried it last (a later cut past that one). A cut whose
    /// boundary lies below the first cut's carrying records writes none for them. Until the review of the afternoon
    /// session of 2026-12-07 every cut carried every remembered decision whose own record it passed, again: with a
    /// million remembered decisions about 40 MB per cut, more than a small retention size frees. A replay of the log
    /// alone after the cuts, and one from a checkpoint, still know every decision.
    /// </summary>
    [Fact]
    public async Task A_cut_carries_a_decision_again_only_when_the_record_carrying_it_lies_below_its_boundary()
    {
        const int n = 1_000;
        await using var h = await EngineHarness.StartAsync(o => o with { QueuesPerTopic = 1 });
        var ids = await DecideAsync(h, n, "d");
        long first = h.Engine.LogTailAddress;     // every decision's record below it
        await h.SendNormalAsync("filler", "a");
        long second = h.Engine.LogTailAddress;    // below the first cut's carrying records
        await h.SendNormalAsync("filler", "b");
        long third = h.Engine.LogTailAddress;     // likewise
        var cut1 = await CutAsync(h, first, "cut 1 (past the decisions' records)");
        Assert.Equal(n, cut1.Decisions);
        var cut2 = await CutAsync(h, second, "cut 2 (below the records of cut 1)");
        Assert.Equal(0, cut2.Decisions);
        string live = Lines(h, "decided ");
        Assert.Equal(n, live.Split('\n').Length);

        // From the log alone: every decision, each carried by the record of cut 1 that the replay took it from.
        await h.Engine.DisposeAsync();
        Directory.Delete(Path.Combine(h.DataDir, "checkpoints"), recursive: true);
        await h.RestartAfterDeletedCheckpointAsync();
        States.AssertSame(live, Lines(h, "decided "), "log-only");
        var cut3 = await CutAsync(h, third, "cut 3 (after a replay of the log alone, below the records of cut 1)");
        Assert.Equal(0, cut3.Decisions);
        await h.SendNormalAsync("filler", "c");
        var cut4 = await CutAsync(h, h.Engine.LogTailAddress, "cut 4 (past the records of cut 1)");
        Assert.Equal(n, cut4.Decisions);
        Assert.True(cut4.Bytes < cut1.Bytes + 4096, $"cut 4 appended {cut4.Bytes} bytes, cut 1 {cut1.Bytes}");
        var repeated = await h.Engine.EndTransactionAsync(ids[0], null, TransactionResolution.Rollback, DecisionSource.Client);
        Assert.True(repeated.IsOk && repeated.WasDuplicate, repeated.Error.ToString());

        // From a checkpoint: the same decisions; then once more from the log alone after one more cut.
        await h.RestartAsync();
        States.AssertSame(live, Lines(h, "decided "), "from a checkpoint");
        await h.SendNormalAsync("filler", "d");
        var cut5 = await CutAsync(h, h.Engine.LogTailAddress, "cut 5 (after a restart from a checkpoint, past everything)");
        Assert.Equal(n, cut5.Decisions);
        await h.Engine.DisposeAsync();
        Directory.Delete(Path.Combine(h.DataDir, "checkpoints"), recursive: true);
        await h.RestartAfterDeletedCheckpointAsync();
        States.AssertSame(live, Lines(h, "decided "), "log-only after cut 5");
    }

    /// <summary>
    /// A replay of the log alone forgets, at the count bound (<see cref="CoreOptions.MaxRememberedDecisions"/>), the
    /// decisions the live broker forgot: the oldest, a decision carried by a cut, not one whose record lies between the
    /// cut's boundary and its carrying record. Until the review of the afternoon session of 2026-12-07 the carried
    /// decision was put behind that one while replaying, so the bound forgot the newer decision: after the restart a
    /// repeat of it was told "unknown transaction", and the older one, forgotten live, was remembered.
    /// </summary>
    [Fact]
    public async Task A_replay_of_the_log_alone_forgets_at_the_count_bound_what_the_live_broker_forgot()
    {
        await using var h = await EngineHarness.StartAsync(o => o with { QueuesPerTopic = 1, MaxRememberedDecisions = 2 });
        string oldest = (await DecideAsync(h, 1, "old"))[0];
        long boundary = h.Engine.LogTailAddress;
        string between = (await DecideAsync(h, 1, "between"))[0]; // its record above the boundary, below the carrying
        Assert.True(await h.Engine.TruncateBeforeAsync(boundary) >= 0, "the cut was postponed");
        Assert.Equal(1, h.Engine.DecisionsCarriedForTests);
        string newest = (await DecideAsync(h, 1, "new"))[0]; // the bound forgets the oldest
        string live = Lines(h, "decided ");
        Assert.Equal(2, live.Split('\n').Length);

        await h.Engine.DisposeAsync();
        Directory.Delete(Path.Combine(h.DataDir, "checkpoints"), recursive: true);
        await h.RestartAfterDeletedCheckpointAsync();
        States.AssertSame(live, Lines(h, "decided "), "log-only");
        foreach (var tx in new[] { between, newest })
        {
            var repeated = await h.Engine.EndTransactionAsync(tx, null, TransactionResolution.Rollback, DecisionSource.Client);
            Assert.True(repeated.IsOk && repeated.WasDuplicate, $"a repeat of {tx} was answered {repeated.Error}");
        }
        Assert.Equal(BrokerStatus.TransactionNotFound, (await h.Engine.EndTransactionAsync(oldest, null, TransactionResolution.Rollback, DecisionSource.Client)).Error.Status);
    }
}

/// <summary>
/// What a retention cut carries of the topics' positions and the pull groups' offsets (LogCut records): each once per
/// record that carries it. Found by the review of the afternoon session of 2026-12-07.
/// </summary>
public sealed class PositionCarryTests(ITestOutputHelper output)
{
    private static string Lines(EngineHarness h, string prefix)
        => string.Join('\n', h.Engine.DescribeState().Split('\n').Where(l => l.StartsWith(prefix, StringComparison.Ordinal)));

    private async Task<(long Bytes, int Topics, int Offsets)> CutAsync(EngineHarness h, long boundary, string name)
    {
        int topicsBefore = h.Engine.TopicsCarriedForTests, offsetsBefore = h.Engine.PullOffsetsCarriedForTests;
        long tailBefore = h.Engine.LogTailAddress;
        Assert.True(await h.Engine.TruncateBeforeAsync(boundary) >= 0, $"{name} was postponed");
        Assert.True(h.Engine.LogBeginAddress >= boundary);
        var result = (h.Engine.LogTailAddress - tailBefore, h.Engine.TopicsCarriedForTests - topicsBefore, h.Engine.PullOffsetsCarriedForTests - offsetsBefore);
        output.WriteLine($"{name}: {result.Item2} topics and {result.Item3} pull offsets carried, {result.Item1} bytes appended to the log");
        return result;
    }

    /// <summary>
    /// A cut carries a topic's positions, and a pull offset, only when the record that carries it (a pull offset's own
    /// commit record, or the record of the cut that carried it last) lies below its boundary. Until the review of the
    /// afternoon session of 2026-12-07 every cut carried every topic and every pull offset again (10,000 topics of 8
    /// queues and as many offsets: about a megabyte per cut). A replay of the log alone keeps them as live, and knows
    /// which record carries them.
    /// </summary>
    [Fact]
    public async Task A_cut_carries_a_topic_or_a_pull_offset_again_only_when_the_record_carrying_it_lies_below_its_boundary()
    {
        const int n = 50;
        await using var h = await EngineHarness.StartAsync(o => o with { QueuesPerTopic = 2 });
        for (int i = 0; i < n; i++)
        {
            await h.SendNormalAsync($"t{i}", "m");
            Assert.True((await h.Engine.CommitConsumerOffsetAsync("pg", $"t{i}", 0, 1)).IsOk);
        }
        long first = h.Engine.LogTailAddress;
        await h.SendNormalAsync("filler", "a");
        long second = h.Engine.LogTailAddress;
        await h.SendNormalAsync("filler", "b");
        long third = h.Engine.LogTailAddress;
        var cut1 = await CutAsync(h, first, "cut 1 (past every topic's and offset's records)");
        Assert.Equal((n + 1, n), (cut1.Topics, cut1.Offsets)); // the filler's topic too
        var cut2 = await CutAsync(h, second, "cut 2 (below the records of cut 1)");
        Assert.Equal((0, 0), (cut2.Topics, cut2.Offsets));
        string State() => Lines(h, "queue ") + "\n" + Lines(h, "offset ");
        string live = State();

        await h.Engine.DisposeAsync();
        Directory.Delete(Path.Combine(h.DataDir, "checkpoints"), recursive: true);
        await h.RestartAfterDeletedCheckpointAsync();
        States.AssertSame(live, State(), "log-only");
        var cut3 = await CutAsync(h, third, "cut 3 (after a replay of the log alone, below the records of cut 1)");
        Assert.Equal((0, 0), (cut3.Topics, cut3.Offsets));
        await h.SendNormalAsync("filler", "c");
        var cut4 = await CutAsync(h, h.Engine.LogTailAddress, "cut 4 (past the records of cut 1)");
        Assert.Equal((n + 1, n), (cut4.Topics, cut4.Offsets));
        live = State();
        await h.Engine.DisposeAsync();
        Directory.Delete(Path.Combine(h.DataDir, "checkpoints"), recursive: true);
        await h.RestartAfterDeletedCheckpointAsync();
        States.AssertSame(live, State(), "log-only after cut 4");
        await h.RestartAsync();
        States.AssertSame(live, State(), "from a checkpoint");
        Assert.Equal(1, h.Engine.QueryConsumerOffset("pg", "t0", 0));
    }

    /// <summary>
    /// A topic made with fewer queues than <see cref="CoreOptions.QueuesPerTopic"/>, its creation's record cut, and a
    /// message of it written between the cut's boundary and the cut's carrying: a replay of the log alone makes it from
    /// that message's record (with QueuesPerTopic queues), then takes the count the cut carried. Until the review of the
    /// afternoon session of 2026-12-07 it kept the queues the live topic never had (its route named them).
    /// </summary>
    [Fact]
    public async Task A_topic_with_fewer_queues_than_the_default_keeps_its_count_from_the_log_alone()
    {
        await using var h = await EngineHarness.StartAsync(o => o with { QueuesPerTopic = 4 });
        Assert.True((await h.Engine.CreateTopicAsync("small", 2)).Error.IsOk);
        await h.SendNormalAsync("small", "a");
        long boundary = h.Engine.LogTailAddress; // the creation's record below it
        await h.SendNormalAsync("small", "b");    // above it, before the cut's carrying
        Assert.True(await h.Engine.TruncateBeforeAsync(boundary) >= 0, "the cut was postponed");
        string live = Lines(h, "queue small/");
        Assert.Equal(2, live.Split('\n').Length);

        await h.Engine.DisposeAsync();
        Directory.Delete(Path.Combine(h.DataDir, "checkpoints"), recursive: true);
        await h.RestartAfterDeletedCheckpointAsync();
        States.AssertSame(live, Lines(h, "queue small/"), "log-only");
        await h.SendNormalAsync("small", "c");
        Assert.Equal(2, Lines(h, "queue small/").Split('\n').Length);
    }
}
