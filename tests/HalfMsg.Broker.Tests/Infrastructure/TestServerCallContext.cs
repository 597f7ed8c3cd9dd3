using Grpc.Core;
using Microsoft.AspNetCore.Http;

namespace HalfMsg.Broker.Tests.Infrastructure;

/// <summary>A <see cref="ServerCallContext"/> without a server, for calling interceptors and handlers directly.</summary>
public sealed class TestServerCallContext(string method, Metadata? requestHeaders = null, CancellationToken ct = default) : ServerCallContext
{
    protected override string MethodCore => method;
    protected override string HostCore => "127.0.0.1";
    protected override string PeerCore => "ipv4:127.0.0.1:1";
    protected override DateTime DeadlineCore => DateTime.MaxValue;
    protected override Metadata RequestHeadersCore { get; } = requestHeaders ?? [];
    protected override CancellationToken CancellationTokenCore => ct;
    protected override Metadata ResponseTrailersCore { get; } = [];
    protected override Status StatusCore { get; set; }
    protected override WriteOptions? WriteOptionsCore { get; set; }
    protected override AuthContext AuthContextCore => new(null, []);

    protected override ContextPropagationToken CreatePropagationTokenCore(ContextPropagationOptions? options) => throw new NotSupportedException();

    protected override Task WriteResponseHeadersAsyncCore(Metadata responseHeaders) => Task.CompletedTask;

    /// <summary>An HTTP context carrying the request headers, where grpc-dotnet's <c>GetHttpContext()</c> looks for one
    /// outside a server (its documented test hook): the broker reads RocketMQ's headers from the HTTP request.</summary>
    protected override IDictionary<object, object> UserStateCore { get; } = new Dictionary<object, object> { ["__HttpContext"] = HttpContextOf(requestHeaders) };

    private static DefaultHttpContext HttpContextOf(Metadata? headers)
    {
        var http = new DefaultHttpContext();
        foreach (Metadata.Entry entry in headers ?? [])
        {
            if (!entry.IsBinary) http.Request.Headers.Append(entry.Key, entry.Value);
        }

        return http;
    }
}
