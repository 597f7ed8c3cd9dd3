using HalfMsg.Broker.Core;
using HalfMsg.Broker.Core.Model;
using HalfMsg.Broker.Core.Storage;

namespace HalfMsg.Core.Tests;

/// <summary>
/// An answer that rests on a change an earlier call made (the repeat of an offset commit, creating a topic that exists, a
/// "not found" after a delete) is given only once that change is durable. Until 2026-12-05 these answered at once, from
/// memory: a client's retry racing the first call could be told "done" while the first call's record was still on its way
/// to the disk, and a kill -9 then lost it. Here the disk fails every write, so the first call's record never becomes
/// durable: the repeat must fail with it, never succeed.
/// </summary>
public sealed class RepeatAnswerDurabilityTests
{
    private static readonly TimeSpan Bound = TimeSpan.FromSeconds(60);

    private static async Task<(EngineHarness H, FaultInjectionDevice Device)> StartAsync()
    {
        FaultInjectionDevice? device = null;
        var h = await EngineHarness.StartAsync(o => o with { WrapLogDevice = d => device = new FaultInjectionDevice(d) });
        return (h, device!);
    }

    [Fact]
    public async Task A_repeated_offset_commit_is_acknowledged_only_with_the_record_that_set_the_offset()
    {
        var (h, device) = await StartAsync();
        await using var _ = h;
        Assert.True((await h.Engine.SendAsync(h.Draft("t", "m"))).IsOk);
        Assert.True((await h.Engine.CommitConsumerOffsetAsync("g", "t", 0, 1)).IsOk); // healthy: done, and a repeat too
        Assert.True((await h.Engine.CommitConsumerOffsetAsync("g", "t", 0, 1)).IsOk);

        device.Fault = DeviceFault.FailWrites;
        var first = h.Engine.CommitConsumerOffsetAsync("g", "t", 0, 2).AsTask();
        Assert.Equal(2, h.Engine.QueryConsumerOffset("g", "t", 0)); // applied in memory, not durable
        var retry = h.Engine.CommitConsumerOffsetAsync("g", "t", 0, 2).AsTask();
        await Assert.ThrowsAsync<StorageFailureException>(() => first.WaitAsync(Bound));
        await Assert.ThrowsAsync<StorageFailureException>(() => retry.WaitAsync(Bound));
    }

    [Fact]
    public async Task Creating_a_topic_answers_once_its_record_is_durable_also_for_a_second_caller()
    {
        var (h, device) = await StartAsync();
        await using var _ = h;
        Assert.Equal((BrokerError.None, true), await h.Engine.CreateTopicAsync("made"));
        Assert.Equal((BrokerError.None, false), await h.Engine.CreateTopicAsync("made"));

        device.Fault = DeviceFault.FailWrites;
        var first = h.Engine.CreateTopicAsync("lost").AsTask();
        Assert.Contains(h.Engine.ListTopics(), t => t.Name == "lost"); // in memory only
        var second = h.Engine.CreateTopicAsync("lost").AsTask();
        await Assert.ThrowsAsync<StorageFailureException>(() => first.WaitAsync(Bound));
        await Assert.ThrowsAsync<StorageFailureException>(() => second.WaitAsync(Bound));
    }

    [Fact]
    public async Task Not_found_after_a_delete_is_answered_once_the_delete_is_durable()
    {
        var (h, device) = await StartAsync();
        await using var _ = h;
        Assert.True((await h.Engine.SendAsync(h.Draft("t", "m"))).IsOk);
        Assert.True((await h.Engine.CommitConsumerOffsetAsync("g", "t", 0, 1)).IsOk);
        Assert.Equal(BrokerStatus.TopicNotFound, (await h.Engine.DeleteTopicAsync("never")).Status); // healthy: a plain answer
        Assert.Equal(BrokerStatus.IllegalConsumerGroup, (await h.Engine.DeleteGroupAsync("never")).Status);

        device.Fault = DeviceFault.FailWrites;
        var deleteGroup = h.Engine.DeleteGroupAsync("g").AsTask();
        var groupAgain = h.Engine.DeleteGroupAsync("g").AsTask();
        var deleteTopic = h.Engine.DeleteTopicAsync("t").AsTask();
        var topicAgain = h.Engine.DeleteTopicAsync("t").AsTask();
        foreach (var call in new[] { deleteGroup, groupAgain, deleteTopic, topicAgain })
            await Assert.ThrowsAsync<StorageFailureException>(() => call.WaitAsync(Bound));
    }

    /// <summary>
    /// A conflicting decision ("already committed") is answered once the decision it reports is durable, as a matching
    /// repeat is. Until 2026-12-05 it was answered at once: with the commit not yet on disk, a crash then brought the
    /// half back pending, against the answer (found by review; here the commit never becomes durable, and the conflict
    /// was answered anyway).
    /// </summary>
    [Fact]
    public async Task A_conflicting_decision_is_answered_only_once_the_decision_it_reports_is_durable()
    {
        var (h, device) = await StartAsync();
        await using var _ = h;
        string tx = await h.SendHalfAsync("t");
        // Its check-back is out, so the check-back answer below answers a check that was sent (ReusedTransactionIdTests).
        using (h.Engine.Producers.Register("t", new RecordingChannel("p1")))
        {
            h.Clock.Advance(TimeSpan.FromSeconds(7));
            Assert.Equal(1, await h.Engine.RunCheckPassAsync());
        }
        device.Fault = DeviceFault.FailWrites;
        var commit = h.Engine.EndTransactionAsync(tx, null, TransactionResolution.Commit, DecisionSource.Client).AsTask();
        var rollback = h.Engine.EndTransactionAsync(tx, null, TransactionResolution.Rollback, DecisionSource.CheckBack).AsTask();
        var batch = h.Engine.EndTransactionsAsync([new DecisionRequest(tx, null, TransactionResolution.Rollback, DecisionSource.Client)]).AsTask();
        await Assert.ThrowsAsync<StorageFailureException>(() => commit.WaitAsync(Bound));
        await Assert.ThrowsAsync<StorageFailureException>(() => rollback.WaitAsync(Bound));
        await Assert.ThrowsAsync<StorageFailureException>(() => batch.WaitAsync(Bound));
    }
}
