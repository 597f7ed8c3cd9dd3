using System.Net;
using HalfMsg.Broker.Core;
using HalfMsg.Broker.FrontEnds.Remoting;
using Microsoft.AspNetCore.Connections;
using Microsoft.AspNetCore.Server.Kestrel.Transport.Sockets;

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
            NameServerPort = options.NameServerPort,
            Credentials = options.Credentials,
        };
        builder.Services.AddSingleton(sp => new RemotingServer(sp.GetRequiredService<BrokerEngine>(), remoting, sp.GetRequiredService<ILoggerFactory>())
        {
            Admission = sp.GetService<FrontEnds.SendAdmission>(),
        });
        // The socket transport pauses reading at MaxReadBufferSize (1 MiB by default) of unconsumed bytes; a session
        // keeps a whole frame unconsumed until it is complete, so the limit must exceed the largest frame.
        builder.Services.Configure<SocketTransportOptions>(o => o.MaxReadBufferSize = Math.Max(o.MaxReadBufferSize ?? 0, remoting.MaxFrameLength + 64 * 1024));
        builder.WebHost.ConfigureKestrel(kestrel =>
        {
            var ip = IPAddress.Parse(options.Bind);
            kestrel.Listen(ip, options.RemotingPort, l => l.UseConnectionHandler<RemotingConnectionHandler>());
            if (options.NameServerPort != 0) kestrel.Listen(ip, options.NameServerPort, l => l.UseConnectionHandler<RemotingConnectionHandler>());
        });
    }
}
