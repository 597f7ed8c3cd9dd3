using System.Collections.Concurrent;
using HalfMsg.Broker.Core;
using HalfMsg.Broker.Core.Delivery;
using HalfMsg.Broker.Core.Model;
using HalfMsg.Broker.Core.Storage;

namespace HalfMsg.Core.Tests;

/// <summary>
/// Long-polling receives of a consumer group wait in one line, and something new wakes one of them, not all; a wake is
/// passed on, never lost (issue 10: with many consumers, every group commit woke every one of them).
/// The harness's clock is fake, so a long poll never times out by itself: a receive that is not woken stays parked, and
/// a real-time token bounds every wait.
/// </summary>
public class ReceiveWakeTests
{
    private static readonly TimeSpan Bound = TimeSpan.FromSeconds(30);

    [Fact]
    public void The_line_wakes_in_parking_order_and_a_woken_receive_is_out_of_it()
    {
        var line = new ReceiveWaiters();
        var a = line.Park();
        var b = line.Park();
        var c = line.Park();
        line.WakeOne();
        Assert.True(a.IsWoken);
        Assert.False(b.IsWoken);
        Assert.False(line.Leave(a));            // the wake took it out: it holds a wake
        Assert.True(line.Leave(b));             // never woken: leaves quietly
        Assert.False(b.IsWoken);
        Assert.Equal(1, line.Count);
        line.WakeAll();
        Assert.True(c.IsWoken);
        Assert.Equal(0, line.Count);
        line.WakeOne();                          // nobody parked: nothing happens
    }

    [Fact]
    public async Task A_commit_wakes_one_parked_receive_of_each_group_and_the_others_do_not_look()
    {
        await using var h = await EngineHarness.StartAsync();
        using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(60));
        var g1 = Enumerable.Range(0, 8).Select(_ => Receive(h, "g1", "t", 32, cts.Token)).ToList();
        var g2 = Enumerable.Range(0, 2).Select(_ => Receive(h, "g2", "t", 32, cts.Token)).ToList();
        await Conditions.WaitUntil(() => h.Engine.ParkedReceivesForTests("g1", "t") == 8 && h.Engine.ParkedReceivesForTests("g2", "t") == 2);
        Assert.Equal(10, Looks(h));

        await h.Engine.SendAsync(h.Draft("t", "m1"));
        var first1 = await Task.WhenAny(g1).WaitAsync(Bound);
        var first2 = await Task.WhenAny(g2).WaitAsync(Bound);
        Assert.Equal("m1", Assert.Single((await first1).Messages).Text());
        Assert.Equal("m1", Assert.Single((await first2).Messages).Text());
        // One look per group for the commit: the woken receive's. Before, all ten looked and eight found nothing.
        Assert.Equal(12, Looks(h));
        Assert.Equal(7, h.Engine.ParkedReceivesForTests("g1", "t"));
        Assert.Equal(1, h.Engine.ParkedReceivesForTests("g2", "t"));

        // The next commit: again one look per group, by a receive that waited (the first in line), not a new one.
        g1.Remove(first1);
        g2.Remove(first2);
        await h.Engine.SendAsync(h.Draft("t", "m2"));
        Assert.Equal("m2", Assert.Single((await await Task.WhenAny(g1).WaitAsync(Bound)).Messages).Text());
        Assert.Equal("m2", Assert.Single((await await Task.WhenAny(g2).WaitAsync(Bound)).Messages).Text());
        Assert.Equal(14, Looks(h));
        Assert.Equal(6, h.Engine.ParkedReceivesForTests("g1", "t"));
        Assert.Equal(0, h.Engine.ParkedReceivesForTests("g2", "t"));
        cts.Cancel();
    }

    [Fact]
    public async Task A_burst_larger_than_a_batch_reaches_every_parked_receive()
    {
        await using var h = await EngineHarness.StartAsync();
        using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(60));
        var receives = Enumerable.Range(0, 4).Select(_ => Receive(h, "g", "t", 5, cts.Token)).ToList();
        await Conditions.WaitUntil(() => h.Engine.ParkedReceivesForTests("g", "t") == 4);

        // Twenty messages in one lock hold and (mostly) one commit: one wake, and each receive that fills its batch
        // wakes the next, until the burst is shared out.
        var sent = await h.Engine.SendBatchAsync(Enumerable.Range(0, 20).Select(i => h.Draft("t", $"m{i}")).ToList());
        Assert.All(sent, r => Assert.True(r.IsOk));
        var results = await Task.WhenAll(receives).WaitAsync(Bound);
        Assert.All(results, r => Assert.Equal(5, r.Messages.Count));
        Assert.Equal(Enumerable.Range(0, 20).Select(i => $"m{i}").Order(),
            results.SelectMany(r => r.Messages).Select(m => m.Text()).Order());
    }

    [Fact]
    public async Task An_ack_wakes_a_receive_only_when_it_releases_a_fifo_message_group()
    {
        await using var h = await EngineHarness.StartAsync();
        using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(60));
        await h.Engine.SendAsync(h.Draft("t", "plain"));
        await h.Engine.SendAsync(h.Draft("t", "a0", group: "order-A"));
        await h.Engine.SendAsync(h.Draft("t", "a1", group: "order-A"));
        var first = await h.ReceiveAsync("g", "t");
        Assert.Equal(new[] { "a0", "plain" }, first.Select(m => m.Text()).Order());

        var parked = Receive(h, "g", "t", 32, cts.Token);
        await Conditions.WaitUntil(() => h.Engine.ParkedReceivesForTests("g", "t") == 1);
        long looks = Looks(h);
        await h.Engine.AckAsync("g", "t", first.Single(m => m.Text() == "plain").ReceiptHandle);
        Assert.Equal(looks, Looks(h));            // an ack of a plain message makes nothing new receivable
        Assert.False(parked.IsCompleted);
        await h.Engine.AckAsync("g", "t", first.Single(m => m.Text() == "a0").ReceiptHandle);
        Assert.Equal("a1", Assert.Single((await parked.WaitAsync(Bound)).Messages).Text());
    }

    [Fact]
    public async Task Receives_that_are_cancelled_leave_the_line_and_take_no_wake_with_them()
    {
        await using var h = await EngineHarness.StartAsync();
        using var stay = new CancellationTokenSource(TimeSpan.FromSeconds(60));
        var cancelled = new List<Task<ReceiveResult>>();
        using var go = new CancellationTokenSource();
        for (int i = 0; i < 50; i++) cancelled.Add(Receive(h, "g", "t", 32, go.Token));
        var waiting = Receive(h, "g", "t", 32, stay.Token);
        await Conditions.WaitUntil(() => h.Engine.ParkedReceivesForTests("g", "t") == 51);
        go.Cancel();
        foreach (var t in cancelled) await Assert.ThrowsAnyAsync<OperationCanceledException>(() => t);
        await Conditions.WaitUntil(() => h.Engine.ParkedReceivesForTests("g", "t") == 1);   // no leak in the line

        await h.Engine.SendAsync(h.Draft("t", "m"));
        Assert.Equal("m", Assert.Single((await waiting.WaitAsync(Bound)).Messages).Text());
        Assert.Equal(0, h.Engine.ParkedReceivesForTests("g", "t"));
    }

    [Fact]
    public async Task A_receive_woken_while_it_reads_its_bodies_passes_the_wake_to_the_next()
    {
        FaultInjectionDevice? device = null;
        await using var h = await EngineHarness.StartAsync(o => o with { WrapLogDevice = d => device = new FaultInjectionDevice(d) });
        using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(60));
        var first = Receive(h, "g", "t", 5, cts.Token);
        await Conditions.WaitUntil(() => h.Engine.ParkedReceivesForTests("g", "t") == 1);

        // The first receive is woken by m1, parks again (first in line, alone), takes m1 and reads its body: held.
        var gate = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        device!.ReadsWaitFor = gate.Task;
        await h.Engine.SendAsync(h.Draft("t", "m1"));
        await Conditions.WaitUntil(() => Volatile.Read(ref device.HeldReads) == 1);
        // A second receive parks behind it and finds nothing (m1 is leased).
        var second = Receive(h, "g", "t", 5, cts.Token);
        await Conditions.WaitUntil(() => h.Engine.ParkedReceivesForTests("g", "t") == 2);
        // m2's wake goes to the first in line: the receive busy reading, which will leave with m1 without looking again.
        await h.Engine.SendAsync(h.Draft("t", "m2"));
        await Conditions.WaitUntil(() => h.Engine.ParkedReceivesForTests("g", "t") == 1);
        gate.SetResult();

        Assert.Equal("m1", Assert.Single((await first.WaitAsync(Bound)).Messages).Text());
        // It passed the wake on as it left: the second receive is woken and takes m2 (it would wait for an hour).
        Assert.Equal("m2", Assert.Single((await second.WaitAsync(Bound)).Messages).Text());
    }

    [Fact]
    public async Task Deleting_the_topic_or_the_group_wakes_every_parked_receive_of_it()
    {
        await using var h = await EngineHarness.StartAsync();
        using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(60));

        // The group deleted: its receives look again and park on the group's new state.
        var onU = Enumerable.Range(0, 3).Select(_ => Receive(h, "g", "u", 32, cts.Token)).ToList();
        await Conditions.WaitUntil(() => h.Engine.ParkedReceivesForTests("g", "u") == 3 && Looks(h) == 3);
        Assert.True((await h.Engine.DeleteGroupAsync("g")).IsOk);
        await Conditions.WaitUntil(() => Looks(h) == 6 && h.Engine.ParkedReceivesForTests("g", "u") == 3);
        Assert.All(onU, r => Assert.False(r.IsCompleted));

        // The topic deleted: its receives look again (and, topics being created on use here, park on the new one).
        var onT = Enumerable.Range(0, 3).Select(_ => Receive(h, "k", "t", 32, cts.Token)).ToList();
        await Conditions.WaitUntil(() => h.Engine.ParkedReceivesForTests("k", "t") == 3 && Looks(h) == 9);
        Assert.True((await h.Engine.DeleteTopicAsync("t")).IsOk);
        await Conditions.WaitUntil(() => Looks(h) == 12 && h.Engine.ParkedReceivesForTests("k", "t") == 3);
        await h.Engine.SendAsync(h.Draft("t", "after"));
        Assert.Equal("after", Assert.Single((await await Task.WhenAny(onT).WaitAsync(Bound)).Messages).Text());
        cts.Cancel();
    }

    /// <summary>
    /// Six consumers receive (batches of 1-3), ack and receive again while bursts of messages arrive; their polls time
    /// out every few milliseconds of real time and park again (the fake clock never ends them), so the line churns.
    /// After each burst every message must be delivered, each once. A guard for the whole under churn; consumers that
    /// come back look again, which hides a lost wake here, so each rule against one has its own test above.
    /// </summary>
    [Fact]
    public async Task No_wake_is_lost_while_receives_come_and_go_and_bursts_arrive()
    {
        await using var h = await EngineHarness.StartAsync();
        using var stop = new CancellationTokenSource();
        var delivered = new ConcurrentDictionary<string, int>();
        var errors = new ConcurrentQueue<Exception>();
        var consumers = Enumerable.Range(0, 6).Select(c => Task.Run(async () =>
        {
            var rnd = new Random(c);
            while (!stop.IsCancellationRequested)
            {
                try
                {
                    var r = await h.Engine.ReceiveAsync(new ReceiveRequest
                    {
                        ConsumerGroup = "g", Topic = "t", BatchSize = 1 + rnd.Next(3), InvisibleDuration = TimeSpan.FromSeconds(30),
                        LongPollTimeout = TimeSpan.FromMilliseconds(1 + rnd.Next(20)),
                    }, stop.Token);
                    foreach (var m in r.Messages)
                    {
                        delivered.AddOrUpdate(m.Text(), 1, (_, n) => n + 1);
                        var ack = await h.Engine.AckAsync("g", "t", m.ReceiptHandle);
                        if (!ack.IsOk) errors.Enqueue(new InvalidOperationException($"ack of {m.Text()}: {ack}"));
                    }
                }
                catch (OperationCanceledException) when (stop.IsCancellationRequested)
                {
                }
                catch (Exception ex)
                {
                    errors.Enqueue(ex);
                    return;
                }
            }
        })).ToList();

        var rng = new Random(42);
        int sent = 0;
        for (int burst = 0; burst < 60; burst++)
        {
            int n = 1 + rng.Next(12);
            var drafts = Enumerable.Range(0, n).Select(_ => h.Draft("t", $"m{sent++}")).ToList();
            if (rng.Next(2) == 0) await h.Engine.SendBatchAsync(drafts);
            else await Task.WhenAll(drafts.Select(d => h.Engine.SendAsync(d).AsTask()));
            int expected = sent;
            await Conditions.WaitUntil(() => delivered.Count == expected || !errors.IsEmpty,
                () => $"burst {burst}: {delivered.Count} of {expected} delivered, parked {h.Engine.ParkedReceivesForTests("g", "t")}");
            Assert.Empty(errors);
        }
        stop.Cancel();
        await Task.WhenAll(consumers).WaitAsync(Bound);
        Assert.Empty(errors);
        Assert.Equal(sent, delivered.Count);
        Assert.All(delivered, kv => Assert.Equal(1, kv.Value));   // each leased once (30 s invisibility, fake clock)
    }

    private static Task<ReceiveResult> Receive(EngineHarness h, string group, string topic, int batch, CancellationToken ct)
        => h.Engine.ReceiveAsync(new ReceiveRequest
        {
            ConsumerGroup = group, Topic = topic, BatchSize = batch, InvisibleDuration = TimeSpan.FromSeconds(30),
            LongPollTimeout = TimeSpan.FromHours(1),
        }, ct).AsTask();

    private static long Looks(EngineHarness h)
    {
        lock (h.Engine.GateForTests) return h.Engine.Metrics.ReceiveLooks;
    }
}
