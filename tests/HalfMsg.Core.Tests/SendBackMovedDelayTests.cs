using HalfMsg.Broker.Core;
using HalfMsg.Broker.Core.Model;

namespace HalfMsg.Core.Tests;

/// <summary>A send-back (CONSUMER_SEND_MSG_BACK) of a delay message still waiting for its time is refused, by whatever
/// address names it. Until 2026-12-07 the guard asked the delay index by body address only: once retention moved the body
/// to the tail (before the cut removes the old record, or when the cut is postponed), the address the producer was
/// answered (its offsetMsgId) was no longer a body address, and the waiting message was copied into the retry topic:
/// delivered before its time, and again at its time.</summary>
public sealed class SendBackMovedDelayTests
{
    [Fact]
    public async Task A_waiting_delay_message_whose_body_retention_moved_cannot_be_sent_back_by_its_send_address()
    {
        await using var h = await EngineHarness.StartAsync(o => o with { QueuesPerTopic = 1 });
        long due = h.Clock.GetUtcNow().AddHours(1).ToUnixTimeMilliseconds();
        var waiting = await h.Engine.SendAsync(h.Draft("timers", "waiting", deliverAt: due));
        Assert.True(waiting.IsOk);
        await h.SendNormalAsync("filler", "f");

        SendBackResult? during = null;
        var checkpointer = h.Engine.CheckpointerForTests;
        checkpointer.BeforePartForTests = async part =>
        {
            checkpointer.BeforePartForTests = null;
            // The cut's first checkpoint: the body was moved to the tail, the record it was sent at is still in the log.
            during = await h.Engine.SendBackAsync("G", waiting.LogAddress, 1, 16, null);
        };
        Assert.Equal(1, await h.Engine.TruncateBeforeAsync(h.Engine.LogTailAddress));
        Assert.NotNull(during);
        Assert.False(during!.Value.Error.IsOk, $"a delay message waiting for its time was sent back into {during.Value.Topic}");
    }
}
