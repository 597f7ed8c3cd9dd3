namespace HalfMsg.Reliability.Tests.Edge;

/// <summary>The soak's growth check: what it must see (growth) and what it must not (one slow sample at the end).</summary>
public sealed class StatsTests
{
    private static readonly List<double> Minutes = Enumerable.Range(0, 16).Select(i => i / 15.0).ToList();

    [Fact]
    public void The_robust_slope_sees_linear_growth_as_least_squares_does()
    {
        var growing = Minutes.Select((m, i) => 57 + 300 * m + (i % 3) * 4.0).ToList();
        Assert.InRange(Stats.RobustSlope(Minutes, growing), 280, 320);
        Assert.InRange(Stats.Slope(Minutes, growing), 280, 320);
    }

    [Fact]
    public void One_spike_in_the_last_sample_of_a_flat_series_is_not_growth()
    {
        // The shape CI-like runs produced for halves_pending: flat around 60-80, then 344 in the last sample.
        var flat = Minutes.Select((_, i) => 60.0 + (i * 7 % 20)).ToList();
        flat[^1] = 344;
        double mean = flat.Average();
        Assert.True(Stats.Slope(Minutes, flat) > mean, "least squares reads the spike as growth (why the soak uses Theil-Sen)");
        Assert.True(Math.Abs(Stats.RobustSlope(Minutes, flat)) < 30, $"Theil-Sen {Stats.RobustSlope(Minutes, flat):0.#}/min");
    }
}
