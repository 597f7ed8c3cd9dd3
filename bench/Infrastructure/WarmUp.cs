using System.Diagnostics;

namespace HalfMsg.Bench.Infrastructure;

/// <summary>
/// The warm-up before a measured row: the row's whole flow runs unmeasured for at least <c>--warmup</c> seconds (and at
/// least its count-based minimum), then its warm-up messages drain, then the measured part starts.
/// </summary>
/// <remarks>
/// Every server row starts a fresh process (broker, Remoting broker, gRPC floor server, RabbitMQ). Under this load on
/// 2 cores a fresh broker JITs for its first 15-25 s (tier 0, then instrumented, then optimised code: up to 0.6 s of
/// JIT per second, measured with dotnet-counters) and its rate settles after 25-30 s, so a row of a few seconds
/// measured mostly the start: at 64 in flight, 3,146 tx/s and 0.357 broker ms/tx after 640 warm-up transactions
/// against 6,877 tx/s and 0.140 ms/tx after 60,000 (bench/results/2026-11-30-ab/warm-up.md). Each system gets the
/// same warm-up time, RabbitMQ included.
/// </remarks>
public readonly struct WarmUp
{
    private readonly long _started;
    private readonly long _deadline;

    private WarmUp(double seconds)
    {
        _started = Stopwatch.GetTimestamp();
        _deadline = _started + (long)(Math.Max(0, seconds) * Stopwatch.Frequency);
    }

    /// <summary>Starts a warm-up of at least <paramref name="seconds"/>.</summary>
    public static WarmUp Start(double seconds) => new(seconds);

    /// <summary>True while the warm-up's minimum time has not passed.</summary>
    public bool Running => Stopwatch.GetTimestamp() < _deadline;

    /// <summary>Seconds since the warm-up started.</summary>
    public double Elapsed => (Stopwatch.GetTimestamp() - _started) / (double)Stopwatch.Frequency;

    /// <summary>
    /// Waits (polling every 10 ms, at most 30 s) until every warm-up message sent has been delivered, and returns the
    /// row's note on its warm-up: how many in how long, and how many were still undelivered if it gave up.
    /// </summary>
    public async Task<string> DrainAsync(Func<long> sent, Func<long> delivered, CancellationToken ct, string unit = "transactions")
    {
        long until = Stopwatch.GetTimestamp() + 30 * Stopwatch.Frequency;
        while (delivered() < sent() && Stopwatch.GetTimestamp() < until) await Task.Delay(10, ct);
        long total = sent(), got = delivered();
        return Note(total, unit) + (got >= total ? "" : $"; only {got:N0} of them delivered within 30 s after");
    }

    /// <summary>The row's note on its warm-up.</summary>
    public string Note(long transactions, string unit = "transactions") =>
        $"warm-up (not measured): {transactions:N0} {unit} in {Elapsed:0.0} s";
}
