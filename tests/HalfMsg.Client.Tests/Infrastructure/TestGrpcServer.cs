using System.Collections.Concurrent;
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
/// in <see cref="FakeMessagingService"/>; an RPC left unset, and any other service's, answers UNIMPLEMENTED.
/// </summary>
public sealed class TestGrpcServer : IAsyncDisposable
{
    private readonly WebApplication _app;

    private TestGrpcServer(WebApplication app, FakeMessagingService service, ConcurrentQueue<string> paths,
        ConcurrentQueue<(string Path, string TraceParent)> traceParents, int port)
    {
        _app = app;
        Service = service;
        Paths = paths;
        TraceParents = traceParents;
        Port = port;
    }

    public FakeMessagingService Service { get; }

    /// <summary>The path of every request received (<c>/package.Service/Method</c>), served or not, in arrival order.</summary>
    public ConcurrentQueue<string> Paths { get; }

    /// <summary>The W3C <c>traceparent</c> header of every request that had one, with its path, in arrival order.</summary>
    public ConcurrentQueue<(string Path, string TraceParent)> TraceParents { get; }
    public int Port { get; }
    public string Endpoint => $"127.0.0.1:{Port}";

    /// <param name="configure">Sets the fake's RPCs.</param>
    /// <param name="port">The port to listen on (a port a test freed, to bring an address back); 0 for any.</param>
    /// <param name="certificate">Serves TLS with this certificate (ALPN h2); null for cleartext HTTP/2.</param>
    /// <param name="requireClientCertificate">With <paramref name="certificate"/>: TLS 1.3 only, and a client certificate
    /// required (any is accepted), as a broker with <c>--tls-client-auth require</c> refuses a client without one.</param>
    public static async Task<TestGrpcServer> StartAsync(Action<FakeMessagingService> configure, int port = 0,
        System.Security.Cryptography.X509Certificates.X509Certificate2? certificate = null, bool requireClientCertificate = false)
    {
        var service = new FakeMessagingService();
        configure(service);
        var builder = WebApplication.CreateSlimBuilder();
        builder.WebHost.ConfigureKestrel(k =>
        {
            // A request's :scheme need not be the connection's: https requests relayed in cleartext by a test's TLS
            // front (SettingsFirstTlsProxy) are served, as behind a TLS-terminating load balancer.
            k.AllowAlternateSchemes = true;
        });
        builder.WebHost.ConfigureKestrel(k => k.Listen(IPAddress.Loopback, port, l =>
        {
            l.Protocols = HttpProtocols.Http2;
            if (certificate is not null && requireClientCertificate)
            {
                l.UseHttps(new Microsoft.AspNetCore.Server.Kestrel.Https.HttpsConnectionAdapterOptions
                {
                    ServerCertificate = certificate,
                    SslProtocols = System.Security.Authentication.SslProtocols.Tls13,
                    ClientCertificateMode = Microsoft.AspNetCore.Server.Kestrel.Https.ClientCertificateMode.RequireCertificate,
                    ClientCertificateValidation = (_, _, _) => true,
                });
            }
            else if (certificate is not null)
            {
                l.UseHttps(certificate);
            }
        }));
        builder.Services.AddGrpc();
        builder.Services.AddSingleton(service);
        WebApplication app = builder.Build();
        var paths = new ConcurrentQueue<string>();
        var traceParents = new ConcurrentQueue<(string, string)>();
        app.Use((context, next) =>
        {
            paths.Enqueue(context.Request.Path.Value ?? string.Empty);
            if (context.Request.Headers.TryGetValue("traceparent", out var traceParent))
            {
                traceParents.Enqueue((context.Request.Path.Value ?? string.Empty, traceParent.ToString()));
            }

            return next(context);
        });
        app.MapGrpcService<FakeMessagingService>();
        await app.StartAsync();
        string address = app.Services.GetRequiredService<IServer>().Features.Get<IServerAddressesFeature>()!.Addresses.First();
        return new TestGrpcServer(app, service, paths, traceParents, new Uri(address).Port);
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
    public Func<SendMessageRequest, ServerCallContext, Task<SendMessageResponse>>? OnSendMessage { get; set; }
    public Func<EndTransactionRequest, ServerCallContext, Task<EndTransactionResponse>>? OnEndTransaction { get; set; }
    public Func<AckMessageRequest, ServerCallContext, Task<AckMessageResponse>>? OnAckMessage { get; set; }
    public Func<ChangeInvisibleDurationRequest, ServerCallContext, Task<ChangeInvisibleDurationResponse>>? OnChangeInvisibleDuration { get; set; }

    private static RpcException Unimplemented => new(new Grpc.Core.Status(StatusCode.Unimplemented, "not set"));

    public override Task<QueryRouteResponse> QueryRoute(QueryRouteRequest request, ServerCallContext context)
        => OnQueryRoute?.Invoke(request, context) ?? throw Unimplemented;

    public override Task<HeartbeatResponse> Heartbeat(HeartbeatRequest request, ServerCallContext context)
        => OnHeartbeat?.Invoke(request, context) ?? throw Unimplemented;

    public override Task ReceiveMessage(ReceiveMessageRequest request, IServerStreamWriter<ReceiveMessageResponse> responseStream, ServerCallContext context)
        => OnReceive?.Invoke(request, responseStream, context) ?? throw Unimplemented;

    public override Task Telemetry(IAsyncStreamReader<TelemetryCommand> requestStream, IServerStreamWriter<TelemetryCommand> responseStream, ServerCallContext context)
        => OnTelemetry?.Invoke(requestStream, responseStream, context) ?? throw Unimplemented;

    public override Task<SendMessageResponse> SendMessage(SendMessageRequest request, ServerCallContext context)
        => OnSendMessage?.Invoke(request, context) ?? throw Unimplemented;

    public override Task<EndTransactionResponse> EndTransaction(EndTransactionRequest request, ServerCallContext context)
        => OnEndTransaction?.Invoke(request, context) ?? throw Unimplemented;

    public override Task<AckMessageResponse> AckMessage(AckMessageRequest request, ServerCallContext context)
        => OnAckMessage?.Invoke(request, context) ?? throw Unimplemented;

    public override Task<ChangeInvisibleDurationResponse> ChangeInvisibleDuration(ChangeInvisibleDurationRequest request, ServerCallContext context)
        => OnChangeInvisibleDuration?.Invoke(request, context) ?? throw Unimplemented;
}
