using HalfMsg.Broker.Core;
using HalfMsg.Broker.Core.Storage;

namespace HalfMsg.Core.Tests;

/// <summary>
/// A record appended but not yet committed is read once its commit lands, never reported missing. FasterLog reads
/// nothing at or above its committed address; until 2026-12-05 the log passed that on as null. Retention points a queue
/// entry at a body's new copy before the copy is committed, so a pull in between read null, took the body for damaged
/// and went past the message for good (the opt-in damage loop on `bc9eac7`, seed 700806: one acknowledged commit never
/// reached the pull group, while the lease groups, which retry, got it).
/// </summary>
public sealed class ReadBeforeCommitTests
{
    [Fact]
    public async Task A_read_of_a_record_not_yet_committed_waits_for_its_commit()
    {
        await using var f = new LogOnFaultyDevice("readcommit");
        var log = f.Log;
        await log.WaitDurableAsync(log.Append("first"u8));
        // The device holds writes: the next record is appended and stays uncommitted until they are released.
        f.Device.Fault = DeviceFault.HoldWrites;
        long address = log.Append("appended, not committed"u8);
        Assert.True(address >= log.DurableUntil);

        var read = log.ReadAsync(address).AsTask();
        await Conditions.WaitUntil(() => log.ReadsThatWaitedForCommit == 1 || read.IsCompleted);
        Assert.False(read.IsCompleted, $"the read answered ({read.Status}) before the record was committed");

        f.Device.ReleaseHeldWrites();
        var bytes = await read.WaitAsync(TimeSpan.FromSeconds(60));
        Assert.Equal("appended, not committed"u8.ToArray(), bytes);
        Assert.True(address < log.DurableUntil);
        // Truncated away or beyond the tail is still null, at once.
        Assert.Null(await log.ReadAsync(log.TailAddress + 4096).AsTask().WaitAsync(TimeSpan.FromSeconds(10)));
    }
}
