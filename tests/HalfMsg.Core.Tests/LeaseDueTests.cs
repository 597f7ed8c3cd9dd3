using HalfMsg.Broker.Core;
using HalfMsg.Broker.Core.Model;

namespace HalfMsg.Core.Tests;

/// <summary>
/// Review delivery #6: every ChangeInvisibleDuration entered the lease into the expiry heap again, and the superseded
/// entry stayed until its own due time, up to 12 hours: a consumer extending long jobs every few seconds made the heap
/// grow by one entry per extension, and the array never shrank.
/// </summary>
public sealed class LeaseDueTests
{
    [Fact]
    public async Task Extending_leases_over_and_over_keeps_the_expiry_heap_bounded_and_every_lease_still_ends_when_it_should()
    {
        await using var h = await EngineHarness.StartAsync();
        const int messages = 32, rounds = 300;
        for (int i = 0; i < messages; i++) await h.SendNormalAsync("events", $"job {i}");
        var got = await h.ReceiveAsync("g", "events", batch: messages);
        Assert.Equal(messages, got.Count);

        int most = 0;
        var handles = got.Select(m => m.ReceiptHandle).ToArray();
        for (int round = 0; round < rounds; round++)
        {
            // The last round gives message 0 a short lease: it must still end on time however often the heap was compacted.
            var changes = handles.Select((handle, i) => h.Engine.ChangeInvisibleDurationAsync("g", "events", handle,
                round == rounds - 1 && i == 0 ? TimeSpan.FromSeconds(5) : TimeSpan.FromHours(12)).AsTask()).ToArray();
            var results = await Task.WhenAll(changes);
            for (int i = 0; i < messages; i++)
            {
                Assert.True(results[i].Error.IsOk, results[i].Error.ToString());
                handles[i] = results[i].ReceiptHandle!;
            }
            most = (int)Math.Max(most, h.Engine.IndexSizes()["lease_due_heap"]);
        }

        // 9,600 extensions of 32 leases: the heap holds at most twice the live leases plus a fixed slack, not one entry each.
        Assert.InRange(most, messages, 2 * messages + 4096 + 1);

        h.Clock.Advance(TimeSpan.FromSeconds(6));
        h.Engine.RunSweep();
        var again = await h.ReceiveAsync("g", "events", batch: messages);
        Assert.Equal(["job 0"], again.Select(m => System.Text.Encoding.UTF8.GetString(m.Message.Body.Span)));
        Assert.Equal(2, again[0].DeliveryAttempt);

        h.Clock.Advance(TimeSpan.FromHours(12));
        h.Engine.RunSweep();
        var late = await h.ReceiveAsync("g", "events", batch: 64);
        Assert.Equal(messages, late.Count);                            // every 12-hour lease ended (message 0's second lease too)
    }
}
