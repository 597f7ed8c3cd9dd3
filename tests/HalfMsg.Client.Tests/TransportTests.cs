using System.Collections.Concurrent;
using Apache.Rocketmq.V2;
using HalfMsg.Client.Tests.Infrastructure;
using HalfMsg.ProducerClient;
using HalfMsg.ProducerClient.Transport;
using HalfMsg.Protocol.Grpc;
using Endpoint = HalfMsg.ProducerClient.Transport.Endpoint;

namespace HalfMsg.Client.Tests;

public sealed class TransportTests
{
    private static RpcChannel Channel(TestGrpcServer server, Credentials? credentials = null, TimeSpan? timeout = null) =>
        new(new ClientConfig(server.Endpoint, credentials, timeout ?? TimeSpan.FromSeconds(3), null, null));

    private static Endpoint Ep(TestGrpcServer s) => Endpoint.Parse(s.Endpoint);

    [Fact]
    public async Task Unary_call_returns_the_response_and_sends_the_rocketmq_metadata()
    {
        var headers = new ConcurrentDictionary<string, string>(StringComparer.OrdinalIgnoreCase);
        await using var server = await TestGrpcServer.StartAsync(async ctx =>
        {
            foreach (var h in ctx.Request.Headers)
            {
                headers[h.Key] = h.Value.ToString();
            }

            headers[":path"] = ctx.Request.Path;
            headers["protocol"] = ctx.Request.Protocol;
            QueryRouteRequest req = await TestGrpcServer.ReadOne(ctx, QueryRouteRequest.Parser);
            await TestGrpcServer.WriteAsync(ctx, new QueryRouteResponse
            {
                Status = new Status { Code = Code.Ok },
                MessageQueues = { new MessageQueue { Topic = req.Topic, Id = 7 } },
            });
            TestGrpcServer.Trailers(ctx, GrpcStatusCode.OK);
        });
        using RpcChannel channel = Channel(server, new Credentials("ak", "sk"));

        QueryRouteResponse response = await channel.UnaryAsync(Ep(server), GrpcMethods.QueryRoute,
            new QueryRouteRequest { Topic = new Resource { Name = "t1" } }, QueryRouteResponse.Parser, null, default);

        Assert.Equal("t1", response.MessageQueues[0].Topic.Name);
        Assert.Equal(7, response.MessageQueues[0].Id);
        Assert.Equal("HTTP/2", headers["protocol"]);
        Assert.Equal(GrpcMethods.QueryRoute, headers[":path"]);
        Assert.Equal("application/grpc", headers["content-type"]);
        Assert.Equal("trailers", headers["te"]);
        Assert.Equal(channel.Config.ClientId, headers["x-mq-client-id"]);
        Assert.Equal("DOTNET", headers["x-mq-language"]);
        Assert.Equal("v2", headers["x-mq-protocol"]);
        Assert.False(string.IsNullOrEmpty(headers["x-mq-client-version"]));
        Assert.True(Guid.TryParse(headers["x-mq-request-id"], out _));
        Assert.True(GrpcTimeout.TryParse(headers["grpc-timeout"], out TimeSpan t) && t <= TimeSpan.FromSeconds(3) && t > TimeSpan.Zero);
        Assert.True(MqSignature.Verify(headers["authorization"], headers["x-mq-date-time"], "ak", "sk"));
    }

    [Fact]
    public async Task Trailers_only_error_becomes_a_transport_exception_with_its_grpc_status_and_message()
    {
        await using var server = await TestGrpcServer.StartAsync(ctx =>
        {
            ctx.Response.ContentType = GrpcHeaders.ContentTypeValue;
            ctx.Response.Headers[GrpcHeaders.Status] = "5";
            ctx.Response.Headers[GrpcHeaders.Message] = GrpcMessageEncoding.Encode("no such thing: ü");
            return Task.CompletedTask;
        });
        using RpcChannel channel = Channel(server);

        var ex = await Assert.ThrowsAsync<TransportException>(() => channel.UnaryAsync(Ep(server), GrpcMethods.Heartbeat,
            new HeartbeatRequest(), HeartbeatResponse.Parser, null, default));
        Assert.Equal(GrpcStatusCode.NotFound, ex.GrpcStatus);
        Assert.Contains("no such thing: ü", ex.Message);
        Assert.False(ex.IsRetryable);
    }

    [Fact]
    public async Task Non_zero_grpc_status_in_the_trailers_fails_the_call_even_after_a_message()
    {
        await using var server = await TestGrpcServer.StartAsync(async ctx =>
        {
            await TestGrpcServer.WriteAsync(ctx, new HeartbeatResponse { Status = new Status { Code = Code.Ok } });
            TestGrpcServer.Trailers(ctx, GrpcStatusCode.Unavailable, "going away");
        });
        using RpcChannel channel = Channel(server);

        var ex = await Assert.ThrowsAsync<TransportException>(() => channel.UnaryAsync(Ep(server), GrpcMethods.Heartbeat,
            new HeartbeatRequest(), HeartbeatResponse.Parser, null, default));
        Assert.Equal(GrpcStatusCode.Unavailable, ex.GrpcStatus);
        Assert.True(ex.IsRetryable);
    }

    [Fact]
    public async Task A_response_without_grpc_status_is_an_internal_error()
    {
        await using var server = await TestGrpcServer.StartAsync(async ctx =>
            await TestGrpcServer.WriteAsync(ctx, new HeartbeatResponse()));
        using RpcChannel channel = Channel(server);

        var ex = await Assert.ThrowsAsync<TransportException>(() => channel.UnaryAsync(Ep(server), GrpcMethods.Heartbeat,
            new HeartbeatRequest(), HeartbeatResponse.Parser, null, default));
        Assert.Equal(GrpcStatusCode.Internal, ex.GrpcStatus);
    }

    [Fact]
    public async Task A_slow_server_hits_the_deadline()
    {
        await using var server = await TestGrpcServer.StartAsync(async ctx =>
        {
            await Task.Delay(TimeSpan.FromSeconds(5), ctx.RequestAborted).ContinueWith(_ => { });
        });
        using RpcChannel channel = Channel(server, timeout: TimeSpan.FromMilliseconds(300));

        var ex = await Assert.ThrowsAsync<TransportException>(() => channel.UnaryAsync(Ep(server), GrpcMethods.Heartbeat,
            new HeartbeatRequest(), HeartbeatResponse.Parser, null, default));
        Assert.Equal(GrpcStatusCode.DeadlineExceeded, ex.GrpcStatus);
    }

    [Fact]
    public async Task A_refused_connection_is_unavailable_and_retryable()
    {
        int port;
        await using (var server = await TestGrpcServer.StartAsync(_ => Task.CompletedTask))
        {
            port = server.Port;
        }

        using var channel = new RpcChannel(new ClientConfig($"127.0.0.1:{port}", null, TimeSpan.FromSeconds(3), null, null));
        var ex = await Assert.ThrowsAsync<TransportException>(() => channel.UnaryAsync(new Endpoint("127.0.0.1", port),
            GrpcMethods.Heartbeat, new HeartbeatRequest(), HeartbeatResponse.Parser, null, default));
        Assert.Equal(GrpcStatusCode.Unavailable, ex.GrpcStatus);
        Assert.True(ex.IsRetryable);
    }

    [Fact]
    public async Task Server_streaming_call_yields_every_message_then_completes()
    {
        await using var server = await TestGrpcServer.StartAsync(async ctx =>
        {
            ReceiveMessageRequest req = await TestGrpcServer.ReadOne(ctx, ReceiveMessageRequest.Parser);
            await TestGrpcServer.WriteAsync(ctx, new ReceiveMessageResponse { Status = new Status { Code = Code.Ok } });
            for (int i = 0; i < req.BatchSize; i++)
            {
                await TestGrpcServer.WriteAsync(ctx, new ReceiveMessageResponse
                {
                    Message = new Apache.Rocketmq.V2.Message { Topic = new Resource { Name = "t" }, SystemProperties = new SystemProperties { MessageId = "m" + i } },
                });
                await Task.Delay(20);
            }

            await TestGrpcServer.WriteAsync(ctx, new ReceiveMessageResponse { DeliveryTimestamp = Google.Protobuf.WellKnownTypes.Timestamp.FromDateTime(DateTime.UtcNow) });
            TestGrpcServer.Trailers(ctx, GrpcStatusCode.OK);
        });
        using RpcChannel channel = Channel(server);

        await using StreamingCall<ReceiveMessageResponse> call = await channel.ServerStreamingAsync(Ep(server), GrpcMethods.ReceiveMessage,
            new ReceiveMessageRequest { BatchSize = 3 }, ReceiveMessageResponse.Parser, TimeSpan.FromSeconds(5), default);
        var cases = new List<string>();
        while (await call.MoveNextAsync())
        {
            cases.Add(call.Current.ContentCase == ReceiveMessageResponse.ContentOneofCase.Message
                ? call.Current.Message.SystemProperties.MessageId
                : call.Current.ContentCase.ToString());
        }

        Assert.Equal(["Status", "m0", "m1", "m2", "DeliveryTimestamp"], cases);
    }

    [Fact]
    public async Task Bidirectional_call_exchanges_messages_both_ways_and_ends_after_the_client_half_closes()
    {
        await using var server = await TestGrpcServer.StartAsync(async ctx =>
        {
            ctx.Response.ContentType = GrpcHeaders.ContentTypeValue;
            await ctx.Response.BodyWriter.FlushAsync();
            await foreach (TelemetryCommand cmd in TestGrpcServer.ReadMessages(ctx, TelemetryCommand.Parser))
            {
                await TestGrpcServer.WriteAsync(ctx, new TelemetryCommand { Status = new Status { Code = Code.Ok }, Settings = cmd.Settings });
            }

            TestGrpcServer.Trailers(ctx, GrpcStatusCode.OK);
        });
        using RpcChannel channel = Channel(server);

        await using StreamingCall<TelemetryCommand> call = await channel.DuplexAsync(Ep(server), GrpcMethods.Telemetry, TelemetryCommand.Parser, default);
        for (int i = 1; i <= 3; i++)
        {
            await call.WriteAsync(new TelemetryCommand { Settings = new Settings { ClientType = ClientType.Producer, RequestTimeout = Google.Protobuf.WellKnownTypes.Duration.FromTimeSpan(TimeSpan.FromSeconds(i)) } });
            Assert.True(await call.MoveNextAsync());
            Assert.Equal(i, call.Current.Settings.RequestTimeout.Seconds);
        }

        call.CompleteRequest();
        Assert.False(await call.MoveNextAsync());
    }

    [Theory]
    [InlineData(Code.BadRequest, typeof(BadRequestException))]
    [InlineData(Code.InvalidReceiptHandle, typeof(BadRequestException))]
    [InlineData(Code.IllegalPollingTime, typeof(BadRequestException))]
    [InlineData(Code.Unauthorized, typeof(UnauthorizedException))]
    [InlineData(Code.Forbidden, typeof(ForbiddenException))]
    [InlineData(Code.TopicNotFound, typeof(NotFoundException))]
    [InlineData(Code.MessageBodyTooLarge, typeof(PayloadTooLargeException))]
    [InlineData(Code.TooManyRequests, typeof(TooManyRequestsException))]
    [InlineData(Code.MessagePropertiesTooLarge, typeof(RequestHeaderFieldsTooLargeException))]
    [InlineData(Code.InternalServerError, typeof(InternalErrorException))]
    [InlineData(Code.ProxyTimeout, typeof(ProxyTimeoutException))]
    [InlineData(Code.Unsupported, typeof(UnsupportedException))]
    [InlineData(Code.FailedToConsumeMessage, typeof(UnsupportedException))] // unknown to the classifier → fatal
    [InlineData(Code.Unspecified, typeof(UnsupportedException))]            // a present Status with code 0 is an error
    public void Body_status_codes_map_to_the_exception_family(Code code, Type expected)
    {
        ClientException ex = Assert.IsAssignableFrom<ClientException>(
            Record.Exception(() => StatusChecker.Check(new Status { Code = code, Message = "m" }, "req-1")));
        Assert.IsType(expected, ex);
        Assert.Equal(code, ex.Code);
        Assert.Equal("req-1", ex.RequestId);
    }

    [Theory]
    [InlineData(Code.Ok, false)]
    [InlineData(Code.MultipleResults, false)]
    [InlineData(Code.MessageNotFound, true)]
    public void Success_codes_do_not_throw(Code code, bool onlyForReceive)
    {
        StatusChecker.Check(new Status { Code = code }, null, messageNotFoundIsSuccess: true);
        StatusChecker.Check(null, null);
        if (onlyForReceive)
        {
            Assert.Throws<NotFoundException>(() => StatusChecker.Check(new Status { Code = code }, null));
        }
    }

    [Theory]
    [InlineData("127.0.0.1:8081", "127.0.0.1", 8081)]
    [InlineData("http://broker.local:9876/", "broker.local", 9876)]
    [InlineData("[::1]:8081", "::1", 8081)]
    [InlineData("localhost", "localhost", 80)]
    public void Endpoints_parse_like_the_official_clients(string text, string host, int port)
    {
        Endpoint e = Endpoint.Parse(text);
        Assert.Equal(host, e.Host);
        Assert.Equal(port, e.Port);
    }
}
