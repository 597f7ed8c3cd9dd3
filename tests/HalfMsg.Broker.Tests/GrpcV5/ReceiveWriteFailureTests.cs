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
/// Messages are leased before they are written to the receive's stream. When the write fails (the client went away,
/// its deadline passed), the client never saw them: their leases are released at once, as RocketMQ's proxy does, so
/// another consumer gets them now instead of after the lease, and a push consumer's lease is not renewed for up to
/// three hours for messages it does not have.
/// </summary>
public sealed class ReceiveWriteFailureTests : IAsyncLifetime
{
    private readonly string _dir = Path.Combine(Path.GetTempPath(), "halfmsg-recvfail-" + Guid.NewGuid().ToString("N"));
    private BrokerEngine _engine = null!;

    public async Task InitializeAsync() => _engine = await BrokerEngine.OpenAsync(new CoreOptions { DataDir = _dir, QueuesPerTopic = 1 });

    public async Task DisposeAsync()
    {
        await _engine.DisposeAsync();
        try { Directory.Delete(_dir, true); } catch (IOException) { }
    }

    private sealed class FailingStream : IServerStreamWriter<ReceiveMessageResponse>
    {
        public int Writes;
        public WriteOptions? WriteOptions { get; set; }
        public Task WriteAsync(ReceiveMessageResponse message)
            => ++Writes >= 2 ? throw new IOException("the client went away") : Task.CompletedTask;
    }

    [Theory]
    [InlineData(true)]
    [InlineData(false)]
    public async Task Messages_whose_response_could_not_be_written_are_released_at_once(bool autoRenew)
    {
        for (int i = 0; i < 3; i++)
            Assert.True((await _engine.SendAsync(new Core.Model.MessageDraft { Topic = "T", MessageId = Guid.NewGuid().ToString("N"), Body = new byte[10] })).IsOk);
        var service = new MessagingService(_engine, new GrpcV5Options(), NullLogger<MessagingService>.Instance);
        var context = new TestServerCallContext(GrpcMethods.ReceiveMessage);
        var http = new DefaultHttpContext();
        http.Request.Headers[RocketMqHeaders.ClientId] = "push-1";
        context.UserState["__HttpContext"] = http;
        var request = new ReceiveMessageRequest
        {
            Group = new Resource { Name = "g" },
            MessageQueue = new MessageQueue { Topic = new Resource { Name = "T" } },
            BatchSize = 32,
            AutoRenew = autoRenew,
            InvisibleDuration = autoRenew ? null : Google.Protobuf.WellKnownTypes.Duration.FromTimeSpan(TimeSpan.FromMinutes(5)),
        };
        var stream = new FailingStream();
        await Assert.ThrowsAsync<IOException>(() => service.ReceiveMessage(request, stream, context));

        var again = await _engine.ReceiveAsync(new Core.Model.ReceiveRequest { ConsumerGroup = "g", Topic = "T", ClientId = "other" });
        Assert.True(again.IsOk, again.Error.ToString());
        Assert.Equal(3, again.Messages.Count);
    }
}
