using System.Diagnostics;
using System.Runtime.InteropServices;

namespace HalfMsg.Broker.Tests.Admin;

/// <summary>Runs the broker executable once (for --help, --version and start-up failures) and collects what it printed.</summary>
internal static class BrokerCli
{
    public sealed record Run(int ExitCode, string StdOut, string StdErr);

    public static ProcessStartInfo StartInfo(IEnumerable<string> args, IReadOnlyDictionary<string, string>? environment = null, string? workingDirectory = null)
    {
        var psi = new ProcessStartInfo("dotnet")
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
            WorkingDirectory = workingDirectory ?? Path.GetTempPath(),
        };
        psi.ArgumentList.Add(Path.Combine(AppContext.BaseDirectory, "HalfMsg.Broker.dll"));
        foreach (string a in args) psi.ArgumentList.Add(a);
        foreach (var (k, v) in environment ?? new Dictionary<string, string>()) psi.Environment[k] = v;
        return psi;
    }

    public static async Task<Run> RunAsync(string[] args, IReadOnlyDictionary<string, string>? environment = null)
    {
        using var process = Process.Start(StartInfo(args, environment))!;
        var stdout = process.StandardOutput.ReadToEndAsync();
        var stderr = process.StandardError.ReadToEndAsync();
        using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(60));
        try
        {
            await process.WaitForExitAsync(cts.Token);
        }
        catch (OperationCanceledException)
        {
            process.Kill(entireProcessTree: true);
            throw new TimeoutException($"broker {string.Join(' ', args)} did not exit within 60 s");
        }
        return new Run(process.ExitCode, await stdout, await stderr);
    }

    /// <summary>SIGTERM, as systemd and docker stop do: the broker shuts down in order.</summary>
    public static void Terminate(Process process)
    {
        if (kill(process.Id, 15) != 0) throw new InvalidOperationException($"kill -TERM {process.Id} failed: errno {Marshal.GetLastPInvokeError()}");
    }

    [DllImport("libc", SetLastError = true)]
    private static extern int kill(int pid, int sig);
}
