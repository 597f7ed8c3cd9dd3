using HalfMsg.Broker.Core;
using HalfMsg.Broker.Core.Storage;

namespace HalfMsg.Core.Tests;

/// <summary>
/// A consumer group's delete and reset do not wait for a checkpoint capture (a topic delete does): replayed over a copy
/// that already holds later records' effects, they wipe the group whole, and every later group record rebuilds it from
/// the queue fronts, which nothing moves during a capture. DestructiveAdminDuringCaptureTests runs them at the capture's
/// hooks (before the halves, the queues, the decided ids); here they run over and over from the decided ids on, so that
/// they also fall between the copy of the group list and a group's chunk, and between the groups and the pull offsets.
/// </summary>
public sealed class GroupAdminDuringCaptureTests
{
    [Theory]
    [InlineData(1)]
    [InlineData(2)]
    [InlineData(3)]
    public async Task Group_deletes_resets_and_consuming_throughout_a_capture_recover_to_the_live_state(int seed)
    {
        await using var h = await EngineHarness.StartAsync(o => o with { QueuesPerTopic = 2 });
        var random = new Random(seed);
        for (int i = 0; i < 8; i++) await h.SendNormalAsync("t", $"m{i}");
        // Many other groups: the capture writes one chunk per group, so the group part has many moments between them.
        for (int g = 0; g < 200; g++) Assert.NotEmpty(await h.ReceiveWhenVisibleAsync($"other{g}", "t", batch: 1));
        for (int round = 0; round < 10; round++)
        {
            var checkpointer = h.Engine.CheckpointerForTests;
            await h.Engine.CheckpointAsync();   // an older one: what came before is before the next one's start
            bool captured = false;
            int ops = 0;
            Task? running = null;
            checkpointer.BeforePartForTests = part =>
            {
                if (part != 3) return Task.CompletedTask;
                checkpointer.BeforePartForTests = null;
                // Not awaited: the work goes on through the decided ids, the groups and the pull offsets.
                running = Task.Run(async () =>
                {
                    while (!Volatile.Read(ref captured) || ops < 4)
                    {
                        ops++;
                        switch (random.Next(6))
                        {
                            case 0:
                                await h.Engine.DeleteGroupAsync("A");
                                await h.Engine.DeleteGroupAsync("P");
                                break;
                            case 1:
                                await h.Engine.ResetGroupAsync("A", "t", random.Next(2) == 0 ? GroupStartFrom.Earliest : GroupStartFrom.Latest);
                                break;
                            case 2:
                            case 3:
                                foreach (var m in await h.ReceiveAsync("A", "t", batch: 3))
                                    if (random.Next(2) == 0) await h.Engine.AckAsync("A", "t", m.ReceiptHandle);
                                break;
                            default:
                                await h.Engine.CommitConsumerOffsetAsync("P", "t", random.Next(2), random.Next(1, 5));
                                break;
                        }
                    }
                });
                return Task.CompletedTask;
            };
            await h.Engine.CheckpointAsync();
            long ours = h.Engine.LastCheckpointAddress;
            Volatile.Write(ref captured, true);
            await running!;
            string live = h.Engine.DescribeState();

            // kill -9 after our checkpoint: the restart loads it (the shutdown checkpoint is removed).
            await h.Engine.DisposeAsync();
            foreach (var f in Directory.GetFiles(Path.Combine(h.DataDir, "checkpoints"), "checkpoint-*.bin").Where(f => CheckpointStoreNames.Covered(f) > ours)) File.Delete(f);
            await h.RestartAfterDeletedCheckpointAsync();
            Assert.Equal(ours, h.Engine.LastCheckpointAddress);
            States.AssertSame(live, h.Engine.DescribeState(), $"seed {seed}, round {round}, {ops} operations");
        }
    }
}
