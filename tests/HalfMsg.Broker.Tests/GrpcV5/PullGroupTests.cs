using Apache.Rocketmq.V2;
using Grpc.Core;
using HalfMsg.Broker.Core;
using HalfMsg.Broker.Core.Model;
using HalfMsg.Broker.FrontEnds.GrpcV5;
using HalfMsg.Broker.Tests.Infrastructure;
using HalfMsg.Protocol.Grpc;
using Microsoft.Extensions.Logging.Abstractions;
using Duration = Google.Protobuf.WellKnownTypes.Duration;
using MessagingService = HalfMsg.Broker.FrontEnds.GrpcV5.MessagingService;
using Status = Apache.Rocketmq.V2.Status;

namespace HalfMsg.Broker.Tests.GrpcV5;

/// <summary>
/// Which groups the gRPC pull RPCs serve: past <c>--max-consumer-groups</c> a new group's PullMessage and UpdateOffset
/// are FORBIDDEN, as its Remoting pull and commit are refused, while a known group goes on; a group name that could
/// never hold an offset (invalid, or a re-drive cursor's) is ILLEGAL_CONSUMER_GROUP at once.
/// </summary>
public sealed class PullGroupTests : IAsyncLifetime
{
    private readonly string _dir = Path.Combine(Path.GetTempPath(), "halfmsg-pullgroups-" + Guid.NewGuid().ToString("N"));
    private BrokerEngine _engine = null!;
    private MessagingService _service = null!;

    public async Task InitializeAsync()
    {
        _engine = await BrokerEngine.OpenAsync(new CoreOptions { DataDir = _dir, QueuesPerTopic = 1, MaxConsumerGroups = 1 });
        _service = new MessagingService(_engine, new GrpcV5Options(), NullLogger<MessagingService>.Instance);
        Assert.True((await _engine.SendAsync(new MessageDraft { Topic = "T", MessageId = Guid.NewGuid().ToString("N"), Body = new byte[10] })).IsOk);
    }

    public async Task DisposeAsync()
    {
        await _engine.DisposeAsync();
        try { Directory.Delete(_dir, true); } catch (IOException) { }
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
    }

    private static MessageQueue Queue => new() { Topic = new Resource { Name = "T" }, Id = 0 };

    private async Task<List<PullMessageResponse>> PullAsync(string group)
    {
        var stream = new RecordingStream();
        await _service.PullMessage(new PullMessageRequest { Group = new Resource { Name = group }, MessageQueue = Queue, BatchSize = 8 }, stream,
            new TestServerCallContext(GrpcMethods.PullMessage));
        return stream.Responses;
    }

    private Task<UpdateOffsetResponse> CommitAsync(string group, long offset)
        => _service.UpdateOffset(new UpdateOffsetRequest { Group = new Resource { Name = group }, MessageQueue = Queue, Offset = offset },
            new TestServerCallContext(GrpcMethods.UpdateOffset));

    [Fact]
    public async Task Past_the_group_limit_a_new_groups_pull_and_commit_are_FORBIDDEN_and_a_known_group_goes_on()
    {
        Assert.Equal(Code.Ok, (await CommitAsync("billing", 1)).Status.Code); // the one group the broker may hold

        var refused = await PullAsync("audit");
        Status status = Assert.Single(refused).Status;
        Assert.Equal(Code.Forbidden, status.Code);
        Assert.Contains("consumer groups", status.Message, StringComparison.OrdinalIgnoreCase);
        Assert.Equal(Code.Forbidden, (await CommitAsync("audit", 1)).Status.Code);

        var known = await PullAsync("billing");
        Assert.Equal(Code.Ok, known[0].Status.Code);
        Assert.Equal(Code.Ok, (await CommitAsync("billing", 0)).Status.Code);
    }

    /// <summary>
    /// Review of the gRPC pull, F3: at the limit a group that receives from the topic (a lease group there) was let pull
    /// it, but its UpdateOffset was FORBIDDEN (the pull counted its lease group, the commit did not): the client read on,
    /// its progress was never kept, and it read everything again after a restart or rebalance.
    /// </summary>
    [Fact]
    public async Task At_the_group_limit_a_group_let_pull_a_topic_may_also_commit_its_offset_there()
    {
        Assert.Single((await _engine.ReceiveAsync(new ReceiveRequest { ConsumerGroup = "billing", Topic = "T" })).Messages); // the one group

        var pulled = await PullAsync("billing");
        Assert.Equal(Code.Ok, pulled[0].Status.Code);
        UpdateOffsetResponse committed = await CommitAsync("billing", 1);
        Assert.True(committed.Status.Code == Code.Ok, $"{committed.Status.Code}: {committed.Status.Message}");
        GetOffsetResponse got = await _service.GetOffset(new GetOffsetRequest { Group = new Resource { Name = "billing" }, MessageQueue = Queue },
            new TestServerCallContext(GrpcMethods.GetOffset));
        Assert.Equal(1, got.Offset);

        // Another group is still refused at both.
        Assert.Equal(Code.Forbidden, Assert.Single(await PullAsync("audit")).Status.Code);
        Assert.Equal(Code.Forbidden, (await CommitAsync("audit", 1)).Status.Code);
    }

    [Theory]
    [InlineData("bad group!")]
    [InlineData("%REDRIVE%billing")]
    public async Task A_group_name_that_cannot_hold_an_offset_is_ILLEGAL_CONSUMER_GROUP(string group)
    {
        Assert.Equal(Code.IllegalConsumerGroup, Assert.Single(await PullAsync(group)).Status.Code);
        Assert.Equal(Code.IllegalConsumerGroup, (await CommitAsync(group, 1)).Status.Code);
        GetOffsetResponse got = await _service.GetOffset(new GetOffsetRequest { Group = new Resource { Name = group }, MessageQueue = Queue },
            new TestServerCallContext(GrpcMethods.GetOffset));
        Assert.Equal(Code.IllegalConsumerGroup, got.Status.Code);
    }

    [Fact]
    public async Task Out_of_range_protobuf_times_are_a_body_status_not_an_exception()
    {
        var stream = new RecordingStream();
        await _service.PullMessage(new PullMessageRequest
        {
            Group = new Resource { Name = "g" }, MessageQueue = Queue, BatchSize = 8,
            LongPollingTimeout = new Duration { Seconds = 1, Nanos = -5 }, // signs disagree: not a valid Duration
        }, stream, new TestServerCallContext(GrpcMethods.PullMessage));
        Assert.Equal(Code.IllegalPollingTime, Assert.Single(stream.Responses).Status.Code);

        QueryOffsetResponse query = await _service.QueryOffset(new QueryOffsetRequest
        {
            MessageQueue = Queue, QueryOffsetPolicy = QueryOffsetPolicy.Timestamp,
            Timestamp = new Google.Protobuf.WellKnownTypes.Timestamp { Seconds = long.MaxValue },
        }, new TestServerCallContext(GrpcMethods.QueryOffset));
        Assert.Equal(Code.BadRequest, query.Status.Code);
    }
}
