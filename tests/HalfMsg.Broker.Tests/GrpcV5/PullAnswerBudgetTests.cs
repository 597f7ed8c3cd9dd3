using Apache.Rocketmq.V2;
using Grpc.Core;
using HalfMsg.Broker.Core;
using HalfMsg.Broker.Core.Model;
using HalfMsg.Broker.FrontEnds.GrpcV5;
using HalfMsg.Broker.Tests.Infrastructure;
using HalfMsg.Protocol.Grpc;
using Microsoft.AspNetCore.Connections.Features;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.Logging.Abstractions;
using Duration = Google.Protobuf.WellKnownTypes.Duration;
using MessagingService = HalfMsg.Broker.FrontEnds.GrpcV5.MessagingService;

namespace HalfMsg.Broker.Tests.GrpcV5;

/// <summary>
/// A PullMessage answer reserves its bytes on the connection's and the broker's budget of unread answers, as a
/// ReceiveMessage answer does (<see cref="ReceiveAnswerBudgetTests"/>): a client that opens pull streams and does not
/// read them cannot make the broker hold a full answer per stream. The answer keeps what fits; with no room at all it
/// waits for room during its long poll and then answers TOO_MANY_REQUESTS. It waits only for the budget that refused it
/// to have room for its first message, so it does not read its batch again at every answer written elsewhere, and it
/// leaves nothing registered on a budget when it does not wait.
/// </summary>
public sealed class PullAnswerBudgetTests : IAsyncLifetime
{
    private readonly string _dir = Path.Combine(Path.GetTempPath(), "halfmsg-pullbudget-" + Guid.NewGuid().ToString("N"));
    private BrokerEngine _engine = null!;

    /// <summary>A connection budget of 2000 bytes (never below twice the largest request, here 1000 bytes).</summary>
    private static readonly GrpcV5Options SmallBudget = new() { MaxReceiveMessageSize = 1000, MaxUnsentBytesPerConnection = 2000 };

    public async Task InitializeAsync()
    {
        _engine = await BrokerEngine.OpenAsync(new CoreOptions { DataDir = _dir, QueuesPerTopic = 1 });
        for (int i = 0; i < 3; i++)
            Assert.True((await _engine.SendAsync(new MessageDraft { Topic = "T", MessageId = Guid.NewGuid().ToString("N"), Body = new byte[300] })).IsOk);
    }

    public async Task DisposeAsync()
    {
        await _engine.DisposeAsync();
        try { Directory.Delete(_dir, true); } catch (IOException) { }
    }

    private sealed class ConnectionItems : IConnectionItemsFeature
    {
        public IDictionary<object, object?> Items { get; set; } = new Dictionary<object, object?>();
    }

    private sealed class RecordingStream : IServerStreamWriter<PullMessageResponse>
    {
        public List<PullMessageResponse> Responses { get; } = [];
        public WriteOptions? WriteOptions { get; set; }

        public Task WriteAsync(PullMessageResponse message)
        {
            lock (Responses) Responses.Add(message);
            return Task.CompletedTask;
        }

        public int Messages => Responses.Count(r => r.ContentCase == PullMessageResponse.ContentOneofCase.Message);
    }

    /// <summary>A call on a connection whose budget is already held by another stream's unread answer, but
    /// <paramref name="room"/> bytes.</summary>
    private static (TestServerCallContext Context, AnswerBudget Budget, long Taken) Call(long room)
    {
        var context = new TestServerCallContext(GrpcMethods.PullMessage);
        var http = new DefaultHttpContext();
        http.Features.Set<IConnectionItemsFeature>(new ConnectionItems());
        http.Request.Headers[RocketMqHeaders.ClientId] = "c1";
        context.UserState["__HttpContext"] = http;
        AnswerBudget budget = AnswerBudget.Of(http, SmallBudget.AnswerBudgetPerConnection);
        long taken = SmallBudget.AnswerBudgetPerConnection - room;
        Assert.True(budget.TryTake(taken));
        return (context, budget, taken);
    }

    private static PullMessageRequest Pull(TimeSpan longPoll) => new()
    {
        Group = new Resource { Name = "g" },
        MessageQueue = new MessageQueue { Topic = new Resource { Name = "T" }, Id = 0 },
        Offset = 0,
        BatchSize = 32,
        LongPollingTimeout = Duration.FromTimeSpan(longPoll),
    };

    [Fact]
    public async Task A_pull_on_a_full_connection_answers_TOO_MANY_REQUESTS_after_its_long_poll_with_no_messages()
    {
        var service = new MessagingService(_engine, SmallBudget, NullLogger<MessagingService>.Instance);
        var (context, budget, taken) = Call(room: 0);
        var stream = new RecordingStream();
        // A short long poll bounds the wait for room that never comes.
        await service.PullMessage(Pull(TimeSpan.FromMilliseconds(300)), stream, context).WaitAsync(TimeSpan.FromSeconds(10));

        Assert.Equal(Code.TooManyRequests, Assert.Single(stream.Responses).Status.Code);
        Assert.Equal(taken, budget.Held);
        Assert.Equal(0, service.UnsentAnswerBytes);
    }

    [Fact]
    public async Task A_pull_answers_the_messages_that_fit_and_next_offset_follows_the_last_of_them()
    {
        var service = new MessagingService(_engine, SmallBudget, NullLogger<MessagingService>.Instance);
        var (context, budget, taken) = Call(room: 700); // one message of 300 bytes (and its properties) fits, two do not
        var stream = new RecordingStream();
        await service.PullMessage(Pull(TimeSpan.Zero), stream, context).WaitAsync(TimeSpan.FromSeconds(10));

        Assert.Equal(Code.Ok, stream.Responses[0].Status.Code);
        Assert.Equal(1, stream.Messages);
        Assert.Equal(1, stream.Responses[^1].NextOffset);
        Assert.Equal(taken, budget.Held); // given back once written
        Assert.Equal(0, service.UnsentAnswerBytes);
    }

    [Fact]
    public async Task Room_freed_during_the_long_poll_is_used_at_once()
    {
        var service = new MessagingService(_engine, SmallBudget, NullLogger<MessagingService>.Instance);
        var (context, budget, taken) = Call(room: 0);
        var stream = new RecordingStream();
        var clock = System.Diagnostics.Stopwatch.StartNew();
        Task pull = service.PullMessage(Pull(TimeSpan.FromSeconds(20)), stream, context);
        Assert.False(pull.IsCompleted);

        budget.Release(taken); // the other answer was read
        await pull.WaitAsync(TimeSpan.FromSeconds(10));
        Assert.True(clock.Elapsed < TimeSpan.FromSeconds(10), $"took {clock.Elapsed}");
        Assert.Equal(Code.Ok, stream.Responses[0].Status.Code);
        Assert.Equal(3, stream.Messages);
        Assert.Equal(3, stream.Responses[^1].NextOffset);
        Assert.Equal(0, budget.Held);
    }

    /// <summary>
    /// Review of the gRPC pull, F1: every pull registered a Task.WhenAny on both budgets' release tasks before its look,
    /// even one that never waited; those complete only when some answer releases bytes, so on a broker whose consumers
    /// find nothing (idle or caught up, no long poll) each pull stayed in memory for good (5,000 pulls kept 5,000).
    /// </summary>
    [Fact]
    public async Task Empty_pulls_leave_nothing_registered_on_the_answer_budgets()
    {
        var service = new MessagingService(_engine, SmallBudget, NullLogger<MessagingService>.Instance);
        var (context, connection, _) = Call(room: SmallBudget.AnswerBudgetPerConnection);
        var caughtUp = Pull(TimeSpan.Zero);
        caughtUp.Offset = 3; // all three read: nothing new
        for (int i = 0; i < 2000; i++)
        {
            var stream = new RecordingStream();
            await service.PullMessage(caughtUp, stream, context);
            Assert.Equal(Code.MessageNotFound, stream.Responses[0].Status.Code);
        }

        Assert.Equal(0, TaskContinuations.Count(service.BrokerAnswerBudget.Released));
        Assert.Equal(0, TaskContinuations.Count(connection.Released));
    }

    /// <summary>
    /// Review of the gRPC pull, F2: a pull waiting for room read its whole batch again (up to 8 MiB of bodies) at every
    /// release of either budget and dropped it when its first message still did not fit. Here the broker's budget is held
    /// by unread answers and other answers of 100 bytes come and go: never room for the first message (300 bytes).
    /// </summary>
    [Fact]
    public async Task A_pull_waiting_for_the_brokers_room_looks_again_only_once_its_first_message_fits()
    {
        var options = SmallBudget with { MaxUnsentBytes = 2000 };
        var service = new MessagingService(_engine, options, NullLogger<MessagingService>.Instance);
        AnswerBudget broker = service.BrokerAnswerBudget;
        Assert.True(broker.TryTake(broker.Limit)); // unread answers of other clients hold the broker's whole budget
        var (context, _, _) = Call(room: SmallBudget.AnswerBudgetPerConnection);
        var stream = new RecordingStream();
        Task pull = service.PullMessage(Pull(TimeSpan.FromSeconds(20)), stream, context);
        while (TaskContinuations.Count(broker.Released) == 0) await Task.Delay(10); // it looked and waits for room

        for (int i = 0; i < 40; i++)
        {
            // Another answer of 100 bytes is written (released), and the next one takes the room again. The pause lets a
            // pull woken by the release look again (as it did before the fix), so that its looks can be counted.
            broker.Release(100);
            Assert.True(broker.TryTake(100));
            await Task.Delay(10);
        }

        Assert.Equal(1, service.PullLooks);
        Assert.False(pull.IsCompleted);

        broker.Release(broker.Limit); // the unread answers were read: room for all three
        await pull.WaitAsync(TimeSpan.FromSeconds(10));
        Assert.Equal(Code.Ok, stream.Responses[0].Status.Code);
        Assert.Equal(3, stream.Messages);
        Assert.Equal(2, service.PullLooks);
        Assert.Equal(0, broker.Held);
    }

    /// <summary>
    /// Review of the gRPC pull, F2: a pull waiting for its connection's room was woken by every answer written to any
    /// other client (the broker's budget released), and read its batch again although its connection had no more room.
    /// </summary>
    [Fact]
    public async Task A_pull_waiting_for_its_connections_room_is_not_woken_by_other_clients_answers()
    {
        var service = new MessagingService(_engine, SmallBudget, NullLogger<MessagingService>.Instance);
        var (context, connection, taken) = Call(room: 0);
        var stream = new RecordingStream();
        Task pull = service.PullMessage(Pull(TimeSpan.FromSeconds(20)), stream, context);
        while (TaskContinuations.Count(connection.Released) == 0) await Task.Delay(10); // it looked and waits for room
        AnswerBudget broker = service.BrokerAnswerBudget;

        for (int i = 0; i < 40; i++)
        {
            // Other clients' answers are reserved and written. The pause lets a pull woken by the release look again (as
            // it did before the fix), so that its looks can be counted.
            Assert.True(broker.TryTake(100_000));
            broker.Release(100_000);
            await Task.Delay(10);
        }

        Assert.Equal(1, service.PullLooks);
        Assert.False(pull.IsCompleted);

        connection.Release(taken); // this client read its other answer
        await pull.WaitAsync(TimeSpan.FromSeconds(10));
        Assert.Equal(Code.Ok, stream.Responses[0].Status.Code);
        Assert.Equal(3, stream.Messages);
        Assert.Equal(0, connection.Held);
    }

    /// <summary>
    /// A message larger than the connection's whole budget goes out alone once nothing else is held there, as a Remoting
    /// answer larger than its connection's in-flight budget does: before, no room was ever enough, and every pull of its
    /// queue answered TOO_MANY_REQUESTS after its long poll, for good.
    /// </summary>
    [Fact]
    public async Task A_message_larger_than_the_whole_budget_goes_alone_once_nothing_else_is_held()
    {
        Assert.True((await _engine.SendAsync(new MessageDraft { Topic = "Big", MessageId = Guid.NewGuid().ToString("N"), Body = new byte[3000] })).IsOk);
        var service = new MessagingService(_engine, SmallBudget, NullLogger<MessagingService>.Instance);
        var (context, connection, taken) = Call(room: 1500); // 500 bytes of another answer are held
        var request = Pull(TimeSpan.FromSeconds(5));
        request.MessageQueue.Topic.Name = "Big";
        var stream = new RecordingStream();
        Task pull = service.PullMessage(request, stream, context);
        while (TaskContinuations.Count(connection.Released) == 0) await Task.Delay(10); // 3000 bytes do not fit beside the 500: it waits
        Assert.False(pull.IsCompleted);

        connection.Release(taken); // the other answer was read: nothing else is held
        await pull.WaitAsync(TimeSpan.FromSeconds(10));
        Assert.Equal(Code.Ok, stream.Responses[0].Status.Code);
        Assert.Equal(1, stream.Messages);
        Assert.Equal(1, stream.Responses[^1].NextOffset);
        Assert.Equal(0, connection.Held);
    }

    /// <summary>
    /// A pull reserves each body's room before reading it, as a Remoting pull does (the engine's allowance): until
    /// 2026-12-06 a PullMessage read its whole batch (up to 8 MiB of bodies) and only then took room for what fitted, so
    /// 20 concurrent pulls read 160 MiB at once on a broker whose budget of unread answers was 2 MiB.
    /// </summary>
    [Fact]
    public async Task Concurrent_pulls_read_no_more_bodies_than_the_brokers_budget()
    {
        const int pulls = 20, messageSize = 256 * 1024;
        const long budget = 2L * 1024 * 1024;
        for (int i = 0; i < 40; i++)
            Assert.True((await _engine.SendAsync(new MessageDraft { Topic = "Big", MessageId = $"b{i}", Body = new byte[messageSize] })).IsOk);
        var options = new GrpcV5Options { MaxReceiveMessageSize = 512 * 1024, MaxUnsentBytesPerConnection = budget, MaxUnsentBytes = budget };
        var service = new MessagingService(_engine, options, NullLogger<MessagingService>.Instance);
        // Pulls that read bodies are held before building their answers: what they read is what they hold at once.
        var release = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        long read = 0, holding = 0;
        service.PulledForTests = async bytes =>
        {
            Interlocked.Add(ref read, bytes);
            Interlocked.Increment(ref holding);
            await release.Task;
        };
        var streams = new List<RecordingStream>();
        var calls = new List<Task>();
        try
        {
            for (int i = 0; i < pulls; i++)
            {
                // Each on its own connection, whose budget (2 MiB) is the service's.
                var context = new TestServerCallContext(GrpcMethods.PullMessage);
                var http = new DefaultHttpContext();
                http.Features.Set<IConnectionItemsFeature>(new ConnectionItems());
                context.UserState["__HttpContext"] = http;
                var request = Pull(TimeSpan.Zero); // no long poll: a pull without room answers at once
                request.MessageQueue.Topic.Name = "Big";
                var stream = new RecordingStream();
                streams.Add(stream);
                calls.Add(service.PullMessage(request, stream, context));
            }

            // Every pull either holds its bodies (waiting above) or is answered (TOO_MANY_REQUESTS, nothing read).
            await RemotingBroker.EventuallyAsync(() => Task.FromResult(calls.Count(c => c.IsCompleted) + Interlocked.Read(ref holding)),
                n => n == pulls, TimeSpan.FromSeconds(60), "every pull to hold its bodies or be answered");
            Assert.True(Interlocked.Read(ref read) <= budget,
                $"{Interlocked.Read(ref holding)} pulls read {Interlocked.Read(ref read) / 1024} KiB of bodies at once, broker budget {budget / 1024} KiB");
        }
        finally
        {
            release.TrySetResult();
            await Task.WhenAll(calls).WaitAsync(TimeSpan.FromSeconds(30));
        }

        foreach (var stream in streams)
        {
            Assert.True(stream.Responses[0].Status.Code is Code.Ok or Code.TooManyRequests, stream.Responses[0].Status.ToString());
            if (stream.Responses[0].Status.Code != Code.Ok) continue;
            // The messages that fit, from offset 0, and next_offset right after them: nothing skipped.
            var offsets = stream.Responses.Where(r => r.ContentCase == PullMessageResponse.ContentOneofCase.Message).Select(r => r.Message.SystemProperties.QueueOffset).ToList();
            Assert.Equal(Enumerable.Range(0, offsets.Count).Select(o => (long)o), offsets);
            Assert.Equal(offsets.Count, stream.Responses[^1].NextOffset);
        }

        Assert.Contains(streams, s => s.Responses[0].Status.Code == Code.Ok);
        Assert.Equal(0, service.UnsentAnswerBytes);
    }
}
