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
    /// <summary>Exit code of any other failure (one line on stderr, never a stack trace).</summary>
    public const int ExitFailure = 1;

    /// <summary>The exit code for a broker that ran and was stopped: 0, or <see cref="ExitStorageFailure"/> if its log failed.</summary>
    public int ExitCode => Engine.StorageFault is null ? 0 : ExitStorageFailure;

    /// <summary>The longest the host waits for open connections to close when it stops (docker stop waits 10 s).</summary>
    public static readonly TimeSpan ShutdownTimeout = TimeSpan.FromSeconds(8);

    private readonly WebApplication _app;
    public BrokerEngine Engine { get; }
    public BrokerOptions Options { get; }
    /// <summary>The host's services (tests).</summary>
    internal IServiceProvider Services => _app.Services;

    private BrokerHost(WebApplication app, BrokerEngine engine, BrokerOptions options)
    {
        _app = app;
        Engine = engine;
        Options = options;
    }

    public static Task<BrokerHost> StartAsync(string[] args, CancellationToken ct = default) => StartAsync(args, [], ct);

    /// <summary>
    /// As <see cref="StartAsync(string[], CancellationToken)"/>, with extra configuration keys below the flags (tests:
    /// credentials for an in-process broker without touching the process environment).
    /// </summary>
    internal static Task<BrokerHost> StartAsync(string[] args, IEnumerable<KeyValuePair<string, string?>> configuration, CancellationToken ct = default)
        => StartAsync(args, configuration, adjust: null, ct);

    /// <summary>
    /// As <see cref="StartAsync(string[], CancellationToken)"/>, with <paramref name="adjust"/> applied to the bound
    /// options (tests: a core bound no flag sets).
    /// </summary>
    internal static Task<BrokerHost> StartAsync(string[] args, Func<BrokerOptions, BrokerOptions> adjust, CancellationToken ct = default)
        => StartAsync(args, [], adjust, ct);

    /// <summary>
    /// The host builder, which reads <c>appsettings.json</c> (and an environment's <c>appsettings.{Environment}.json</c>).
    /// A file it cannot read (a JSON syntax error, a key written twice) is a configuration mistake: exit code 2 and one
    /// line with the reason. Since the late-night session of 2026-12-07: until then it was exit code 1 (restarted in a
    /// loop by systemd) and "Failed to load configuration from file '…'" without the reason, which the configuration
    /// provider keeps in its inner exceptions (found by a new user's pass over the README). A file that opens but fails
    /// to read (an I/O error) is no mistake of its content: it ends the start as any I/O failure does (exit 74).
    /// </summary>
    private static WebApplicationBuilder CreateBuilder()
    {
        try
        {
            return WebApplication.CreateBuilder(new WebApplicationOptions { Args = [], ContentRootPath = AppContext.BaseDirectory });
        }
        catch (InvalidDataException ex) when (ex.InnerException is IOException io)
        {
            // The file opened but could not be read (EIO): the disk, not the file, is at fault. Thrown as it is, the
            // start ends as any I/O failure does (exit 74, restarted once the disk is fixed), not with exit 2 and
            // "fix the file". Until the late-night session of 2026-12-07 (found by review) the catch below took it too.
            System.Runtime.ExceptionServices.ExceptionDispatchInfo.Throw(io);
            throw;
        }
        catch (InvalidDataException ex) when (ex.InnerException is FormatException)
        {
            // The JSON provider nests the reason: "Could not parse the JSON file." around the parser's line and position.
            // Only a FormatException is the file's content (JSON syntax, a key written twice, a top level not an object).
            string reason = "";
            for (var inner = ex.InnerException; inner is not null; inner = inner.InnerException) reason += $": {inner.Message.TrimEnd('.')}";
            throw new BrokerConfigurationException($"{ex.Message.TrimEnd('.')}{reason}; fix the file (it must be JSON, each key once)");
        }
    }

    private static async Task<BrokerHost> StartAsync(string[] args, IEnumerable<KeyValuePair<string, string?>> configuration,
        Func<BrokerOptions, BrokerOptions>? adjust, CancellationToken ct)
    {
        var flags = BrokerConfiguration.ParseCommandLine(args);
        var builder = CreateBuilder();
        builder.Configuration.AddInMemoryCollection(configuration);
        builder.Configuration.AddInMemoryCollection(flags);
        var options = BrokerConfiguration.Bind(builder.Configuration);
        if (adjust is not null) options = adjust(options);
        // --tls-client-auth require: auto ports take TLS only, so no cleartext connection bypasses the certificate check.
        options = ClientCertificates.Enforce(options, out var raisedToRequired);
        StartupChecks.Run(options);
        // Read now, so that a missing or unreadable --tls-client-ca stops the start with its flag named.
        var clientCertificates = ClientCertificates.Load(options.TlsClientAuth, options.TlsClientCa);
        // Read now, so that a wrong certificate path or password stops the start with its flag named.
        // One certificate (and one self-signed one, when none is configured) for the gRPC, Remoting and admin ports.
        bool remotingTls = options.RemotingPort != 0 && options.RemotingTls != PortTlsMode.Off;
        var tlsCertificate = options.GrpcTls == PortTlsMode.Off && !remotingTls && options.AdminTls == PortTlsMode.Off ? null
            : PortTls.CertificateSource(options.GrpcTlsCertificate, options.GrpcTlsKey, options.GrpcTlsCertificatePassword, options.DataDir,
                advertisedHost: options.AdvertisedHost, hostName: options.MachineHostName);
        var bound = new GrpcEndpoint.BoundPorts(options.GrpcPort);

        BrokerLogging.Configure(builder.Logging, builder.Configuration, options);
        // A backstop: streams and sessions are ended on ApplicationStopping, so a stop with clients connected takes well
        // under a second; whatever is still open after this is aborted, and the checkpoint is written within docker
        // stop's 10 s (the default 30 s outlived it; found by review).
        builder.Services.Configure<HostOptions>(host => host.ShutdownTimeout = ShutdownTimeout);
        builder.WebHost.ConfigureKestrel(kestrel =>
        {
            var ip = IPAddress.Parse(options.Bind);
            GrpcEndpoint.Listen(kestrel, ip, options.GrpcPort, options.GrpcMaxConnections, bound, options.GrpcTls, tlsCertificate, clientCertificates,
                options.GrpcMaxConnectionsPerAddress);
            AdminEndpoint.Listen(kestrel, options, bound, tlsCertificate, clientCertificates);
        });
        var grpcOptions = new GrpcV5Options
        {
            AdvertisedHost = options.AdvertisedHost,
            AdvertisedPort = options.AdvertisedGrpcPort,
            Port = options.GrpcPort,
            BrokerName = options.BrokerName,
            MaxReceiveMessageSize = options.Core.MaxMessageSize + 1024 * 1024,
            Credentials = options.Credentials,
            DefaultInvisibleDuration = options.DefaultInvisibleDuration,
            MaxUnsentBytesPerConnection = options.GrpcMaxUnsentPerConnection,
            MaxUnsentBytes = options.GrpcMaxUnsent,
            AnswerWriteTimeout = options.GrpcWriteTimeout,
            TelemetryStallTimeout = options.GrpcTelemetryStallTimeout,
            RetryDelays = options.GrpcRetryDelays,
        };
        builder.WebHost.ConfigureKestrel(kestrel => GrpcEndpoint.ApplyLimits(kestrel, grpcOptions));
        builder.Services.AddGrpcV5(grpcOptions);
        builder.Services.AddSingleton(sp => new FrontEnds.SendAdmission(options.MaxConcurrentSends, options.SendQueueCapacity, options.SendQueueTimeout,
            sp.GetRequiredService<BrokerEngine>().Metrics));
        RemotingEndpoint.Add(builder, options, tlsCertificate, clientCertificates);
        AdminEndpoint.AddServices(builder, options);

        // Recovery completes before any listener accepts.
        // The engine logs through the host's ILoggerFactory (appsettings.json levels apply), so it opens after Build;
        // services resolve it only once requests arrive, after it is open.
        BrokerEngine? opened = null;
        builder.Services.AddSingleton(_ => opened ?? throw new InvalidOperationException("The broker engine is not open yet."));
        var app = builder.Build();
        if (tlsCertificate is not null && options.GrpcTlsCertificate is null
            && (options.GrpcTls == PortTlsMode.Required || (remotingTls && options.RemotingTls == PortTlsMode.Required) || options.AdminTls == PortTlsMode.Required))
        {
            // A port that takes TLS only (e.g. every port under --tls-client-auth require) serves the self-signed
            // certificate to its first connection anyway: it is taken now, so <data>/tls/self-signed.pfx exists before
            // that connection, for a probe that trusts it (the Docker image's HEALTHCHECK with HALFMSG_ADMIN_CA).
            tlsCertificate(app.Services.GetRequiredService<ILoggerFactory>().CreateLogger(typeof(PortTls).FullName!));
        }
        var engine = await BrokerEngine.OpenAsync(options.Core, TimeProvider.System, app.Services.GetRequiredService<ILoggerFactory>(),
            startBackgroundLoops: true, ct);
        opened = engine;
        app.MapGrpcV5(() => bound.Grpc);
        AdminEndpoint.Map(app, engine, options);
        try
        {
            await app.StartAsync(ct);
        }
        catch (IOException ex)
        {
            // A port taken between the start-up check and now: still one line that names the flags.
            await engine.DisposeAsync();
            throw new BrokerConfigurationException($"could not listen ({ex.Message}); check --grpc-port, --http-port, --bind and --admin-bind");
        }
        catch
        {
            await engine.DisposeAsync();
            throw;
        }
        // The ports bound: with --grpc-port 0 or --http-port 0, the ones the kernel chose (until 2026-12-05 logged as 0).
        var (grpcPort, httpPort) = bound.Learn(options.GrpcPort, options.HttpPort);
        if (raisedToRequired.Count > 0)
            app.Logger.LogInformation("--tls-client-auth require: {Flags} auto taken as required (TLS only): a cleartext connection would bypass the client certificate",
                string.Join(", ", raisedToRequired));
        if (options.TlsClientAuth == TlsClientAuth.Require)
        {
            var clear = new List<string>();
            if (options.GrpcTls == PortTlsMode.Off) clear.Add("gRPC (--grpc-tls off)");
            if (options.RemotingPort != 0 && options.RemotingTls == PortTlsMode.Off) clear.Add("Remoting and name server (--remoting-tls off)");
            if (options.AdminTls == PortTlsMode.Off) clear.Add("admin (--admin-tls off)");
            if (clear.Count > 0)
                app.Logger.LogWarning("--tls-client-auth require: {Ports} speak cleartext, so clients reach them without a client certificate",
                    string.Join(", ", clear));
        }
        app.Logger.LogInformation("HalfMsgBroker {Version} ready: gRPC {Bind}:{Grpc} (TLS {Tls}), Remoting {Remoting} (TLS {RemotingTls}), admin {AdminScheme}://{AdminBind}:{Http} (TLS {AdminTls}; auth {Auth}), data {DataDir}, flush {Flush}",
            BrokerConfiguration.Version, options.Bind, grpcPort, TlsShown(options.GrpcTls, options),
            options.RemotingPort == 0 ? "off" : options.NameServerPort == 0 ? $"{options.Bind}:{options.RemotingPort}" : $"{options.Bind}:{options.RemotingPort}, name server :{options.NameServerPort}",
            options.RemotingPort == 0 ? "-" : TlsShown(options.RemotingTls, options),
            options.AdminTls == PortTlsMode.Required ? "https" : "http", options.AdminBind, httpPort, TlsShown(options.AdminTls, options),
            options.Credentials.Count > 0 ? "on" : "off", Path.GetFullPath(options.DataDir), options.Core.Flush);
        WatchStorage(app, engine);
        return new BrokerHost(app, engine, options);
    }

    /// <summary>A port's TLS mode as the ready line shows it.</summary>
    private static string TlsShown(PortTlsMode mode, BrokerOptions options) => mode switch
    {
        PortTlsMode.Off => "off",
        _ => (mode == PortTlsMode.Auto ? "auto" : "required") + (options.GrpcTlsCertificate is null ? ", self-signed" : "") + options.TlsClientAuth switch
        {
            TlsClientAuth.Require => ", client certificate required",
            TlsClientAuth.Optional => ", client certificate optional",
            _ => "",
        },
    };

    /// <summary>
    /// How long a broker whose log failed keeps running before it stops itself with <see cref="ExitStorageFailure"/>:
    /// requests in flight get their storage-failure errors and /health reports the failure to probes meanwhile.
    /// </summary>
    public static readonly TimeSpan StorageFailureStopDelay = TimeSpan.FromSeconds(5);

    /// <summary>
    /// Once the log fails every write is refused for good: the host stops (exit code 74) so that a supervisor
    /// (Restart=on-failure, a container restart policy) restarts it. Until 2026-12-05 nothing watched
    /// <see cref="BrokerEngine.StorageFailed"/> and the broker refused writes until someone stopped it by hand (found by review).
    /// </summary>
    private static void WatchStorage(WebApplication app, BrokerEngine engine)
    {
        _ = engine.StorageFailed.ContinueWith(async _ =>
        {
            app.Logger.LogCritical("Storage failed: the broker stops in {Delay} s with exit code {Code}; restart it once the disk is fixed",
                StorageFailureStopDelay.TotalSeconds, ExitStorageFailure);
            await Task.Delay(StorageFailureStopDelay).ConfigureAwait(false);
            try
            {
                app.Lifetime.StopApplication();
            }
            catch (ObjectDisposedException)
            {
                // Already stopped and disposed.
            }
        }, CancellationToken.None, TaskContinuationOptions.OnlyOnRanToCompletion, TaskScheduler.Default);
    }

    public Task WaitForShutdownAsync() => _app.WaitForShutdownAsync();

    public async ValueTask DisposeAsync()
    {
        await _app.StopAsync();
        await Engine.DisposeAsync();
        _app.Logger.LogInformation("HalfMsgBroker stopped: checkpoint at log address {Checkpoint}, data {DataDir}",
            Engine.LastCheckpointAddress, Path.GetFullPath(Options.DataDir));
        await _app.DisposeAsync();
    }
}
