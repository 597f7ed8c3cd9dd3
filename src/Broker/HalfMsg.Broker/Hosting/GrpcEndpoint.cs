using System.Net;
using HalfMsg.Broker.FrontEnds.GrpcV5;
using Microsoft.AspNetCore.Connections;
using Microsoft.AspNetCore.Server.Kestrel.Core;

namespace HalfMsg.Broker.Hosting;

/// <summary>
/// Kestrel limits for the gRPC port, in one place. Every number bounds what one peer can make the broker hold:
/// <list type="bullet">
/// <item>connections × streams per connection × <see cref="GrpcV5Options.MaxReceiveMessageSize"/> is the most request
/// data grpc-dotnet can buffer at once from authenticated callers; an unauthenticated call is cut off after
/// <see cref="GrpcV5Options.MaxUnauthenticatedRequestSize"/> (see <see cref="GrpcV5Extensions.MapGrpcV5"/>);</item>
/// <item>HTTP/2 flow-control windows bound what Kestrel itself queues per stream and per connection before the
/// application reads it;</item>
/// <item>the minimum data rate cuts off a sender that declares a large message and then stalls (grpc-dotnet lifts it
/// for the long-lived streaming calls, where silence is normal), and a receiver that stops reading a pending response
/// (<see cref="MinResponseBytesPerSecond"/>); what unsent answers may hold is bounded in bytes by
/// <see cref="GrpcV5Options.AnswerBudgetPerConnection"/> and <see cref="GrpcV5Options.AnswerBudgetTotal"/>;</item>
/// <item>keep-alive pings find a peer whose connection died without a reset, so its Telemetry session (and check-back
/// registration) goes away in about <see cref="KeepAlivePingDelay"/> + <see cref="KeepAlivePingTimeout"/>.</item>
/// </list>
/// </summary>
internal static class GrpcEndpoint
{
    /// <summary>All clients of one Node process share one connection: a Telemetry stream per client plus a long poll
    /// per push-consumer queue. 200 is twice Kestrel's default and far below the 1,000 allowed before.</summary>
    public const int MaxStreamsPerConnection = 200;

    /// <summary>Client processes connected at once by default (each normally holds one connection);
    /// <c>--grpc-max-connections</c>.</summary>
    public const int DefaultMaxConnections = 1_000;

    /// <summary>Kestrel's per-connection input buffer and HTTP/2 connection window (1 MiB), and the per-stream window
    /// (256 KiB, so one slow stream cannot take the whole connection window).</summary>
    public const int ConnectionWindow = 1024 * 1024;
    public const int StreamWindow = 256 * 1024;

    /// <summary>A unary request must keep arriving at 64 KiB/s after a 5 s grace period: a 5 MiB message takes at most
    /// ~85 s, while a sender that stalls after its length prefix is cut off.</summary>
    public const double MinRequestBytesPerSecond = 64 * 1024;

    /// <summary>
    /// While a response write is pending (HTTP/2: also while it waits for the client's window), the connection must
    /// take 16 KiB/s; each write gets at least the 10 s grace. Kestrel's default, 240 B/s, let a client that read 1 MiB
    /// quickly then stall for over an hour (the allowance accumulates per byte written). Only pending writes are timed:
    /// a long poll or an idle Telemetry stream writes nothing and is not affected. A client that opens its window a
    /// little every few seconds still passes this check; <see cref="GrpcV5Options.AnswerWriteTimeout"/> ends those
    /// answers. A violation closes the whole connection (Kestrel's HTTP/2 rate is per connection).
    /// </summary>
    public const double MinResponseBytesPerSecond = 16 * 1024;
    public static readonly TimeSpan MinResponseGracePeriod = TimeSpan.FromSeconds(10);

    public static readonly TimeSpan KeepAlivePingDelay = TimeSpan.FromSeconds(10);
    public static readonly TimeSpan KeepAlivePingTimeout = TimeSpan.FromSeconds(10);

    /// <summary>
    /// Listens on the gRPC port (HTTP/2; cleartext, and TLS as <paramref name="tls"/> says: <see cref="PortTls"/>) with its own connection limit. Kestrel's server-wide
    /// <c>MaxConcurrentConnections</c> would apply the same number to every port (Remoting has its own, larger limit),
    /// so the gRPC port counts its connections itself and closes one over the limit at once, as Kestrel would; and one
    /// over its address's share (<paramref name="maxPerAddress"/>, <c>--grpc-max-connections-per-address</c>; 0 = no
    /// share but the whole port) too, never closing an open one (<see cref="AddressShare"/>).
    /// </summary>
    public static void Listen(KestrelServerOptions kestrel, IPAddress ip, int port, int maxConnections, BoundPorts bound,
        PortTlsMode tls = PortTlsMode.Off, Func<ILogger, System.Security.Cryptography.X509Certificates.X509Certificate2>? certificate = null,
        ClientCertificates? clients = null, int maxPerAddress = 0)
    {
        kestrel.Listen(ip, port, listen =>
        {
            listen.Protocols = HttpProtocols.Http2;
            bound.GrpcListen = listen;
            var logger = listen.ApplicationServices.GetRequiredService<ILoggerFactory>().CreateLogger(typeof(GrpcEndpoint).FullName!);
            var limit = new ConnectionLimit("gRPC", maxConnections, logger,
                AddressShare.For(maxPerAddress, maxConnections, "--grpc-max-connections-per-address", logger));
            listen.Use(next => connection =>
            {
                // With --grpc-port 0 the port is the kernel's choice: learnt from the connection, before any of its
                // requests is routed by it (GrpcV5Extensions.MapGrpcV5).
                if (bound.Grpc == 0 && connection.LocalEndPoint is IPEndPoint local) bound.Grpc = local.Port;
                return limit.OnConnectionAsync(connection, next);
            });
            // After the limit: a connection over it is closed before any TLS work.
            if (tls != PortTlsMode.Off) PortTls.Apply(listen, tls, certificate!, logger, clients: clients);
        });
    }

    /// <summary>The ports the broker listens on: as configured, or, for a port configured as 0, the one Kestrel bound.</summary>
    internal sealed class BoundPorts(int grpc)
    {
        private int _grpc = grpc;
        public int Grpc { get => Volatile.Read(ref _grpc); set => Volatile.Write(ref _grpc, value); }
        public ListenOptions? GrpcListen { get; set; }
        public ListenOptions? AdminListen { get; set; }

        /// <summary>After Kestrel started: the bound ports, from its listen options (Kestrel writes the bound endpoint back).</summary>
        public (int Grpc, int Http) Learn(int grpcConfigured, int httpConfigured)
        {
            int grpc = grpcConfigured != 0 ? grpcConfigured : GrpcListen?.IPEndPoint?.Port ?? 0;
            if (Grpc == 0 && grpc != 0) Grpc = grpc;
            int http = httpConfigured != 0 ? httpConfigured : AdminListen?.IPEndPoint?.Port ?? 0;
            return (grpc, http);
        }
    }

    public static void ApplyLimits(KestrelServerOptions kestrel, GrpcV5Options grpc)
    {
        KestrelServerLimits limits = kestrel.Limits;
        limits.MaxConcurrentUpgradedConnections = 0;
        // One gRPC message plus its 5-byte prefix; streaming calls lift it per request (grpc-dotnet).
        limits.MaxRequestBodySize = grpc.MaxReceiveMessageSize + 5;
        limits.MaxRequestBufferSize = ConnectionWindow;
        limits.MinRequestBodyDataRate = new MinDataRate(MinRequestBytesPerSecond, TimeSpan.FromSeconds(5));
        limits.MinResponseDataRate = new MinDataRate(MinResponseBytesPerSecond, MinResponseGracePeriod);
        limits.Http2.MaxStreamsPerConnection = MaxStreamsPerConnection;
        limits.Http2.InitialConnectionWindowSize = ConnectionWindow;
        limits.Http2.InitialStreamWindowSize = StreamWindow;
        limits.Http2.KeepAlivePingDelay = KeepAlivePingDelay;
        limits.Http2.KeepAlivePingTimeout = KeepAlivePingTimeout;
    }

    /// <summary>One port's own connection limit: a connection over it, or over its address's <paramref name="share"/>
    /// (null: none), is closed at once, a refusal logged at most once a minute. The share never closes an open connection.</summary>
    internal sealed class ConnectionLimit(string port, int max, ILogger logger, AddressShare? share = null)
    {
        private readonly LogRateLimiter _logLimit = new(1, TimeProvider.System);
        private int _open;

        public async Task OnConnectionAsync(ConnectionContext connection, ConnectionDelegate next)
        {
            if (Interlocked.Increment(ref _open) > max)
            {
                Interlocked.Decrement(ref _open);
                // Returning ends the connection (Kestrel's own limit does the same). Once a minute at most: a flood of
                // connections must not flood the log.
                if (_logLimit.TryEnter(out long suppressed))
                    logger.LogWarning("{Port} connection refused: {Max} connections already open ({Suppressed} more refusals not logged since the last line)",
                        port, max, suppressed);
                return;
            }

            IPAddress? peer = null;
            if (share is not null)
            {
                peer = AddressShare.PeerOf(connection.RemoteEndPoint);
                if (!share.TryEnter(port, peer))
                {
                    Interlocked.Decrement(ref _open);
                    return;
                }
            }

            try
            {
                await next(connection).ConfigureAwait(false);
            }
            finally
            {
                // Whatever ended the connection (its end, an abort, a failed TLS handshake, a reset): the rest of the
                // connection's pipeline runs inside next.
                if (peer is not null) share!.Leave(peer);
                Interlocked.Decrement(ref _open);
            }
        }
    }
}
