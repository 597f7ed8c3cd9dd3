using HalfMsg.Broker.Hosting;
using HalfMsg.TestKit;

namespace HalfMsg.Client.Tests.Infrastructure;

/// <summary>A broker host in the test process, gRPC and admin on free loopback ports, Remoting off, on a temp data dir
/// that is deleted with it; <c>extra</c> flags are appended.</summary>
public sealed class InProcessBroker : IAsyncDisposable
{
    private readonly BrokerHost _host;
    private readonly string _dataDir;

    private InProcessBroker(BrokerHost host, string dataDir, string endpoint)
    {
        _host = host;
        _dataDir = dataDir;
        Endpoint = endpoint;
    }

    /// <summary><c>host:port</c> of the gRPC port.</summary>
    public string Endpoint { get; }

    public static async Task<InProcessBroker> StartAsync(string name, params string[] extra)
    {
        string dataDir = Path.Combine(Path.GetTempPath(), $"halfmsg-{name}-" + Guid.NewGuid().ToString("N")[..12]);
        int grpc = FreePorts.Next();
        BrokerHost host = await BrokerHost.StartAsync(["--data-dir", dataDir, "--bind", "127.0.0.1", "--grpc-port", grpc.ToString(),
            "--http-port", FreePorts.Next().ToString(), "--remoting-port", "0", "--namesrv-port", "0", .. extra]);
        return new InProcessBroker(host, dataDir, $"127.0.0.1:{grpc}");
    }

    public async ValueTask DisposeAsync()
    {
        await _host.DisposeAsync();
        try { Directory.Delete(_dataDir, true); } catch (IOException) { }
    }
}
