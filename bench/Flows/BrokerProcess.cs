using System.Diagnostics;
using System.Runtime.InteropServices;
using System.Text.Json;
using HalfMsg.Bench.Infrastructure;
using HalfMsg.TestKit;

namespace HalfMsg.Bench.Flows;

/// <summary>How to start a <see cref="BrokerProcess"/>.</summary>
public sealed record BrokerStartOptions
{
    /// <summary>Data directory to use (e.g. one seeded beforehand); null = a fresh temp dir.</summary>
    public string? DataDir { get; init; }
    /// <summary>Delete the data dir on dispose (default: only when the process created it).</summary>
    public bool? DeleteDataDir { get; init; }
    public IReadOnlyList<string> ExtraArgs { get; init; } = [];
    /// <summary>Also open the admin HTTP port and wait until <c>GET /health</c> returns 200 (not just the gRPC port).</summary>
    public bool WaitForHealth { get; init; } = true;
    public TimeSpan ReadyTimeout { get; init; } = TimeSpan.FromSeconds(120);
}

/// <summary>
/// Starts the broker as its own process for end-to-end flows: <c>dotnet &lt;HalfMsg.Broker.dll&gt; --data-dir DIR
/// --grpc-port PORT --http-port PORT [extra args]</c>, waits until <c>/health</c> returns 200 (or the gRPC port accepts),
/// stops it by pid (SIGTERM, then SIGKILL; or <see cref="Kill9Async"/>) and deletes the data dir it created. The dll is
/// found next to the bench (<c>src/Broker/HalfMsg.Broker/bin/&lt;config&gt;/net10.0</c>) or via <c>$HALFMSG_BROKER_DLL</c>;
/// build it first (<c>dotnet build -c Release src/Broker/HalfMsg.Broker</c>).
/// </summary>
public sealed partial class BrokerProcess : IAsyncDisposable
{
    /// <summary>Environment variables with this prefix are passed to the broker process without it.</summary>
    public const string BrokerEnvPrefix = "HALFMSG_BROKER_ENV_";

    private static readonly HttpClient Http = new() { Timeout = TimeSpan.FromSeconds(5) };
    private readonly Process _process;
    private readonly OutputTail _output;
    private readonly bool _deleteDataDir;
    private int _disposed;

    public int GrpcPort { get; }
    public int HttpPort { get; }
    /// <summary>The RocketMQ 4 Remoting port (a free port on 127.0.0.1; the embedded name server is off).</summary>
    public int RemotingPort { get; }
    public string DataDir { get; }
    public string Endpoint => $"127.0.0.1:{GrpcPort}";
    public int Pid { get; }
    public string RecentOutput => _output.ToString();
    /// <summary>Process start until ready (/health 200, or the gRPC port accepting).</summary>
    public TimeSpan StartToReady { get; private set; }

    private BrokerProcess(Process process, OutputTail output, int grpcPort, int httpPort, int remotingPort, string dataDir, bool deleteDataDir)
    {
        RemotingPort = remotingPort;
        _process = process;
        _output = output;
        Pid = process.Id;
        GrpcPort = grpcPort;
        HttpPort = httpPort;
        DataDir = dataDir;
        _deleteDataDir = deleteDataDir;
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

    /// <summary>The broker's durability arguments for a row: <c>--flush</c> always; <c>--decision-durability</c> only when
    /// not "sync", the broker's default, so the bench runs against brokers that do not know the option (a broker that
    /// rejects another mode is "not measured").</summary>
    public static List<string> ModeArgs(FlushMode flush, string decisionDurability)
    {
        var args = new List<string> { "--flush", flush == FlushMode.Sync ? "sync" : "async" };
        if (decisionDurability != "sync") args.AddRange(["--decision-durability", decisionDurability]);
        return args;
    }

    public static string NewDataDir()
    {
        string dataDir = Path.Combine(Path.GetTempPath(), "halfmsg-bench-broker-" + Guid.NewGuid().ToString("N")[..10]);
        Directory.CreateDirectory(dataDir);
        return dataDir;
    }

    /// <summary>Starts a broker; on failure returns the reason instead (never throws for that).</summary>
    public static Task<(BrokerProcess? Broker, string? Error)> TryStartAsync(IEnumerable<string>? extraArgs, CancellationToken ct) =>
        TryStartAsync(new BrokerStartOptions { ExtraArgs = extraArgs?.ToList() ?? [], WaitForHealth = false }, ct);

    /// <summary>Starts a broker; on failure returns the reason instead (never throws for that).</summary>
    public static async Task<(BrokerProcess? Broker, string? Error)> TryStartAsync(BrokerStartOptions options, CancellationToken ct)
    {
        string? dll = FindBrokerDll();
        if (dll is null) return (null, "HalfMsg.Broker.dll not found (build src/Broker/HalfMsg.Broker or set HALFMSG_BROKER_DLL)");
        int port = FreePorts.Next();
        int httpPort = FreePorts.Next();
        int remotingPort = FreePorts.Next();
        bool created = options.DataDir is null;
        string dataDir = options.DataDir ?? NewDataDir();
        Directory.CreateDirectory(dataDir);
        var psi = new ProcessStartInfo("dotnet")
        {
            UseShellExecute = false,
            RedirectStandardInput = true,
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            WorkingDirectory = dataDir,
        };
        // Keep the broker's own console logging from costing CPU during the measurement.
        psi.Environment["Logging__LogLevel__Default"] = "Warning";
        // HALFMSG_BROKER_ENV_<NAME>=<value> sets <NAME> for the broker only (A/B of runtime knobs such as
        // DOTNET_gcServer without changing the bench process).
        foreach (System.Collections.DictionaryEntry e in Environment.GetEnvironmentVariables())
            if (e.Key is string k && k.StartsWith(BrokerEnvPrefix, StringComparison.Ordinal) && k.Length > BrokerEnvPrefix.Length)
                psi.Environment[k[BrokerEnvPrefix.Length..]] = e.Value as string;
        foreach (var a in new[] { dll, "--data-dir", dataDir, "--grpc-port", port.ToString(), "--http-port", httpPort.ToString(),
                     "--remoting-port", remotingPort.ToString(), "--namesrv-port", "0" }.Concat(options.ExtraArgs))
            psi.ArgumentList.Add(a);
        var sw = Stopwatch.StartNew();
        var (p, tail) = ProcessUtil.Start(psi);
        var broker = new BrokerProcess(p, tail, port, httpPort, remotingPort, dataDir, options.DeleteDataDir ?? created);
        while (sw.Elapsed < options.ReadyTimeout)
        {
            if (p.HasExited)
            {
                await broker.DisposeAsync();
                return (null, $"broker exited with {p.ExitCode}: {tail}");
            }
            bool ready = options.WaitForHealth ? await broker.IsHealthyAsync(ct) : await ProcessUtil.TcpAcceptsAsync(port, ct);
            if (ready)
            {
                broker.StartToReady = sw.Elapsed;
                return (broker, null);
            }
            await Task.Delay(options.WaitForHealth ? 10 : 100, ct);
        }
        await broker.DisposeAsync();
        return (null, $"broker was not ready within {options.ReadyTimeout.TotalSeconds:0} s: {tail}");
    }

    public async Task<bool> IsHealthyAsync(CancellationToken ct)
    {
        try
        {
            using var resp = await Http.GetAsync($"http://127.0.0.1:{HttpPort}/health", ct);
            return resp.IsSuccessStatusCode;
        }
        catch (Exception) when (!ct.IsCancellationRequested) { return false; }
    }

    /// <summary><c>GET /api/stats</c> as name → number (names lower-cased); empty if unavailable.</summary>
    public async Task<Dictionary<string, double>> GetStatsAsync(CancellationToken ct)
    {
        var stats = new Dictionary<string, double>(StringComparer.OrdinalIgnoreCase);
        try
        {
            string json = await Http.GetStringAsync($"http://127.0.0.1:{HttpPort}/api/stats", ct);
            using var doc = JsonDocument.Parse(json);
            Flatten(doc.RootElement, "", stats);
        }
        catch (Exception) when (!ct.IsCancellationRequested) { /* not available */ }
        return stats;
    }

    private static void Flatten(JsonElement e, string prefix, Dictionary<string, double> into)
    {
        switch (e.ValueKind)
        {
            case JsonValueKind.Object:
                foreach (var p in e.EnumerateObject()) Flatten(p.Value, prefix.Length == 0 ? p.Name : prefix + "." + p.Name, into);
                break;
            case JsonValueKind.Number:
                into[prefix] = e.GetDouble();
                break;
        }
    }

    /// <summary>user+system CPU seconds of the broker process so far (null if unreadable).</summary>
    public double? CpuSeconds()
    {
        try
        {
            string stat = File.ReadAllText($"/proc/{Pid}/stat");
            var f = stat[(stat.LastIndexOf(')') + 2)..].Split(' ');
            // after "pid (comm) ": state is f[0]; utime is field 14 overall => f[11], stime f[12]
            return (long.Parse(f[11]) + long.Parse(f[12])) / (double)ClockTicks;
        }
        catch (Exception) { return null; }
    }

    /// <summary>
    /// The number of the newest FasterLog commit file under <c>DIR/log/log-commits</c> (FASTER names them commit.N.0 and,
    /// with RemoveOutdatedCommits, keeps only the last few): the count of group commits so far. Null if none is found
    /// (another storage layout).
    /// </summary>
    public static long? LogCommitNumber(string dataDir)
    {
        try
        {
            string dir = Path.Combine(dataDir, "log", "log-commits");
            if (!Directory.Exists(dir)) return null;
            long best = -1;
            foreach (var f in Directory.EnumerateFiles(dir, "commit.*"))
            {
                var parts = Path.GetFileName(f).Split('.');
                if (parts.Length >= 2 && long.TryParse(parts[1], out long n) && n > best) best = n;
            }
            return best >= 0 ? best : null;
        }
        catch (Exception) { return null; }
    }

    /// <summary>Group commits of the broker's log so far: <c>logCommits</c> of <c>/api/stats</c>, or (an older broker)
    /// the newest FasterLog commit file number.</summary>
    public async Task<long?> LogCommitsAsync(CancellationToken ct)
    {
        var stats = await GetStatsAsync(ct);
        return stats.TryGetValue("logCommits", out double commits) ? (long)commits : LogCommitNumber(DataDir);
    }

    /// <summary>Peak resident set (VmHWM) in MiB (null if unreadable).</summary>
    public double? PeakRssMiB() => StatusKb("VmHWM:") is long kb ? kb / 1024.0 : null;

    public double? RssMiB() => StatusKb("VmRSS:") is long kb ? kb / 1024.0 : null;

    private long? StatusKb(string key)
    {
        try
        {
            var line = File.ReadLines($"/proc/{Pid}/status").FirstOrDefault(l => l.StartsWith(key, StringComparison.Ordinal));
            return line is null ? null : long.Parse(line[key.Length..].Trim().Split(' ')[0]);
        }
        catch (Exception) { return null; }
    }

    private static readonly long ClockTicks = GetClockTicks();

    [LibraryImport("libc", EntryPoint = "sysconf")]
    private static partial long SysConf(int name);

    private static long GetClockTicks()
    {
        try { long t = SysConf(2 /* _SC_CLK_TCK */); return t > 0 ? t : 100; }
        catch (Exception) { return 100; }
    }

    /// <summary>SIGKILL (no shutdown checkpoint); waits until the process is gone. The data dir stays until dispose.</summary>
    public async Task Kill9Async()
    {
        ProcessUtil.Signal(Pid, ProcessUtil.SIGKILL);
        await ProcessUtil.WaitExitAsync(Pid, TimeSpan.FromSeconds(10));
        try { _process.WaitForExit(5000); } catch (Exception) { /* gone */ }
    }

    /// <summary>SIGTERM and wait (graceful shutdown writes a checkpoint); SIGKILL after <paramref name="grace"/>.</summary>
    public async Task StopAsync(TimeSpan grace)
    {
        try
        {
            if (!_process.HasExited) await ProcessUtil.TerminateAsync(Pid, grace);
            _process.WaitForExit(5000);
        }
        catch (Exception) { /* gone */ }
    }

    public async ValueTask DisposeAsync()
    {
        if (Interlocked.Exchange(ref _disposed, 1) != 0) return;
        await StopAsync(TimeSpan.FromSeconds(30));
        _process.Dispose();
        if (_deleteDataDir)
            try { Directory.Delete(DataDir, recursive: true); } catch (Exception) { /* temp */ }
    }
}
