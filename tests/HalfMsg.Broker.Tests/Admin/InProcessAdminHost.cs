using HalfMsg.Broker.Hosting;
using HalfMsg.TestKit;

namespace HalfMsg.Broker.Tests.Admin;

/// <summary>
/// A real broker host in this process on free 127.0.0.1 ports (no Remoting), with an HTTP client on its admin port:
/// the common fixture of the admin API tests. Subclasses may add flags.
/// </summary>
public abstract class InProcessAdminHost(string name, params string[] extraArgs) : IAsyncLifetime
{
    private readonly string _dataDir = Path.Combine(Path.GetTempPath(), $"halfmsg-{name}-" + Guid.NewGuid().ToString("N")[..12]);
    protected BrokerHost _host = null!;
    protected HttpClient _http = null!;
    protected int _grpcPort;

    public async Task InitializeAsync()
    {
        int http = FreePorts.Next();
        _grpcPort = FreePorts.Next();
        _host = await BrokerHost.StartAsync(["--data-dir", _dataDir, "--grpc-port", _grpcPort.ToString(), "--http-port", http.ToString(),
            "--remoting-port", "0", "--namesrv-port", "0", "--transaction-check-interval", "1h", "--queues-per-topic", "1", .. extraArgs]);
        _http = new HttpClient { BaseAddress = new Uri($"http://127.0.0.1:{http}") };
    }

    public async Task DisposeAsync()
    {
        _http.Dispose();
        await _host.DisposeAsync();
        try { Directory.Delete(_dataDir, true); } catch (IOException) { }
    }
}
