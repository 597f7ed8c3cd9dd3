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

    /// <summary>
    /// A receive whose call is cancelled while it reads the bodies it has leased still returns them, so its caller (the
    /// gRPC handler, whose write then fails) releases them; a call cancelled before the pick leases nothing. Until
    /// 2026-12-05 the read gave up with the call and nobody released the leases: hidden for the whole invisible
    /// duration, and renewed all along for a push consumer that never got them (found by review).
    /// </summary>
    [Fact]
    public async Task A_receive_cancelled_while_reading_what_it_leased_returns_it_and_one_cancelled_before_leases_nothing()
    {
        FaultInjectionDevice? device = null;
        await using var h = await EngineHarness.StartAsync(o => o with { WrapLogDevice = d => device = new FaultInjectionDevice(d) });
        Assert.True((await h.Engine.SendAsync(h.Draft("t", "m"))).IsOk);
        ReceiveRequest Request(string client) => new()
        {
            ConsumerGroup = "g", Topic = "t", BatchSize = 1, InvisibleDuration = TimeSpan.FromMinutes(10), ClientId = client, AutoRenew = true,
        };

        using (var gone = new CancellationTokenSource())
        {
            gone.Cancel();
            await Assert.ThrowsAnyAsync<OperationCanceledException>(() => h.Engine.ReceiveAsync(Request("push-1"), gone.Token).AsTask());
        }

        var held = new TaskCompletionSource();
        device!.ReadsWaitFor = held.Task;
        using var cts = new CancellationTokenSource();
        var receive = h.Engine.ReceiveAsync(Request("push-2"), cts.Token).AsTask();
        await Conditions.WaitUntil(() => Volatile.Read(ref device.HeldReads) > 0, () => "the receive's body read never started");
        cts.Cancel();
        held.SetResult();
        var got = await receive.WaitAsync(TimeSpan.FromSeconds(60));
        Assert.Equal("m", System.Text.Encoding.UTF8.GetString(Assert.Single(got.Messages).Message.Body.Span));
        Assert.Equal(1, Assert.Single(got.Messages).DeliveryAttempt); // the first receive leased nothing
    }
}
