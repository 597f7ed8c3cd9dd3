using Microsoft.Extensions.DependencyInjection;
using System.Net;
using Microsoft.AspNetCore.Connections;

namespace HalfMsg.Broker.FrontEnds.Remoting;

/// <summary>The Kestrel adapter: one <see cref="RemotingSession"/> per TCP connection, on the remoting and name-server ports
/// (after the connection limit and TLS, added in front of it by <see cref="Hosting.RemotingEndpoint"/>).</summary>
internal sealed class RemotingConnectionHandler(IServiceProvider services) : ConnectionHandler
{
    // Kestrel builds the handler while the host is built, before the engine is open (recovery runs after Build so the
    // engine logs through the host's logger factory); the server is resolved on the first connection, which can only
    // arrive once the listeners start, after recovery.
    private RemotingServer? _server;

    public override async Task OnConnectedAsync(ConnectionContext connection)
    {
        var server = _server ??= services.GetRequiredService<RemotingServer>();
        var local = connection.LocalEndPoint as IPEndPoint;
        bool nameServerOnly = server.Options.NameServerPort != 0 && local?.Port == server.Options.NameServerPort;
        var session = new RemotingSession(connection.Transport, server, connection.RemoteEndPoint as IPEndPoint, local, nameServerOnly);
        // ConnectionClosedRequested: Kestrel is stopping (SIGTERM). The session stops reading, lets the requests it
        // is processing be answered, then closes; until 2026-12-05 it ran until the client went away, and every
        // SIGTERM with a client connected took the host's whole shutdown timeout (found by review).
        var closeRequested = connection.Features.Get<Microsoft.AspNetCore.Connections.Features.IConnectionLifetimeNotificationFeature>()?.ConnectionClosedRequested ?? default;
        await session.RunAsync(connection.ConnectionClosed, closeRequested).ConfigureAwait(false);
    }
}
