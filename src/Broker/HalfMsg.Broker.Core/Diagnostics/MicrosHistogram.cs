namespace HalfMsg.Broker.Core.Diagnostics;

/// <summary>
/// Durations counted into power-of-two buckets of microseconds, cumulative since start and safe to record from any
/// thread. A reader takes two <see cref="Snapshot"/>s and compares them (<see cref="Percentile"/>, <see cref="Count"/>),
/// so a benchmark row or an operator's poll sees what happened between its two looks.
/// </summary>
public sealed class MicrosHistogram
{
    /// <summary>Bucket 0 counts durations under 1 µs; bucket i (1..) counts [2^(i-1), 2^i) µs; the last one everything longer.</summary>
    public const int Buckets = 25;

    private readonly long[] _counts = new long[Buckets];

    /// <summary>The bucket a duration of <paramref name="micros"/> µs falls in.</summary>
    public static int BucketOf(long micros)
        => micros <= 0 ? 0 : Math.Min(Buckets - 1, 64 - System.Numerics.BitOperations.LeadingZeroCount((ulong)micros));

    public void Record(long micros) => Interlocked.Increment(ref _counts[BucketOf(micros)]);

    public void Record(TimeSpan duration) => Record((long)duration.TotalMicroseconds);

    /// <summary>The cumulative counts per bucket.</summary>
    public long[] Snapshot()
    {
        var copy = new long[Buckets];
        for (int i = 0; i < Buckets; i++) copy[i] = Interlocked.Read(ref _counts[i]);
        return copy;
    }

    /// <summary>The cumulative counts as <c>b0</c> … <c>b24</c> (for a JSON object).</summary>
    public Dictionary<string, long> Named()
    {
        var counts = Snapshot();
        var named = new Dictionary<string, long>(Buckets);
        for (int i = 0; i < Buckets; i++) named["b" + i.ToString(System.Globalization.CultureInfo.InvariantCulture)] = counts[i];
        return named;
    }

    /// <summary>How many durations were recorded between two snapshots.</summary>
    public static long Count(IReadOnlyList<long> before, IReadOnlyList<long> after)
    {
        long total = 0;
        for (int i = 0; i < Buckets; i++) total += after[i] - before[i];
        return total;
    }

    /// <summary>Upper bound of the bucket holding the <paramref name="p"/> quantile (0..1; 1 = the longest) of the durations
    /// recorded between two snapshots, in milliseconds; null when none was recorded.</summary>
    public static double? Percentile(IReadOnlyList<long> before, IReadOnlyList<long> after, double p)
    {
        long total = Count(before, after);
        if (total <= 0) return null;
        long rank = Math.Max(1, (long)Math.Ceiling(p * total)), seen = 0;
        for (int i = 0; i < Buckets; i++)
        {
            seen += after[i] - before[i];
            if (seen >= rank) return (1L << i) / 1000.0; // bucket i holds durations below 2^i µs
        }
        return (1L << (Buckets - 1)) / 1000.0;
    }
}
