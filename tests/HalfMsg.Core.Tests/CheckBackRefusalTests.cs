using System.Reflection;
using HalfMsg.Broker.Core;
using HalfMsg.Broker.Core.Model;
using HalfMsg.Broker.Core.Transactions;

namespace HalfMsg.Core.Tests;

/// <summary>
/// A producer channel that refuses a check (its queue full while its client reads a burst, closing, or throwing) is not
/// asked again for the rest of the pass: a full channel announces room and asks for the next pass itself. Until the night
/// session of 2026-12-07 every later half of the pass was read from the log and built into a check for it, only to be
/// refused: one instance with a full queue made a pass of D due halves read all D bodies, again at each pass its room
/// started (found by review).
/// </summary>
public sealed class CheckBackRefusalTests
{
    /// <summary>Refuses while <see cref="Full"/>, then records.</summary>
    private sealed class FullChannel(string clientId) : ICheckBackChannel
    {
        public string ClientId { get; } = clientId;
        public bool IsAlive => true;
        public volatile bool Full = true;
        public int Attempts;
        public Action? OnRefused;
        public List<CheckBackRequest> Checks { get; } = [];
        public bool TrySendCheck(CheckBackRequest request)
        {
            Interlocked.Increment(ref Attempts);
            if (Full)
            {
                OnRefused?.Invoke();
                return false;
            }
            Checks.Add(request);
            return true;
        }
    }

    [Fact]
    public async Task A_channel_that_refused_is_not_asked_again_in_the_same_pass_and_its_halves_wait_uncounted()
    {
        await using var h = await EngineHarness.StartAsync();
        var full = new FullChannel("full");
        using var r = h.Engine.Producers.Register("orders", full);
        var ids = new List<string>();
        for (int i = 0; i < 20; i++) ids.Add(await h.SendHalfAsync("orders", clientId: "full"));
        h.Clock.Advance(TimeSpan.FromSeconds(7));

        Assert.Equal(0, await h.Engine.RunCheckPassAsync());
        Assert.Equal(1, full.Attempts);
        Assert.All(ids, id => Assert.Equal(0, h.Engine.FindTransaction(id)!.Checks));

        // Room again: the next pass sends them all, each as its first check.
        full.Full = false;
        Assert.Equal(20, await h.Engine.RunCheckPassAsync());
        Assert.Equal(ids.Order(), full.Checks.Select(c => c.TransactionId).Order());
        Assert.All(full.Checks, c => Assert.Equal(1, c.CheckNumber));
    }

    [Fact]
    public async Task Once_one_instance_refused_the_rest_of_the_pass_goes_to_the_other_without_asking_it_again()
    {
        await using var h = await EngineHarness.StartAsync();
        var full = new FullChannel("full");
        var other = new RecordingChannel("other");
        using var r1 = h.Engine.Producers.Register("orders", full);
        using var r2 = h.Engine.Producers.Register("orders", other);
        // Sent by the full instance: it is asked first for each of its halves.
        var ids = new List<string>();
        for (int i = 0; i < 10; i++) ids.Add(await h.SendHalfAsync("orders", clientId: "full"));
        h.Clock.Advance(TimeSpan.FromSeconds(7));

        Assert.Equal(10, await h.Engine.RunCheckPassAsync());
        Assert.Equal(1, full.Attempts);
        Assert.Equal(ids.Order(), other.Checks.Select(c => c.TransactionId).Order());
    }

    /// <summary>Closes on its first check (refused), and a new session of its client id registers meanwhile.</summary>
    private sealed class ClosingChannel(string clientId, Func<IDisposable> replace) : ICheckBackChannel
    {
        public string ClientId { get; } = clientId;
        public bool IsAlive { get; private set; } = true;
        public IDisposable? Replacement;
        public bool TrySendCheck(CheckBackRequest request)
        {
            IsAlive = false;
            Replacement = replace();
            return false;
        }
    }

    /// <summary>Takes the check-pass asks pending, as the check loop does before a pass.</summary>
    private static void TakeCheckKicks(BrokerEngine engine)
    {
        var kicks = (SemaphoreSlim)typeof(BrokerEngine).GetField("_checkKick", BindingFlags.Instance | BindingFlags.NonPublic)!.GetValue(engine)!;
        while (kicks.Wait(0)) { }
        Assert.Equal(0, engine.PendingCheckKicks);
    }

    [Fact]
    public async Task A_session_that_closed_in_a_pass_and_was_replaced_by_its_client_id_leaves_the_rest_of_the_pass_to_the_new_one()
    {
        await using var h = await EngineHarness.StartAsync();
        var renewed = new RecordingChannel("c");
        var closing = new ClosingChannel("c", () => h.Engine.Producers.Register("orders", renewed));
        using var r = h.Engine.Producers.Register("orders", closing);
        var ids = new List<string>();
        for (int i = 0; i < 10; i++) ids.Add(await h.SendHalfAsync("orders", clientId: "c"));
        h.Clock.Advance(TimeSpan.FromSeconds(7));
        TakeCheckKicks(h.Engine); // the registrations' ask, as the check loop would have taken it

        // The refusing (closed) session is not the new one: the rest of the pass goes to the new one, and the half the
        // old one refused is checked at the pass its registration asked for, not after the check interval.
        Assert.Equal(9, await h.Engine.RunCheckPassAsync());
        Assert.Equal(1, h.Engine.PendingCheckKicks);
        Assert.Equal(1, await h.Engine.RunCheckPassAsync());
        Assert.Equal(ids.Order(), renewed.Checks.Select(c => c.TransactionId).Order());
        Assert.All(renewed.Checks, c => Assert.Equal(1, c.CheckNumber));
        closing.Replacement?.Dispose();
    }

    [Fact]
    public async Task Room_announced_while_the_pass_that_was_refused_still_runs_asks_for_the_next_pass()
    {
        await using var h = await EngineHarness.StartAsync();
        var full = new FullChannel("full");
        using var r = h.Engine.Producers.Register("orders", full);
        var ids = new List<string>();
        for (int i = 0; i < 10; i++) ids.Add(await h.SendHalfAsync("orders", clientId: "full"));
        h.Clock.Advance(TimeSpan.FromSeconds(7));
        TakeCheckKicks(h.Engine); // the registrations' ask, as the check loop would have taken it
        // The channel has room again, and says so, before the pass that it refused has ended.
        full.OnRefused = () => { full.Full = false; h.Engine.RequestCheckPass(); };

        Assert.Equal(0, await h.Engine.RunCheckPassAsync());
        Assert.Equal(1, h.Engine.PendingCheckKicks);
        Assert.Equal(10, await h.Engine.RunCheckPassAsync());
        Assert.Equal(ids.Order(), full.Checks.Select(c => c.TransactionId).Order());
    }
}
