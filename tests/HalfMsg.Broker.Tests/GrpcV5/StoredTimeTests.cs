using HalfMsg.Broker.Core.Model;
using HalfMsg.Broker.FrontEnds.GrpcV5;

namespace HalfMsg.Broker.Tests.GrpcV5;

/// <summary>
/// Times read back from the log as v5 Timestamps. The front-ends refuse a born time outside years 1 to 9999 now, but a
/// log written before may hold any long, and one message must not break delivery or check-backs for its queue.
/// </summary>
public sealed class StoredTimeTests
{
    private static readonly long Max = DateTimeOffset.MaxValue.ToUnixTimeMilliseconds();
    private static readonly long Min = DateTimeOffset.MinValue.ToUnixTimeMilliseconds();

    public static TheoryData<long> Unshowable => new() { long.MaxValue, long.MinValue, 253_402_300_800_000, -62_135_596_800_001 };

    private static StoredMessage At(long ms) => new()
    {
        Topic = "t", MessageId = "01" + Guid.NewGuid().ToString("N").ToUpperInvariant(), Body = "b"u8.ToArray(), Kind = MessageKind.Delay,
        BornTimestampMs = ms, StoreTimestampMs = ms, DeliveryTimestampMs = ms,
    };

    [Theory]
    [MemberData(nameof(Unshowable))]
    public void A_stored_time_outside_years_1_to_9999_converts_to_the_nearest_end_of_the_range(long ms)
    {
        var sp = V5MessageConverter.ToMessage(At(ms)).SystemProperties;
        long expected = ms > 0 ? Max : Min;
        Assert.Equal(expected, sp.BornTimestamp.ToDateTimeOffset().ToUnixTimeMilliseconds());
        Assert.Equal(expected, sp.StoreTimestamp.ToDateTimeOffset().ToUnixTimeMilliseconds());
        Assert.Equal(expected, sp.DeliveryTimestamp.ToDateTimeOffset().ToUnixTimeMilliseconds());
    }

    [Theory]
    [MemberData(nameof(Unshowable))]
    public void A_check_back_for_a_half_born_at_an_unshowable_time_is_queued_not_thrown(long ms)
    {
        // The check-back pass calls this for the half at the front of the due index: a throw stopped every later check.
        var session = new TelemetrySession("c", maxQueuedBytes: 1024 * 1024);
        Assert.True(session.TrySendCheck(new CheckBackRequest { TransactionId = "tx", ProducerGroup = "g", HalfMessage = At(ms) }));
    }

    [Fact]
    public void The_range_a_send_may_use_is_exactly_what_a_DateTimeOffset_holds()
    {
        // The Remoting front-end refuses what IsShowable rejects; the readers clamp to the same ends.
        Assert.Equal(UnixTime.MinMs, Min);
        Assert.Equal(UnixTime.MaxMs, Max);
        Assert.True(UnixTime.IsShowable(Min) && UnixTime.IsShowable(Max) && UnixTime.IsShowable(0));
        Assert.False(UnixTime.IsShowable(Min - 1) || UnixTime.IsShowable(Max + 1));
        Assert.Equal(DateTimeOffset.FromUnixTimeMilliseconds(Max), UnixTime.ToDateTimeOffset(long.MaxValue));
        Assert.Equal(DateTimeOffset.FromUnixTimeMilliseconds(Min), UnixTime.ToDateTimeOffset(long.MinValue));
    }

    [Fact]
    public void Times_inside_the_range_are_kept_to_the_millisecond()
    {
        foreach (long ms in new[] { Min, -1L, 0L, 1_700_000_000_123L, Max })
            Assert.Equal(ms, V5MessageConverter.ToMessage(At(ms)).SystemProperties.BornTimestamp.ToDateTimeOffset().ToUnixTimeMilliseconds());
    }
}
