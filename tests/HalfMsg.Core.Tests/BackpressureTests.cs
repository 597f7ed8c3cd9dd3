using HalfMsg.Broker.Core;
using HalfMsg.Broker.Core.Model;

namespace HalfMsg.Core.Tests;

public sealed class BackpressureTests
{
    /// <summary>
    /// Regression: with async flush, many concurrent writers filled FasterLog's in-memory buffer; the writer holding the
    /// engine lock blocked in Enqueue while the commit loop (the only thing that frees the buffer) waited for that lock.
    /// Writers now wait for room before they take the lock, and the commit loop never takes it. (A liveness check with a
    /// generous bound, not a speed goal.)
    /// </summary>
    [Fact]
    public async Task Many_concurrent_async_writers_larger_than_the_log_buffer_do_not_deadlock()
    {
        var options = new CoreOptions
        {
            DataDir = Path.Combine(Path.GetTempPath(), "halfmsg-bp-" + Guid.NewGuid().ToString("N")[..12]),
            Flush = FlushMode.Async, MemorySizeBits = 23, SegmentSizeBits = 24, // an 8 MiB buffer, written 4 times over
        };
        try
        {
            await using var engine = await BrokerEngine.OpenAsync(options, startBackgroundLoops: false);
            var body = new byte[1024];
            int next = 0;
            var writers = Enumerable.Range(0, 64).Select(_ => Task.Run(async () =>
            {
                int i;
                while ((i = Interlocked.Increment(ref next)) <= 32_000)
                {
                    var half = await engine.SendHalfAsync(new MessageDraft { Topic = "t", MessageId = $"bp-{i}", Body = body }, "t", "p", null);
                    Assert.True(half.IsOk);
                    await engine.EndTransactionAsync(half.TransactionId, null, TransactionResolution.Commit, DecisionSource.Client);
                }
            }));
            await Task.WhenAll(writers).WaitAsync(TimeSpan.FromSeconds(120));
            Assert.Equal(0, engine.PendingCount);
            Assert.Equal(32_000, engine.ListTopics().Single(t => t.Name == "t").Queues.Sum(q => q.MaxOffset));
        }
        finally
        {
            try { Directory.Delete(options.DataDir, true); } catch (IOException) { }
        }
    }
}
