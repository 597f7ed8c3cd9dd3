using System.Diagnostics;
using System.Net;
using System.Net.Sockets;
using System.Runtime.InteropServices;
using System.Text;

namespace HalfMsg.Bench.Infrastructure;

/// <summary>Small helpers for throwaway servers: free ports, run-as-user, signals by pid, output capture.</summary>
public static partial class ProcessUtil
{
    public const int SIGKILL = 9;
    public const int SIGTERM = 15;

    [LibraryImport("libc", EntryPoint = "kill", SetLastError = true)]
    private static partial int SysKill(int pid, int sig);

    [LibraryImport("libc", EntryPoint = "geteuid")]
    private static partial uint GetEuid();

    public static bool IsRoot
    {
        get
        {
            try { return OperatingSystem.IsLinux() && GetEuid() == 0; }
            catch (Exception) { return false; }
        }
    }

    /// <summary>Sends a signal to one pid; false if it does not exist (or is not ours).</summary>
    public static bool Signal(int pid, int sig) => pid > 0 && SysKill(pid, sig) == 0;

    public static bool IsAlive(int pid) => pid > 0 && SysKill(pid, 0) == 0;

    public static async Task<bool> WaitExitAsync(int pid, TimeSpan timeout)
    {
        var sw = Stopwatch.StartNew();
        while (IsAlive(pid) && !IsZombie(pid))
        {
            if (sw.Elapsed > timeout) return false;
            await Task.Delay(50);
        }
        return true;
    }

    private static bool IsZombie(int pid)
    {
        try
        {
            string stat = File.ReadAllText($"/proc/{pid}/stat");
            int close = stat.LastIndexOf(')');
            return close > 0 && close + 2 < stat.Length && stat[close + 2] == 'Z';
        }
        catch (Exception) { return false; }
    }

    /// <summary>SIGTERM, wait, then SIGKILL: stops exactly this pid.</summary>
    public static async Task TerminateAsync(int pid, TimeSpan grace)
    {
        if (!IsAlive(pid)) return;
        Signal(pid, SIGTERM);
        if (!await WaitExitAsync(pid, grace))
        {
            Signal(pid, SIGKILL);
            await WaitExitAsync(pid, TimeSpan.FromSeconds(5));
        }
    }

    public static async Task<bool> TcpAcceptsAsync(int port, CancellationToken ct)
    {
        try
        {
            using var client = new TcpClient();
            using var cts = CancellationTokenSource.CreateLinkedTokenSource(ct);
            cts.CancelAfter(TimeSpan.FromSeconds(2));
            await client.ConnectAsync(IPAddress.Loopback, port, cts.Token);
            return true;
        }
        catch (Exception) when (!ct.IsCancellationRequested)
        {
            return false;
        }
    }

    /// <summary>
    /// A start info running <paramref name="exe"/> as <paramref name="user"/> (via runuser when we are root; as
    /// ourselves otherwise) with the given environment (passed through <c>env</c> so runuser cannot drop it).
    /// </summary>
    public static ProcessStartInfo StartInfo(string exe, IEnumerable<string> args, string? user,
        IReadOnlyDictionary<string, string>? env, string workDir)
    {
        var psi = new ProcessStartInfo
        {
            UseShellExecute = false,
            RedirectStandardInput = true,
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            WorkingDirectory = workDir,
        };
        var argv = new List<string>();
        if (user is not null && IsRoot)
        {
            psi.FileName = "runuser";
            argv.AddRange(["-u", user, "--", "env"]);
        }
        else
        {
            psi.FileName = "env";
        }
        if (env is not null) argv.AddRange(env.Select(kv => $"{kv.Key}={kv.Value}"));
        argv.Add(exe);
        argv.AddRange(args);
        foreach (var a in argv) psi.ArgumentList.Add(a);
        return psi;
    }

    /// <summary>Starts a process and keeps the last lines of its stdout+stderr.</summary>
    public static (Process Process, OutputTail Output) Start(ProcessStartInfo psi)
    {
        var p = new Process { StartInfo = psi, EnableRaisingEvents = true };
        var tail = new OutputTail();
        p.OutputDataReceived += (_, e) => tail.Add(e.Data);
        p.ErrorDataReceived += (_, e) => tail.Add(e.Data);
        p.Start();
        p.StandardInput.Close();
        p.BeginOutputReadLine();
        p.BeginErrorReadLine();
        return (p, tail);
    }

    public static async Task<(int ExitCode, string Output)> RunAsync(ProcessStartInfo psi, TimeSpan timeout, CancellationToken ct = default)
    {
        var (p, tail) = Start(psi);
        using (p)
        {
            using var cts = CancellationTokenSource.CreateLinkedTokenSource(ct);
            cts.CancelAfter(timeout);
            try
            {
                await p.WaitForExitAsync(cts.Token);
            }
            catch (OperationCanceledException)
            {
                try { p.Kill(entireProcessTree: true); } catch (Exception) { /* gone */ }
                if (ct.IsCancellationRequested) throw;
                return (-1, $"timed out after {timeout.TotalSeconds:0}s: {tail}");
            }
            return (p.ExitCode, tail.ToString());
        }
    }

    public static async Task<(int ExitCode, string Output)> RunAsync(string exe, IEnumerable<string> args, TimeSpan timeout, CancellationToken ct = default)
    {
        var psi = new ProcessStartInfo { FileName = exe, UseShellExecute = false, RedirectStandardInput = true, RedirectStandardOutput = true, RedirectStandardError = true };
        foreach (var a in args) psi.ArgumentList.Add(a);
        return await RunAsync(psi, timeout, ct);
    }

    public static string? Which(string exe)
    {
        foreach (string dir in (Environment.GetEnvironmentVariable("PATH") ?? "").Split(':', StringSplitOptions.RemoveEmptyEntries)
                     .Concat(["/usr/sbin", "/sbin", "/usr/bin", "/bin"]))
        {
            string f = Path.Combine(dir, exe);
            if (File.Exists(f)) return f;
        }
        return null;
    }

    public static string TailOfFile(string path, int maxChars = 1500)
    {
        try
        {
            if (!File.Exists(path)) return "";
            using var r = new StreamReader(new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.ReadWrite | FileShare.Delete));
            string s = r.ReadToEnd();
            return s.Length <= maxChars ? s.Trim() : "…" + s[^maxChars..].Trim();
        }
        catch (Exception ex) { return $"(unreadable: {ex.Message})"; }
    }
}

/// <summary>The last lines a process printed.</summary>
public sealed class OutputTail(int maxLines = 40)
{
    private readonly Queue<string> _lines = new();

    public void Add(string? line)
    {
        if (line is null) return;
        lock (_lines)
        {
            _lines.Enqueue(line);
            while (_lines.Count > maxLines) _lines.Dequeue();
        }
    }

    public override string ToString()
    {
        lock (_lines) return string.Join(Environment.NewLine, _lines).Trim();
    }
}
