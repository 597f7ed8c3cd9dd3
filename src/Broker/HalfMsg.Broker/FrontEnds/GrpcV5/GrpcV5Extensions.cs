using HalfMsg.Broker.Core;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Server.Kestrel.Core;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;

namespace HalfMsg.Broker.FrontEnds.GrpcV5;

/// <summary>Wires the RocketMQ 5 gRPC front-end into the host.</summary>
public static class GrpcV5Extensions
{
    /// <summary>
    /// Registers the front-end. Expects a <see cref="BrokerEngine"/> singleton from the host. Raises Kestrel's HTTP/2
    /// stream limit: all RocketMQ clients of one process share one connection (a telemetry stream per client plus a
    /// long poll per assigned queue), and the default of 100 is easily reached.
    /// </summary>
    public static IServiceCollection AddGrpcV5(this IServiceCollection services, GrpcV5Options options)
    {
        ArgumentNullException.ThrowIfNull(options);
        services.AddSingleton(options);
        services.AddSingleton(sp => new MessagingService(
            sp.GetRequiredService<BrokerEngine>(), options, sp.GetRequiredService<ILogger<MessagingService>>(), sp.GetService<TimeProvider>()));
        services.AddSingleton(sp => new GrpcServer(
            sp.GetRequiredService<MessagingService>().Methods(), options.MaxReceiveMessageSize,
            sp.GetRequiredService<ILoggerFactory>().CreateLogger("HalfMsg.Broker.FrontEnds.GrpcV5"), sp.GetService<TimeProvider>()));
        services.Configure<KestrelServerOptions>(k => k.Limits.Http2.MaxStreamsPerConnection = Math.Max(k.Limits.Http2.MaxStreamsPerConnection, 1000));
        return services;
    }

    /// <summary>Terminal middleware serving gRPC; the host applies it to connections on the gRPC port only.</summary>
    public static void UseGrpcV5(this IApplicationBuilder app)
    {
        ArgumentNullException.ThrowIfNull(app);
        GrpcServer server = app.ApplicationServices.GetRequiredService<GrpcServer>();
        app.Run(server.HandleAsync);
    }
}
