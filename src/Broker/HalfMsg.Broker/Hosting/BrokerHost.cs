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
    /// <summary>Exit code of a broker whose storage failed (EX_IOERR): a supervisor should restart it.</summary>
    public const int ExitStorageFailure = 74;
    /// <summary>Exit code of a start refused by configuration, including a data dir locked by another broker.</summary>
    public const int ExitConfiguration = 2;

    /// <summary>The exit code for a broker that ran and was stopped: 0, or <see cref="ExitStorageFailure"/> if its log failed.</summary>
    public int ExitCode => Engine.StorageFault is null ? 0 : ExitStorageFailure;

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
            kestrel.Limits.Http2.MaxStreamsPerConnection = 1000;
            kestrel.Limits.MaxRequestBodySize = null;
            kestrel.Listen(ip, options.GrpcPort, o => o.Protocols = HttpProtocols.Http2);
            kestrel.Listen(ip, options.HttpPort, o => o.Protocols = HttpProtocols.Http1);
        });
        builder.Services.AddGrpcV5(new GrpcV5Options
        {
            AdvertisedHost = options.AdvertisedHost,
            Port = options.GrpcPort,
            MaxReceiveMessageSize = options.Core.MaxMessageSize + 1024 * 1024,
            Credentials = options.Credentials,
        });
        RemotingEndpoint.Add(builder, options);

        // Recovery completes before any listener accepts.
        var loggers = LoggerFactory.Create(l => l.AddConsole().SetMinimumLevel(LogLevel.Information));
        var engine = await BrokerEngine.OpenAsync(options.Core, TimeProvider.System, loggers, startBackgroundLoops: true, ct);
        builder.Services.AddSingleton(engine);
        var app = builder.Build();
        app.MapWhen(ctx => ctx.Connection.LocalPort == options.GrpcPort, grpc => grpc.UseGrpcV5());
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
