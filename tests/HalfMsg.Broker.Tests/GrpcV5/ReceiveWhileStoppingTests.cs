using Apache.Rocketmq.V2;
using Grpc.Core;
using HalfMsg.Broker.Core;
using HalfMsg.Broker.FrontEnds.GrpcV5;
using HalfMsg.Broker.Tests.Infrastructure;
using HalfMsg.Protocol.Grpc;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.Logging.Abstractions;
using MessagingService = HalfMsg.Broker.FrontEnds.GrpcV5.MessagingService;

namespace HalfMsg.Broker.Tests.GrpcV5;

/// <summary>
/// A ReceiveMessage that arrives while the broker stops (after ApplicationStopping, before Kestrel has closed the
/// connection) is answered TOO_MANY_REQUESTS, from which the official clients back off, and leases nothing. Until
/// 2026-12-06 it was answered MESSAGE_NOT_FOUND at once, which a client takes as an empty queue and asks again at once.
/// </summary>
public sealed class ReceiveWhileStoppingTests : IAsyncLifetime
{
    private readonly string _dir = Path.Combine(Path.GetTempPath(), "halfmsg-recvstop-" + Guid.NewGuid().ToString("N"));
    private BrokerEngine _engine = null!;

    public async Task InitializeAsync() => _engine = await BrokerEngine.OpenAsync(new CoreOptions { DataDir = _dir, QueuesPerTopic = 1 });

    public async Task DisposeAsync()
    {
        await _engine.DisposeAsync();
        try { Directory.Delete(_dir, true); } catch (IOException) { }
    }

    private sealed class RecordingStream : IServerStreamWriter<ReceiveMessageResponse>
    {
        public readonly List<ReceiveMessageResponse> Written = [];
        public WriteOptions? WriteOptions { get; set; }

        public Task WriteAsync(ReceiveMessageResponse message)
        {
            Written.Add(message);
            return Task.CompletedTask;
        }
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public async Task A_receive_arriving_while_the_broker_stops_is_told_to_back_off_and_leases_nothing(bool messagesWaiting)
    {
        if (messagesWaiting)
        {
            for (int i = 0; i < 3; i++)
                Assert.True((await _engine.SendAsync(new Core.Model.MessageDraft { Topic = "T", MessageId = Guid.NewGuid().ToString("N"), Body = new byte[10] })).IsOk);
        }
        else
        {
            Assert.True((await _engine.CreateTopicAsync("T")).Error.IsOk);
        }
        var service = new MessagingService(_engine, new GrpcV5Options(), NullLogger<MessagingService>.Instance, stopping: new CancellationToken(canceled: true));
        var context = new TestServerCallContext(GrpcMethods.ReceiveMessage);
        var http = new DefaultHttpContext();
        http.Request.Headers[RocketMqHeaders.ClientId] = "push-1";
        context.UserState["__HttpContext"] = http;
        var stream = new RecordingStream();
        await service.ReceiveMessage(new ReceiveMessageRequest
        {
            Group = new Resource { Name = "g" },
            MessageQueue = new MessageQueue { Topic = new Resource { Name = "T" } },
            BatchSize = 32,
            InvisibleDuration = Google.Protobuf.WellKnownTypes.Duration.FromTimeSpan(TimeSpan.FromMinutes(5)),
            LongPollingTimeout = Google.Protobuf.WellKnownTypes.Duration.FromTimeSpan(TimeSpan.FromSeconds(20)),
        }, stream, context);

        Assert.DoesNotContain(stream.Written, r => r.ContentCase == ReceiveMessageResponse.ContentOneofCase.Message);
        var status = Assert.Single(stream.Written, r => r.ContentCase == ReceiveMessageResponse.ContentOneofCase.Status).Status;
        Assert.Equal(Code.TooManyRequests, status.Code);
        Assert.Contains("stopping", status.Message, StringComparison.Ordinal);
        // Nothing was leased: the group still gets every message.
        var again = await _engine.ReceiveAsync(new Core.Model.ReceiveRequest { ConsumerGroup = "g", Topic = "T", ClientId = "other" });
        Assert.Equal(messagesWaiting ? 3 : 0, again.Messages.Count);
    }
}
