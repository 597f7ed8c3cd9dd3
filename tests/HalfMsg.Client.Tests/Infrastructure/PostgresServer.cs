using System.Collections.Concurrent;
using System.Diagnostics;
using System.Net;
using System.Net.Sockets;
using System.Text;
using HalfMsg.TestKit;

namespace HalfMsg.Client.Tests.Infrastructure;

/// <summary>
/// A throwaway PostgreSQL server for tests: a fresh cluster in a temp dir, listening on
/// 127.0.0.1 on a free port, trust authentication, user <c>postgres</c>.
/// <para>
/// Usage:
/// <code>
/// await using var pg = await PostgresServer.TryStartAsync();
/// if (pg is null) { /* skip: PostgresServer.LastError says why */ }
/// using var conn = new NpgsqlConnection(pg.ConnectionString);
/// </code>
/// </para>
/// Binaries are looked up in <c>$HALFMSG_PG_BINDIR</c>, then the newest
/// <c>/usr/lib/postgresql/&lt;version&gt;/bin</c> (Debian keeps them off the PATH), then the PATH.
/// When the test process runs as root the server runs as the <c>postgres</c> user
/// (PostgreSQL refuses to run as root); otherwise as the current user.
/// The server is tuned for tests (fsync off): its data does not survive a machine crash.
/// Install with <c>.ci/install-deps.sh</c>.
/// </summary>
public sealed class PostgresServer : IAsyncDisposable
{
    private static readonly TimeSpan StartTimeout = TimeSpan.FromSeconds(60);
    private static readonly ConcurrentDictionary<PostgresServer, byte> Live = new();
    private static int _exitHookInstalled;

    private readonly string _binDir;
    private readonly string? _runAsUser;
    private int _disposed;

    /// <summary>Why the last <see cref="TryStartAsync"/> returned null (null after a success).</summary>
    public static string? LastError { get; private set; }

    /// <summary>Npgsql connection string for the <c>postgres</c> database.</summary>
    public string ConnectionString => ConnectionStringFor("postgres");

    public string Host => "127.0.0.1";
    public int Port { get; }
    /// <summary>Temp dir holding the cluster (<c>data/</c>), the unix socket and the server log.</summary>
    public string RootDirectory { get; }
    public string DataDirectory => Path.Combine(RootDirectory, "data");
    public string LogFile => Path.Combine(RootDirectory, "server.log");
    /// <summary>Postmaster pid (from postmaster.pid), or 0 if unknown.</summary>
    public int Pid { get; private set; }
    /// <summary>Server version directory name, e.g. "15" (or the bin dir if not Debian-style).</summary>
    public string Version { get; }

    private PostgresServer(string binDir, string? runAsUser, string root, int port, string version)
    {
        _binDir = binDir;
        _runAsUser = runAsUser;
        RootDirectory = root;
        Port = port;
        Version = version;
    }

    /// <summary>Npgsql connection string for another database on this server.</summary>
    public string ConnectionStringFor(string database) =>
        $"Host=127.0.0.1;Port={Port};Username=postgres;Database={database};Pooling=true;Timeout=15";

    /// <summary>
    /// Starts a fresh server. Returns null (and sets <see cref="LastError"/>) when PostgreSQL is not
    /// installed or cannot be started here; never throws for that.
    /// </summary>
    public static async Task<PostgresServer?> TryStartAsync(CancellationToken cancellationToken = default)
    {
        LastError = null;
        try
        {
            if (!OperatingSystem.IsLinux() && !OperatingSystem.IsMacOS())
                return Fail("PostgresServer supports Linux/macOS only");

            var (binDir, version) = FindBinaries();
            if (binDir is null)
                return Fail("PostgreSQL is not installed (no initdb/postgres in $HALFMSG_PG_BINDIR, /usr/lib/postgresql/*/bin or PATH); run .ci/install-deps.sh");

            string? runAs = null;
            if (Environment.UserName == "root" || IsRoot())
            {
                if (!await UserExistsAsync("postgres", cancellationToken).ConfigureAwait(false))
                    return Fail("running as root but there is no 'postgres' user to run PostgreSQL as");
                runAs = "postgres";
            }

            string? lastFailure = null;
            for (int attempt = 1; attempt <= 3; attempt++)
            {
                var server = await TryStartOnceAsync(binDir, version, runAs, cancellationToken).ConfigureAwait(false);
                if (server.Server is not null)
                {
                    LastError = null;
                    return server.Server;
                }
                lastFailure = server.Error;
                if (!server.Retryable) break;
            }
            return Fail(lastFailure ?? "unknown failure starting PostgreSQL");
        }
        catch (OperationCanceledException) when (cancellationToken.IsCancellationRequested)
        {
            throw;
        }
        catch (Exception ex)
        {
            return Fail($"PostgreSQL could not be started: {ex.GetType().Name}: {ex.Message}");
        }
    }

    private static PostgresServer? Fail(string reason)
    {
        LastError = reason;
        return null;
    }

    private static async Task<(PostgresServer? Server, string? Error, bool Retryable)> TryStartOnceAsync(
        string binDir, string version, string? runAs, CancellationToken ct)
    {
        // /tmp rather than $TMPDIR when running as root: the postgres user must be able to reach it,
        // and the unix socket path must stay short (< 108 bytes).
        string tempBase = runAs is not null ? "/tmp" : Path.GetTempPath();
        string root = Path.Combine(tempBase, "halfmsg-pg-" + Guid.NewGuid().ToString("N")[..12]);
        Directory.CreateDirectory(root);
        var server = new PostgresServer(binDir, runAs, root, FreePorts.Next(), version);
        bool ok = false;
        try
        {
            if (runAs is not null)
            {
                var chown = await RunAsync("chown", [$"{runAs}:", root], null, root, TimeSpan.FromSeconds(10), ct).ConfigureAwait(false);
                if (chown.ExitCode != 0)
                    return (null, $"chown {runAs} {root} failed: {chown.Output}", false);
            }

            var init = await server.RunBinAsync("initdb",
                ["-D", server.DataDirectory, "-A", "trust", "-U", "postgres", "-E", "UTF8", "--no-locale", "--no-sync"],
                TimeSpan.FromSeconds(120), ct).ConfigureAwait(false);
            if (init.ExitCode != 0)
                return (null, $"initdb failed (exit {init.ExitCode}): {Tail(init.Output)}", false);

            // Options go through pg_ctl's shell command line: none of these contain spaces.
            string opts = string.Join(' ',
                $"-p {server.Port}",
                "-c listen_addresses=127.0.0.1",
                $"-c unix_socket_directories={root}",
                "-c fsync=off", "-c synchronous_commit=off", "-c full_page_writes=off",
                "-c max_connections=200", "-c shared_buffers=64MB");
            var start = await server.RunBinAsync("pg_ctl",
                ["-D", server.DataDirectory, "-l", server.LogFile, "-o", opts, "-w", "-t", ((int)StartTimeout.TotalSeconds).ToString(), "start"],
                StartTimeout + TimeSpan.FromSeconds(10), ct).ConfigureAwait(false);
            server.Pid = server.ReadPostmasterPid();
            if (start.ExitCode != 0)
            {
                string log = server.ReadLogTail();
                bool portClash = log.Contains("Address already in use", StringComparison.OrdinalIgnoreCase);
                return (null, $"pg_ctl start failed (exit {start.ExitCode}): {Tail(start.Output)} | log: {log}", portClash);
            }

            Live.TryAdd(server, 0);
            InstallExitHook();

            if (!await server.WaitReadyAsync(ct).ConfigureAwait(false))
                return (null, $"PostgreSQL started (pid {server.Pid}) but is not accepting connections on 127.0.0.1:{server.Port}; log: {server.ReadLogTail()}", true);

            ok = true;
            return (server, null, false);
        }
        finally
        {
            if (!ok) await server.DisposeAsync().ConfigureAwait(false);
        }
    }

    /// <summary>Runs SQL with psql (as the postgres user) against the given database; throws on failure.</summary>
    public async Task<string> ExecuteSqlAsync(string sql, string database = "postgres", CancellationToken cancellationToken = default)
    {
        var r = await RunBinAsync("psql",
            ["-h", "127.0.0.1", "-p", Port.ToString(), "-U", "postgres", "-d", database, "-X", "-q", "-t", "-A", "-v", "ON_ERROR_STOP=1", "-c", sql],
            TimeSpan.FromSeconds(60), cancellationToken).ConfigureAwait(false);
        if (r.ExitCode != 0)
            throw new InvalidOperationException($"psql failed (exit {r.ExitCode}): {r.Output}");
        return r.Output.Trim();
    }

    /// <summary>Creates a database (name must be a plain identifier) and returns its connection string.</summary>
    public async Task<string> CreateDatabaseAsync(string name, CancellationToken cancellationToken = default)
    {
        if (name.Length == 0 || !name.All(c => char.IsAsciiLetterOrDigit(c) || c == '_'))
            throw new ArgumentException("database name must be [A-Za-z0-9_]+", nameof(name));
        await ExecuteSqlAsync($"CREATE DATABASE \"{name}\"", cancellationToken: cancellationToken).ConfigureAwait(false);
        return ConnectionStringFor(name);
    }

    private async Task<bool> WaitReadyAsync(CancellationToken ct)
    {
        var deadline = Stopwatch.StartNew();
        while (deadline.Elapsed < StartTimeout)
        {
            ct.ThrowIfCancellationRequested();
            if (await TcpAcceptsAsync(Port, ct).ConfigureAwait(false))
            {
                var isReady = await RunBinAsync("pg_isready", ["-h", "127.0.0.1", "-p", Port.ToString(), "-U", "postgres", "-t", "5"],
                    TimeSpan.FromSeconds(15), ct).ConfigureAwait(false);
                if (isReady.ExitCode == 0)
                {
                    try
                    {
                        if (await ExecuteSqlAsync("select 1", cancellationToken: ct).ConfigureAwait(false) == "1")
                            return true;
                    }
                    catch (InvalidOperationException)
                    {
                        // not yet
                    }
                }
            }
            await Task.Delay(100, ct).ConfigureAwait(false);
        }
        return false;
    }

    public async ValueTask DisposeAsync()
    {
        if (Interlocked.Exchange(ref _disposed, 1) != 0) return;
        Live.TryRemove(this, out _);
        try
        {
            if (Directory.Exists(DataDirectory) && File.Exists(Path.Combine(DataDirectory, "postmaster.pid")))
            {
                if (Pid == 0) Pid = ReadPostmasterPid();
                try
                {
                    await RunBinAsync("pg_ctl", ["-D", DataDirectory, "-m", "fast", "-w", "-t", "20", "stop"],
                        TimeSpan.FromSeconds(30), CancellationToken.None).ConfigureAwait(false);
                }
                catch (Exception)
                {
                    // fall through to the kill below
                }
            }
        }
        finally
        {
            KillPostmaster();
            DeleteDirectory();
        }
    }

    private void KillPostmaster()
    {
        int pid = Pid;
        if (pid <= 0) return;
        try
        {
            using var p = Process.GetProcessById(pid);
            // Only kill it if it still is our postmaster (pid reuse guard).
            if (!p.HasExited && p.ProcessName.StartsWith("postgres", StringComparison.Ordinal))
            {
                p.Kill(entireProcessTree: true);
                p.WaitForExit(5000);
            }
        }
        catch (ArgumentException)
        {
            // already gone
        }
        catch (Exception)
        {
            // best effort
        }
    }

    private void DeleteDirectory()
    {
        for (int i = 0; i < 5; i++)
        {
            try
            {
                if (Directory.Exists(RootDirectory)) Directory.Delete(RootDirectory, recursive: true);
                return;
            }
            catch (Exception) when (i < 4)
            {
                Thread.Sleep(100);
            }
            catch (Exception)
            {
                // leave it; it is in /tmp
            }
        }
    }

    private static void InstallExitHook()
    {
        if (Interlocked.Exchange(ref _exitHookInstalled, 1) != 0) return;
        AppDomain.CurrentDomain.ProcessExit += (_, _) =>
        {
            foreach (var s in Live.Keys)
            {
                try { s.DisposeAsync().AsTask().Wait(TimeSpan.FromSeconds(10)); } catch { /* best effort */ }
            }
        };
    }

    private int ReadPostmasterPid()
    {
        try
        {
            string f = Path.Combine(DataDirectory, "postmaster.pid");
            if (!File.Exists(f)) return 0;
            using var reader = new StreamReader(new FileStream(f, FileMode.Open, FileAccess.Read, FileShare.ReadWrite | FileShare.Delete));
            return int.TryParse(reader.ReadLine(), out int pid) ? pid : 0;
        }
        catch (Exception)
        {
            return 0;
        }
    }

    private string ReadLogTail()
    {
        try
        {
            if (!File.Exists(LogFile)) return "(no log)";
            using var reader = new StreamReader(new FileStream(LogFile, FileMode.Open, FileAccess.Read, FileShare.ReadWrite | FileShare.Delete));
            return Tail(reader.ReadToEnd());
        }
        catch (Exception ex)
        {
            return $"(log unreadable: {ex.Message})";
        }
    }

    private static string Tail(string s, int max = 1500) =>
        s.Length <= max ? s.Trim() : "…" + s[^max..].Trim();

    // ----------------------------------------------------------------------------- discovery

    private static (string? BinDir, string Version) FindBinaries()
    {
        static bool Has(string dir) =>
            File.Exists(Path.Combine(dir, "initdb")) && File.Exists(Path.Combine(dir, "postgres")) && File.Exists(Path.Combine(dir, "pg_ctl"));

        string? env = Environment.GetEnvironmentVariable("HALFMSG_PG_BINDIR");
        if (!string.IsNullOrEmpty(env) && Has(env)) return (env, env);

        const string debianRoot = "/usr/lib/postgresql";
        if (Directory.Exists(debianRoot))
        {
            var newest = Directory.GetDirectories(debianRoot)
                .Select(d => (Dir: Path.Combine(d, "bin"), Name: Path.GetFileName(d)))
                .Where(x => Has(x.Dir))
                .OrderByDescending(x => double.TryParse(x.Name, System.Globalization.NumberStyles.Float, System.Globalization.CultureInfo.InvariantCulture, out double v) ? v : -1)
                .FirstOrDefault();
            if (newest.Dir is not null) return (newest.Dir, newest.Name);
        }

        foreach (string dir in (Environment.GetEnvironmentVariable("PATH") ?? "").Split(':', StringSplitOptions.RemoveEmptyEntries))
        {
            if (!File.Exists(Path.Combine(dir, "initdb"))) continue;
            // Follow a symlinked initdb (e.g. /usr/local/bin/initdb -> /usr/lib/postgresql/15/bin/initdb).
            string real = new FileInfo(Path.Combine(dir, "initdb")).ResolveLinkTarget(returnFinalTarget: true)?.FullName
                          ?? Path.Combine(dir, "initdb");
            string realDir = Path.GetDirectoryName(real)!;
            if (Has(realDir)) return (realDir, realDir);
            if (Has(dir)) return (dir, dir);
        }
        return (null, "");
    }

    private static bool IsRoot()
    {
        try
        {
            // /proc/self/status "Uid:\treal\teffective..." — avoids P/Invoke.
            if (File.Exists("/proc/self/status"))
            {
                foreach (string line in File.ReadLines("/proc/self/status"))
                {
                    if (!line.StartsWith("Uid:", StringComparison.Ordinal)) continue;
                    var parts = line.Split((char[]?)null, StringSplitOptions.RemoveEmptyEntries);
                    return parts.Length > 2 && parts[2] == "0";
                }
            }
        }
        catch (Exception)
        {
            // fall through
        }
        return false;
    }

    private static async Task<bool> UserExistsAsync(string user, CancellationToken ct)
    {
        try
        {
            if (File.Exists("/etc/passwd") &&
                File.ReadLines("/etc/passwd").Any(l => l.StartsWith(user + ":", StringComparison.Ordinal)))
                return true;
            var r = await RunAsync("id", ["-u", user], null, "/", TimeSpan.FromSeconds(5), ct).ConfigureAwait(false);
            return r.ExitCode == 0;
        }
        catch (Exception)
        {
            return false;
        }
    }

    private static async Task<bool> TcpAcceptsAsync(int port, CancellationToken ct)
    {
        try
        {
            using var client = new TcpClient();
            using var cts = CancellationTokenSource.CreateLinkedTokenSource(ct);
            cts.CancelAfter(TimeSpan.FromSeconds(2));
            await client.ConnectAsync(IPAddress.Loopback, port, cts.Token).ConfigureAwait(false);
            return true;
        }
        catch (Exception) when (!ct.IsCancellationRequested)
        {
            return false;
        }
    }

    // ----------------------------------------------------------------------------- processes

    private Task<(int ExitCode, string Output)> RunBinAsync(string tool, IReadOnlyList<string> args, TimeSpan timeout, CancellationToken ct)
    {
        string exe = Path.Combine(_binDir, tool);
        if (!File.Exists(exe)) exe = tool; // e.g. psql/pg_isready from postgresql-client on the PATH
        return RunAsync(exe, args, _runAsUser, RootDirectory, timeout, ct);
    }

    /// <summary>Runs a program (as <paramref name="runAs"/> via runuser, or su as a fallback) and captures its output.</summary>
    private static async Task<(int ExitCode, string Output)> RunAsync(
        string exe, IReadOnlyList<string> args, string? runAs, string workDir, TimeSpan timeout, CancellationToken ct)
    {
        var psi = new ProcessStartInfo
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            RedirectStandardInput = true,
            UseShellExecute = false,
            WorkingDirectory = Directory.Exists(workDir) ? workDir : "/",
        };
        if (runAs is null)
        {
            psi.FileName = exe;
            foreach (var a in args) psi.ArgumentList.Add(a);
        }
        else if (File.Exists("/usr/sbin/runuser") || File.Exists("/sbin/runuser") || File.Exists("/usr/bin/runuser"))
        {
            psi.FileName = "runuser";
            psi.ArgumentList.Add("-u");
            psi.ArgumentList.Add(runAs);
            psi.ArgumentList.Add("--");
            psi.ArgumentList.Add(exe);
            foreach (var a in args) psi.ArgumentList.Add(a);
        }
        else
        {
            psi.FileName = "su";
            psi.ArgumentList.Add(runAs);
            psi.ArgumentList.Add("-s");
            psi.ArgumentList.Add("/bin/sh");
            psi.ArgumentList.Add("-c");
            psi.ArgumentList.Add(string.Join(' ', new[] { exe }.Concat(args).Select(ShellQuote)));
        }
        // Keep the child's locale neutral (initdb --no-locale; messages in English for LastError).
        psi.Environment["LC_ALL"] = "C";
        psi.Environment["LANG"] = "C";
        psi.Environment.Remove("PGHOST");
        psi.Environment.Remove("PGPORT");
        psi.Environment.Remove("PGDATABASE");
        psi.Environment.Remove("PGUSER");
        psi.Environment.Remove("PGPASSWORD");

        using var p = new Process { StartInfo = psi };
        var output = new StringBuilder();
        p.OutputDataReceived += (_, e) => { if (e.Data is not null) lock (output) output.AppendLine(e.Data); };
        p.ErrorDataReceived += (_, e) => { if (e.Data is not null) lock (output) output.AppendLine(e.Data); };
        try
        {
            p.Start();
        }
        catch (System.ComponentModel.Win32Exception ex)
        {
            return (-1, $"cannot run {psi.FileName}: {ex.Message}");
        }
        p.StandardInput.Close();
        p.BeginOutputReadLine();
        p.BeginErrorReadLine();

        using var cts = CancellationTokenSource.CreateLinkedTokenSource(ct);
        cts.CancelAfter(timeout);
        try
        {
            await p.WaitForExitAsync(cts.Token).ConfigureAwait(false);
        }
        catch (OperationCanceledException)
        {
            try { p.Kill(entireProcessTree: true); } catch { /* gone */ }
            if (ct.IsCancellationRequested) throw;
            lock (output) return (-2, $"{Path.GetFileName(exe)} timed out after {timeout.TotalSeconds:0}s: {output}");
        }
        p.WaitForExit(); // flush async output readers
        lock (output) return (p.ExitCode, output.ToString());
    }

    private static string ShellQuote(string s) => "'" + s.Replace("'", "'\"'\"'") + "'";
}
