using HalfMsg.Broker.Core;
using HalfMsg.Broker.Core.Delivery;

namespace HalfMsg.Core.Tests;

/// <summary>
/// Delayed messages due at the same millisecond are released in the order they were sent: a FIFO message group's
/// delayed messages keep their order, live and after a restart.
/// </summary>
public class DelayedFifoOrderTests
{
    /// <summary>
    /// FIFO messages of one message group also delayed to the same time (the engine accepts the pair). Until 2026-12-07
    /// the due-time heap was keyed on the time alone, its equal keys came out in no particular order, and the messages
    /// entered their queue, and were delivered, out of the order they were sent in (found by review). Also after a crash
    /// (the heap rebuilt by replay) and a clean restart (rebuilt from the checkpoint) before their time.
    /// </summary>
    [Theory]
    [InlineData("none")]
    [InlineData("crash")]
    [InlineData("restart")]
    public async Task Fifo_messages_delayed_to_the_same_time_keep_their_order(string restart)
    {
        await using var h = await EngineHarness.StartAsync();
        long at = h.Clock.GetUtcNow().ToUnixTimeMilliseconds() + 5_000;
        for (int i = 0; i < 20; i++)
        {
            var r = await h.Engine.SendAsync(h.Draft("t", "m" + i, group: "G", deliverAt: at));
            Assert.True(r.Error.IsOk, r.Error.ToString());
        }
        if (restart == "crash")
        {
            await h.Engine.DisposeAsync();
            Directory.Delete(Path.Combine(h.DataDir, "checkpoints"), recursive: true);
            await h.RestartAfterDeletedCheckpointAsync();
        }
        else if (restart == "restart") await h.RestartAsync();
        h.Clock.Advance(TimeSpan.FromSeconds(6));
        h.Engine.RunSweep();
        var order = new List<string>();
        for (int i = 0; i < 40 && order.Count < 20; i++)
        {
            var got = await h.ReceiveWhenVisibleAsync("g", "t", batch: 1);
            foreach (var m in got)
            {
                order.Add(m.Text());
                Assert.True((await h.Engine.AckAsync("g", "t", m.ReceiptHandle)).IsOk);
            }
        }
        Assert.Equal(Enumerable.Range(0, 20).Select(i => "m" + i), order);
    }

    /// <summary>
    /// The index alone: entries of one due time come out in send order, whatever order they were added in and wherever
    /// retention moved their bodies since (a move gives a body a new, higher address; the send order stays).
    /// </summary>
    [Fact]
    public void Entries_of_one_due_time_come_out_in_send_order_after_moves()
    {
        var index = new DelayIndex();
        var random = new Random(7);
        var sentAt = Enumerable.Range(0, 200).Select(i => 64L + i * 1_024).OrderBy(_ => random.Next()).ToList();
        foreach (long address in sentAt)
            index.Add(new DelayedEntry { BodyAddress = address, SentAt = address, SendOrder = address, Size = 100, Topic = "t", DeliverAtMs = 500 });
        // Retention moves the oldest half to the log's end, newest first (their new addresses in the reverse order).
        long end = 1L << 30;
        foreach (long address in sentAt.Where(a => a < 64 + 100 * 1_024).OrderDescending())
            index.Move(address, end += 1_024, 100);
        var due = index.TakeDue(500);
        Assert.Equal(sentAt.Order(), due.Select(e => e.SentAt));
    }
}
