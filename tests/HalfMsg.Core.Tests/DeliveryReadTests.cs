using HalfMsg.Broker.Core;
using HalfMsg.Broker.Core.Model;
using HalfMsg.Broker.Core.Storage;

namespace HalfMsg.Core.Tests;

/// <summary>
/// FasterLog reads every record from the device, even one still in memory; without the record's size it reads the
/// entry header first and then the rest. A delivery knows the size from its queue entry, and a check-back from its
/// half, so each body read costs one device read.
/// </summary>
public sealed class DeliveryReadTests
{
    /// <summary>Sends the bodies to topic t, alternately as plain messages and as committed halves.</summary>
    private static async Task<List<string>> SendAlternatelyAsync(EngineHarness h, IEnumerable<string> bodies)
    {
        var sent = new List<string>();
        foreach (string body in bodies)
        {
            if (sent.Count % 2 == 0)
            {
                Assert.True((await h.Engine.SendAsync(h.Draft("t", body))).IsOk);
            }
            else
            {
                string tx = await h.SendHalfAsync("t", body);
                Assert.True((await h.Engine.EndTransactionAsync(tx, null, TransactionResolution.Commit, DecisionSource.Client)).IsOk);
            }
            sent.Add(body);
        }
        return sent;
    }

    [Fact]
    public async Task Each_delivered_body_is_one_device_read_and_matches_what_was_sent()
    {
        FaultInjectionDevice? device = null;
        await using var h = await EngineHarness.StartAsync(o => o with { WrapLogDevice = d => device = new FaultInjectionDevice(d) });
        // sizes on both sides of a 512-byte sector
        var sent = await SendAlternatelyAsync(h, Enumerable.Range(0, 24).Select(i => $"m{i}-" + new string('x', 700 + 37 * i)));

        int before = Volatile.Read(ref device!.Reads);
        var got = new List<string>();
        while (got.Count < sent.Count) got.AddRange((await h.ReceiveWhenVisibleAsync("g", "t", batch: 8)).Select(m => m.Text()));

        Assert.Equal(sent.Order(), got.Order());
        Assert.Equal(sent.Count, Volatile.Read(ref device.Reads) - before);
    }

    [Fact]
    public async Task A_delivered_body_is_a_view_of_the_record_read_back_not_a_second_copy()
    {
        await using var h = await EngineHarness.StartAsync();
        var sent = await SendAlternatelyAsync(h, Enumerable.Range(0, 6).Select(i => $"v{i}-" + new string('z', 300 + 211 * i)));

        var got = new List<DeliveredMessage>();
        while (got.Count < sent.Count) got.AddRange(await h.ReceiveWhenVisibleAsync("g", "t"));

        Assert.Equal(sent.Order(), got.Select(m => m.Text()).Order());
        Assert.All(got, m =>
        {
            // The record read back holds the header, ids and properties before the body: the body starts inside it.
            Assert.True(System.Runtime.InteropServices.MemoryMarshal.TryGetArray(m.Message.Body, out var segment));
            Assert.True(segment.Offset > 0, "the body was copied out of its record");
            Assert.True(segment.Array!.Length > segment.Count);
        });
    }

    [Fact]
    public void A_body_outside_the_given_record_is_copied()
    {
        byte[] record = [1, 2, 3, 4, 5, 6, 7, 8];
        var inside = BrokerEngine.BodyOf(record.AsSpan(3, 4), record);
        Assert.True(System.Runtime.InteropServices.MemoryMarshal.TryGetArray(inside, out var segment));
        Assert.Same(record, segment.Array);
        Assert.Equal((3, 4), (segment.Offset, segment.Count));

        byte[] other = [9, 8, 7];
        foreach (var copy in new[] { BrokerEngine.BodyOf(other, record), BrokerEngine.BodyOf(other, null) })
        {
            Assert.True(System.Runtime.InteropServices.MemoryMarshal.TryGetArray(copy, out var c));
            Assert.NotSame(other, c.Array);
            Assert.Equal(other, copy.ToArray());
        }
    }

    [Fact]
    public async Task Each_check_back_reads_its_half_with_one_device_read()
    {
        FaultInjectionDevice? device = null;
        await using var h = await EngineHarness.StartAsync(o => o with { WrapLogDevice = d => device = new FaultInjectionDevice(d) });
        var p1 = new RecordingChannel("p1");
        using var reg = h.Engine.Producers.Register("orders", p1);
        for (int i = 0; i < 6; i++) await h.SendHalfAsync("orders", $"h{i}-" + new string('y', 900 + 50 * i));
        h.Clock.Advance(TimeSpan.FromSeconds(7));

        int before = Volatile.Read(ref device!.Reads);
        Assert.Equal(6, await h.Engine.RunCheckPassAsync());

        Assert.Equal(6, p1.Checks.Count);
        Assert.All(p1.Checks, c => Assert.StartsWith("h", System.Text.Encoding.UTF8.GetString(c.HalfMessage.Body.Span)));
        Assert.Equal(6, Volatile.Read(ref device.Reads) - before);
    }
}
