using System.Reflection;
using HalfMsg.Broker.Core;
using HalfMsg.Broker.Core.Model;

namespace HalfMsg.Core.Tests;

/// <summary>Random delivery work, then live state against checkpoint restart and log-only replay.</summary>
public class DeliveryRandomRecoveryTests
{
    internal static string BusyOf(BrokerEngine e) => Busy(e);

    private static string Busy(BrokerEngine e)
    {
        var groupsField = typeof(BrokerEngine).GetField("_groups", BindingFlags.NonPublic | BindingFlags.Instance)!;
        dynamic groups = groupsField.GetValue(e)!;
        var lines = new List<string>();
        foreach (var g in (System.Collections.IEnumerable)groups.Values)
        {
            var t = g.GetType();
            string name = (string)t.GetField("Group")!.GetValue(g)!;
            var busy = (Dictionary<string, int>)t.GetField("BusyMessageGroups")!.GetValue(g)!;
            foreach (var (k, v) in busy) lines.Add($"busy {name} {k}={v}");
        }
        lines.Sort(StringComparer.Ordinal);
        return string.Join("\n", lines);
    }

    public static IEnumerable<object[]> Seeds => Enumerable.Range(1, 40).Select(i => new object[] { i });

    [Theory]
    [MemberData(nameof(Seeds))]
    public async Task Random_delivery_work_recovers_to_the_live_state(int seed)
    {
        await using var h = await EngineHarness.StartAsync(o => o with { MaxDeliveryAttempts = 3 });
        var rnd = new Random(seed);
        Assert.True((await h.Engine.SetGroupOrderAsync("g2", GroupOrder.Concurrent)).IsOk);
        Assert.True((await h.Engine.SetGroupOrderAsync("g3", GroupOrder.Orderly)).IsOk);
        string[] groups = ["g1", "g2", "g3"];
        var held = new List<(string Group, string Handle)>();
        for (int step = 0; step < 400; step++)
        {
            int op = rnd.Next(100);
            if (op < 30)
            {
                string? mg = rnd.Next(3) == 0 ? "M" + rnd.Next(3) : null;
                long? at = rnd.Next(5) == 0 ? h.Clock.GetUtcNow().ToUnixTimeMilliseconds() + rnd.Next(1000, 20000) : null;
                var d = h.Draft("t", "m" + step, tag: "T" + rnd.Next(2), group: mg, deliverAt: at);
                var r = await h.Engine.SendAsync(d);
                Assert.True(r.Error.IsOk, r.Error.ToString());
            }
            else if (op < 55)
            {
                string g = groups[rnd.Next(3)];
                string client = "c" + rnd.Next(3);
                h.Engine.Consumers.Seen(g, client, "grpc");
                var got = await h.Engine.ReceiveAsync(new ReceiveRequest
                {
                    ConsumerGroup = g, Topic = "t", BatchSize = rnd.Next(1, 5), InvisibleDuration = TimeSpan.FromSeconds(rnd.Next(2, 30)),
                    ClientId = client, AutoRenew = rnd.Next(3) == 0,
                });
                foreach (var m in got.Messages) held.Add((g, m.ReceiptHandle));
            }
            else if (op < 75 && held.Count > 0)
            {
                int i = rnd.Next(held.Count);
                var (g, hd) = held[i];
                held.RemoveAt(i);
                int kind = rnd.Next(4);
                if (kind == 0) await h.Engine.AckAsync(g, "t", hd);
                else if (kind == 1)
                {
                    var c = await h.Engine.ChangeInvisibleDurationAsync(g, "t", hd, TimeSpan.FromSeconds(rnd.Next(0, 10)));
                    if (c.Error.IsOk && c.ReceiptHandle is { } nh) held.Add((g, nh));
                }
                else if (kind == 2) await h.Engine.ForwardToDeadLetterAsync(g, "t", hd);
                else await h.Engine.AckAsync(g, "t", hd);
            }
            else if (op < 95)
            {
                h.Clock.Advance(TimeSpan.FromMilliseconds(rnd.Next(0, 8000)));
                h.Engine.RunSweep();
            }
            else if (op < 97) h.Engine.ClientLeft(groups[rnd.Next(3)], "c" + rnd.Next(3));
            else await h.Engine.CheckpointAsync();
        }
        // Let the released delayed messages' records be durable before the state is taken.
        await h.Engine.CheckpointAsync();
        string live = h.Engine.DescribeState() + Busy(h.Engine);
        await h.RestartAsync();
        States.AssertSame(live, h.Engine.DescribeState() + Busy(h.Engine), $"seed {seed}: clean restart");
        await h.Engine.DisposeAsync();
        Directory.Delete(Path.Combine(h.DataDir, "checkpoints"), recursive: true);
        await h.RestartAfterDeletedCheckpointAsync();
        States.AssertSame(live, h.Engine.DescribeState() + Busy(h.Engine), $"seed {seed}: log-only replay");
    }
}
