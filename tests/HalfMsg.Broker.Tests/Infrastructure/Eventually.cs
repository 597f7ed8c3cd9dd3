namespace HalfMsg.Broker.Tests.Infrastructure;

/// <summary>Waits for a condition by polling it, and fails the test with what it waited for once the time is up: tests
/// wait for conditions, never for fixed sleeps.</summary>
public static class Eventually
{
    public static Task TrueAsync(Func<bool> condition, string what, TimeSpan within) => TrueAsync(condition, () => what, within);

    /// <param name="what">Said when the time is up (read then, so it can report the state at that moment).</param>
    public static async Task TrueAsync(Func<bool> condition, Func<string> what, TimeSpan within)
    {
        var deadline = DateTime.UtcNow + within;
        while (!condition())
        {
            Assert.True(DateTime.UtcNow < deadline, $"timed out after {within.TotalSeconds} s waiting until {what()}");
            await Task.Delay(20);
        }
    }
}
