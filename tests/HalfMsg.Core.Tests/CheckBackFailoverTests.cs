using HalfMsg.Broker.Core.Model;
using HalfMsg.Broker.Core.Transactions;

namespace HalfMsg.Core.Tests;

/// <summary>
/// An unanswered check is a reason to try another instance: a producer that is connected but never answers (a dead
/// peer whose connection has not dropped) must not burn every check attempt while another instance of the group is alive.
/// </summary>
public sealed class CheckBackFailoverTests
{
    private static async Task CommitAsync(EngineHarness h, CheckBackRequest check)
        => Assert.True((await h.Engine.EndTransactionAsync(check.TransactionId, check.HalfMessage.MessageId, TransactionResolution.Commit,
            DecisionSource.CheckBack)).IsOk);

    /// <summary>
    /// RocketMQ 4 clients name themselves <c>ip@pid</c>, so two live processes can share a client id (containers on
    /// different hosts with the same bridge address and pid 1). Registering the second replaced the first, whose
    /// connection still believed itself registered and never registered again: once the second left, the group had
    /// no producer although the first was alive, and its halves were never checked.
    /// </summary>
    [Fact]
    public async Task Two_live_connections_with_one_client_id_both_stay_in_the_group_until_each_leaves()
    {
        await using var h = await EngineHarness.StartAsync();
        var older = new RecordingChannel("172.17.0.2@1");
        var newer = new RecordingChannel("172.17.0.2@1");
        using var r1 = h.Engine.Producers.Register("orders", older);
        var r2 = h.Engine.Producers.Register("orders", newer);
        Assert.Equal(2, h.Engine.Producers.CountLive("orders"));
        r2.Dispose();                                   // the newer connection closes
        Assert.Equal(1, h.Engine.Producers.CountLive("orders"));

        var tx = await h.SendHalfAsync("orders", clientId: "172.17.0.2@1");
        h.Clock.Advance(TimeSpan.FromSeconds(7));
        Assert.Equal(1, await h.Engine.RunCheckPassAsync());
        Assert.Equal(tx, Assert.Single(older.Checks).TransactionId);

        // A dead channel is still replaced by a new one with its id (a reconnect), and the newest is asked first.
        older.IsAlive = false;
        var reconnected = new RecordingChannel("172.17.0.2@1");
        using var r3 = h.Engine.Producers.Register("orders", reconnected);
        Assert.Equal(1, h.Engine.Producers.CountLive("orders"));
        Assert.Same(reconnected, h.Engine.Producers.Candidates("orders", "172.17.0.2@1")[0]);
    }

    /// <summary>
    /// A producer joining a group asks for a check pass at once (its halves may be waiting). Each join asked for one
    /// more, so a client naming many groups made the check loop run that many passes back to back, each taking the
    /// engine lock; the asks now fold into one.
    /// </summary>
    [Fact]
    public async Task Many_producers_joining_at_once_ask_for_one_check_pass()
    {
        await using var h = await EngineHarness.StartAsync();
        var registrations = Enumerable.Range(0, 1000).Select(i => h.Engine.Producers.Register($"group-{i}", new RecordingChannel($"c{i}"))).ToList();
        Assert.InRange(h.Engine.PendingCheckKicks, 1, 2);
        foreach (var r in registrations) r.Dispose();
    }

    [Fact]
    public async Task The_check_after_an_unanswered_one_goes_to_another_live_instance_which_decides_the_half()
    {
        await using var h = await EngineHarness.StartAsync(o => o with { TransactionCheckMax = 15 });
        var silent = new RecordingChannel("origin");   // connected, accepts checks, never answers
        var live = new RecordingChannel("live");
        using var r1 = h.Engine.Producers.Register("orders", silent);
        using var r2 = h.Engine.Producers.Register("orders", live);
        var tx = await h.SendHalfAsync("orders", clientId: "origin");

        h.Clock.Advance(TimeSpan.FromSeconds(7));
        Assert.Equal(1, await h.Engine.RunCheckPassAsync());
        Assert.Single(silent.Checks);                   // the sender is still asked first
        Assert.Empty(live.Checks);

        h.Clock.Advance(TimeSpan.FromSeconds(31));
        Assert.Equal(1, await h.Engine.RunCheckPassAsync());
        var second = Assert.Single(live.Checks);        // no answer: the next attempt goes elsewhere
        Assert.Equal(tx, second.TransactionId);
        Assert.Equal(2, second.CheckNumber);
        Assert.Single(silent.Checks);
        await CommitAsync(h, second);

        Assert.Null(h.Engine.FindTransaction(tx));
        Assert.Single(await h.ReceiveWhenVisibleAsync("g", "orders"));
        Assert.Equal(1, h.Engine.Producers.UnansweredChecks("orders", "origin"));
        Assert.Equal(0, h.Engine.Producers.UnansweredChecks("orders", "live"));
    }

    [Fact]
    public async Task An_instance_that_left_checks_unanswered_repeatedly_is_tried_last_even_for_its_own_halves()
    {
        await using var h = await EngineHarness.StartAsync(o => o with { TransactionCheckMax = 15 });
        var silent = new RecordingChannel("origin");
        var live = new RecordingChannel("live");
        using var r1 = h.Engine.Producers.Register("orders", silent);
        using var r2 = h.Engine.Producers.Register("orders", live);
        var first = await h.SendHalfAsync("orders", clientId: "origin");
        var second = await h.SendHalfAsync("orders", clientId: "origin");

        // Both first checks go to the sender and stay unanswered; the second checks go to the live instance, which
        // answers only "unknown" (still alive, transaction still open).
        h.Clock.Advance(TimeSpan.FromSeconds(7));
        Assert.Equal(2, await h.Engine.RunCheckPassAsync());
        Assert.Equal(2, silent.Checks.Count);
        h.Clock.Advance(TimeSpan.FromSeconds(31));
        Assert.Equal(2, await h.Engine.RunCheckPassAsync());
        Assert.Equal(2, live.Checks.Count);
        foreach (var check in live.Checks)
            Assert.True((await h.Engine.EndTransactionAsync(check.TransactionId, null, TransactionResolution.Unknown, DecisionSource.CheckBack)).IsOk);
        Assert.Equal(2, h.Engine.Producers.UnansweredChecks("orders", "origin"));

        // A new half of the sender: its first check goes to the live instance, the sender is now last.
        var third = await h.SendHalfAsync("orders", clientId: "origin");
        h.Clock.Advance(TimeSpan.FromSeconds(7));
        h.Engine.Producers.Candidates("orders", "origin"); // moves the round-robin start; the order must not depend on it
        Assert.Equal(1, await h.Engine.RunCheckPassAsync());
        Assert.Contains(live.Checks, c => c.TransactionId == third);
        Assert.Equal(2, silent.Checks.Count);

        // An "unknown" is an answer: the live instance keeps its place for the halves it answered; for the one it did
        // not, it has the better record of the two and is asked again. The silent one gets nothing more.
        h.Clock.Advance(TimeSpan.FromSeconds(31));
        Assert.Equal(3, await h.Engine.RunCheckPassAsync());
        Assert.Equal(2, silent.Checks.Count);
        Assert.Equal(6, live.Checks.Count);
        Assert.Equal(2, live.Checks.Count(c => c.TransactionId == first));
    }

    [Fact]
    public async Task An_answer_puts_an_instance_back_in_its_place()
    {
        await using var h = await EngineHarness.StartAsync(o => o with { TransactionCheckMax = 15 });
        var slow = new RecordingChannel("origin");
        var other = new RecordingChannel("other");
        using var r1 = h.Engine.Producers.Register("orders", slow);
        using var r2 = h.Engine.Producers.Register("orders", other);
        h.Engine.Producers.NoteUnanswered("orders", "origin");
        h.Engine.Producers.NoteUnanswered("orders", "origin");
        Assert.Equal("other", h.Engine.Producers.Candidates("orders", "origin")[0].ClientId);

        // It answers a check after all (late): preferred again for its own halves.
        var tx = await h.SendHalfAsync("orders", clientId: "origin");
        h.Clock.Advance(TimeSpan.FromSeconds(7));
        await h.Engine.RunCheckPassAsync();
        var check = Assert.Single(other.Checks);
        h.Engine.Producers.NoteAnswered("orders", "origin");
        Assert.Equal(0, h.Engine.Producers.UnansweredChecks("orders", "origin"));
        Assert.Equal("origin", h.Engine.Producers.Candidates("orders", "origin")[0].ClientId);
        await CommitAsync(h, check);
    }

    [Fact]
    public async Task A_reconnect_with_the_same_client_id_starts_with_a_clean_record()
    {
        await using var h = await EngineHarness.StartAsync();
        var old = new RecordingChannel("origin");
        using var r1 = h.Engine.Producers.Register("orders", old);
        h.Engine.Producers.NoteUnanswered("orders", "origin");
        h.Engine.Producers.NoteUnanswered("orders", "origin");
        Assert.Equal(2, h.Engine.Producers.UnansweredChecks("orders", "origin"));

        using var r2 = h.Engine.Producers.Register("orders", new RecordingChannel("origin"));
        Assert.Equal(0, h.Engine.Producers.UnansweredChecks("orders", "origin"));
        await Task.CompletedTask;
    }
}
