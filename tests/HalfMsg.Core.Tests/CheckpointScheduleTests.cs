using HalfMsg.Broker.Core;
using HalfMsg.Broker.Core.Storage;

namespace HalfMsg.Core.Tests;

/// <summary>
/// The log is cut only below the newest checkpoint, so checkpoints must come often enough in bytes and time for the
/// retention limits to hold, not only every 200,000 records (with large messages or a slow trickle that was gigabytes
/// or days past the limits).
/// </summary>
public sealed class CheckpointScheduleTests
{
    private static readonly CoreOptions Limits = new()
    {
        CheckpointEveryRecords = 1_000, CheckpointEveryBytes = 1_000_000, RetentionBytes = 800_000, RetentionTime = TimeSpan.FromSeconds(80),
    };

    [Fact]
    public void A_checkpoint_is_due_by_records_by_an_eighth_of_either_limit_or_by_the_byte_setting_and_never_with_nothing_new()
    {
        Assert.False(CheckpointSchedule.IsDue(recordsSince: 0, bytesSince: long.MaxValue, msSince: long.MaxValue, Limits));
        Assert.False(CheckpointSchedule.IsDue(999, 99_999, 9_999, Limits));
        Assert.True(CheckpointSchedule.IsDue(1_000, 0, 0, Limits));
        // An eighth of the size limit (100,000) is below the byte setting, so it counts.
        Assert.True(CheckpointSchedule.IsDue(1, 100_000, 0, Limits));
        // An eighth of the age limit (10 s).
        Assert.True(CheckpointSchedule.IsDue(1, 0, 10_000, Limits));

        var bySetting = Limits with { RetentionBytes = 80_000_000, RetentionTime = TimeSpan.Zero };
        Assert.Equal(1_000_000, CheckpointSchedule.EveryBytes(bySetting));
        Assert.False(CheckpointSchedule.IsDue(1, 999_999, long.MaxValue, bySetting));
        Assert.True(CheckpointSchedule.IsDue(1, 1_000_000, 0, bySetting));

        var none = Limits with { CheckpointEveryBytes = 0, RetentionBytes = 0, RetentionTime = TimeSpan.Zero };
        Assert.Equal(0, CheckpointSchedule.EveryBytes(none));
        Assert.Equal(0, CheckpointSchedule.EveryMilliseconds(none));
        Assert.False(CheckpointSchedule.IsDue(999, long.MaxValue, long.MaxValue, none));
        Assert.Equal(100_000, CheckpointSchedule.EveryBytes(none with { RetentionBytes = 800_000 }));
    }

    [Fact]
    public async Task A_burst_of_large_messages_is_cut_to_the_size_limit_long_before_200000_records()
    {
        const long limit = 512 * 1024;
        await using var h = await EngineHarness.StartAsync(o => o with { RetentionBytes = limit, RetentionTime = TimeSpan.Zero });
        Assert.Equal(200_000, h.Options.CheckpointEveryRecords);
        string body = new('x', 16 * 1024);
        // 96 messages of 16 KiB (1.5 MiB, three times the limit) written between two passes of the checkpoint loop.
        for (int i = 0; i < 96; i++) await h.SendNormalAsync("big", body);
        long tail = h.Engine.LogTailAddress;
        Assert.True(tail - h.Engine.LogBeginAddress > 3 * limit - 64 * 1024);

        await h.Engine.RunCheckpointPassAsync(CancellationToken.None);

        // One pass: a checkpoint (an eighth of the limit was written since the last) and a cut at a record start
        // remembered on the way: an eighth deeper than the limit asks, give or take the eighth between two such starts.
        Assert.Equal(1, h.Engine.Metrics.RetentionCuts);
        long size = h.Engine.LogTailAddress - h.Engine.LogBeginAddress;
        Assert.InRange(size, limit * 7 / 8, limit + limit / 8);
        Assert.True(h.Engine.Metrics.MessagesExpired > 0);

        // Nothing written since: further passes neither checkpoint nor cut.
        long checkpoints = h.Engine.Metrics.CheckpointsDelta + h.Engine.Metrics.CheckpointsWhole;
        await h.Engine.RunCheckpointPassAsync(CancellationToken.None);
        Assert.Equal(checkpoints, h.Engine.Metrics.CheckpointsDelta + h.Engine.Metrics.CheckpointsWhole);
        Assert.Equal(1, h.Engine.Metrics.RetentionCuts);
    }

    [Fact]
    public async Task A_slow_trickle_is_cut_by_age_once_a_record_is_older_than_the_limit_and_not_before()
    {
        await using var h = await EngineHarness.StartAsync(o => o with { RetentionBytes = 0, RetentionTime = TimeSpan.FromSeconds(80) });
        await h.SendNormalAsync("slow", "first");
        long afterFirst = h.Engine.LogTailAddress;
        await h.Engine.RunCheckpointPassAsync(CancellationToken.None);
        Assert.Equal(0, h.Engine.Metrics.CheckpointsDelta + h.Engine.Metrics.CheckpointsWhole); // a few records, nothing due yet

        h.Clock.Advance(TimeSpan.FromSeconds(10)); // an eighth of the age limit
        await h.Engine.RunCheckpointPassAsync(CancellationToken.None);
        Assert.Equal(1, h.Engine.Metrics.CheckpointsDelta + h.Engine.Metrics.CheckpointsWhole);

        // The next eighth counts from that checkpoint, not from the start.
        await h.SendNormalAsync("slow", "second");
        h.Clock.Advance(TimeSpan.FromSeconds(5));
        await h.Engine.RunCheckpointPassAsync(CancellationToken.None);
        Assert.Equal(1, h.Engine.Metrics.CheckpointsDelta + h.Engine.Metrics.CheckpointsWhole);
        h.Clock.Advance(TimeSpan.FromSeconds(5));
        await h.Engine.RunCheckpointPassAsync(CancellationToken.None);
        Assert.Equal(2, h.Engine.Metrics.CheckpointsDelta + h.Engine.Metrics.CheckpointsWhole);

        h.Clock.Advance(TimeSpan.FromSeconds(59)); // 79 s after the first message: younger than the limit, kept
        await h.Engine.RunCheckpointPassAsync(CancellationToken.None);
        Assert.Equal(0, h.Engine.Metrics.RetentionCuts);

        h.Clock.Advance(TimeSpan.FromSeconds(2)); // 81 s after it, 71 s after the checkpoint that covers it
        await h.Engine.RunCheckpointPassAsync(CancellationToken.None);
        Assert.Equal(0, h.Engine.Metrics.RetentionCuts); // the newest place to cut (the checkpoint's tail) is 71 s old

        h.Clock.Advance(TimeSpan.FromSeconds(10));
        await h.Engine.RunCheckpointPassAsync(CancellationToken.None);
        Assert.Equal(1, h.Engine.Metrics.RetentionCuts);
        Assert.True(h.Engine.LogBeginAddress >= afterFirst, $"begin {h.Engine.LogBeginAddress}, first message ended at {afterFirst}");
        Assert.Equal(1, h.Engine.Metrics.MessagesExpired); // the first; the second (71 s old) is kept
    }

    [Fact]
    public async Task After_a_restart_the_loaded_checkpoint_is_a_place_to_cut_without_waiting_for_a_new_one()
    {
        await using var h = await EngineHarness.StartAsync(o => o with { RetentionBytes = 0, RetentionTime = TimeSpan.Zero });
        for (int i = 0; i < 5; i++) await h.SendNormalAsync("restarted", "m" + i);
        long tail = h.Engine.LogTailAddress;
        await h.RestartAsync(o => o with { RetentionTime = TimeSpan.FromHours(1) }); // a clean restart writes a checkpoint at the tail

        h.Clock.Advance(TimeSpan.FromHours(1) - TimeSpan.FromSeconds(1));
        await h.Engine.RunCheckpointPassAsync(CancellationToken.None);
        Assert.Equal(0, h.Engine.Metrics.RetentionCuts); // its age counts from the restart: not yet

        h.Clock.Advance(TimeSpan.FromSeconds(2));
        await h.Engine.RunCheckpointPassAsync(CancellationToken.None);
        Assert.Equal(1, h.Engine.Metrics.RetentionCuts);
        Assert.True(h.Engine.LogBeginAddress >= tail, $"begin {h.Engine.LogBeginAddress}, the five messages ended at {tail}");
    }
}
