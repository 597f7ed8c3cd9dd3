using System.Diagnostics;
using System.Net;
using System.Text;

namespace HalfMsg.TestKit;

/// <summary>
/// The real broker as a child process (<c>dotnet HalfMsg.Broker.dll</c>) on free 127.0.0.1 ports and a temp data dir.
/// <see cref="Kill"/> is SIGKILL; <see cref="RestartAsync"/> starts again on the same data dir and ports.
/// Output is captured for failure messages (<see cref="Output"/>).
/// </summary>
public sealed class BrokerProcess : IAsyncDisposable
{
    private static readonly HttpClient Http = new() { Timeout = TimeSpan.FromSeconds(2) };
    private readonly string[] _extraArgs;
    private readonly IReadOnlyDictionary<string, string> _environment;
    private readonly StringBuilder _output = new();
    private Process? _process;

    private BrokerProcess(string dataDir, string[] extraArgs, IReadOnlyDictionary<string, string> environment)
    {
        DataDir = dataDir;
        _extraArgs = extraArgs;
        _environment = environment;
        ChoosePorts();
    }

    public string DataDir { get; }
    public int GrpcPort { get; private set; }
    public int RemotingPort { get; private set; }
    public int HttpPort { get; private set; }
    public int NameServerPort { get; private set; }

    /// <summary>The broker's process id (0 before start); for /proc sampling, never for signalling by name.</summary>
    public int Pid => _process?.Id ?? 0;

    /// <summary>The admin port's base address, <c>http://127.0.0.1:port</c>.</summary>
    public string AdminUrl => $"http://127.0.0.1:{HttpPort}";

    /// <summary><c>127.0.0.1:port</c> of the embedded name server (RocketMQ 4 clients' <c>nameSrv</c>).</summary>
    public string NameServer => $"127.0.0.1:{NameServerPort}";

    /// <summary><c>127.0.0.1:port</c>, the access point for RocketMQ clients.</summary>
    public string Endpoint => $"127.0.0.1:{GrpcPort}";

    public string Output
    {
        get
        {
            lock (_output)
            {
                return _output.ToString();
            }
        }
    }

    /// <summary>Starts a broker with short transaction intervals (1 s) plus <paramref name="extraArgs"/>, and waits for /health.</summary>
    public static Task<BrokerProcess> StartAsync(params string[] extraArgs)
        => StartWithEnvironmentAsync(new Dictionary<string, string>(), extraArgs);

    /// <summary>
    /// As <see cref="StartAsync"/>, with extra environment variables for the child only (e.g.
    /// <c>Broker__Credentials__&lt;accessKey&gt;</c> = secret), so tests never touch this process's environment.
    /// </summary>
    public static Task<BrokerProcess> StartWithEnvironmentAsync(IReadOnlyDictionary<string, string> environment, params string[] extraArgs)
        => StartInDataDirAsync(Path.Combine(Path.GetTempPath(), "halfmsg-test-" + Guid.NewGuid().ToString("N")), environment, extraArgs);

    /// <summary>
    /// As <see cref="StartWithEnvironmentAsync"/>, on a data dir the caller prepared (e.g. a small tmpfs mounted there);
    /// it is created if missing, and deleted (its contents) on dispose.
    /// </summary>
    public static async Task<BrokerProcess> StartInDataDirAsync(string dir, IReadOnlyDictionary<string, string> environment, params string[] extraArgs)
    {
        ArgumentNullException.ThrowIfNull(environment);
        Directory.CreateDirectory(dir);
        var broker = new BrokerProcess(dir, extraArgs, environment);
        try
        {
            for (int attempt = 1; ; attempt++)
            {
                try
                {
                    await broker.LaunchAsync();
                    return broker;
                }
                catch (InvalidOperationException) when (attempt < 3 && broker.Output.Contains(" is already in use on ", StringComparison.Ordinal))
                {
                    // A port that was free when chosen was taken before the broker bound it (e.g. by another
                    // process's outgoing connection): the broker refused to start, so choose new ports and start again.
                    broker.Append($"----- a port was taken before the broker bound it; new ports, attempt {attempt + 1} -----");
                    broker._process?.Dispose();
                    broker.ChoosePorts();
                }
            }
        }
        catch
        {
            await broker.DisposeAsync();
            throw;
        }
    }

    private void ChoosePorts()
    {
        GrpcPort = FreePorts.Next();
        RemotingPort = FreePorts.Next();
        HttpPort = FreePorts.Next();
        NameServerPort = FreePorts.Next();
    }

    private async Task LaunchAsync()
    {
        string dll = Path.Combine(AppContext.BaseDirectory, "HalfMsg.Broker.dll");
        if (!File.Exists(dll))
        {
            throw new InvalidOperationException($"Broker assembly not found at {dll}");
        }

        var psi = new ProcessStartInfo("dotnet")
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
        };
        string[] args =
        [
            dll, "--data-dir", DataDir, "--grpc-port", Port(GrpcPort), "--remoting-port", Port(RemotingPort), "--http-port", Port(HttpPort),
            "--namesrv-port", Port(NameServerPort),
            "--transaction-check-interval", "1s", "--transaction-timeout", "1s", .. _extraArgs,
        ];
        foreach (string a in args)
        {
            psi.ArgumentList.Add(a);
        }

        foreach (var (name, value) in _environment)
        {
            psi.Environment[name] = value;
        }

        var process = new Process { StartInfo = psi, EnableRaisingEvents = true };
        process.OutputDataReceived += (_, e) => Append(e.Data);
        process.ErrorDataReceived += (_, e) => Append(e.Data);
        process.Start();
        process.BeginOutputReadLine();
        process.BeginErrorReadLine();
        _process = process;

        var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(30);
        while (DateTime.UtcNow < deadline)
        {
            if (process.HasExited)
            {
                throw new InvalidOperationException($"Broker exited with {process.ExitCode} before becoming healthy:\n{Output}");
            }

            try
            {
                using var response = await Http.GetAsync($"http://127.0.0.1:{HttpPort}/health");
                if (response.StatusCode == HttpStatusCode.OK)
                {
                    return;
                }
            }
            catch (Exception ex) when (NotListeningYet(ex))
            {
            }

            await Task.Delay(100);
        }

        throw new TimeoutException($"Broker did not become healthy within 30 s:\n{Output}");
    }

    /// <summary>
    /// What an HTTP call to a server that is starting (or gone) may throw: refused, reset, timed out. A reset right after
    /// connect can surface unwrapped from SocketsHttpHandler (ENOTCONN from Socket.RemoteEndPoint; seen once in a
    /// stressed run), so a bare SocketException or IOException counts too.
    /// </summary>
    public static bool NotListeningYet(Exception ex)
        => ex is HttpRequestException or TaskCanceledException or System.Net.Sockets.SocketException or IOException;

    private void Append(string? line)
    {
        if (line is null)
        {
            return;
        }

        lock (_output)
        {
            _output.AppendLine(line);
        }
    }

    /// <summary>True once the started process has exited (crashed or killed).</summary>
    public bool HasExited => _process is { HasExited: true };

    /// <summary>SIGKILL: no shutdown hooks, no checkpoint.</summary>
    public void Kill()
    {
        if (_process is { HasExited: false } p)
        {
            p.Kill(entireProcessTree: true);
            p.WaitForExit(10_000);
        }

        Append("----- killed -----");
    }

    /// <summary>Starts again on the same data dir and ports (kills first if still running).</summary>
    public async Task RestartAsync()
    {
        Kill();
        _process?.Dispose();
        Append("----- restart -----");
        await LaunchAsync();
    }

    public async ValueTask DisposeAsync()
    {
        Kill();
        _process?.Dispose();
        for (int i = 0; i < 5; i++)
        {
            try
            {
                if (Directory.Exists(DataDir))
                {
                    Directory.Delete(DataDir, recursive: true);
                }

                break;
            }
            catch (IOException)
            {
                await Task.Delay(200);
            }
        }
    }

    private static string Port(int port) => port.ToString(System.Globalization.CultureInfo.InvariantCulture);
}
