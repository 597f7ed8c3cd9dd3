namespace HalfMsg.Protocol.Grpc;

/// <summary>
/// The <c>grpc-timeout</c> header: <c>TimeoutValue TimeoutUnit</c>, where the value is 1 to 8 ASCII
/// digits and the unit is one of <c>H</c> (hours), <c>M</c> (minutes), <c>S</c> (seconds),
/// <c>m</c> (milliseconds), <c>u</c> (microseconds), <c>n</c> (nanoseconds).
/// </summary>
public static class GrpcTimeout
{
    private const int MaxDigits = 8;

    /// <summary>Parses a <c>grpc-timeout</c> value; returns false for anything not matching the grammar.</summary>
    public static bool TryParse(string? value, out TimeSpan timeout)
    {
        timeout = default;
        if (value is null || value.Length < 2 || value.Length > MaxDigits + 1)
        {
            return false;
        }

        long amount = 0;
        for (int i = 0; i < value.Length - 1; i++)
        {
            char c = value[i];
            if (c is < '0' or > '9')
            {
                return false; // also rejects signs and whitespace
            }

            amount = (amount * 10) + (c - '0');
        }

        // 99_999_999 hours still fits in TimeSpan (max ~ 256 million hours), so no overflow checks needed.
        timeout = value[^1] switch
        {
            'H' => TimeSpan.FromHours(amount),
            'M' => TimeSpan.FromMinutes(amount),
            'S' => TimeSpan.FromSeconds(amount),
            'm' => TimeSpan.FromMilliseconds(amount),
            'u' => TimeSpan.FromTicks(amount * 10),                    // 1 tick = 100 ns
            'n' => TimeSpan.FromTicks((amount + 99) / 100),            // round up so a tiny deadline is not 0
            _ => TimeSpan.MinValue,
        };
        if (timeout == TimeSpan.MinValue)
        {
            timeout = default;
            return false;
        }

        return true;
    }

    /// <summary>Formats <paramref name="timeout"/> as a <c>grpc-timeout</c> value (milliseconds, rounded up,
    /// falling back to coarser units if it would exceed 8 digits).</summary>
    public static string Format(TimeSpan timeout)
    {
        if (timeout <= TimeSpan.Zero)
        {
            return "1n"; // already expired: smallest representable deadline
        }

        long ms = (long)Math.Ceiling(timeout.TotalMilliseconds);
        if (ms <= 99_999_999)
        {
            return ms.ToString(System.Globalization.CultureInfo.InvariantCulture) + "m";
        }

        long s = (long)Math.Ceiling(timeout.TotalSeconds);
        if (s <= 99_999_999)
        {
            return s.ToString(System.Globalization.CultureInfo.InvariantCulture) + "S";
        }

        long h = Math.Min((long)Math.Ceiling(timeout.TotalHours), 99_999_999);
        return h.ToString(System.Globalization.CultureInfo.InvariantCulture) + "H";
    }
}
