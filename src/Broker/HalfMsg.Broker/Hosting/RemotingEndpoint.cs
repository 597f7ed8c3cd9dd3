using System.Net;
using System.Security.Cryptography.X509Certificates;
using HalfMsg.Broker.Core;
using HalfMsg.Broker.FrontEnds.Remoting;
using Microsoft.AspNetCore.Connections;
using Microsoft.AspNetCore.Server.Kestrel.Core;

namespace HalfMsg.Broker.Hosting;

/// <summary>
/// Registers the RocketMQ 4 Remoting listener (<c>--remoting-port</c>) and the embedded name server
/// (<c>--namesrv-port</c>, 0 = off) as raw-TCP Kestrel endpoints served by <see cref="RemotingConnectionHandler"/>, each
/// with TLS as <c>--remoting-tls</c> says (<see cref="PortTls"/>, with the gRPC port's certificate).
/// </summary>
internal static class RemotingEndpoint
{
    public static void Add(WebApplicationBuilder builder, BrokerOptions options, Func<ILogger, X509Certificate2>? certificate,
        ClientCertificates? clients = null)
    {
        if (options.RemotingPort == 0) return;
        if (options.RemotingPort == options.GrpcPort || options.RemotingPort == options.HttpPort)
            throw new BrokerConfigurationException("--remoting-port must differ from --grpc-port and --http-port");
        if (options.NameServerPort != 0 && (options.NameServerPort == options.RemotingPort || options.NameServerPort == options.GrpcPort || options.NameServerPort == options.HttpPort))
            throw new BrokerConfigurationException("--namesrv-port must differ from the other ports (0 turns the name server off)");
        var remoting = new RemotingOptions
        {
            AdvertisedHost = options.AdvertisedHost,
            RemotingPort = options.RemotingPort,
            AdvertisedPort = options.AdvertisedRemotingPort,
            BrokerName = options.BrokerName,
            NameServerPort = options.NameServerPort,
            Credentials = options.Credentials,
            MaxConnections = options.RemotingMaxConnections,
            MaxInFlightBytesPerConnection = options.RemotingMaxInFlightPerConnection,
            MaxPullBytes = options.RemotingMaxPullBytes,
            MaxParkedPullsPerConnection = options.RemotingMaxParkedPulls,
            WriteStallTimeout = options.RemotingWriteTimeout,
            ConsumerExpiry = options.RemotingConsumerExpiry,
            MaxQueueLocksPerConnection = options.RemotingMaxQueueLocks,
        };
        builder.Services.AddSingleton(sp => new RemotingServer(sp.GetRequiredService<BrokerEngine>(), remoting, sp.GetRequiredService<ILoggerFactory>())
        {
            Admission = sp.GetService<FrontEnds.SendAdmission>(),
        });
        // Kestrel's socket read buffer (MaxReadBufferSize, 1 MiB) is left as it is: it is shared by every port, and the
        // gRPC and admin ports rely on it to stop reading from a peer that sends without reading. A Remoting session reads
        // frames larger than it all the same (it examines all it was given, so the transport goes on reading; measured
        // with a 10 MiB frame), and bounds what large frames hold with RemotingFrameAssembler.
        builder.WebHost.ConfigureKestrel(kestrel =>
        {
            var ip = IPAddress.Parse(options.Bind);
            // One share for both ports, as their whole limit (RemotingServer) is one.
            AddressShare? share = AddressShare.For(options.RemotingMaxConnectionsPerAddress, options.RemotingMaxConnections,
                "--remoting-max-connections-per-address",
                kestrel.ApplicationServices.GetRequiredService<ILoggerFactory>().CreateLogger(typeof(RemotingEndpoint).FullName!));
            kestrel.Listen(ip, options.RemotingPort, l => Serve(l, options, idle: remoting.IdleTimeout, certificate, clients, share, "Remoting"));
            if (options.NameServerPort != 0)
                kestrel.Listen(ip, options.NameServerPort, l => Serve(l, options, idle: remoting.IdleTimeout, certificate, clients, share, "Name-server"));
        });
    }

    /// <summary>
    /// The connection limit and the address's <paramref name="share"/> of it (null: none; never closing an open
    /// connection: <see cref="AddressShare"/>), both before any TLS work, so a connection over them costs no handshake, then TLS as
    /// <c>--remoting-tls</c> says, then a <see cref="RemotingSession"/>. A cleartext connection costs one peek of its first
    /// byte and nothing per frame; it may stay silent before it as long as a session may (<paramref name="idle"/>), as
    /// before TLS, when only the session's idle timeout closed a silent connection.
    /// </summary>
    private static void Serve(ListenOptions listen, BrokerOptions options, TimeSpan idle, Func<ILogger, X509Certificate2>? certificate,
        ClientCertificates? clients, AddressShare? share, string port)
    {
        RemotingServer? server = null;
        listen.Use(next => async connection =>
        {
            // Resolved on the first connection: the engine it needs opens after the host is built (see RemotingConnectionHandler).
            server ??= listen.ApplicationServices.GetRequiredService<RemotingServer>();
            if (!server.TryAcceptConnection())
            {
                connection.Abort(new ConnectionAbortedException("too many Remoting connections"));
                return;
            }
            IPAddress? peer = null;
            if (share is not null)
            {
                peer = AddressShare.PeerOf(connection.RemoteEndPoint);
                if (!share.TryEnter(port, peer))
                {
                    server.ReleaseConnection();
                    connection.Abort(new ConnectionAbortedException("too many Remoting connections from that address"));
                    return;
                }
            }
            try
            {
                await next(connection).ConfigureAwait(false);
            }
            finally
            {
                // Whatever ended the connection (its end, an abort, a failed TLS handshake, a reset): TLS and the session
                // run inside next.
                if (peer is not null) share!.Leave(peer);
                server.ReleaseConnection();
            }
        });
        if (options.RemotingTls != PortTlsMode.Off)
        {
            var logger = listen.ApplicationServices.GetRequiredService<ILoggerFactory>().CreateLogger(typeof(RemotingEndpoint).FullName!);
            PortTls.Apply(listen, options.RemotingTls, certificate!, logger, "Remoting", "--remoting-tls", firstByteTimeout: idle, clients: clients);
        }
        listen.UseConnectionHandler<RemotingConnectionHandler>();
    }
}
