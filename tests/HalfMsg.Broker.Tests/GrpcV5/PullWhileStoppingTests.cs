using System.Diagnostics;
using Apache.Rocketmq.V2;
using Grpc.Core;
using HalfMsg.Broker.Core;
using HalfMsg.Broker.FrontEnds.GrpcV5;
using HalfMsg.Broker.Tests.Infrastructure;
using HalfMsg.Protocol.Grpc;
using Microsoft.Extensions.Logging.Abstractions;
using Duration = Google.Protobuf.WellKnownTypes.Duration;
using MessagingService = HalfMsg.Broker.FrontEnds.GrpcV5.MessagingService;
using Status = Apache.Rocketmq.V2.Status;

namespace HalfMsg.Broker.Tests.GrpcV5;

/// <summary>
/// A PullMessage long poll ends when the broker begins to stop (ApplicationStopping), answered TOO_MANY_REQUESTS as a
/// parked ReceiveMessage is, instead of holding Kestrel's graceful stop for the rest of its poll; one arriving while
/// the broker stops with nothing to read is told the same at once.
/// </summary>
public sealed class PullWhileStoppingTests : IAsyncLifetime
{
    private readonly string _dir = Path.Combine(Path.GetTempPath(), "halfmsg-pullstop-" + Guid.NewGuid().ToString("N"));
    private BrokerEngine _engine = null!;

    public async Task InitializeAsync()
    {
        _engine = await BrokerEngine.OpenAsync(new CoreOptions { DataDir = _dir, QueuesPerTopic = 1 });
        Assert.True((await _engine.CreateTopicAsync("T")).Error.IsOk);
    }

    public async Task DisposeAsync()
    {
        await _engine.DisposeAsync();
        try { Directory.Delete(_dir, true); } catch (IOException) { }
    }

    private sealed class RecordingStream : IServerStreamWriter<PullMessageResponse>
    {
        public readonly List<PullMessageResponse> Written = [];
        public WriteOptions? WriteOptions { get; set; }

        public Task WriteAsync(PullMessageResponse message)
        {
            lock (Written) Written.Add(message);
            return Task.CompletedTask;
        }
    }

    private static PullMessageRequest Request() => new()
    {
        Group = new Resource { Name = "g" },
        MessageQueue = new MessageQueue { Topic = new Resource { Name = "T" }, Id = 0 },
        Offset = 0,
        BatchSize = 32,
        LongPollingTimeout = Duration.FromTimeSpan(TimeSpan.FromSeconds(25)),
    };

    /// <summary>With a client id, so the handler marks the group seen (what the first test waits for).</summary>
    private static TestServerCallContext Context() => new(GrpcMethods.PullMessage, new Metadata { { RocketMqHeaders.ClientId, "pull-1" } });

    [Fact]
    public async Task A_parked_pull_is_answered_TOO_MANY_REQUESTS_as_soon_as_the_broker_stops()
    {
        using var stopping = new CancellationTokenSource();
        var service = new MessagingService(_engine, new GrpcV5Options(), NullLogger<MessagingService>.Instance, stopping: stopping.Token);
        var stream = new RecordingStream();
        var clock = Stopwatch.StartNew();
        Task pull = service.PullMessage(Request(), stream, Context());
        // Parked (the handler marks the group just before the engine's pull, which finds the queue empty).
        await Infrastructure.RemotingBroker.EventuallyAsync(() => Task.FromResult(_engine.Consumers.Of("g").Count), n => n > 0,
            TimeSpan.FromSeconds(10), "the pull to arrive");

        stopping.Cancel();
        await pull.WaitAsync(TimeSpan.FromSeconds(10));

        Assert.True(clock.Elapsed < TimeSpan.FromSeconds(20), "answered at the stop, not at the end of its 25 s poll");
        Status status = Assert.Single(stream.Written, r => r.ContentCase == PullMessageResponse.ContentOneofCase.Status).Status;
        Assert.Equal(Code.TooManyRequests, status.Code);
        Assert.Contains("stopping", status.Message, StringComparison.Ordinal);
        Assert.DoesNotContain(stream.Written, r => r.ContentCase == PullMessageResponse.ContentOneofCase.Message);
    }

    [Fact]
    public async Task A_pull_arriving_while_the_broker_stops_is_told_to_back_off_at_once_or_served_what_there_is()
    {
        var service = new MessagingService(_engine, new GrpcV5Options(), NullLogger<MessagingService>.Instance, stopping: new CancellationToken(canceled: true));
        var empty = new RecordingStream();
        await service.PullMessage(Request(), empty, Context()).WaitAsync(TimeSpan.FromSeconds(10));
        Assert.Equal(Code.TooManyRequests, empty.Written[0].Status.Code);

        // A pull changes nothing on the broker: one that finds messages is answered with them, stopping or not.
        Assert.True((await _engine.SendAsync(new Core.Model.MessageDraft { Topic = "T", MessageId = Guid.NewGuid().ToString("N"), Body = new byte[10] })).IsOk);
        var found = new RecordingStream();
        await service.PullMessage(Request(), found, Context()).WaitAsync(TimeSpan.FromSeconds(10));
        Assert.Equal(Code.Ok, found.Written[0].Status.Code);
        Assert.Single(found.Written, r => r.ContentCase == PullMessageResponse.ContentOneofCase.Message);
        Assert.Equal(1, found.Written[^1].NextOffset);
    }
}
