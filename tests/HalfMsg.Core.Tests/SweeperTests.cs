using HalfMsg.Broker.Core.Delivery;

namespace HalfMsg.Core.Tests;

/// <summary>
/// The sweeper's plan (<see cref="SweepAlarm"/>): after each sweep it sleeps until the earliest lease end or delivery
/// time, between 50 ms and 1 s, and whatever becomes due before its plan wakes it. The engine tests run the real loops
/// on the fake clock: the clock stands still, so an idle engine's plan is always "now + 1 s", and only a kick changes it.
/// </summary>
public sealed class SweeperTests
{
    [Fact]
    public void The_plan_is_the_earliest_due_time_between_the_least_gap_and_the_longest_sleep()
    {
        var alarm = new SweepAlarm();
        Assert.Equal(SweepAlarm.MaxSleep, alarm.Plan(10_000, long.MaxValue));
        Assert.Equal(11_000, alarm.PlannedAtMs);
        Assert.Equal(SweepAlarm.MaxSleep, alarm.Plan(10_000, 60_000));
        Assert.Equal(TimeSpan.FromMilliseconds(300), alarm.Plan(10_000, 10_300));
        Assert.Equal(10_300, alarm.PlannedAtMs);
        Assert.Equal(SweepAlarm.MinGap, alarm.Plan(10_000, 10_005));  // due sooner than the least gap
        Assert.Equal(SweepAlarm.MinGap, alarm.Plan(10_000, 9_000));   // overdue
    }

    [Fact]
    public void Only_what_is_due_before_the_plan_wakes_the_sweeper()
    {
        var alarm = new SweepAlarm();
        alarm.Plan(10_000, long.MaxValue);                 // asleep until 11,000
        alarm.Note(11_000);
        alarm.Note(40_000);
        Assert.False(alarm.WaitAsync(TimeSpan.FromHours(1), CancellationToken.None).IsCompleted);

        var alarm2 = new SweepAlarm();
        alarm2.Plan(10_000, long.MaxValue);
        alarm2.Note(10_400);                               // sooner: kicked, once
        Assert.Equal(long.MinValue, alarm2.PlannedAtMs);
        alarm2.Note(10_200);
        Assert.True(alarm2.WaitAsync(TimeSpan.FromHours(1), CancellationToken.None).IsCompleted);
        Assert.False(alarm2.WaitAsync(TimeSpan.FromHours(1), CancellationToken.None).IsCompleted);

        var alarm3 = new SweepAlarm();
        alarm3.Sweeping();                                 // a sweep under way plans afterwards: no kick
        alarm3.Note(0);
        Assert.False(alarm3.WaitAsync(TimeSpan.FromHours(1), CancellationToken.None).IsCompleted);
    }

    [Fact]
    public async Task A_delayed_message_due_before_the_plan_wakes_the_sweeper_and_is_released_at_its_time()
    {
        await using var h = await EngineHarness.StartAsync(backgroundLoops: true);
        long now = h.Clock.GetUtcNow().ToUnixTimeMilliseconds();
        await Conditions.WaitUntil(() => h.Engine.SweepPlannedAtMsForTests == now + 1000, () => $"planned {h.Engine.SweepPlannedAtMsForTests}");

        var later = await h.Engine.SendAsync(h.Draft("t", "later", deliverAt: now + 60_000));
        Assert.True(later.Error.IsOk, later.Error.ToString());
        Assert.Equal(now + 1000, h.Engine.SweepPlannedAtMsForTests);       // due after the plan: left asleep

        var soon = await h.Engine.SendAsync(h.Draft("t", "soon", deliverAt: now + 300));
        Assert.True(soon.Error.IsOk, soon.Error.ToString());
        Assert.NotEqual(now + 1000, h.Engine.SweepPlannedAtMsForTests);    // kicked (MinValue) or planned again already
        await Conditions.WaitUntil(() => h.Engine.SweepPlannedAtMsForTests == now + 300, () => $"planned {h.Engine.SweepPlannedAtMsForTests}");

        h.Clock.Advance(TimeSpan.FromMilliseconds(300));
        var m = Assert.Single(await h.ReceiveWhenVisibleAsync("g", "t"));
        Assert.Equal("soon", m.Text());
    }

    [Fact]
    public async Task A_short_lease_wakes_the_sweeper_and_its_message_comes_back_when_it_ends()
    {
        await using var h = await EngineHarness.StartAsync(backgroundLoops: true);
        long now = h.Clock.GetUtcNow().ToUnixTimeMilliseconds();
        await h.SendNormalAsync("t", "m");
        var first = Assert.Single(await h.ReceiveWhenVisibleAsync("g", "t"));   // a 30 s lease: after the plan
        await Conditions.WaitUntil(() => h.Engine.SweepPlannedAtMsForTests == now + 1000, () => $"planned {h.Engine.SweepPlannedAtMsForTests}");

        var r = await h.Engine.ChangeInvisibleDurationAsync("g", "t", first.ReceiptHandle, TimeSpan.FromMilliseconds(400));
        Assert.True(r.Error.IsOk, r.Error.ToString());
        Assert.NotEqual(now + 1000, h.Engine.SweepPlannedAtMsForTests);
        await Conditions.WaitUntil(() => h.Engine.SweepPlannedAtMsForTests == now + 400, () => $"planned {h.Engine.SweepPlannedAtMsForTests}");

        h.Clock.Advance(TimeSpan.FromMilliseconds(400));
        var again = Assert.Single(await h.ReceiveWhenVisibleAsync("g", "t"));
        Assert.Equal("m", again.Text());
        Assert.Equal(2, again.DeliveryAttempt);
    }
}
