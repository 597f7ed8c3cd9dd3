namespace HalfMsg.Reliability.Tests;

/// <summary>
/// Issue 13's tests. Long runs (the full crash loop, the 1-hour soak, long fuzz runs) are opt-in with
/// <c>HALFMSG_SLOW_TESTS=1</c>; without it each test runs its short CI version.
/// </summary>
internal static class ReliabilityConventions
{
    public static bool SlowTestsEnabled => Environment.GetEnvironmentVariable("HALFMSG_SLOW_TESTS") == "1";
}
