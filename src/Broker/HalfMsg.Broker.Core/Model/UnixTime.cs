namespace HalfMsg.Broker.Core.Model;

/// <summary>
/// Unix-millisecond times as messages carry them. A born time is the producer's clock, stored as sent; readers show it
/// as a <see cref="DateTimeOffset"/> or a protobuf Timestamp, and both hold only years 1 to 9999
/// (<see cref="DateTimeOffset.FromUnixTimeMilliseconds"/> throws outside them). The front-ends refuse a time outside
/// that range; a log written before they did may still hold one, so readers go through <see cref="ToDateTimeOffset"/>.
/// </summary>
public static class UnixTime
{
    /// <summary>0001-01-01T00:00:00Z, the first millisecond a DateTimeOffset (and a protobuf Timestamp) holds.</summary>
    public const long MinMs = -62_135_596_800_000;

    /// <summary>9999-12-31T23:59:59.999Z, the last one.</summary>
    public const long MaxMs = 253_402_300_799_999;

    public static bool IsShowable(long unixMs) => unixMs is >= MinMs and <= MaxMs;

    /// <summary>Never throws: a time outside years 1 to 9999 is shown as the nearest end of the range.</summary>
    public static DateTimeOffset ToDateTimeOffset(long unixMs) => DateTimeOffset.FromUnixTimeMilliseconds(Math.Clamp(unixMs, MinMs, MaxMs));
}
