using HalfMsg.Broker.Core;
using HalfMsg.Broker.Core.Model;

namespace HalfMsg.Core.Tests;

/// <summary>
/// A delayed message enters its queue at its release, which can be later than its due time (a sweep that runs late, a
/// backlog, or a broker that was down at the due time). Until 2026-12-07 the search by time took the due time as the
/// time it entered (its release record had no time), out of order with the queue, and skipped messages.
/// </summary>
public sealed class SearchByTimeDelayReleaseTests
{
    private static MessageDraft OnQueue0(EngineHarness h, string body, long? deliverAt = null) => SearchByTimeTests.OnQueue0(h, body, deliverAt);

    [Fact]
    public async Task The_search_does_not_skip_a_message_stored_before_a_late_release_of_a_delayed_message()
    {
        await using var h = await EngineHarness.StartAsync(o => o with { QueuesPerTopic = 1 });
        var (At, To) = TestSeconds.From(h);

        Assert.True((await h.Engine.SendAsync(OnQueue0(h, "m0"))).IsOk);                             // offset 0 at t0
        Assert.True((await h.Engine.SendAsync(OnQueue0(h, "delayed", deliverAt: At(25)))).IsOk);    // due t0+25
        To(11);
        Assert.True((await h.Engine.SendAsync(OnQueue0(h, "m1"))).IsOk);                             // offset 1 at t0+11
        To(30);
        Assert.True((await h.Engine.SendAsync(OnQueue0(h, "m2"))).IsOk);                             // offset 2 at t0+30 (the release is late)
        To(40);
        h.Engine.RunSweep();                                                                          // offset 3, entered at t0+40
        To(50);
        Assert.True((await h.Engine.SendAsync(OnQueue0(h, "m3"))).IsOk);                             // offset 4 at t0+50
        To(60);
        Assert.True((await h.Engine.SendAsync(OnQueue0(h, "m4"))).IsOk);                             // offset 5 at t0+60
        To(70);
        Assert.True((await h.Engine.SendAsync(OnQueue0(h, "m5"))).IsOk);                             // offset 6 at t0+70

        async Task SearchesAsync()
        {
            // A consumer starting from t0+28 gets m2 (entered t0+30) and the delayed message (entered t0+40).
            Assert.Equal(2, await h.Engine.SearchOffsetAsync("events", 0, At(28)));
            Assert.Equal(3, await h.Engine.SearchOffsetAsync("events", 0, At(35)));   // the release at t0+40, not its due time t0+25
            Assert.Equal(4, await h.Engine.SearchOffsetAsync("events", 0, At(45)));
        }
        await SearchByTimeRedriveTests.CheckAcrossRestartsAsync(h, SearchesAsync);
    }

    [Fact]
    public async Task The_search_finds_a_delayed_message_released_after_a_downtime_by_its_release()
    {
        await using var h = await EngineHarness.StartAsync(o => o with { QueuesPerTopic = 1 });
        var (At, To) = TestSeconds.From(h);

        Assert.True((await h.Engine.SendAsync(OnQueue0(h, "m0"))).IsOk);                             // offset 0 at t0
        Assert.True((await h.Engine.SendAsync(OnQueue0(h, "delayed", deliverAt: At(25)))).IsOk);    // due t0+25
        To(40);  // nothing swept until t0+40 (a broker that was down from t0+1 to t0+40)
        h.Engine.RunSweep();                                                                          // offset 1, entered at t0+40
        To(41);
        Assert.True((await h.Engine.SendAsync(OnQueue0(h, "m1"))).IsOk);                             // offset 2 at t0+41

        // Started from t0+30, a consumer gets the delayed message: it entered the queue at t0+40.
        async Task SearchesAsync() => Assert.Equal(1, await h.Engine.SearchOffsetAsync("events", 0, At(30)));
        await SearchByTimeRedriveTests.CheckAcrossRestartsAsync(h, SearchesAsync);
    }
}
