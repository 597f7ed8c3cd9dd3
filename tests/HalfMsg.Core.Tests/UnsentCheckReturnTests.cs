using System.Text;
using HalfMsg.Broker.Core.Model;

namespace HalfMsg.Core.Tests;

/// <summary>
/// A check-back a producer's channel accepted and never wrote (a Telemetry stream ended for not reading with it still
/// queued) is given back (<see cref="HalfMsg.Broker.Core.BrokerEngine.ReturnUnsentChecksAsync(string, IReadOnlyList{CheckBackRequest}, CancellationToken)"/>): it does not count as
/// one of the half's checks, and the half is due at once, for another instance. Until 2026-12-07 such a check was
/// counted as sent and its half waited a whole check interval. The undo is a TxChecked record, so the state is the same
/// live, after a replay of the log only, and from a checkpoint.
/// </summary>
public sealed class UnsentCheckReturnTests
{
    public enum Recovery { Live, LogOnly, Checkpoint }

    private static async Task RecoverAsync(EngineHarness h, Recovery recovery)
    {
        switch (recovery)
        {
            case Recovery.LogOnly:
                await h.Engine.DisposeAsync();
                foreach (var f in Directory.GetFiles(Path.Combine(h.DataDir, "checkpoints"), "checkpoint-*.bin")) File.Delete(f);
                await h.RestartAfterDeletedCheckpointAsync();
                break;
            case Recovery.Checkpoint:
                await h.Engine.CheckpointAsync();
                await h.RestartAsync();
                break;
        }
    }

    /// <summary>The half's checks, next and last check time (Unix ms, 0 for none) and whether it is parked.</summary>
    private static (int Checks, long NextCheckAt, long LastCheckAt, bool Parked) State(EngineHarness h, string id)
        => h.Engine.FindTransaction(id) is { } t
            ? (t.Checks, t.NextCheckAt?.ToUnixTimeMilliseconds() ?? 0, t.LastCheckAt?.ToUnixTimeMilliseconds() ?? 0, t.Parked)
            : throw new InvalidOperationException(id + " is not pending");

    private static long Now(EngineHarness h) => h.Clock.GetUtcNow().ToUnixTimeMilliseconds();

    [Theory]
    [InlineData(Recovery.Live)]
    [InlineData(Recovery.LogOnly)]
    [InlineData(Recovery.Checkpoint)]
    public async Task A_first_check_given_back_is_not_counted_and_the_half_goes_at_once_to_another_instance(Recovery recovery)
    {
        await using var h = await EngineHarness.StartAsync();
        var stalled = new RecordingChannel("stalled");
        var other = new RecordingChannel("other");
        using var r1 = h.Engine.Producers.Register("orders", stalled);
        using var r2 = h.Engine.Producers.Register("orders", other);
        string id = await h.SendHalfAsync("orders", clientId: "stalled"); // its sender is asked first
        h.Clock.Advance(TimeSpan.FromSeconds(7));
        Assert.Equal(1, await h.Engine.RunCheckPassAsync());
        Assert.True(stalled.Checks.TryDequeue(out var unsent));
        Assert.Equal((1, 0L), (unsent.CheckNumber, unsent.PreviousCheckAtMs));
        Assert.Equal(1, State(h, id).Checks);

        // Its stream ends with the check still queued.
        stalled.IsAlive = false;
        h.Clock.Advance(TimeSpan.FromSeconds(1));
        Assert.Equal(1, await h.Engine.ReturnUnsentChecksAsync("stalled", [unsent]));
        Assert.Equal(1, h.Engine.Metrics.ChecksReturned);
        var live = State(h, id);
        Assert.Equal((0, Now(h), 0L, false), live);

        await RecoverAsync(h, recovery);
        Assert.Equal(live, State(h, id));

        using var r3 = recovery == Recovery.Live ? null : h.Engine.Producers.Register("orders", other);
        Assert.Equal(1, await h.Engine.RunCheckPassAsync()); // due now, no clock advance
        Assert.True(other.Checks.TryDequeue(out var again));
        Assert.Equal((id, 1), (again.TransactionId, again.CheckNumber));
        Assert.Empty(stalled.Checks);
        Assert.Equal(1, State(h, id).Checks);
        Assert.True((await h.Engine.EndTransactionAsync(id, null, TransactionResolution.Commit, DecisionSource.CheckBack)).IsOk);
    }

    [Fact]
    public async Task A_later_check_given_back_restores_the_count_and_time_of_the_check_before_it()
    {
        await using var h = await EngineHarness.StartAsync();
        var p = new RecordingChannel("p1");
        using var r = h.Engine.Producers.Register("orders", p);
        string id = await h.SendHalfAsync("orders", clientId: "p1");
        h.Clock.Advance(TimeSpan.FromSeconds(7));
        Assert.Equal(1, await h.Engine.RunCheckPassAsync());
        var afterFirst = State(h, id);
        h.Clock.Advance(TimeSpan.FromSeconds(31));
        Assert.Equal(1, await h.Engine.RunCheckPassAsync());
        p.Checks.TryDequeue(out _);
        Assert.True(p.Checks.TryDequeue(out var second));
        Assert.Equal(2, second.CheckNumber);

        Assert.Equal(1, await h.Engine.ReturnUnsentChecksAsync("p1", [second]));
        Assert.Equal((1, Now(h), afterFirst.LastCheckAt, false), State(h, id));
        await h.RestartAsync();
        Assert.Equal((1, Now(h), afterFirst.LastCheckAt, false), State(h, id));
    }

    [Fact]
    public async Task A_check_given_back_by_another_instance_after_a_later_check_or_after_its_decision_changes_nothing()
    {
        await using var h = await EngineHarness.StartAsync();
        var p1 = new RecordingChannel("p1");
        var p2 = new RecordingChannel("p2");
        using var r1 = h.Engine.Producers.Register("orders", p1);
        using var r2 = h.Engine.Producers.Register("orders", p2);
        string id = await h.SendHalfAsync("orders", clientId: "p1");
        h.Clock.Advance(TimeSpan.FromSeconds(7));
        Assert.Equal(1, await h.Engine.RunCheckPassAsync());
        Assert.True(p1.Checks.TryDequeue(out var first));
        var checkedOnce = State(h, id);
        Assert.Equal(0, await h.Engine.ReturnUnsentChecksAsync("p2", [first])); // not the instance it went to
        Assert.Equal(checkedOnce, State(h, id));

        h.Clock.Advance(TimeSpan.FromSeconds(31));
        Assert.Equal(1, await h.Engine.RunCheckPassAsync()); // unanswered by p1: the second goes to p2
        Assert.True(p2.Checks.TryDequeue(out var second));
        Assert.Equal(2, second.CheckNumber);
        var checkedTwice = State(h, id);
        Assert.Equal(0, await h.Engine.ReturnUnsentChecksAsync("p1", [first])); // a later check was sent since
        Assert.Equal(checkedTwice, State(h, id));

        Assert.True((await h.Engine.EndTransactionAsync(id, null, TransactionResolution.Commit, DecisionSource.Client)).IsOk);
        Assert.Equal(0, await h.Engine.ReturnUnsentChecksAsync("p2", [second]));
        Assert.Null(h.Engine.FindTransaction(id));
        Assert.Equal(0, h.Engine.Metrics.ChecksReturned);
    }
    // Before 2026-12-07 (review): the guard was the check's number, the client id it went to and the message id, which is
    // the transaction id: an earlier half of a reused id, checked once on a stream that stalled, was given back after the
    // new half of the id had had its own first check, sent to the same client id (its reconnected stream), and that check
    // was undone: counted as not sent, sent again at once (the producer asked twice).
    [Theory]
    [InlineData(Recovery.Live)]
    [InlineData(Recovery.LogOnly)]
    [InlineData(Recovery.Checkpoint)]
    public async Task A_check_of_an_earlier_half_of_a_reused_id_given_back_leaves_the_new_halfs_check_as_it_is(Recovery recovery)
    {
        await using var h = await EngineHarness.StartAsync(o => o with { MaxRememberedDecisions = 1 });
        var stalled = new RecordingChannel("p1");
        const string id = "0A0000000000000000000000000001AA";
        using (h.Engine.Producers.Register("orders", stalled))
        {
            Assert.True((await h.Engine.SendHalfAsync(Draft(h, id, "FIRST"), "orders", "p1", null)).IsOk);
            h.Clock.Advance(TimeSpan.FromSeconds(7));
            Assert.Equal(1, await h.Engine.RunCheckPassAsync());
        }
        Assert.True(stalled.Checks.TryDequeue(out var old));
        Assert.True((await h.Engine.EndTransactionAsync(id, null, TransactionResolution.Commit, DecisionSource.Client)).IsOk);
        Assert.True((await h.Engine.SendHalfAsync(Draft(h, "0A0000000000000000000000000001BB", "other"), "orders", "p1", null)).IsOk);
        Assert.True((await h.Engine.EndTransactionAsync("0A0000000000000000000000000001BB", null, TransactionResolution.Commit, DecisionSource.Client)).IsOk);

        // The id again, checked once on the client's new stream.
        var reconnected = new RecordingChannel("p1");
        using var r = h.Engine.Producers.Register("orders", reconnected);
        Assert.True((await h.Engine.SendHalfAsync(Draft(h, id, "SECOND"), "orders", "p1", null)).IsOk);
        h.Clock.Advance(TimeSpan.FromSeconds(7));
        Assert.Equal(1, await h.Engine.RunCheckPassAsync());
        Assert.True(reconnected.Checks.TryDequeue(out var current));
        Assert.Equal((id, 1), (current.TransactionId, current.CheckNumber));
        var checkedOnce = State(h, id);
        Assert.Equal(1, checkedOnce.Checks);

        // The stalled stream's end gives the earlier half's check back.
        Assert.Equal(0, await h.Engine.ReturnUnsentChecksAsync("p1", [old]));
        Assert.Equal(0, h.Engine.Metrics.ChecksReturned);
        Assert.Equal(checkedOnce, State(h, id));
        Assert.Equal(0, await h.Engine.RunCheckPassAsync());
        Assert.Empty(reconnected.Checks);

        await RecoverAsync(h, recovery);
        Assert.Equal(checkedOnce, State(h, id));
    }

    // Before 2026-12-07 (review): with TransactionCheckMax = 1, a half checked once on a stream that stalled was parked,
    // resumed by an operator and checked again (check 1) on the client's new stream; the stalled stream's end then gave
    // back its check 1, and the resumed half's check was undone (the same number, client id and message id).
    [Fact]
    public async Task A_check_given_back_after_a_park_and_a_resume_leaves_the_resumed_halfs_check_as_it_is()
    {
        await using var h = await EngineHarness.StartAsync(o => o with { TransactionCheckMax = 1 });
        var stalled = new RecordingChannel("p1");
        string id;
        using (h.Engine.Producers.Register("orders", stalled))
        {
            id = await h.SendHalfAsync("orders", clientId: "p1");
            h.Clock.Advance(TimeSpan.FromSeconds(7));
            Assert.Equal(1, await h.Engine.RunCheckPassAsync());
            h.Clock.Advance(TimeSpan.FromSeconds(31));
            Assert.Equal(0, await h.Engine.RunCheckPassAsync()); // out of checks: parked
        }
        Assert.True(stalled.Checks.TryDequeue(out var old));
        Assert.True(State(h, id).Parked);
        Assert.True((await h.Engine.ResumeTransactionAsync(id)).IsOk);
        var reconnected = new RecordingChannel("p1");
        using var r = h.Engine.Producers.Register("orders", reconnected);
        Assert.Equal(1, await h.Engine.RunCheckPassAsync());
        Assert.True(reconnected.Checks.TryDequeue(out var current));
        Assert.Equal(1, current.CheckNumber);
        var resumedAndChecked = State(h, id);

        Assert.Equal(0, await h.Engine.ReturnUnsentChecksAsync("p1", [old]));
        Assert.Equal(resumedAndChecked, State(h, id));
        Assert.Equal(0, await h.Engine.RunCheckPassAsync());
        Assert.Empty(reconnected.Checks);
    }

    // A check given back twice (two ends of one stream racing, a front end that gives back a check it also wrote) counts
    // once: the second finds it no longer the half's last check.
    [Fact]
    public async Task A_check_given_back_twice_is_undone_once()
    {
        await using var h = await EngineHarness.StartAsync();
        var p = new RecordingChannel("p1");
        using var r = h.Engine.Producers.Register("orders", p);
        string id = await h.SendHalfAsync("orders", clientId: "p1");
        h.Clock.Advance(TimeSpan.FromSeconds(7));
        Assert.Equal(1, await h.Engine.RunCheckPassAsync());
        Assert.True(p.Checks.TryDequeue(out var first));
        Assert.Equal(1, await h.Engine.ReturnUnsentChecksAsync("p1", [first]));
        Assert.Equal(0, await h.Engine.ReturnUnsentChecksAsync("p1", [first]));
        Assert.Equal(1, h.Engine.Metrics.ChecksReturned);
        Assert.Equal(0, State(h, id).Checks);
    }

    // Before 2026-12-07 (review): a stream that stalled for a check interval held two checks of one half (its instance the
    // group's only one), both given back at its end; only the last was undone, and the half kept an attempt its producer
    // never got (and counted as checked back, WasCheckedBack).
    [Theory]
    [InlineData(Recovery.Live)]
    [InlineData(Recovery.LogOnly)]
    [InlineData(Recovery.Checkpoint)]
    public async Task Two_checks_of_one_half_given_back_together_are_both_undone(Recovery recovery)
    {
        await using var h = await EngineHarness.StartAsync();
        var p = new RecordingChannel("p1");
        using (h.Engine.Producers.Register("orders", p))
        {
            string id = await h.SendHalfAsync("orders", clientId: "p1");
            h.Clock.Advance(TimeSpan.FromSeconds(7));
            Assert.Equal(1, await h.Engine.RunCheckPassAsync());
            h.Clock.Advance(TimeSpan.FromSeconds(31));
            Assert.Equal(1, await h.Engine.RunCheckPassAsync()); // the only instance: asked again
            Assert.True(p.Checks.TryDequeue(out var first));
            Assert.True(p.Checks.TryDequeue(out var second));
            Assert.Equal((1, 2), (first.CheckNumber, second.CheckNumber));

            h.Clock.Advance(TimeSpan.FromSeconds(1));
            Assert.Equal(2, await h.Engine.ReturnUnsentChecksAsync("p1", [first, second]));
            Assert.Equal(2, h.Engine.Metrics.ChecksReturned);
            var live = State(h, id);
            Assert.Equal((0, Now(h), 0L, false), live);
            await RecoverAsync(h, recovery);
            Assert.Equal(live, State(h, id));
        }
    }

    private static MessageDraft Draft(EngineHarness h, string id, string body) => new()
    {
        Topic = "orders", MessageId = id, Body = Encoding.UTF8.GetBytes(body),
        BornTimestampMs = h.Clock.GetUtcNow().ToUnixTimeMilliseconds(), BornHost = "test",
    };
}
