using System.Net;
using Apache.Rocketmq.V2;
using Grpc.Core;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Hosting.Server;
using Microsoft.AspNetCore.Hosting.Server.Features;
using Microsoft.AspNetCore.Server.Kestrel.Core;
using Microsoft.Extensions.DependencyInjection;

namespace HalfMsg.Client.Tests.Infrastructure;

/// <summary>
/// A fake MessagingService on grpc-dotnet (Kestrel, 127.0.0.1:0, HTTP/2 only) whose RPCs are whatever the test sets
/// in <see cref="FakeMessagingService"/>; an RPC left unset answers UNIMPLEMENTED.
/// </summary>
public sealed class TestGrpcServer : IAsyncDisposable
{
    private readonly WebApplication _app;

    private TestGrpcServer(WebApplication app, FakeMessagingService service, int port)
    {
        _app = app;
        Service = service;
        Port = port;
    }

    public FakeMessagingService Service { get; }
    public int Port { get; }
    public string Endpoint => $"127.0.0.1:{Port}";

    public static async Task<TestGrpcServer> StartAsync(Action<FakeMessagingService> configure)
    {
        var service = new FakeMessagingService();
        configure(service);
        var builder = WebApplication.CreateSlimBuilder();
        builder.WebHost.ConfigureKestrel(k => k.Listen(IPAddress.Loopback, 0, l => l.Protocols = HttpProtocols.Http2));
        builder.Services.AddGrpc();
        builder.Services.AddSingleton(service);
        WebApplication app = builder.Build();
        app.MapGrpcService<FakeMessagingService>();
        await app.StartAsync();
        string address = app.Services.GetRequiredService<IServer>().Features.Get<IServerAddressesFeature>()!.Addresses.First();
        return new TestGrpcServer(app, service, new Uri(address).Port);
    }

    public async ValueTask DisposeAsync() => await _app.DisposeAsync();
}

/// <summary>The fake's RPCs, one delegate each.</summary>
public sealed class FakeMessagingService : MessagingService.MessagingServiceBase
{
    public Func<QueryRouteRequest, ServerCallContext, Task<QueryRouteResponse>>? OnQueryRoute { get; set; }
    public Func<HeartbeatRequest, ServerCallContext, Task<HeartbeatResponse>>? OnHeartbeat { get; set; }
    public Func<ReceiveMessageRequest, IServerStreamWriter<ReceiveMessageResponse>, ServerCallContext, Task>? OnReceive { get; set; }
    public Func<IAsyncStreamReader<TelemetryCommand>, IServerStreamWriter<TelemetryCommand>, ServerCallContext, Task>? OnTelemetry { get; set; }

    private static RpcException Unimplemented => new(new Grpc.Core.Status(StatusCode.Unimplemented, "not set"));

    public override Task<QueryRouteResponse> QueryRoute(QueryRouteRequest request, ServerCallContext context)
        => OnQueryRoute?.Invoke(request, context) ?? throw Unimplemented;

    public override Task<HeartbeatResponse> Heartbeat(HeartbeatRequest request, ServerCallContext context)
        => OnHeartbeat?.Invoke(request, context) ?? throw Unimplemented;

    public override Task ReceiveMessage(ReceiveMessageRequest request, IServerStreamWriter<ReceiveMessageResponse> responseStream, ServerCallContext context)
        => OnReceive?.Invoke(request, responseStream, context) ?? throw Unimplemented;

    public override Task Telemetry(IAsyncStreamReader<TelemetryCommand> requestStream, IServerStreamWriter<TelemetryCommand> responseStream, ServerCallContext context)
        => OnTelemetry?.Invoke(requestStream, responseStream, context) ?? throw Unimplemented;
}
