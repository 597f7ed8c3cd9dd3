using HalfMsg.Broker.Core;
using HalfMsg.Broker.Core.Model;
using HalfMsg.Broker.Core.Transactions;
using HalfMsg.Broker.FrontEnds.Remoting;
using HalfMsg.Broker.Tests.Infrastructure;
using HalfMsg.Protocol.Remoting;

namespace HalfMsg.Broker.Tests.Remoting;

/// <summary>
/// The core asks a channel that refused a check nothing more in that pass: the channel announces room itself
/// (<see cref="BrokerEngine.RequestCheckPass"/>). Every refusal of a Remoting connection that is not its end must be
/// one whose room is announced, and none may be announced when there is none. Until the night session of 2026-12-07 a
/// check refused for a full frame queue was never announced (the halves of the connection's groups due in that pass
/// waited the whole check interval), and a check larger than the byte budget was refused with nothing queued and its
/// room announced at once, a pass that refused it again, back to back (found by review). The engine runs no check loop
/// here, so the asks stay pending and are counted.
/// </summary>
public sealed class RemotingCheckBackRefusalRoomTests : IAsyncLifetime
{
    private const int FrameQueue = 8;
    private RemotingSessionOverPipes _s = null!;

    public async Task InitializeAsync() => _s = await RemotingSessionOverPipes.OpenAsync("halfmsg-checkroom-", new RemotingOptions { OutboundQueueCapacity = FrameQueue }, null, startBackgroundLoops: false);

    public async Task DisposeAsync() => await _s.DisposeAsync();

    private int PendingCheckKicks => _s.Engine.PendingCheckKicks;

    private static CheckBackRequest Check(int bodyBytes) => new()
    {
        TransactionId = "tx",
        ProducerGroup = "pg",
        HalfMessage = new StoredMessage { Topic = "T", MessageId = "01" + Guid.NewGuid().ToString("N").ToUpperInvariant(), Body = new byte[bodyBytes] },
    };

    /// <summary>The client reads everything written to it until the test ends.</summary>
    private Task ReadAll(CancellationToken stop) => Task.Run(async () =>
    {
        try
        {
            while (true)
            {
                var r = await _s.ToClient.Reader.ReadAsync(stop);
                _s.ToClient.Reader.AdvanceTo(r.Buffer.End);
                if (r.IsCompleted) return;
            }
        }
        catch (OperationCanceledException) when (stop.IsCancellationRequested)
        {
        }
    });

    [Fact]
    public async Task A_check_refused_for_a_full_frame_queue_asks_for_a_pass_once_the_queue_has_room()
    {
        // The client reads nothing: the writer blocks on the first large frame, and the frame queue fills behind it.
        var frame = RemotingCommand.Request(RequestCode.NotifyConsumerIdsChanged, body: new byte[100 * 1024]);
        int queued = 0;
        while (_s.Session.Enqueue(frame))
        {
            Assert.True(++queued < 1000, "the frame queue never filled");
        }
        Assert.False(_s.Session.TrySendCheck(Check(1024)));
        Assert.True(_s.Session.IsAlive);
        Assert.Equal(0, PendingCheckKicks); // no room yet: no pass asked

        using var stop = new CancellationTokenSource();
        Task reading = ReadAll(stop.Token);
        await Eventually.TrueAsync(() => PendingCheckKicks > 0, () => "the connection asks for a check pass (none asked)", TimeSpan.FromSeconds(30));
        Assert.True(_s.Session.TrySendCheck(Check(1024)));
        await stop.CancelAsync();
        await reading.WaitAsync(TimeSpan.FromSeconds(30));
    }

    [Fact]
    public async Task A_check_larger_than_the_byte_budget_goes_out_alone_and_asks_for_no_pass()
    {
        int budget = checked((int)_s.Server.Options.CheckBackQueueBudget);
        var large = Check(budget + 1024 * 1024);
        Assert.True(_s.Session.TrySendCheck(large), "a check larger than the budget was refused with nothing queued");
        Assert.Equal(0, PendingCheckKicks);
        // While it is queued, another is refused as usual, and its room is announced once the large one is read.
        Assert.False(_s.Session.TrySendCheck(Check(1024)));
        Assert.Equal(0, PendingCheckKicks);
        using var stop = new CancellationTokenSource();
        Task reading = ReadAll(stop.Token);
        await Eventually.TrueAsync(() => PendingCheckKicks > 0, () => "the connection asks for a check pass (none asked)", TimeSpan.FromSeconds(30));
        Assert.True(_s.Session.TrySendCheck(Check(1024)));
        await stop.CancelAsync();
        await reading.WaitAsync(TimeSpan.FromSeconds(30));
    }
}
