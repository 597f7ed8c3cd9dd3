using System.Net;
using System.Security.Cryptography.X509Certificates;
using HalfMsg.Broker.Admin;
using HalfMsg.Broker.Core;
using HalfMsg.Broker.Core.Diagnostics;
using HalfMsg.Broker.Dashboard;
using Microsoft.AspNetCore.Server.Kestrel.Core;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;
using OpenTelemetry.Metrics;

namespace HalfMsg.Broker.Hosting;

/// <summary>
/// The admin port (HTTP/1.1 on <c>--admin-bind</c>:<c>--http-port</c>; cleartext and, as <c>--admin-tls</c> says, HTTPS): <see cref="AdminGuard"/> in front of the admin
/// API, the dashboard, <c>/metrics</c> (OpenTelemetry's Prometheus exporter over <see cref="BrokerMeter"/>) and
/// <c>/health</c>. Requests on the gRPC port never reach any of this (the host branches them off first).
/// </summary>
internal static class AdminEndpoint
{
    private static int s_hostsInProcess;

    /// <summary>
    /// The meter name of one host. Meter listeners are process-wide and OpenTelemetry selects meters by name, so a second
    /// broker in the same process (tests run several) gets its own name, or each /metrics would mix both engines.
    /// </summary>
    private sealed record MeterName(string Value);

    public static void AddServices(WebApplicationBuilder builder, BrokerOptions options)
    {
        int n = Interlocked.Increment(ref s_hostsInProcess);
        var meterName = new MeterName(n == 1 ? BrokerMeter.Name : $"{BrokerMeter.Name}.{n}");
        builder.Services.AddSingleton(meterName);
        // One per host: Listen closes connections by it, Map marks their requests, /api/stats reads its evictions.
        builder.Services.AddSingleton(sp => new PeerConnectionLimit("admin", MaxConnections, options.AdminMaxConnectionsPerAddress,
            sp.GetRequiredService<ILoggerFactory>().CreateLogger(typeof(AdminEndpoint).FullName!)));
        builder.Services.AddSingleton(new AdminGuard(options.AdminAllowedHosts, options.Credentials, options.MetricsAnonymous));
        builder.Services.AddSingleton<RateSampler>();
        builder.Services.AddHostedService(sp => sp.GetRequiredService<RateSampler>());
        int cardinalityLimit = BrokerMeter.CardinalityLimit(options.Core.MaxTopics, options.Core.MaxConsumerGroups);
        builder.Services.AddOpenTelemetry().WithMetrics(metrics => metrics
            .AddMeter(meterName.Value)
            // A series per topic (and per topic and group) up to the broker's own limits, not OpenTelemetry's 2,000.
            .AddView(instrument => instrument.Meter.Name == meterName.Value && BrokerMeter.PerTopicInstruments.Contains(instrument.Name)
                ? new MetricStreamConfiguration { CardinalityLimit = cardinalityLimit }
                : null)
            // Scrapes read live state; a cached answer would hide the change a test or operator just made.
            .AddPrometheusExporter(o => o.ScrapeResponseCacheDurationMilliseconds = 0));
    }

    /// <summary>Connections the admin port holds at once (operators, scrapers, the dashboard, probes); one more closes an
    /// idle one (<see cref="PeerConnectionLimit"/>), or is closed at once when every one has a request in progress.</summary>
    public const int MaxConnections = 256;

    /// <summary>
    /// Of <see cref="MaxConnections"/>, what one peer address holds by default (<c>--admin-max-connections-per-address</c>):
    /// a quarter, far more than a dashboard, a CLI and a scraper need; one more closes that address's longest idle one.
    /// </summary>
    public const int DefaultMaxConnectionsPerAddress = 64;

    /// <summary>
    /// Listens on the admin port with its per-address connection limit, then TLS as <c>--admin-tls</c> says
    /// (<see cref="PortTls"/>, the gRPC port's certificate): by default a connection that opens with a TLS handshake gets
    /// HTTPS and any other plain HTTP, as before. A cleartext connection may stay silent before its first request as
    /// long as Kestrel lets it (<see cref="KestrelServerLimits.KeepAliveTimeout"/>), as it could before TLS.
    /// </summary>
    public static void Listen(KestrelServerOptions kestrel, BrokerOptions options, GrpcEndpoint.BoundPorts bound,
        Func<ILogger, X509Certificate2>? certificate = null, ClientCertificates? clients = null)
        => kestrel.Listen(IPAddress.Parse(options.AdminBind), options.HttpPort, listen =>
        {
            listen.Protocols = HttpProtocols.Http1;
            bound.AdminListen = listen;
            var logger = listen.ApplicationServices.GetRequiredService<ILoggerFactory>().CreateLogger(typeof(AdminEndpoint).FullName!);
            var limit = listen.ApplicationServices.GetRequiredService<PeerConnectionLimit>();
            listen.Use(next => connection => limit.OnConnectionAsync(connection, next));
            // After the limit: a connection over it is closed before any TLS work, and one closed to make room is idle
            // whether it is TLS or not (a request is marked in progress by Map's first middleware, after TLS).
            if (options.AdminTls != PortTlsMode.Off)
                PortTls.Apply(listen, options.AdminTls, certificate!, logger, "admin", "--admin-tls", firstByteTimeout: kestrel.Limits.KeepAliveTimeout, clients: clients);
        });

    public static void Map(WebApplication app, BrokerEngine engine, BrokerOptions options)
    {
        if (options.Credentials.Count == 0 && !IPAddress.IsLoopback(IPAddress.Parse(options.AdminBind)))
            app.Logger.LogWarning("The admin port listens on {AdminBind} without credentials: anyone who reaches it can commit, roll back or resume transactions. Configure Broker__Credentials__<accessKey>=<secret>.",
                options.AdminBind);
        // A gRPC client's access key is its Credential up to the first '/' (the Go and C++ clients add a scope after it,
        // and the Apache proxy reads it so), so such a key signs in over Remoting and on this port, never over gRPC.
        foreach (string key in options.Credentials.Keys.Where(k => k.Contains('/')))
            app.Logger.LogWarning("Access key {AccessKey} contains '/': RocketMQ 5 (gRPC) clients cannot sign in with it (the part after the first '/' is a scope, as in Apache RocketMQ); Remoting clients and the admin API can.", key);
        var meter = new BrokerMeter(engine, BrokerConfiguration.Version, app.Services.GetRequiredService<MeterName>().Value);
        app.Lifetime.ApplicationStopped.Register(meter.Dispose);

        // First: a connection with a request anywhere in this pipeline is never closed to make room for a new one.
        var limit = app.Services.GetRequiredService<PeerConnectionLimit>();
        app.Use(limit.TrackRequestsAsync);

        // Routing's own 404/405 have no body; every 4xx of the admin port answers JSON.
        app.UseStatusCodePages(async context =>
        {
            var response = context.HttpContext.Response;
            if (response.StatusCode is >= 400 and < 500 && !response.HasStarted)
            {
                string code = response.StatusCode switch { 404 => "NotFound", 405 => "MethodNotAllowed", _ => "BadRequest" };
                string message = response.StatusCode switch
                {
                    404 => $"no admin endpoint at {context.HttpContext.Request.Path}",
                    405 => $"{context.HttpContext.Request.Method} is not allowed here; state changes are POST",
                    _ => "the request is malformed (check the parameters)",
                };
                await response.WriteAsJsonAsync(new ErrorBody(message, code));
            }
        });
        var guard = app.Services.GetRequiredService<AdminGuard>();
        app.Use((context, next) => guard.InvokeAsync(context, next));
        app.MapAdminApi(engine);
        app.MapPrometheusScrapingEndpoint();
        app.MapDashboard(engine, options);
    }
}
