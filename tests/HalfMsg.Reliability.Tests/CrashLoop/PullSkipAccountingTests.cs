using HalfMsg.Protocol.Remoting;

namespace HalfMsg.Reliability.Tests.CrashLoop;

/// <summary>
/// The crash loop's pull consumer counts the queue positions it went past without a message (<see cref="LoadDriver.SkippedBy"/>):
/// the invariant 'every acknowledged commit is delivered at least once to every group' excuses that many messages the
/// pull consumer never saw. A retention cut that lands between the broker's pick of a pull's entries and its read of their
/// bodies expires the first of them, and the answer carries the rest with a nextBeginOffset past all of them
/// (PullRetentionRaceTests in HalfMsg.Core.Tests): those positions were skipped as surely as after PULL_OFFSET_MOVED.
/// Until 2026-12-07 they were not counted (seed 163215 of the damage crash test: 14 messages never seen, 13 counted).
/// </summary>
public sealed class PullSkipAccountingTests
{
    [Fact]
    public void An_answer_with_messages_that_went_past_expired_positions_counts_them_as_skipped()
    {
        // Pulled from 0: entries 0 and 1 expired under the pull, entry 2 came back, next begins at 3.
        Assert.Equal(2, LoadDriver.SkippedBy(ResponseCode.Success, requested: 0, next: 3, messages: 1));
        // Every position filled: nothing skipped.
        Assert.Equal(0, LoadDriver.SkippedBy(ResponseCode.Success, requested: 5, next: 8, messages: 3));
    }

    [Fact]
    public void Offset_moved_counts_the_positions_jumped_over_and_never_a_move_back()
    {
        Assert.Equal(13, LoadDriver.SkippedBy(ResponseCode.PullOffsetMoved, requested: 45, next: 58, messages: 0));
        // Past the queue's end (its tail was lost): the consumer goes back, nothing is skipped.
        Assert.Equal(0, LoadDriver.SkippedBy(ResponseCode.PullOffsetMoved, requested: 62, next: 58, messages: 0));
        Assert.Equal(0, LoadDriver.SkippedBy(ResponseCode.PullNotFound, requested: 3, next: 7, messages: 0));
    }
}
