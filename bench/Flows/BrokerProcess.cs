using System.Diagnostics;
using HalfMsg.Bench.Infrastructure;

namespace HalfMsg.Bench.Flows;

/// <summary>
/// Starts the broker as its own process for end-to-end flows: <c>dotnet &lt;HalfMsg.Broker.dll&gt; --data-dir DIR
/// --grpc-port PORT [extra args]</c>, waits until the port accepts, stops it by pid (SIGTERM, then SIGKILL) and deletes
/// the data dir. The dll is found next to the bench (<c>src/Broker/HalfMsg.Broker/bin/&lt;config&gt;/net10.0</c>) or via
/// <c>$HALFMSG_BROKER_DLL</c>; build it first (<c>dotnet build -c Release src/Broker/HalfMsg.Broker</c>).
/// </summary>
public sealed class BrokerProcess : IAsyncDisposable
{
    private readonly Process _process;
    private readonly OutputTail _output;
    private int _disposed;

    public int GrpcPort { get; }
    public string DataDir { get; }
    public string Endpoint => $"127.0.0.1:{GrpcPort}";
    public int Pid => _process.Id;
    public string RecentOutput => _output.ToString();

    private BrokerProcess(Process process, OutputTail output, int port, string dataDir)
    {
        _process = process;
        _output = output;
        GrpcPort = port;
        DataDir = dataDir;
    }

    public static string? FindBrokerDll()
    {
        string? env = Environment.GetEnvironmentVariable("HALFMSG_BROKER_DLL");
        if (!string.IsNullOrEmpty(env) && File.Exists(env)) return env;
        for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
        {
            string brokerProj = Path.Combine(dir.FullName, "src", "Broker", "HalfMsg.Broker");
            if (!Directory.Exists(brokerProj)) continue;
            return new[] { "Release", "Debug" }
                .Select(c => Path.Combine(brokerProj, "bin", c, "net10.0", "HalfMsg.Broker.dll"))
                .Where(File.Exists)
                .OrderByDescending(File.GetLastWriteTimeUtc)
                .FirstOrDefault();
        }
        return null;
    }

    /// <summary>Starts a broker; on failure returns the reason instead (never throws for that).</summary>
    public static async Task<(BrokerProcess? Broker, string? Error)> TryStartAsync(IEnumerable<string>? extraArgs, CancellationToken ct)
    {
        string? dll = FindBrokerDll();
        if (dll is null) return (null, "HalfMsg.Broker.dll not found (build src/Broker/HalfMsg.Broker or set HALFMSG_BROKER_DLL)");
        int port = ProcessUtil.FreeTcpPort();
        string dataDir = Path.Combine(Path.GetTempPath(), "halfmsg-bench-broker-" + Guid.NewGuid().ToString("N")[..10]);
        Directory.CreateDirectory(dataDir);
        var psi = new ProcessStartInfo("dotnet")
        {
            UseShellExecute = false,
            RedirectStandardInput = true,
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            WorkingDirectory = dataDir,
        };
        foreach (var a in new[] { dll, "--data-dir", dataDir, "--grpc-port", port.ToString() }.Concat(extraArgs ?? []))
            psi.ArgumentList.Add(a);
        var (p, tail) = ProcessUtil.Start(psi);
        var broker = new BrokerProcess(p, tail, port, dataDir);
        var sw = Stopwatch.StartNew();
        while (sw.Elapsed < TimeSpan.FromSeconds(60))
        {
            if (p.HasExited)
            {
                await broker.DisposeAsync();
                return (null, $"broker exited with {p.ExitCode}: {tail}");
            }
            if (await ProcessUtil.TcpAcceptsAsync(port, ct)) return (broker, null);
            await Task.Delay(100, ct);
        }
        await broker.DisposeAsync();
        return (null, $"broker did not listen on {port} within 60 s: {tail}");
    }

    public async ValueTask DisposeAsync()
    {
        if (Interlocked.Exchange(ref _disposed, 1) != 0) return;
        try
        {
            if (!_process.HasExited) await ProcessUtil.TerminateAsync(_process.Id, TimeSpan.FromSeconds(15));
            _process.WaitForExit(5000);
        }
        catch (Exception) { /* gone */ }
        _process.Dispose();
        try { Directory.Delete(DataDir, recursive: true); } catch (Exception) { /* temp */ }
    }
}
