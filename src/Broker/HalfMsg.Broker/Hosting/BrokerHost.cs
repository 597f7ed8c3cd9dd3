using System.Net;
using HalfMsg.Broker.Admin;
using HalfMsg.Broker.Core;
using HalfMsg.Broker.FrontEnds.GrpcV5;
using Microsoft.AspNetCore.Server.Kestrel.Core;

namespace HalfMsg.Broker.Hosting;

/// <summary>
/// Builds and runs the broker: configuration, recovery (before any listener accepts), Kestrel endpoints on separate
/// ports (gRPC HTTP/2-only, admin HTTP/1.1), and an orderly shutdown that checkpoints.
/// </summary>
public sealed class BrokerHost : IAsyncDisposable
{
    private readonly WebApplication _app;
    public BrokerEngine Engine { get; }
    public BrokerOptions Options { get; }

    private BrokerHost(WebApplication app, BrokerEngine engine, BrokerOptions options)
    {
        _app = app;
        Engine = engine;
        Options = options;
    }

    public static async Task<BrokerHost> StartAsync(string[] args, CancellationToken ct = default)
    {
        var flags = BrokerConfiguration.ParseCommandLine(args);
        var builder = WebApplication.CreateBuilder(new WebApplicationOptions { Args = [], ContentRootPath = AppContext.BaseDirectory });
        builder.Configuration.AddInMemoryCollection(flags);
        var options = BrokerConfiguration.Bind(builder.Configuration);

        builder.Logging.AddFilter("Microsoft.AspNetCore", LogLevel.Warning);
        builder.WebHost.ConfigureKestrel(kestrel =>
        {
            var ip = IPAddress.Parse(options.Bind);
            kestrel.Listen(ip, options.GrpcPort, o => o.Protocols = HttpProtocols.Http2);
            kestrel.Listen(ip, options.HttpPort, o => o.Protocols = HttpProtocols.Http1);
        });
        var grpcOptions = new GrpcV5Options
        {
            AdvertisedHost = options.AdvertisedHost,
            Port = options.GrpcPort,
            MaxReceiveMessageSize = options.Core.MaxMessageSize + 1024 * 1024,
            Credentials = options.Credentials,
        };
        builder.WebHost.ConfigureKestrel(kestrel => GrpcEndpoint.ApplyLimits(kestrel, grpcOptions));
        builder.Services.AddGrpcV5(grpcOptions);

        // Recovery completes before any listener accepts.
        // The engine logs through the host's ILoggerFactory (appsettings.json levels apply), so it opens after Build;
        // services resolve it only once requests arrive, after it is open.
        BrokerEngine? opened = null;
        builder.Services.AddSingleton(_ => opened ?? throw new InvalidOperationException("The broker engine is not open yet."));
        var app = builder.Build();
        var engine = await BrokerEngine.OpenAsync(options.Core, TimeProvider.System, app.Services.GetRequiredService<ILoggerFactory>(),
            startBackgroundLoops: true, ct);
        opened = engine;
        app.MapGrpcV5(options.GrpcPort);
        app.MapAdminApi(engine);
        try
        {
            await app.StartAsync(ct);
        }
        catch
        {
            await engine.DisposeAsync();
            throw;
        }
        app.Logger.LogInformation("HalfMsgBroker ready: gRPC {Bind}:{Grpc}, admin http://{Bind}:{Http}, data {DataDir}, flush {Flush}",
            options.Bind, options.GrpcPort, options.Bind, options.HttpPort, Path.GetFullPath(options.DataDir), options.Core.Flush);
        return new BrokerHost(app, engine, options);
    }

    public Task WaitForShutdownAsync() => _app.WaitForShutdownAsync();

    public async ValueTask DisposeAsync()
    {
        await _app.StopAsync();
        await Engine.DisposeAsync();
        await _app.DisposeAsync();
    }
}
