using System.Diagnostics;
using System.Text;
using System.Text.Json;

namespace HalfMsg.Broker.Tests.Infrastructure;

/// <summary>
/// Runs a script of <c>tests/compat/node</c> with the official RocketMQ Node client. Missing node or node_modules is a
/// test failure with a clear message (CI installs them), never a silent pass.
/// </summary>
public static class NodeScript
{
    public static string Directory { get; } = FindCompatDir();

    private static string FindCompatDir()
    {
        for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
        {
            string candidate = Path.Combine(dir.FullName, "tests", "compat", "node");
            if (System.IO.Directory.Exists(candidate))
            {
                return candidate;
            }
        }

        return Path.Combine(AppContext.BaseDirectory, "tests", "compat", "node");
    }

    public sealed record Result(int ExitCode, IReadOnlyList<JsonElement> Lines, string Stderr)
    {
        /// <summary>The last line with a <c>result</c> property.</summary>
        public JsonElement Final => Lines.LastOrDefault(l => l.TryGetProperty("result", out _));

        public string Describe() => $"exit {ExitCode}\nstdout:\n{string.Join('\n', Lines)}\nstderr (tail):\n{Tail(Stderr, 4000)}";
    }

    public static void EnsureAvailable()
    {
        string pkg = Path.Combine(Directory, "node_modules", "rocketmq-client-nodejs", "package.json");
        Assert.True(File.Exists(pkg), $"The official Node client is not installed: run `npm ci` in {Directory} (missing {pkg}).");
        try
        {
            using var p = Process.Start(new ProcessStartInfo("node", "--version") { RedirectStandardOutput = true, UseShellExecute = false })!;
            p.WaitForExit(10_000);
            Assert.True(p.ExitCode == 0, "`node --version` failed; install Node.js >= 18 to run the compatibility tests.");
        }
        catch (System.ComponentModel.Win32Exception ex)
        {
            Assert.Fail($"Node.js is not on PATH ({ex.Message}); install Node.js >= 18 to run the compatibility tests.");
        }
    }

    /// <summary>Starts a script; await <see cref="RunningScript.WaitAsync"/> for its result.</summary>
    public static RunningScript Start(string script, TimeSpan timeout, params string[] args) => Start(script, timeout, null, args);

    /// <summary>As <see cref="Start(string, TimeSpan, string[])"/>, with extra environment variables for the script only.</summary>
    public static RunningScript Start(string script, TimeSpan timeout, IReadOnlyDictionary<string, string>? environment, params string[] args)
    {
        EnsureAvailable();
        var psi = new ProcessStartInfo("node")
        {
            WorkingDirectory = Directory,
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
        };
        psi.ArgumentList.Add(Path.Combine(Directory, script));
        foreach (string a in args)
        {
            psi.ArgumentList.Add(a);
        }

        foreach (var (name, value) in environment ?? new Dictionary<string, string>())
        {
            psi.Environment[name] = value;
        }

        return new RunningScript(Process.Start(psi)!, timeout);
    }

    public static Task<Result> RunAsync(string script, TimeSpan timeout, params string[] args) => Start(script, timeout, args).WaitAsync();

    /// <summary>
    /// Runs one of the README's examples (a script that prints plain text, not JSON lines) with a 60 s bound and returns
    /// its exit code and output; a run that does not finish is killed and reported with what it printed.
    /// </summary>
    public static async Task<(int ExitCode, string Output, string Errors)> RunReadmeExampleAsync(string script, params string[] args)
    {
        EnsureAvailable();
        var psi = new System.Diagnostics.ProcessStartInfo("node", [script, .. args])
        {
            WorkingDirectory = Directory, RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false,
        };
        using var process = System.Diagnostics.Process.Start(psi)!;
        var stdout = process.StandardOutput.ReadToEndAsync();
        var stderr = process.StandardError.ReadToEndAsync();
        using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(60));
        try { await process.WaitForExitAsync(timeout.Token); }
        catch (OperationCanceledException) { process.Kill(entireProcessTree: true); await process.WaitForExitAsync(); }
        return (process.ExitCode, await stdout, await stderr);
    }

    /// <summary>The README must contain <paramref name="script"/> verbatim, so what CI runs is what users read.</summary>
    public static void AssertReadmeContains(string script)
    {
        string example = File.ReadAllText(Path.Combine(Directory, script)).Trim().ReplaceLineEndings("\n");
        string readme = File.ReadAllText(Path.Combine(Directory, "..", "..", "..", "README.md")).ReplaceLineEndings("\n");
        Assert.Contains(example, readme);
    }

    public sealed class RunningScript
    {
        private readonly Process _process;
        private readonly TimeSpan _timeout;
        private readonly List<JsonElement> _lines = [];
        private readonly StringBuilder _stderr = new();

        internal RunningScript(Process process, TimeSpan timeout)
        {
            _process = process;
            _timeout = timeout;
            process.OutputDataReceived += (_, e) =>
            {
                if (string.IsNullOrWhiteSpace(e.Data))
                {
                    return;
                }

                try
                {
                    var element = JsonDocument.Parse(e.Data).RootElement.Clone();
                    lock (_lines)
                    {
                        _lines.Add(element);
                    }
                }
                catch (JsonException)
                {
                    lock (_stderr)
                    {
                        _stderr.AppendLine("[stdout] " + e.Data);
                    }
                }
            };
            process.ErrorDataReceived += (_, e) =>
            {
                lock (_stderr)
                {
                    _stderr.AppendLine(e.Data);
                }
            };
            process.BeginOutputReadLine();
            process.BeginErrorReadLine();
        }

        public bool HasLine(Func<JsonElement, bool> predicate)
        {
            lock (_lines)
            {
                return _lines.Any(predicate);
            }
        }

        public async Task<Result> WaitAsync()
        {
            using var cts = new CancellationTokenSource(_timeout);
            try
            {
                await _process.WaitForExitAsync(cts.Token);
            }
            catch (OperationCanceledException)
            {
                _process.Kill(entireProcessTree: true);
                await _process.WaitForExitAsync();
                lock (_stderr)
                {
                    _stderr.AppendLine($"[test] killed after timeout {_timeout}");
                }
            }

            _process.WaitForExit(); // flush async output readers
            lock (_lines)
            {
                lock (_stderr)
                {
                    return new Result(_process.HasExited ? _process.ExitCode : -1, [.. _lines], _stderr.ToString());
                }
            }
        }
    }

    private static string Tail(string s, int n) => s.Length <= n ? s : s[^n..];
}
