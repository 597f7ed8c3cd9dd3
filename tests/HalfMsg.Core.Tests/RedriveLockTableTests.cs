using HalfMsg.Broker.Core;

namespace HalfMsg.Core.Tests;

/// <summary>
/// One re-drive at a time per group, with a lock entry only while a re-drive of the group runs or waits. Until the
/// small-hours session of 2026-12-08 the broker kept a lock per group ever re-driven, for the life of the process.
/// </summary>
public sealed class RedriveLockTableTests
{
    [Fact]
    public async Task Groups_redriven_one_after_another_leave_no_lock_behind()
    {
        await using var h = await EngineHarness.StartAsync(o => o with { MaxDeliveryAttempts = 1 });
        const int groups = 25;
        Assert.True((await h.Engine.SendAsync(h.Draft("t", "m"))).IsOk);
        for (int g = 0; g < groups; g++) Assert.Single(await h.ReceiveAsync($"G{g}", "t", invisible: TimeSpan.FromSeconds(1)));
        h.Clock.Advance(TimeSpan.FromSeconds(2));
        h.Engine.RunSweep();
        for (int g = 0; g < groups; g++)
        {
            Assert.Single(await h.ReceiveWhenVisibleAsync("ops", $"%DLQ%G{g}"));
            var r = await h.Engine.RedriveDeadLettersAsync($"G{g}", null, 100);
            Assert.True(r.Error.IsOk, r.Error.ToString());
            Assert.Equal(1, r.Redriven);
            Assert.True(h.Engine.RedrivesRunningForTests == 0, $"{h.Engine.RedrivesRunningForTests} re-drive locks kept after {g + 1} groups' re-drives ended");
        }
        // A re-drive that fails early (no dead letters) leaves none either.
        Assert.False((await h.Engine.RedriveDeadLettersAsync("never-dead-lettered", null, 100)).Error.IsOk);
        Assert.Equal(0, h.Engine.RedrivesRunningForTests);
    }

    [Fact]
    public async Task Two_takers_of_one_key_run_one_after_the_other_and_the_last_removes_the_entry()
    {
        var locks = new KeyedLocks();
        var first = await locks.TakeAsync("A");
        var second = locks.TakeAsync("A").AsTask();
        var other = await locks.TakeAsync("B"); // another key is not held up
        Assert.Equal(2, locks.Count);
        other.Dispose();
        Assert.Equal(1, locks.Count);
        Assert.False(second.IsCompleted, "a second taker of A ran while the first held it");

        // A waiter that gives up takes nothing and leaves the entry to the others.
        using (var cts = new CancellationTokenSource())
        {
            var third = locks.TakeAsync("A", cts.Token).AsTask();
            await cts.CancelAsync();
            await Assert.ThrowsAnyAsync<OperationCanceledException>(() => third);
        }
        Assert.Equal(1, locks.Count);
        Assert.False(second.IsCompleted);

        first.Dispose(); // the entry stays: the second still waits for it, and gets it
        var secondHeld = await second;
        Assert.Equal(1, locks.Count);
        var fourth = locks.TakeAsync("A").AsTask();
        Assert.False(fourth.IsCompleted, "a taker of A ran while the second held it");
        secondHeld.Dispose();
        (await fourth).Dispose();
        Assert.Equal(0, locks.Count);
    }

    [Fact]
    public async Task Many_takers_of_few_keys_at_once_never_overlap_on_a_key_and_leave_no_entry()
    {
        var locks = new KeyedLocks();
        var inside = new int[4];
        int overlaps = 0;
        await Task.WhenAll(Enumerable.Range(0, 400).Select(i => Task.Run(async () =>
        {
            int key = i % inside.Length;
            using var held = await locks.TakeAsync($"k{key}");
            if (Interlocked.Increment(ref inside[key]) != 1) Interlocked.Increment(ref overlaps);
            await Task.Yield();
            Interlocked.Decrement(ref inside[key]);
        })));
        Assert.Equal(0, overlaps);
        Assert.Equal(0, locks.Count);
    }
}
