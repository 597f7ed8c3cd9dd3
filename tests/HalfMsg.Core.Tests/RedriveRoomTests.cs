using HalfMsg.Broker.Core;

namespace HalfMsg.Core.Tests;

/// <summary>
/// A re-drive releases the leases of the dead letters it left (at most 256 per hold of the engine lock) and waits for
/// room in the log before each hold, outside the lock, as a send and the sweeper loop do: otherwise releasing many
/// leases on a log whose commits fell behind could fill its buffer, and an append would then wait for a page write
/// under the lock, holding every writer. That wait had no test of its own until late on 2026-12-06 ("Not done yet").
/// </summary>
public sealed class RedriveRoomTests
{
    [Fact]
    public async Task A_redrive_waits_for_room_in_the_log_before_each_hold_that_releases_the_leases_it_left()
    {
        const int letters = BrokerEngine.MaxEntriesPerLockHold + 44; // two holds to release them
        await using var h = await EngineHarness.StartAsync(o => o with { MaxDeliveryAttempts = 1, AutoCreateTopics = true, QueuesPerTopic = 1 });
        for (int i = 0; i < letters; i++) Assert.True((await h.Engine.SendAsync(h.Draft("t1", "m" + i))).IsOk);
        int received = 0;
        while (received < letters) received += (await h.ReceiveAsync("A", "t1", batch: 100, invisible: TimeSpan.FromSeconds(1))).Count;
        h.Clock.Advance(TimeSpan.FromSeconds(2));
        h.Engine.RunSweep();
        int dead = 0;
        while (dead < letters) dead += (await h.ReceiveWhenVisibleAsync("ops", "%DLQ%A", batch: 100)).Count;
        // The letters' topic is gone and cannot be made again: the re-drive leaves every one of them.
        Assert.True((await h.Engine.DeleteTopicAsync("t1")).IsOk);
        await h.RestartAsync(o => o with { AutoCreateTopics = false });

        var log = h.Engine.LogForTests;
        using var commits = new ManualResetEventSlim(false);
        // From here on no commit completes until the test lets it: what the re-drive appends stays in the buffer.
        log.BeforeCommitForTests = () => commits.Wait(TimeSpan.FromSeconds(60));
        long tailAfterFirstHold = -1, roomWaitsAtFirstHold = -1;
        h.Engine.BetweenLockHoldsForTests = () =>
        {
            if (tailAfterFirstHold >= 0) return;
            // After the first hold released 256 leases, uncommitted: with no room, the next hold must wait for a commit.
            tailAfterFirstHold = log.TailAddress;
            roomWaitsAtFirstHold = log.RoomWaitsForTests;
            log.RoomBytesForTests = 0;
        };
        var redrive = h.Engine.RedriveDeadLettersAsync("A", null, 1000).AsTask();
        try
        {
            await Conditions.WaitUntil(() => roomWaitsAtFirstHold >= 0 && log.RoomWaitsForTests > roomWaitsAtFirstHold || redrive.IsCompleted,
                () => $"first hold ended: {tailAfterFirstHold >= 0}, room waits {log.RoomWaitsForTests}");
            Assert.False(redrive.IsCompleted, "the re-drive ended while no commit could complete");
            Assert.Equal(tailAfterFirstHold, log.TailAddress); // the second hold has not appended: it waits for room
        }
        finally
        {
            log.RoomBytesForTests = null;
            log.BeforeCommitForTests = null;
            commits.Set();
        }
        h.Engine.BetweenLockHoldsForTests = null;
        var first = await redrive;
        Assert.True(first.Error.IsOk, first.Error.ToString());
        Assert.Equal((0, letters), (first.Redriven, first.NotRedriven));

        // Every lease was released once the commits went on: the next re-drive is offered all the letters again at once.
        var second = await h.Engine.RedriveDeadLettersAsync("A", null, 1000);
        Assert.True(second.Error.IsOk, second.Error.ToString());
        Assert.Equal((0, letters), (second.Redriven, second.NotRedriven));
    }
}
