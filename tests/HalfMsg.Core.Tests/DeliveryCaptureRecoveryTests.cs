using HalfMsg.Broker.Core;
using HalfMsg.Broker.Core.Model;
using HalfMsg.Broker.Core.Storage;

namespace HalfMsg.Core.Tests;

/// <summary>Delivery work (FIFO, delayed, nack, DLQ, sweeps) throughout a checkpoint capture,
/// then a crash after it: the restart (that checkpoint + replay) must equal the live state.</summary>
public sealed class DeliveryCaptureRecoveryTests
{
    public static IEnumerable<object[]> Seeds => Enumerable.Range(1, 12).Select(i => new object[] { i });

    [Theory]
    [MemberData(nameof(Seeds))]
    public async Task Delivery_work_throughout_a_capture_recovers_to_the_live_state(int seed)
    {
        await using var h = await EngineHarness.StartAsync(o => o with { QueuesPerTopic = 2, MaxDeliveryAttempts = 2 });
        Assert.True((await h.Engine.SetGroupOrderAsync("g2", GroupOrder.Concurrent)).IsOk);
        Assert.True((await h.Engine.SetGroupOrderAsync("g3", GroupOrder.Orderly)).IsOk);
        string[] groups = ["g1", "g2", "g3"];
        var rnd = new Random(seed);
        var held = new List<(string Group, string Handle)>();
        int n = 0;
        async Task Op()
        {
            switch (rnd.Next(10))
            {
                case 0:
                case 1:
                {
                    string? mg = rnd.Next(2) == 0 ? "M" + rnd.Next(3) : null;
                    long? at = rnd.Next(4) == 0 ? h.Clock.GetUtcNow().ToUnixTimeMilliseconds() + rnd.Next(500, 5000) : null;
                    var r = await h.Engine.SendAsync(h.Draft("t", "m" + n++, group: mg, deliverAt: at));
                    Assert.True(r.Error.IsOk, r.Error.ToString());
                    break;
                }
                case 2:
                case 3:
                {
                    string g = groups[rnd.Next(3)];
                    var got = await h.Engine.ReceiveAsync(new ReceiveRequest { ConsumerGroup = g, Topic = "t", BatchSize = rnd.Next(1, 4), InvisibleDuration = TimeSpan.FromSeconds(rnd.Next(1, 6)) });
                    lock (held) foreach (var m in got.Messages) held.Add((g, m.ReceiptHandle));
                    break;
                }
                case 4:
                case 5:
                case 6:
                {
                    (string, string)? pick = null;
                    lock (held) if (held.Count > 0) { int i = rnd.Next(held.Count); pick = held[i]; held.RemoveAt(i); }
                    if (pick is not { } p) break;
                    int k = rnd.Next(4);
                    if (k <= 1) await h.Engine.AckAsync(p.Item1, "t", p.Item2);
                    else if (k == 2) await h.Engine.ChangeInvisibleDurationAsync(p.Item1, "t", p.Item2, TimeSpan.FromSeconds(rnd.Next(0, 3)));
                    else await h.Engine.ForwardToDeadLetterAsync(p.Item1, "t", p.Item2);
                    break;
                }
                default:
                    h.Clock.Advance(TimeSpan.FromMilliseconds(rnd.Next(0, 2500)));
                    h.Engine.RunSweep();
                    break;
            }
        }
        for (int i = 0; i < 100; i++) await Op();
        for (int round = 0; round < 6; round++)
        {
            var checkpointer = h.Engine.CheckpointerForTests;
            await h.Engine.CheckpointAsync();
            bool captured = false;
            int ops = 0;
            Task? running = null;
            checkpointer.BeforePartForTests = part =>
            {
                checkpointer.BeforePartForTests = null;
                running = Task.Run(async () =>
                {
                    while (!Volatile.Read(ref captured) || ops < 20) { ops++; await Op(); }
                });
                return Task.CompletedTask;
            };
            await h.Engine.CheckpointAsync();
            long ours = h.Engine.LastCheckpointAddress;
            Volatile.Write(ref captured, true);
            await running!;
            string live = h.Engine.DescribeState() + DeliveryRandomRecoveryTests.BusyOf(h.Engine);
            await h.Engine.DisposeAsync();
            foreach (var f in Directory.GetFiles(Path.Combine(h.DataDir, "checkpoints"), "checkpoint-*.bin").Where(f => CheckpointStoreNames.Covered(f) > ours)) File.Delete(f);
            await h.RestartAfterDeletedCheckpointAsync();
            Assert.Equal(ours, h.Engine.LastCheckpointAddress);
            States.AssertSame(live, h.Engine.DescribeState() + DeliveryRandomRecoveryTests.BusyOf(h.Engine), $"seed {seed}, round {round}, {ops} operations");
            lock (held) held.Clear(); // handles of the old run stay valid, but keep it simple
        }
    }
}
