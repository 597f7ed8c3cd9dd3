using System.Diagnostics;
using HalfMsg.Bench.Infrastructure;
using HalfMsg.TestKit;
using RabbitMQ.Client;

namespace HalfMsg.Bench.Peers;

/// <summary>
/// A throwaway RabbitMQ node (Debian's rabbitmq-server, 3.10) on 127.0.0.1: its own dir (owned by the rabbitmq
/// user), free AMQP and distribution ports, a unique node name, no plugins, and its own epmd on a free port bound to
/// loopback (so it neither uses nor leaves behind a system epmd on 4369). Stopped by pid; the dir is deleted.
/// Install with <c>.ci/install-deps.sh</c>.
/// </summary>
public sealed class RabbitMqServer : IAsyncDisposable
{
    private const string User = "rabbitmq";
    private static readonly TimeSpan StartTimeout = TimeSpan.FromSeconds(90);

    private Process? _epmd;
    private Process? _launcher;
    private OutputTail? _launcherOut;
    private int _beamPid;
    private int _disposed;

    public string Root { get; }
    public int AmqpPort { get; }
    public int DistPort { get; }
    public int EpmdPort { get; }
    public string NodeName { get; }
    public Uri Uri => new($"amqp://guest:guest@127.0.0.1:{AmqpPort}/");
    public TimeSpan StartupTime { get; private set; }
    /// <summary>The Erlang VM's pid (the node itself), 0 if not known: for its CPU time.</summary>
    public int BeamPid => _beamPid != 0 ? _beamPid : (_beamPid = ReadPidFile());

    private RabbitMqServer(string root, int amqp, int dist, int epmd, string node)
    {
        Root = root;
        AmqpPort = amqp;
        DistPort = dist;
        EpmdPort = epmd;
        NodeName = node;
    }

    /// <summary>Starts a node; on failure returns the reason instead (never throws for that).</summary>
    public static async Task<(RabbitMqServer? Server, string? Error)> TryStartAsync(CancellationToken ct)
    {
        if (!OperatingSystem.IsLinux()) return (null, "throwaway RabbitMQ is Linux-only here; pass --rabbitmq URI");
        string? server = ProcessUtil.Which("rabbitmq-server");
        string? epmd = ProcessUtil.Which("epmd");
        if (server is null) return (null, "rabbitmq-server is not installed (run .ci/install-deps.sh, or pass --rabbitmq URI)");
        if (epmd is null) return (null, "epmd (erlang) is not installed");
        bool root = ProcessUtil.IsRoot;
        if (root && !File.ReadLines("/etc/passwd").Any(l => l.StartsWith(User + ":", StringComparison.Ordinal)))
            return (null, "running as root but there is no 'rabbitmq' user");

        string dir = Path.Combine("/tmp", "halfmsg-rmq-" + Guid.NewGuid().ToString("N")[..10]);
        var s = new RabbitMqServer(dir, FreePorts.Next(), FreePorts.Next(), FreePorts.Next(),
            $"bench{Random.Shared.Next(100_000, 999_999)}@localhost");
        bool ok = false;
        try
        {
            var sw = Stopwatch.StartNew();
            Directory.CreateDirectory(dir);
            File.WriteAllText(Path.Combine(dir, "enabled_plugins"), "[].\n");
            File.WriteAllText(Path.Combine(dir, "rabbitmq-env.conf"), "");
            // rabbitmq.conf: keep the node quiet and local; no disk alarm surprises on CI disks.
            File.WriteAllText(Path.Combine(dir, "rabbitmq.conf"),
                "loopback_users.guest = true\n" +
                "disk_free_limit.absolute = 50MB\n" +
                "log.console = false\n" +
                "log.file.level = warning\n");
            if (root)
            {
                var chown = await ProcessUtil.RunAsync("chown", ["-R", $"{User}:{User}", dir], TimeSpan.FromSeconds(10), ct);
                if (chown.ExitCode != 0) return (null, $"chown {User} {dir} failed: {chown.Output}");
            }

            // Our own epmd, loopback only, on a private port, as our direct child (no runuser in between, so we
            // own and reap its pid; the node reaches it over TCP whatever user it runs as).
            (s._epmd, _) = ProcessUtil.Start(ProcessUtil.StartInfo(epmd, ["-port", s.EpmdPort.ToString(), "-address", "127.0.0.1"],
                null, null, dir));
            if (!await WaitPortAsync(s.EpmdPort, TimeSpan.FromSeconds(10), () => s._epmd.HasExited, ct))
                return (null, $"epmd did not listen on 127.0.0.1:{s.EpmdPort}");

            var env = new Dictionary<string, string>
            {
                ["HOME"] = dir, // .erlang.cookie goes here
                ["RABBITMQ_CONF_ENV_FILE"] = Path.Combine(dir, "rabbitmq-env.conf"),
                ["RABBITMQ_CONFIG_FILE"] = Path.Combine(dir, "rabbitmq"), // rabbitmq.conf
                ["RABBITMQ_ADVANCED_CONFIG_FILE"] = Path.Combine(dir, "advanced.config"),
                ["RABBITMQ_MNESIA_BASE"] = Path.Combine(dir, "mnesia"),
                ["RABBITMQ_LOG_BASE"] = Path.Combine(dir, "log"),
                ["RABBITMQ_FEATURE_FLAGS_FILE"] = Path.Combine(dir, "feature_flags"),
                ["RABBITMQ_ENABLED_PLUGINS_FILE"] = Path.Combine(dir, "enabled_plugins"),
                ["RABBITMQ_PLUGINS_EXPAND_DIR"] = Path.Combine(dir, "plugins-expand"),
                ["RABBITMQ_PID_FILE"] = Path.Combine(dir, "rabbit.pid"),
                ["RABBITMQ_NODE_IP_ADDRESS"] = "127.0.0.1",
                ["RABBITMQ_NODE_PORT"] = s.AmqpPort.ToString(),
                ["RABBITMQ_DIST_PORT"] = s.DistPort.ToString(),
                ["RABBITMQ_NODENAME"] = s.NodeName,
                ["ERL_EPMD_ADDRESS"] = "127.0.0.1",
                ["ERL_EPMD_PORT"] = s.EpmdPort.ToString(),
                ["RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS"] = "-kernel inet_dist_use_interface {127,0,0,1}",
                ["LANG"] = "C.UTF-8",
                ["LC_ALL"] = "C.UTF-8",
            };
            (s._launcher, s._launcherOut) = ProcessUtil.Start(ProcessUtil.StartInfo(server, [], User, env, dir));

            string? error = await s.WaitReadyAsync(ct);
            if (error is not null) return (null, error);
            s.StartupTime = sw.Elapsed;
            ok = true;
            return (s, null);
        }
        catch (Exception ex) when (ex is not OperationCanceledException || !ct.IsCancellationRequested)
        {
            return (null, $"{ex.GetType().Name}: {ex.Message}");
        }
        finally
        {
            if (!ok) await s.DisposeAsync();
        }
    }

    private static async Task<bool> WaitPortAsync(int port, TimeSpan timeout, Func<bool> died, CancellationToken ct)
    {
        var sw = Stopwatch.StartNew();
        while (sw.Elapsed < timeout && !died())
        {
            if (await ProcessUtil.TcpAcceptsAsync(port, ct)) return true;
            await Task.Delay(100, ct);
        }
        return false;
    }

    private async Task<string?> WaitReadyAsync(CancellationToken ct)
    {
        var sw = Stopwatch.StartNew();
        string? lastConnectError = null;
        while (sw.Elapsed < StartTimeout)
        {
            ct.ThrowIfCancellationRequested();
            if (_beamPid == 0) _beamPid = ReadPidFile();
            if (_launcher!.HasExited)
                return $"rabbitmq-server exited with {_launcher.ExitCode}: {_launcherOut} {ProcessUtil.TailOfFile(LogFile)}";
            if (await ProcessUtil.TcpAcceptsAsync(AmqpPort, ct))
            {
                try
                {
                    var f = new ConnectionFactory { Uri = Uri, RequestedConnectionTimeout = TimeSpan.FromSeconds(5) };
                    await using var conn = await f.CreateConnectionAsync("halfmsg-bench-probe", ct);
                    await using var ch = await conn.CreateChannelAsync(cancellationToken: ct);
                    if (_beamPid == 0) _beamPid = ReadPidFile();
                    return null;
                }
                catch (Exception ex) when (ex is not OperationCanceledException)
                {
                    lastConnectError = ex.Message;
                }
            }
            await Task.Delay(200, ct);
        }
        return $"RabbitMQ did not accept AMQP connections on 127.0.0.1:{AmqpPort} within {StartTimeout.TotalSeconds:0} s" +
               (lastConnectError is null ? "" : $" (last error: {lastConnectError})") + $"; log: {ProcessUtil.TailOfFile(LogFile)} {_launcherOut}";
    }

    private string LogFile => Path.Combine(Root, "log", NodeName + ".log");

    private int ReadPidFile()
    {
        try
        {
            string f = Path.Combine(Root, "rabbit.pid");
            return File.Exists(f) && int.TryParse(File.ReadAllText(f).Trim(), out int pid) ? pid : 0;
        }
        catch (Exception) { return 0; }
    }

    public async ValueTask DisposeAsync()
    {
        if (Interlocked.Exchange(ref _disposed, 1) != 0) return;
        if (_beamPid == 0) _beamPid = ReadPidFile();
        // The node first (SIGTERM = orderly shutdown), by its own pid.
        if (_beamPid > 0) await ProcessUtil.TerminateAsync(_beamPid, TimeSpan.FromSeconds(20));
        if (_launcher is not null)
        {
            // The launcher chain (runuser → sh → sh) ends with the node; if not, kill that tree (ours).
            if (!_launcher.WaitForExit(5000))
                try { _launcher.Kill(entireProcessTree: true); } catch (Exception) { /* gone */ }
            _launcher.Dispose();
        }
        if (_epmd is not null)
        {
            if (!_epmd.HasExited) await ProcessUtil.TerminateAsync(_epmd.Id, TimeSpan.FromSeconds(5));
            _epmd.WaitForExit(5000);
            _epmd.Dispose();
        }
        for (int i = 0; i < 5; i++)
        {
            try
            {
                if (Directory.Exists(Root)) Directory.Delete(Root, recursive: true);
                break;
            }
            catch (Exception)
            {
                await Task.Delay(200);
            }
        }
    }
}
