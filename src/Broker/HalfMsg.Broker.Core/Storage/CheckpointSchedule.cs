using HalfMsg.Broker.Core.Retention;

namespace HalfMsg.Broker.Core.Storage;

/// <summary>
/// When the checkpoint loop writes a checkpoint. A checkpoint bounds replay at start, and it is also the only place a
/// retention cut may cut: the log is cut only below the newest checkpoint, at an address one covered. Counted in
/// records alone, checkpoints came 200,000 records apart whatever their size, so with large messages or a slow trickle
/// the retention limits could not hold (200,000 messages of 1 MiB is 200 GB before the first cut; at ten a second a
/// day passes). So a checkpoint is also due once the log has grown an eighth of the size limit (or
/// <see cref="CoreOptions.CheckpointEveryBytes"/>, if smaller) since the last one, and once an eighth of the age
/// limit has passed, whichever comes first; never while nothing new was written.
/// </summary>
internal static class CheckpointSchedule
{
    /// <summary>Whether a checkpoint is due, given what was written and how long ago since the last one.</summary>
    public static bool IsDue(long recordsSince, long bytesSince, long msSince, CoreOptions options)
    {
        if (recordsSince <= 0) return false; // nothing new to cover: an idle broker writes no checkpoints
        if (recordsSince >= options.CheckpointEveryRecords) return true;
        long everyBytes = EveryBytes(options);
        if (everyBytes > 0 && bytesSince >= everyBytes) return true;
        long everyMs = EveryMilliseconds(options);
        return everyMs > 0 && msSince >= everyMs;
    }

    /// <summary>Log bytes between checkpoints: the smaller of the setting and an eighth of the size limit (0 = none).</summary>
    public static long EveryBytes(CoreOptions options)
    {
        long bySize = options.RetentionBytes > 0 ? Math.Max(1, options.RetentionBytes / RetentionPlanner.SizeCutStep) : 0;
        long bySetting = options.CheckpointEveryBytes;
        if (bySize <= 0) return Math.Max(0, bySetting);
        return bySetting > 0 ? Math.Min(bySetting, bySize) : bySize;
    }

    /// <summary>Milliseconds between checkpoints while anything is written: an eighth of the age limit (0 = none).</summary>
    public static long EveryMilliseconds(CoreOptions options)
        => options.RetentionTime > TimeSpan.Zero ? Math.Max(1, (long)options.RetentionTime.TotalMilliseconds / RetentionPlanner.SizeCutStep) : 0;
}
