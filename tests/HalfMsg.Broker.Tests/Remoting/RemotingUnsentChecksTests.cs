using HalfMsg.Broker.Core;
using HalfMsg.Broker.Core.Model;
using HalfMsg.Broker.FrontEnds.Remoting;
using HalfMsg.Broker.Tests.Infrastructure;
using HalfMsg.TestKit;

namespace HalfMsg.Broker.Tests.Remoting;

/// <summary>
/// Check-backs a Remoting connection queued and never wrote when it closed are given back to the core, as a Telemetry
/// stream's are (<see cref="BrokerEngine.ReturnUnsentChecksAsync(string, IReadOnlyList{CheckBackRequest}, CancellationToken)"/>): not counted as one of the half's checks, and
/// offered to another instance at once. Until 2026-12-07 (review) the Remoting write loop dropped them with the rest of
/// its queue: each counted as sent (an attempt spent) and its half waited a whole check interval. The frame being
/// written, and those written and not yet flushed, are not given back: they may have reached the producer.
/// </summary>
public sealed class RemotingUnsentChecksTests : IAsyncLifetime
{
    private readonly ManualClock _clock = new();
    private RemotingSessionOverPipes _s = null!;

    public async Task InitializeAsync() => _s = await RemotingSessionOverPipes.OpenAsync("halfmsg-rmunsent-", null, _clock, startBackgroundLoops: false);

    public async Task DisposeAsync() => await _s.DisposeAsync();

    private async Task<string> SendHalfAsync(int bodyBytes)
    {
        string id = "0A" + Guid.NewGuid().ToString("N").ToUpperInvariant()[2..];
        var draft = new MessageDraft
        {
            Topic = "orders", MessageId = id, Body = new byte[bodyBytes],
            BornTimestampMs = _clock.GetUtcNow().ToUnixTimeMilliseconds(), BornHost = "test",
        };
        var sent = await _s.Engine.SendHalfAsync(draft, "orders", "p1", null);
        Assert.True(sent.IsOk, sent.Error.ToString());
        return id;
    }

    [Fact]
    public async Task Checks_still_queued_when_the_connection_closes_are_given_back_and_the_written_ones_are_not()
    {
        _s.Session.SetClientId("p1");
        _s.Session.RegisterProducer("orders");
        // 700 KB each: the first is written whole before the writer's first flush, which waits for a client that reads
        // nothing; the third is still queued then (the second too, or it is being written: the writer flushes each 1 MiB).
        string first = await SendHalfAsync(700 * 1024);
        string second = await SendHalfAsync(700 * 1024);
        string third = await SendHalfAsync(700 * 1024);
        _clock.Advance(TimeSpan.FromSeconds(7));
        Assert.Equal(3, await _s.Engine.RunCheckPassAsync());
        Assert.Equal(3, _s.Engine.Metrics.ChecksSent);

        // The producer goes away: its connection closes with the third check (at least) still queued.
        await _s.ToServer.Writer.CompleteAsync();
        await _s.ToClient.Reader.CompleteAsync();
        await _s.Run.WaitAsync(TimeSpan.FromSeconds(30));
        int Unchecked() => new[] { first, second, third }.Count(id => _s.Engine.FindTransaction(id)!.Checks == 0);
        await Until(() => _s.Engine.FindTransaction(third)!.Checks == 0 && _s.Engine.Metrics.ChecksReturned == Unchecked());
        Assert.Equal(1, _s.Engine.FindTransaction(first)!.Checks); // written: it may have reached the producer
        var returned = _s.Engine.FindTransaction(third)!;
        Assert.Equal((0, _clock.GetUtcNow(), (DateTimeOffset?)null), (returned.Checks, returned.NextCheckAt!.Value, returned.LastCheckAt));
        Assert.InRange(_s.Engine.Metrics.ChecksReturned, 1, 2);
        Assert.Equal(_s.Engine.Metrics.ChecksReturned, Unchecked());
    }

    [Fact]
    public async Task A_check_queued_before_the_client_id_changed_is_given_back_when_the_connection_closes()
    {
        // The first heartbeat's clientID; the checks go to it.
        _s.Session.SetClientId("p1");
        _s.Session.RegisterProducer("orders");
        string first = await SendHalfAsync(700 * 1024);
        string second = await SendHalfAsync(700 * 1024);
        string third = await SendHalfAsync(700 * 1024);
        _clock.Advance(TimeSpan.FromSeconds(7));
        Assert.Equal(3, await _s.Engine.RunCheckPassAsync());

        // A second HEART_BEAT names another clientID (a client restarted its instance on the same connection, or
        // changed its instance name); then the connection closes with the third check (at least) still queued. Until
        // the afternoon session of 2026-12-07 it was given back under the new id only, which none of the checks went
        // to: the core kept each as sent, and its half waited a whole check interval.
        _s.Session.SetClientId("p1-renamed");
        await _s.ToServer.Writer.CompleteAsync();
        await _s.ToClient.Reader.CompleteAsync();
        await _s.Run.WaitAsync(TimeSpan.FromSeconds(30));
        int Unchecked() => new[] { first, second, third }.Count(id => _s.Engine.FindTransaction(id)!.Checks == 0);
        await Until(() => _s.Engine.FindTransaction(third)!.Checks == 0 && _s.Engine.Metrics.ChecksReturned == Unchecked(),
            () => $"the third check was given back (checks of the third: {_s.Engine.FindTransaction(third)!.Checks}, returned {_s.Engine.Metrics.ChecksReturned})");
        Assert.Equal(1, _s.Engine.FindTransaction(first)!.Checks); // written: it may have reached the producer
        var returned = _s.Engine.FindTransaction(third)!;
        Assert.Equal((0, _clock.GetUtcNow(), (DateTimeOffset?)null), (returned.Checks, returned.NextCheckAt!.Value, returned.LastCheckAt));
        Assert.InRange(_s.Engine.Metrics.ChecksReturned, 1, 2);
    }

    private static Task Until(Func<bool> condition) => Until(condition, () => "the condition held");

    private static async Task Until(Func<bool> condition, Func<string> what)
    {
        var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(30);
        while (!condition())
        {
            Assert.True(DateTime.UtcNow < deadline, $"timed out after 30 s waiting until {what()}");
            await Task.Delay(20);
        }
    }
}
