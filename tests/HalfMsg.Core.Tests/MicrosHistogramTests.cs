using HalfMsg.Broker.Core.Diagnostics;

namespace HalfMsg.Core.Tests;

public sealed class MicrosHistogramTests
{
    [Fact]
    public void Counts_and_the_longest_between_two_snapshots_name_only_what_was_recorded_between_them()
    {
        var holds = new MicrosHistogram();
        holds.Record(50_000);                       // before the first look: not counted between the looks
        var before = holds.Snapshot();
        holds.Record(0);                            // bucket 0
        holds.Record(700);                          // [512, 1024) µs: bucket 10
        holds.Record(1_023);                        // bucket 10
        holds.Record(1_024);                        // [1024, 2048) µs: bucket 11
        var after = holds.Snapshot();

        Assert.Equal(4, MicrosHistogram.Count(before, after));
        Assert.Equal(2.048, MicrosHistogram.Percentile(before, after, 1.0));   // the longest: below 2,048 µs
        Assert.Equal(1.024, MicrosHistogram.Percentile(before, after, 0.75));
        Assert.Equal(0.001, MicrosHistogram.Percentile(before, after, 0.25));
        Assert.Equal(0, MicrosHistogram.Count(after, holds.Snapshot()));
        Assert.Null(MicrosHistogram.Percentile(after, holds.Snapshot(), 1.0));
        Assert.Equal(65.536, MicrosHistogram.Percentile(new long[MicrosHistogram.Buckets], after, 1.0));   // from start: the 50 ms one

        Assert.Equal(0, MicrosHistogram.BucketOf(-5));
        Assert.Equal(1, MicrosHistogram.BucketOf(1));
        Assert.Equal(MicrosHistogram.Buckets - 1, MicrosHistogram.BucketOf(long.MaxValue));
        var named = holds.Named();
        Assert.Equal(MicrosHistogram.Buckets, named.Count);
        Assert.Equal(2, named["b10"]);
        Assert.Equal(1, named["b16"]);
    }
}
