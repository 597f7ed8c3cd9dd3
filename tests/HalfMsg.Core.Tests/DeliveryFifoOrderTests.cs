using HalfMsg.Broker.Core;
using HalfMsg.Broker.Core.Model;

namespace HalfMsg.Core.Tests;

/// <summary>FIFO order property under random acks, nacks, expiries, dead letters and restarts.</summary>
public sealed class DeliveryFifoOrderTests
{
    public static IEnumerable<object[]> Seeds => Enumerable.Range(1, 15).Select(i => new object[] { i }); // 30 seeds took 34-38 s on the 2-core machine, 20 took 34 s

    [Theory]
    [MemberData(nameof(Seeds))]
    public async Task A_message_groups_message_is_delivered_only_after_every_earlier_one_is_finished(int seed)
    {
        await using var h = await EngineHarness.StartAsync(o => o with { QueuesPerTopic = 3, MaxDeliveryAttempts = 1000 });
        Assert.True((await h.Engine.SetGroupOrderAsync("go", GroupOrder.Orderly)).IsOk);
        string[] groups = ["gm", "go"]; // gm: not configured (message-group holds)
        var rnd = new Random(seed);
        var sent = new Dictionary<string, List<string>>();          // message group -> bodies in send order
        var groupOf = new Dictionary<string, string>();
        var finished = groups.ToDictionary(g => g, _ => new HashSet<string>());
        var held = new List<(string Group, string Body, string Handle)>();
        int n = 0;
        for (int step = 0; step < 500; step++)
        {
            int op = rnd.Next(100);
            if (op < 25)
            {
                string mg = "M" + rnd.Next(4);
                string body = "b" + n++;
                var r = await h.Engine.SendAsync(h.Draft("t", body, group: mg));
                Assert.True(r.Error.IsOk, r.Error.ToString());
                (sent.TryGetValue(mg, out var l) ? l : sent[mg] = []).Add(body);
                groupOf[body] = mg;
            }
            else if (op < 55)
            {
                string g = groups[rnd.Next(2)];
                var got = await h.Engine.ReceiveAsync(new ReceiveRequest { ConsumerGroup = g, Topic = "t", BatchSize = rnd.Next(1, 4), InvisibleDuration = TimeSpan.FromSeconds(rnd.Next(1, 10)) });
                foreach (var m in got.Messages)
                {
                    string body = m.Text();
                    var earlier = sent[groupOf[body]].TakeWhile(b => b != body).Where(b => !finished[g].Contains(b)).ToList();
                    Assert.True(earlier.Count == 0, $"seed {seed} step {step}: {g} got {body} (attempt {m.DeliveryAttempt}) of {groupOf[body]} before [{string.Join(",", earlier)}] were finished");
                    held.Add((g, body, m.ReceiptHandle));
                }
            }
            else if (op < 80 && held.Count > 0)
            {
                int i = rnd.Next(held.Count);
                var (g, body, hd) = held[i];
                held.RemoveAt(i);
                int k = rnd.Next(5);
                if (k <= 2) { if ((await h.Engine.AckAsync(g, "t", hd)).IsOk) finished[g].Add(body); }
                else if (k == 3) await h.Engine.ChangeInvisibleDurationAsync(g, "t", hd, TimeSpan.FromSeconds(rnd.Next(0, 3)));
                else if ((await h.Engine.ForwardToDeadLetterAsync(g, "t", hd)).IsOk) finished[g].Add(body);
            }
            else if (op < 97)
            {
                h.Clock.Advance(TimeSpan.FromMilliseconds(rnd.Next(0, 4000)));
                h.Engine.RunSweep();
            }
            else await h.RestartAsync();
        }
        // Drain: every message is eventually delivered and finished for both groups (nothing stuck for good).
        int total = sent.Values.Sum(l => l.Count);
        for (int i = 0; i < 300 && groups.Any(g => finished[g].Count < total); i++)
        {
            h.Clock.Advance(TimeSpan.FromSeconds(30));
            h.Engine.RunSweep();
            foreach (var g in groups)
                foreach (var m in (await h.Engine.ReceiveAsync(new ReceiveRequest { ConsumerGroup = g, Topic = "t", BatchSize = 32, InvisibleDuration = TimeSpan.FromSeconds(10) })).Messages)
                    if ((await h.Engine.AckAsync(g, "t", m.ReceiptHandle)).IsOk) finished[g].Add(m.Text());
        }
        foreach (var g in groups)
            Assert.True(finished[g].Count == total, $"seed {seed}: {g} finished {finished[g].Count} of {total}; stuck: {string.Join(",", sent.Values.SelectMany(l => l).Where(b => !finished[g].Contains(b)).Take(10))}");
    }
    [Theory]
    [InlineData(1, GroupOrder.NotConfigured)]
    [InlineData(2, GroupOrder.Orderly)]
    [InlineData(3, GroupOrder.Concurrent)]
    public async Task Attempts_are_bounded_and_every_failed_message_reaches_the_dlq_once(int seed, GroupOrder order)
    {
        await using var h = await EngineHarness.StartAsync(o => o with { QueuesPerTopic = 2, MaxDeliveryAttempts = 3 });
        Assert.True((await h.Engine.SetGroupOrderAsync("g", order)).IsOk);
        var rnd = new Random(seed);
        for (int i = 0; i < 30; i++)
            Assert.True((await h.Engine.SendAsync(h.Draft("t", "b" + i, group: rnd.Next(2) == 0 ? "M" + rnd.Next(3) : null))).Error.IsOk);
        for (int round = 0; round < 200; round++)
        {
            var got = await h.Engine.ReceiveAsync(new ReceiveRequest { ConsumerGroup = "g", Topic = "t", BatchSize = rnd.Next(1, 6), InvisibleDuration = TimeSpan.FromSeconds(5) });
            foreach (var m in got.Messages)
            {
                Assert.True(m.DeliveryAttempt <= 3, $"{m.Text()} delivered at attempt {m.DeliveryAttempt}");
                if (rnd.Next(2) == 0) await h.Engine.ChangeInvisibleDurationAsync("g", "t", m.ReceiptHandle, TimeSpan.Zero);
            }
            h.Clock.Advance(TimeSpan.FromSeconds(rnd.Next(0, 8)));
            h.Engine.RunSweep();
            if (rnd.Next(20) == 0) await h.RestartAsync();
        }
        h.Clock.Advance(TimeSpan.FromMinutes(5));
        h.Engine.RunSweep();
        var dlq = new List<string>();
        for (int i = 0; i < 20; i++)
            foreach (var m in (await h.Engine.ReceiveAsync(new ReceiveRequest { ConsumerGroup = "d", Topic = "%DLQ%g", BatchSize = 32, InvisibleDuration = TimeSpan.FromSeconds(60) })).Messages)
                dlq.Add(m.Text());
        Assert.Equal(Enumerable.Range(0, 30).Select(i => "b" + i).Order(), dlq.Order());
    }
}
