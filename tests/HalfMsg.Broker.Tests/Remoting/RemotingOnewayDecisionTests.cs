using System.IO.Pipelines;
using HalfMsg.Broker.Core;
using HalfMsg.Broker.FrontEnds.Remoting;
using HalfMsg.Broker.Tests.Infrastructure;
using HalfMsg.Protocol.Remoting;
using Microsoft.Extensions.Logging.Abstractions;

namespace HalfMsg.Broker.Tests.Remoting;

/// <summary>
/// A one-way END_TRANSACTION (the Java producer's commit or rollback) on a connection whose general request slots are
/// all taken by sends waiting to queue their answers (review 2026-12-05, remsend). One slot and a stalled socket stand
/// in for a Java client instance's 256 sends in flight.
/// </summary>
public sealed class RemotingOnewayDecisionTests : IAsyncLifetime
{
    private readonly string _dir = Path.Combine(Path.GetTempPath(), "halfmsg-oneway-" + Guid.NewGuid().ToString("N"));
    private BrokerEngine _engine = null!;

    public async Task InitializeAsync() => _engine = await BrokerEngine.OpenAsync(new CoreOptions { DataDir = _dir, QueuesPerTopic = 1 });

    public async Task DisposeAsync()
    {
        await _engine.DisposeAsync();
        try { Directory.Delete(_dir, true); } catch (IOException) { }
    }

    [Fact]
    public async Task A_one_way_commit_sent_while_every_request_slot_is_busy_is_carried_out() => await Run(3, 1, 1);

    [Fact]
    public async Task With_a_free_slot_the_same_commit_is_carried_out() => await Run(3, 1, 2);

    [Fact]
    public async Task A_one_way_commit_on_an_idle_connection_is_carried_out() => await Run(0, 0, 1);

    [Fact]
    public async Task Another_one_way_request_refused_for_want_of_a_slot_is_counted() => await Run(3, 1, 1, offsetCommitFirst: true);

    private async Task Run(int pings, int waiting, int slots, bool offsetCommitFirst = false)
    {
        var half = await _engine.SendHalfAsync(new Core.Model.MessageDraft { Topic = "TxT", MessageId = "UNIQ1", Body = "b"u8.ToArray() }, "PG", "c1", null);
        Assert.True(half.Error.IsOk, half.Error.ToString());

        // A queue of one answer and a socket that takes no bytes for a moment (the answers to the many sends are still
        // on their way to the client).
        var server = new RemotingServer(_engine, new RemotingOptions { MaxOutstandingRequestsPerConnection = slots, OutboundQueueCapacity = 1 }, NullLoggerFactory.Instance);
        // A write to the server returns once the session has consumed the frame, which it does after dispatching it:
        // each step below waits for the request it sent to have been taken in, not for a pause.
        var toServer = new Pipe(new PipeOptions(pauseWriterThreshold: 1, resumeWriterThreshold: 1));
        var toClient = new Pipe(new PipeOptions(pauseWriterThreshold: 1, resumeWriterThreshold: 1));
        var session = new RemotingSession(new DuplexPipe(toServer.Reader, toClient.Writer), server, null, null, nameServerOnly: false);
        var run = session.RunAsync(CancellationToken.None);

        // Answer 1 fills the socket, answer 2 the queue, and request 3 waits to queue its answer, holding a slot. Each
        // request is sent once the one before it is done (a pause alone let a loaded machine refuse request 3 instead).
        for (int i = 1; i <= pings; i++)
        {
            var ping = RemotingCommand.Request(RequestCode.GetBrokerClusterInfo);
            ping.Opaque = i;
            await toServer.Writer.WriteAsync(RemotingFrame.ToArray(ping));
            if (i < pings)
                await RemotingBroker.EventuallyAsync(() => Task.FromResult(session.RequestsInProgress), n => n == 0, TimeSpan.FromSeconds(10), $"request {i} answered");
        }
        await RemotingBroker.EventuallyAsync(() => Task.FromResult(session.RequestsInProgress), n => n == waiting, TimeSpan.FromSeconds(10), "a request waiting to queue its answer");

        if (offsetCommitFirst)
        {
            // A one-way request other than a decision still needs a general slot: refused, it is counted (and logged).
            var commit = RemotingCommand.Request(RequestCode.UpdateConsumerOffset)
                .Set("consumerGroup", "G").Set("topic", "TxT").Set("queueId", 0).Set("commitOffset", 0L);
            commit.Flag = RemotingCommand.OnewayFlag;
            commit.Opaque = 5;
            await toServer.Writer.WriteAsync(RemotingFrame.ToArray(commit));
            await RemotingBroker.EventuallyAsync(() => Task.FromResult(Interlocked.Read(ref server.DroppedOnewayRequests)), n => n == 1,
                TimeSpan.FromSeconds(10), "the refused one-way request counted");
        }

        var end = RemotingCommand.Request(RequestCode.EndTransaction)
            .Set("producerGroup", "PG").Set("tranStateTableOffset", 0L).Set("commitLogOffset", 0L)
            .Set("commitOrRollback", (long)MessageSysFlag.TransactionCommitType).Set("fromTransactionCheck", false)
            .Set("msgId", "UNIQ1").Set("transactionId", "UNIQ1");
        end.Flag = RemotingCommand.OnewayFlag;
        end.Opaque = 4;
        await toServer.Writer.WriteAsync(RemotingFrame.ToArray(end)); // dispatched (slot taken, or refused) before the drain below

        // The client reads again: everything drains.
        var drain = Task.Run(async () =>
        {
            while (true)
            {
                var r = await toClient.Reader.ReadAsync();
                toClient.Reader.AdvanceTo(r.Buffer.End);
                if (r.IsCompleted) return;
            }
        });
        // The decision was dispatched above, so it is among these: none in progress means it was carried out (or dropped).
        await RemotingBroker.EventuallyAsync(() => Task.FromResult(session.RequestsInProgress), n => n == 0, TimeSpan.FromSeconds(10), "every request processed");
        Assert.True(_engine.FindTransaction("UNIQ1") is null, "the producer's one-way commit was dropped; the half waits for a check-back");
        Assert.Equal(offsetCommitFirst ? 1 : 0, Interlocked.Read(ref server.DroppedOnewayRequests));

        await toServer.Writer.CompleteAsync();
        await run.WaitAsync(TimeSpan.FromSeconds(10));
    }
}
