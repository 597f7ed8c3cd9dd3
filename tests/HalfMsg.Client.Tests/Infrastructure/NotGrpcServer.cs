using System.Net;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Server.Kestrel.Core;

namespace HalfMsg.Client.Tests.Infrastructure;

/// <summary>
/// An HTTP/2 server on 127.0.0.1 that is no broker: it answers every request with a bare HTTP status (404 by
/// default, no grpc-status), as a load balancer's or an ingress's default backend does when the broker behind it is
/// gone. Counts the requests it answered.
/// </summary>
public sealed class NotGrpcServer : IAsyncDisposable
{
    private readonly WebApplication _app;
    private int _requests;

    private NotGrpcServer(WebApplication app) => _app = app;

    /// <summary>Requests answered so far.</summary>
    public int Requests => Volatile.Read(ref _requests);

    public static async Task<NotGrpcServer> StartAsync(int port, int status = StatusCodes.Status404NotFound)
    {
        var builder = WebApplication.CreateSlimBuilder();
        builder.WebHost.ConfigureKestrel(k => k.Listen(IPAddress.Loopback, port, l => l.Protocols = HttpProtocols.Http2));
        WebApplication app = builder.Build();
        var server = new NotGrpcServer(app);
        app.Run(context =>
        {
            Interlocked.Increment(ref server._requests);
            context.Response.StatusCode = status;
            return Task.CompletedTask;
        });
        await app.StartAsync();
        return server;
    }

    public async ValueTask DisposeAsync() => await _app.DisposeAsync();
}
