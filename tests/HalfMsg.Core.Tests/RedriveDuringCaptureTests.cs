using HalfMsg.Broker.Core;
using HalfMsg.Broker.Core.Storage;

namespace HalfMsg.Core.Tests;

/// <summary>A re-drive (its put-back and both acks, in one hold) while a fuzzy checkpoint captures: the checkpoint plus
/// replay gives the live state, whichever part the capture was at.</summary>
public sealed class RedriveDuringCaptureTests
{
    [Theory]
    [InlineData(0)]
    [InlineData(2)]
    [InlineData(3)]
    public async Task A_redrive_during_a_capture_recovers_to_the_live_state(int atPart)
    {
        await using var h = await EngineHarness.StartAsync(o => o with { MaxDeliveryAttempts = 1 });
        for (int i = 0; i < 3; i++) Assert.True((await h.Engine.SendAsync(h.Draft("t", $"poison-{i}"))).IsOk);
        Assert.Equal(3, (await h.ReceiveWhenVisibleAsync("A", "t")).Count);
        h.Clock.Advance(TimeSpan.FromSeconds(31));
        h.Engine.RunSweep();
        await h.Engine.CheckpointAsync();   // the dead letters durable; an older checkpoint
        var checkpointer = h.Engine.CheckpointerForTests;
        checkpointer.BeforePartForTests = async part =>
        {
            if (part != atPart) return;
            checkpointer.BeforePartForTests = null;
            var r = await h.Engine.RedriveDeadLettersAsync("A", "t", 2);
            Assert.True(r.Error.IsOk, r.Error.ToString());
            Assert.Equal(2, r.Redriven);
        };
        await h.Engine.CheckpointAsync();
        long ours = h.Engine.LastCheckpointAddress;
        string live = h.Engine.DescribeState();
        await h.Engine.DisposeAsync();
        foreach (var f in Directory.GetFiles(Path.Combine(h.DataDir, "checkpoints"), "checkpoint-*.bin").Where(f => CheckpointStoreNames.Covered(f) > ours)) File.Delete(f);
        await h.RestartAfterDeletedCheckpointAsync();
        Assert.Equal(ours, h.Engine.LastCheckpointAddress);
        States.AssertSame(live, h.Engine.DescribeState(), $"part {atPart}");
        // The unfiltered cursor re-drives only the third.
        var rest = await h.Engine.RedriveDeadLettersAsync("A", null, 10);
        Assert.Equal(1, rest.Redriven);
    }
}
