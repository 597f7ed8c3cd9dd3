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
/// waits for room during its long poll and then answers TOO_MANY_REQUESTS.
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
}
