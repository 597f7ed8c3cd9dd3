using HalfMsg.Broker.Core.Model;
using HalfMsg.Broker.Core.Transactions;

namespace HalfMsg.Core.Tests;

/// <summary>
/// A producer's channel that throws while a check-back is queued on it (a connection torn down under the write:
/// ObjectDisposedException, InvalidOperationException). Until 2026-12-07 the exception left the check pass: every half
/// after the one being sent waited for the next pass, which met the same channel again first, so one broken producer
/// connection starved the check-backs of every other group (found by review). Now that send refuses, as a dead channel
/// does: the check goes to another instance of the group, or the half waits for a later pass without burning a check.
/// </summary>
public sealed class CheckBackSendFailureTests
{
    /// <summary>Throws on every check while <see cref="Throwing"/>, then records them.</summary>
    private sealed class ThrowingChannel(string clientId, Exception failure) : ICheckBackChannel
    {
        public string ClientId { get; } = clientId;
        public bool IsAlive => true;
        public volatile bool Throwing = true;
        public int Attempts;
        public List<CheckBackRequest> Checks { get; } = [];
        public bool TrySendCheck(CheckBackRequest request)
        {
            Interlocked.Increment(ref Attempts);
            if (Throwing) throw failure;
            Checks.Add(request);
            return true;
        }
    }

    public static TheoryData<string> Failures => new() { nameof(ObjectDisposedException), nameof(InvalidOperationException) };

    private static Exception Failure(string name) => name == nameof(ObjectDisposedException)
        ? new ObjectDisposedException("producer connection") : new InvalidOperationException("the connection's writer is completed");

    [Theory]
    [MemberData(nameof(Failures))]
    public async Task A_channel_that_throws_skips_its_half_for_the_pass_and_the_other_halves_are_still_checked(string failure)
    {
        await using var h = await EngineHarness.StartAsync();
        var broken = new ThrowingChannel("broken", Failure(failure));
        var good = new RecordingChannel("good");
        using var r1 = h.Engine.Producers.Register("payments", broken);
        using var r2 = h.Engine.Producers.Register("orders", good);
        // The broken producer's half is the oldest: the pass meets it first.
        string stuck = await h.SendHalfAsync("payments", clientId: "broken");
        h.Clock.Advance(TimeSpan.FromMilliseconds(10));
        var others = new List<string>();
        for (int i = 0; i < 3; i++) others.Add(await h.SendHalfAsync("orders", clientId: "good"));
        h.Clock.Advance(TimeSpan.FromSeconds(7));

        int sent = -1;
        var thrown = await Record.ExceptionAsync(async () => sent = await h.Engine.RunCheckPassAsync());
        Assert.True(good.Checks.Count == 3, $"the other group's halves checked: {good.Checks.Count} of 3 (the pass {(thrown is null ? "ended" : "threw " + thrown.GetType().Name)})");
        Assert.Null(thrown);
        Assert.Equal(3, sent);
        Assert.Equal(others, good.Checks.Select(c => c.TransactionId));
        Assert.Equal(1, broken.Attempts);
        Assert.Equal(1, h.Engine.Metrics.CheckSendFailures);
        // Still pending, not parked, no check burnt.
        var half = h.Engine.FindTransaction(stuck);
        Assert.NotNull(half);
        Assert.Equal((0, false), (half.Checks, half.Parked));

        // Checked again by the next pass: the connection works again.
        broken.Throwing = false;
        Assert.Equal(1, await h.Engine.RunCheckPassAsync());
        Assert.Equal([stuck], broken.Checks.Select(c => c.TransactionId));
        Assert.Equal(1, h.Engine.FindTransaction(stuck)!.Checks);
        Assert.Equal(3, good.Checks.Count);                      // the others are not due before the interval
    }

    [Fact]
    public async Task A_check_a_channel_threw_on_goes_to_another_instance_of_the_group()
    {
        await using var h = await EngineHarness.StartAsync();
        var broken = new ThrowingChannel("broken", new ObjectDisposedException("producer connection"));
        var other = new RecordingChannel("other");
        using var r1 = h.Engine.Producers.Register("orders", broken);
        using var r2 = h.Engine.Producers.Register("orders", other);
        string id = await h.SendHalfAsync("orders", clientId: "broken"); // the origin instance is asked first
        h.Clock.Advance(TimeSpan.FromSeconds(7));

        Assert.Equal(1, await h.Engine.RunCheckPassAsync());
        Assert.Equal(1, broken.Attempts);
        Assert.Equal([id], other.Checks.Select(c => c.TransactionId));
        Assert.Equal(1, h.Engine.FindTransaction(id)!.Checks);
    }
}
