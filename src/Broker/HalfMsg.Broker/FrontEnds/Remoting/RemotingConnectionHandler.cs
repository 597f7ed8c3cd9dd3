using System.Net;
using Microsoft.AspNetCore.Connections;

namespace HalfMsg.Broker.FrontEnds.Remoting;

/// <summary>The Kestrel adapter: one <see cref="RemotingSession"/> per TCP connection, on the remoting and name-server ports.</summary>
internal sealed class RemotingConnectionHandler(RemotingServer server) : ConnectionHandler
{
    public override async Task OnConnectedAsync(ConnectionContext connection)
    {
        if (!server.TryAcceptConnection())
        {
            connection.Abort(new ConnectionAbortedException("too many Remoting connections"));
            return;
        }
        try
        {
            var local = connection.LocalEndPoint as IPEndPoint;
            bool nameServerOnly = server.Options.NameServerPort != 0 && local?.Port == server.Options.NameServerPort;
            var session = new RemotingSession(connection.Transport, server, connection.RemoteEndPoint as IPEndPoint, local, nameServerOnly);
            await session.RunAsync(connection.ConnectionClosed).ConfigureAwait(false);
        }
        finally
        {
            server.ReleaseConnection();
        }
    }
}
