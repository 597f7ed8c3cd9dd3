using Google.Protobuf.WellKnownTypes;

namespace HalfMsg.Broker.FrontEnds.GrpcV5;

/// <summary>
/// Reads protobuf Timestamps and Durations from requests without throwing: the protobuf runtime's
/// <c>ToDateTimeOffset</c>/<c>ToTimeSpan</c> throw on values that are out of range or not normalized, which would
/// turn a client's bad field into grpc-status INTERNAL instead of a body status.
/// </summary>
internal static class V5Time
{
    // google/protobuf/timestamp.proto: 0001-01-01T00:00:00Z .. 9999-12-31T23:59:59.999999999Z.
    private const long MinTimestampSeconds = -62_135_596_800;
    private const long MaxTimestampSeconds = 253_402_300_799;

    // google/protobuf/duration.proto: ±10,000 years.
    private const long MaxDurationSeconds = 315_576_000_000;
    private const int MaxNanos = 999_999_999;

    /// <summary>Null stays null; false when the timestamp is not a valid protobuf Timestamp.</summary>
    public static bool TryToUnixMilliseconds(Timestamp? timestamp, out long? unixMs)
    {
        unixMs = null;
        if (timestamp is null)
        {
            return true;
        }

        if (timestamp.Seconds is < MinTimestampSeconds or > MaxTimestampSeconds || timestamp.Nanos is < 0 or > MaxNanos)
        {
            return false;
        }

        unixMs = timestamp.ToDateTimeOffset().ToUnixTimeMilliseconds();
        return true;
    }

    /// <summary>Null stays null; false when the duration is not a valid protobuf Duration.</summary>
    public static bool TryToTimeSpan(Duration? duration, out TimeSpan? value)
    {
        value = null;
        if (duration is null)
        {
            return true;
        }

        if (duration.Seconds is < -MaxDurationSeconds or > MaxDurationSeconds
            || duration.Nanos is < -MaxNanos or > MaxNanos
            || (duration.Seconds < 0 && duration.Nanos > 0)
            || (duration.Seconds > 0 && duration.Nanos < 0))
        {
            return false;
        }

        value = duration.ToTimeSpan();
        return true;
    }
}
