using System.Diagnostics;
using System.Net;
using System.Runtime.InteropServices;
using System.Text;
using System.Text.Json;
using Apache.Rocketmq.V2;
using Google.Protobuf;
using Google.Protobuf.WellKnownTypes;
using HalfMsg.Broker.Tests.Infrastructure;
using HalfMsg.Protocol.Grpc;
using V2Encoding = Apache.Rocketmq.V2.Encoding;
using HalfMsg.TestKit;

namespace HalfMsg.Broker.Tests.Hosting;

/// <summary>
/// The broker as a child process, optionally inside its own mount namespace (<c>unshare -m</c>) so that a test can give
/// it a read-only or a small, fillable data dir without any mount being visible outside that process. Ports are free
/// 127.0.0.1 ports; the process is stopped by pid (SIGTERM or SIGKILL), never by name.
/// </summary>
internal sealed class BrokerChild : IAsyncDisposable
{
    private static readonly HttpClient Http = new() { Timeout = TimeSpan.FromSeconds(2) };
    private readonly StringBuilder _output = new();
    private readonly Process _process;

    private BrokerChild(Process process, string dataDir, int grpcPort, int httpPort)
    {
        _process = process;
        DataDir = dataDir;
        GrpcPort = grpcPort;
        HttpPort = httpPort;
    }

    public string DataDir { get; }
    public int GrpcPort { get; }
    public int HttpPort { get; }
    public int Pid => _process.Id;
    public string Endpoint => $"127.0.0.1:{GrpcPort}";
    public bool HasExited => _process.HasExited;
    public int ExitCode => _process.ExitCode;

    public string Output
    {
        get { lock (_output) return _output.ToString(); }
    }

    /// <summary>
    /// Starts <c>dotnet HalfMsg.Broker.dll</c>. With <paramref name="mountSetup"/> (shell commands run as root in a private
    /// mount namespace, e.g. a read-only bind mount of the data dir), the broker is exec'ed by that shell, so
    /// <see cref="Pid"/> is the broker's own pid.
    /// </summary>
    public static BrokerChild Start(string dataDir, string? mountSetup = null, params string[] extraArgs)
    {
        string dll = Path.Combine(AppContext.BaseDirectory, "HalfMsg.Broker.dll");
        int grpc = FreePorts.Next(), http = FreePorts.Next();
        string[] brokerArgs =
        [
            dll, "--data-dir", dataDir, "--grpc-port", grpc.ToString(), "--namesrv-port", "0", "--http-port", http.ToString(),
            "--remoting-port", FreePorts.Next().ToString(), "--transaction-check-interval", "1s", .. extraArgs,
        ];
        // SIGINT back to its default disposition for the broker (coreutils env, exec: same pid): a test run started in
        // the background of a non-interactive shell (`... &`, nohup) ignores SIGINT, a child inherits that, and .NET then
        // leaves an inherited-ignored SIGINT ignored, so the SIGINT test could never pass there.
        ProcessStartInfo psi;
        if (mountSetup is null)
        {
            psi = new ProcessStartInfo("env");
            foreach (var a in new[] { "--default-signal=INT", "dotnet" }.Concat(brokerArgs)) psi.ArgumentList.Add(a);
        }
        else
        {
            psi = new ProcessStartInfo("unshare");
            foreach (var a in new[] { "--mount", "--propagation", "private", "sh", "-ec", mountSetup + "\nexec env --default-signal=INT dotnet \"$@\"", "sh" }) psi.ArgumentList.Add(a);
            foreach (var a in brokerArgs) psi.ArgumentList.Add(a);
        }
        psi.RedirectStandardOutput = true;
        psi.RedirectStandardError = true;
        psi.UseShellExecute = false;
        var process = new Process { StartInfo = psi, EnableRaisingEvents = true };
        var child = new BrokerChild(process, dataDir, grpc, http);
        process.OutputDataReceived += (_, e) => child.Append(e.Data);
        process.ErrorDataReceived += (_, e) => child.Append(e.Data);
        process.Start();
        process.BeginOutputReadLine();
        process.BeginErrorReadLine();
        return child;
    }

    private void Append(string? line)
    {
        if (line is null) return;
        lock (_output) _output.AppendLine(line);
    }

    /// <summary>GET /health: the status code and body, or null while nothing listens.</summary>
    public async Task<(HttpStatusCode Status, string Body)?> HealthAsync()
    {
        try
        {
            using var response = await Http.GetAsync($"http://127.0.0.1:{HttpPort}/health");
            return (response.StatusCode, await response.Content.ReadAsStringAsync());
        }
        catch (Exception ex) when (HalfMsg.TestKit.BrokerProcess.NotListeningYet(ex))
        {
            return null;
        }
    }

    public async Task WaitHealthyAsync(TimeSpan? within = null)
    {
        var deadline = DateTime.UtcNow + (within ?? TimeSpan.FromSeconds(60));
        while (DateTime.UtcNow < deadline)
        {
            if (_process.HasExited) throw new InvalidOperationException($"broker exited with {_process.ExitCode} before it became healthy:\n{Output}");
            if (await HealthAsync() is { Status: HttpStatusCode.OK }) return;
            await Task.Delay(100);
        }
        throw new TimeoutException($"broker not healthy within the bound:\n{Output}");
    }

    /// <summary>Waits for the process to end; false if it is still running after <paramref name="within"/>.</summary>
    public async Task<bool> WaitForExitAsync(TimeSpan within)
    {
        using var cts = new CancellationTokenSource(within);
        try
        {
            await _process.WaitForExitAsync(cts.Token);
            return true;
        }
        catch (OperationCanceledException)
        {
            return false;
        }
    }

    [DllImport("libc", SetLastError = true)]
    private static extern int kill(int pid, int sig);

    public const int SIGTERM = 15;
    public const int SIGINT = 2;

    public void Signal(int signal)
    {
        if (kill(_process.Id, signal) != 0) throw new InvalidOperationException($"kill({_process.Id}, {signal}) failed: errno {Marshal.GetLastPInvokeError()}");
    }

    /// <summary>SIGKILL (kill -9) of this pid.</summary>
    public void Kill()
    {
        if (!_process.HasExited)
        {
            _process.Kill(entireProcessTree: false);
            _process.WaitForExit(10_000);
        }
    }

    public ValueTask DisposeAsync()
    {
        Kill();
        _process.Dispose();
        return ValueTask.CompletedTask;
    }

    public static string NewDataDir(string tag)
    {
        string dir = Path.Combine(Path.GetTempPath(), $"halfmsg-{tag}-" + Guid.NewGuid().ToString("N")[..12]);
        Directory.CreateDirectory(dir);
        return dir;
    }

    public static void DeleteDir(string dir)
    {
        try { Directory.Delete(dir, recursive: true); } catch (IOException) { } catch (UnauthorizedAccessException) { }
    }
}

/// <summary>
/// Runs only where the test can give a child process its own mount namespace with mounts (root, util-linux
/// <c>unshare</c>, CAP_SYS_ADMIN). As root, chmod does not stop writes, so read-only and full data dirs need mounts.
/// </summary>
public sealed class RootMountFactAttribute : FactAttribute
{
    private static readonly Lazy<string?> Unavailable = new(Probe);

    public RootMountFactAttribute()
    {
        if (Unavailable.Value is { } why) Skip = "needs a private mount namespace with mounts: " + why;
    }

    private static string? Probe()
    {
        if (!OperatingSystem.IsLinux()) return "not Linux";
        if (Environment.UserName != "root") return "not root";
        string dir = BrokerChild.NewDataDir("probe");
        try
        {
            var psi = new ProcessStartInfo("unshare") { RedirectStandardError = true, RedirectStandardOutput = true, UseShellExecute = false };
            foreach (var a in new[] { "--mount", "--propagation", "private", "sh", "-ec", $"mount -t tmpfs -o size=1m tmpfs '{dir}' && touch '{dir}/x'" })
                psi.ArgumentList.Add(a);
            using var p = Process.Start(psi)!;
            string err = p.StandardError.ReadToEnd();
            p.WaitForExit(10_000);
            return p.ExitCode == 0 ? null : $"unshare/mount failed ({p.ExitCode}): {err.Trim()}";
        }
        catch (Exception ex)
        {
            return $"cannot run unshare: {ex.Message}";
        }
        finally
        {
            BrokerChild.DeleteDir(dir);
        }
    }
}

/// <summary>A theory with the same precondition as <see cref="RootMountFactAttribute"/>.</summary>
public sealed class RootMountTheoryAttribute : TheoryAttribute
{
    public RootMountTheoryAttribute()
    {
        if (new RootMountFactAttribute().Skip is { } why) Skip = why;
    }
}

/// <summary>
/// Issue 8, defects 6 and 7, end to end against the real broker process: a data dir it cannot write, a disk that fills
/// while it runs, and a second broker on the same data dir.
/// </summary>
public sealed class StorageFailureHostTests
{
    private const int ExitStorageFailure = 74;
    private const int ExitConfiguration = 2;

    private static Message NewMessage(string topic, int bodySize) => new()
    {
        Topic = new Resource { Name = topic },
        Body = ByteString.CopyFrom(new byte[bodySize]),
        SystemProperties = new SystemProperties
        {
            MessageId = "01" + Guid.NewGuid().ToString("N").ToUpperInvariant(),
            MessageType = MessageType.Normal,
            BodyEncoding = V2Encoding.Identity,
            BornTimestamp = Timestamp.FromDateTimeOffset(DateTimeOffset.UtcNow),
            BornHost = "test-host",
        },
    };

    private static async Task<Status> SendAsync(GrpcTestClient client, string topic, int bodySize)
    {
        var request = new SendMessageRequest { Messages = { NewMessage(topic, bodySize) } };
        var result = await client.UnaryAsync(GrpcMethods.SendMessage, request, SendMessageResponse.Parser);
        Assert.True(result.GrpcStatus == 0, $"grpc-status {result.GrpcStatus} {result.GrpcMessage}");
        return result.Response!.Status;
    }

    private static int CountLines(string output, string text)
        => output.Split('\n').Count(l => l.Contains(text, StringComparison.Ordinal));

    [RootMountTheory]
    [InlineData("")]     // the whole data dir
    [InlineData("log")]  // only the log's directory (a separate volume that went read-only)
    public async Task A_data_dir_made_read_only_stops_the_start_with_exit_code_74_and_one_line_saying_why(string subdir)
    {
        string dir = BrokerChild.NewDataDir("ro");
        try
        {
            // An existing data dir: a broker ran on it and stopped cleanly.
            await using (var first = BrokerChild.Start(dir))
            {
                await first.WaitHealthyAsync();
                first.Signal(BrokerChild.SIGTERM);
                Assert.True(await first.WaitForExitAsync(TimeSpan.FromSeconds(120)), "a healthy broker did not stop on SIGTERM:\n" + first.Output);
                Assert.Equal(0, first.ExitCode);
            }

            // The same dir, read-only (a read-only bind mount, visible only to the broker's own mount namespace).
            string ro = Path.Combine(dir, subdir);
            await using var broker = BrokerChild.Start(dir, $"mount --bind '{ro}' '{ro}'\nmount -o remount,bind,ro '{ro}'");
            // Before the fix it came up and answered ready; now it must exit without ever being ready.
            var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(60);
            while (!broker.HasExited && DateTime.UtcNow < deadline)
            {
                Assert.False(await broker.HealthAsync() is { Status: HttpStatusCode.OK }, "a broker on a read-only data dir reported ready:\n" + broker.Output);
                await Task.Delay(100);
            }
            Assert.True(await broker.WaitForExitAsync(TimeSpan.FromSeconds(5)), "the broker kept running on a read-only data dir:\n" + broker.Output);
            Assert.Equal(ExitStorageFailure, broker.ExitCode);
            Assert.Equal(1, CountLines(broker.Output, "is not writable"));
            Assert.Contains($"storage failure: data dir '{ro.TrimEnd('/')}' is not writable", broker.Output);
        }
        finally
        {
            BrokerChild.DeleteDir(dir);
        }
    }

    [RootMountFact]
    public async Task A_disk_that_fills_while_running_is_reported_on_health_and_to_clients_and_sigterm_exits_74()
    {
        string dir = BrokerChild.NewDataDir("full");
        try
        {
            // A 24 MiB tmpfs as the data dir: the log fills it after a few dozen 512 KiB messages.
            // The free-space guard off: this is the real ENOSPC path (a failed commit), which stays a storage failure.
            await using var broker = BrokerChild.Start(dir, $"mount -t tmpfs -o size=24m tmpfs '{dir}'", "--disk-min-free", "0", "--disk-max-used-ratio", "1");
            await broker.WaitHealthyAsync();
            using var client = new GrpcTestClient(broker.Endpoint);

            Status? failed = null;
            int sent = 0;
            for (int i = 0; i < 200 && failed is null; i++)
            {
                var status = await SendAsync(client, "full", 512 * 1024);
                if (status.Code == Code.Ok) sent++;
                else failed = status;
            }
            Assert.True(failed is not null, "200 sends of 512 KiB fit a 24 MiB tmpfs?\n" + broker.Output);
            Assert.True(sent > 0, "not even the first send succeeded:\n" + broker.Output);
            // A storage-failure status, not a retryable INTERNAL: the message says what happened.
            Assert.Equal(Code.MasterPersistenceTimeout, failed!.Code);
            Assert.Contains("storage failure", failed.Message);

            // /health says so, with the reason.
            var health = await broker.HealthAsync();
            Assert.NotNull(health);
            Assert.Equal(HttpStatusCode.ServiceUnavailable, health!.Value.Status);
            using (var json = JsonDocument.Parse(health.Value.Body))
            {
                Assert.Equal("storage-failure", json.RootElement.GetProperty("status").GetString());
                Assert.Contains("storage failure", json.RootElement.GetProperty("reason").GetString());
            }

            // Every later call gets the same status at once, a small send included.
            Assert.Equal(Code.MasterPersistenceTimeout, (await SendAsync(client, "full", 10)).Code);
            var receive = await client.ServerStreamAsync(GrpcMethods.ReceiveMessage, new ReceiveMessageRequest
            {
                Group = new Resource { Name = "g" },
                MessageQueue = new MessageQueue { Topic = new Resource { Name = "full" } },
                FilterExpression = new FilterExpression { Type = FilterType.Tag, Expression = "*" },
                BatchSize = 4,
                InvisibleDuration = Duration.FromTimeSpan(TimeSpan.FromSeconds(30)),
                LongPollingTimeout = Duration.FromTimeSpan(TimeSpan.FromSeconds(1)),
            }, ReceiveMessageResponse.Parser);
            Assert.Equal(Code.MasterPersistenceTimeout, receive.Responses.First(r => r.ContentCase == ReceiveMessageResponse.ContentOneofCase.Status).Status.Code);

            // It stops by itself a few seconds after the failure (since 2026-12-05), or on SIGTERM, with the storage-failure
            // exit code.
            try
            {
                if (!broker.HasExited) broker.Signal(BrokerChild.SIGTERM);
            }
            catch (InvalidOperationException) when (broker.HasExited)
            {
            }
            Assert.True(await broker.WaitForExitAsync(TimeSpan.FromSeconds(120)), "a broker whose storage failed did not stop:\n" + broker.Output);
            Assert.Equal(ExitStorageFailure, broker.ExitCode);

            // Said once, clearly; no loop repeating it.
            Assert.Equal(1, CountLines(broker.Output, "Storage failure:"));
            Assert.Equal(0, CountLines(broker.Output, "loop failed"));
        }
        finally
        {
            BrokerChild.DeleteDir(dir);
        }
    }

    [Fact]
    public async Task A_second_broker_process_on_the_same_data_dir_exits_2_with_one_line_naming_the_dir_and_the_holders_pid()
    {
        string dir = BrokerChild.NewDataDir("lock");
        try
        {
            await using var first = BrokerChild.Start(dir);
            await first.WaitHealthyAsync();

            await using (var second = BrokerChild.Start(dir))
            {
                Assert.True(await second.WaitForExitAsync(TimeSpan.FromSeconds(60)), "a second broker started on a data dir in use:\n" + second.Output);
                Assert.Equal(ExitConfiguration, second.ExitCode);
                var lines = second.Output.Split('\n', StringSplitOptions.RemoveEmptyEntries);
                var line = Assert.Single(lines);
                Assert.Contains($"'{dir}'", line);
                Assert.Contains($"pid {first.Pid}", line);
            }

            // The first one never noticed.
            Assert.Equal(HttpStatusCode.OK, (await first.HealthAsync())?.Status);

            // kill -9 of the holder releases the lock with the process: the next broker starts.
            first.Kill();
            await using var third = BrokerChild.Start(dir);
            await third.WaitHealthyAsync();
        }
        finally
        {
            BrokerChild.DeleteDir(dir);
        }
    }

    [Fact]
    public async Task Sigint_stops_a_healthy_broker_with_exit_code_0()
    {
        string dir = BrokerChild.NewDataDir("sigint");
        try
        {
            await using var broker = BrokerChild.Start(dir);
            await broker.WaitHealthyAsync();
            broker.Signal(BrokerChild.SIGINT);
            Assert.True(await broker.WaitForExitAsync(TimeSpan.FromSeconds(120)), "SIGINT did not stop the broker:\n" + broker.Output);
            Assert.Equal(0, broker.ExitCode);
        }
        finally
        {
            BrokerChild.DeleteDir(dir);
        }
    }
}
