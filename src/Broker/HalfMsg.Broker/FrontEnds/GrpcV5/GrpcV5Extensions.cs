using Grpc.AspNetCore.Server;
using HalfMsg.Broker.Core;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Http.Features;
using Microsoft.AspNetCore.Routing;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;

namespace HalfMsg.Broker.FrontEnds.GrpcV5;

/// <summary>Wires the RocketMQ 5 gRPC front-end (grpc-dotnet on Kestrel) into the host.</summary>
public static class GrpcV5Extensions
{
    /// <summary>
    /// Registers the front-end: the generated MessagingService base class implemented by one singleton (Telemetry
    /// sessions live across calls), one interceptor for authentication and handler failures, and gzip with a cap.
    /// Expects a <see cref="BrokerEngine"/> singleton from the host.
    /// </summary>
    public static IServiceCollection AddGrpcV5(this IServiceCollection services, GrpcV5Options options)
    {
        ArgumentNullException.ThrowIfNull(options);
        services.AddSingleton(options);
        services.AddSingleton(sp => new V5Authenticator(options, sp.GetRequiredService<ILogger<V5Authenticator>>(), sp.GetService<TimeProvider>()));
        services.AddSingleton(sp => new V5BadInput(options, sp.GetRequiredService<ILogger<V5BadInput>>(), sp.GetService<TimeProvider>()));
        services.AddSingleton<V5CallInterceptor>();
        services.AddSingleton(sp => new MessagingService(
            sp.GetRequiredService<BrokerEngine>(), options, sp.GetRequiredService<ILogger<MessagingService>>(), sp.GetService<TimeProvider>(),
            sp.GetService<Microsoft.Extensions.Hosting.IHostApplicationLifetime>()?.ApplicationStopping ?? default));
        services.AddSingleton(sp => new TransactionBatchService(sp.GetRequiredService<MessagingService>()));
        services.AddGrpc(grpc =>
        {
            grpc.MaxReceiveMessageSize = options.MaxReceiveMessageSize;
            // Responses are bounded by the core's message size; the official clients accept 4 MiB + overhead.
            grpc.MaxSendMessageSize = null;
            grpc.EnableDetailedErrors = false;
            grpc.IgnoreUnknownServices = false;
            grpc.CompressionProviders = [new CappedGzipProvider(options.MaxReceiveMessageSize)];
            grpc.Interceptors.Add<V5CallInterceptor>();
        });
        services.PostConfigure<LoggerFilterOptions>(QuietGrpcDotnet);
        return services;
    }

    /// <summary>
    /// grpc-dotnet logs what a client did wrong at Information (unreadable or oversized frames, a bomb, an unknown
    /// method, a cancelled call) and a request that is not valid protobuf at Error (event 6, "Error when executing
    /// service method", the only place a deserialization failure surfaces). Handler exceptions, its other Error
    /// source, never reach it: <see cref="V5CallInterceptor"/> catches and logs them. So by default its server
    /// categories log Warning and above, and its call handler nothing, so a bad client cannot flood the log; a
    /// <c>Logging:LogLevel:Grpc.AspNetCore...</c> setting in appsettings.json replaces these defaults.
    /// </summary>
    private static void QuietGrpcDotnet(LoggerFilterOptions filters)
    {
        const string server = "Grpc.AspNetCore.Server";
        if (filters.Rules.Any(r => r.CategoryName?.StartsWith("Grpc.AspNetCore", StringComparison.Ordinal) == true))
        {
            return;
        }

        filters.Rules.Add(new LoggerFilterRule(null, server, LogLevel.Warning, null));
        filters.Rules.Add(new LoggerFilterRule(null, server + ".ServerCallHandler", LogLevel.None, null));
    }

    /// <summary>
    /// On the gRPC port only the gRPC services run. The host matches every request against every mapped endpoint
    /// before a port's branch runs, so a request here can arrive holding an admin endpoint (the admin API, the dashboard,
    /// the metrics): it would run with none of the admin port's checks (<see cref="Admin.AdminGuard"/>), and the gRPC port
    /// is the one that may be public. Such a request gets a bare 404 (a gRPC client reads it as UNIMPLEMENTED); the
    /// gRPC methods, and grpc-dotnet's answers for unknown ones, carry <see cref="GrpcMethodMetadata"/>.
    /// </summary>
    private static RequestDelegate OnlyGrpcMethods(RequestDelegate next) => context =>
    {
        if (context.GetEndpoint() is { } endpoint && endpoint.Metadata.GetMetadata<GrpcMethodMetadata>() is null)
        {
            context.Response.StatusCode = StatusCodes.Status404NotFound;
            return Task.CompletedTask;
        }

        return next(context);
    };

    /// <summary>
    /// Maps the service on the gRPC port only, and nothing else runs there (<see cref="OnlyGrpcMethods"/>). Before
    /// grpc-dotnet reads a body, a caller that failed authentication gets a small request-body limit
    /// (<see cref="GrpcV5Options.MaxUnauthenticatedRequestSize"/>): a stranger cannot make the broker buffer a 5 MiB
    /// message only to be told UNAUTHORIZED. After the call, a request that was not valid protobuf is logged and
    /// answered by <see cref="V5BadInput"/>.
    /// </summary>
    /// <remarks>
    /// <paramref name="grpcPort"/> is asked when a request arrives: the port Kestrel bound, which with <c>--grpc-port 0</c>
    /// is known only once it listens (until 2026-12-05 requests were matched against 0, which none has, and every gRPC
    /// call was answered 404; found by review).
    /// </remarks>
    public static void MapGrpcV5(this IApplicationBuilder app, Func<int> grpcPort)
    {
        ArgumentNullException.ThrowIfNull(app);
        app.MapWhen(ctx => ctx.Connection.LocalPort == grpcPort(), grpc =>
        {
            grpc.Use(OnlyGrpcMethods);
            V5Authenticator authenticator = grpc.ApplicationServices.GetRequiredService<V5Authenticator>();
            GrpcV5Options options = grpc.ApplicationServices.GetRequiredService<GrpcV5Options>();
            V5BadInput badInput = grpc.ApplicationServices.GetRequiredService<V5BadInput>();
            grpc.Use(next => async context =>
            {
                bool unauthenticated = authenticator.Check(context) is not null;
                if (unauthenticated && context.Features.Get<IHttpMaxRequestBodySizeFeature>() is { IsReadOnly: false } maxBody)
                {
                    maxBody.MaxRequestBodySize = options.MaxUnauthenticatedRequestSize;
                }

                // What this request's stream holds of unfinished messages counts on its connection's budget.
                var body = RequestBodyBudget.Install(context, RequestBodyBudget.Of(context, options.RequestBodyBudget));
                try
                {
                    await next(context).ConfigureAwait(false);
                }
                finally
                {
                    body.Release();
                }
                badInput.AfterCall(context, unauthenticated);
            });
            grpc.UseRouting();
            grpc.UseEndpoints(endpoints =>
            {
                endpoints.MapGrpcService<MessagingService>();
                endpoints.MapGrpcService<TransactionBatchService>(); // HalfMsgBroker's own: several decisions per call
            });
        });
    }
}
