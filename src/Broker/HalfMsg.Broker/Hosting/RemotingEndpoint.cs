using System.Net;
using HalfMsg.Broker.Core;
using HalfMsg.Broker.FrontEnds.Remoting;
using Microsoft.AspNetCore.Connections;

namespace HalfMsg.Broker.Hosting;

/// <summary>
/// Registers the RocketMQ 4 Remoting listener (<c>--remoting-port</c>) and the embedded name server
/// (<c>--namesrv-port</c>, 0 = off) as raw-TCP Kestrel endpoints served by <see cref="RemotingConnectionHandler"/>.
/// </summary>
internal static class RemotingEndpoint
{
    public static void Add(WebApplicationBuilder builder, BrokerOptions options)
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
            kestrel.Listen(ip, options.RemotingPort, l => l.UseConnectionHandler<RemotingConnectionHandler>());
            if (options.NameServerPort != 0) kestrel.Listen(ip, options.NameServerPort, l => l.UseConnectionHandler<RemotingConnectionHandler>());
        });
    }
}
