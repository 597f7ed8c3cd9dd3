using System.Diagnostics;
using System.Net;
using System.Net.Sockets;
using System.Text.Json;
using HalfMsg.Broker.Hosting;
using Microsoft.Extensions.Configuration;
using HalfMsg.TestKit;

namespace HalfMsg.Broker.Tests.Admin;

/// <summary>What a new operator meets first: help, version, mistakes in flags and settings, start-up failures, logs.</summary>
public sealed class FirstTenMinutesTests
{
    [Theory]
    [InlineData("--help")]
    [InlineData("-h")]
    public async Task Help_lists_every_flag_with_its_meaning_and_default(string flag)
    {
        var run = await BrokerCli.RunAsync([flag]);
        Assert.Equal(0, run.ExitCode);
        foreach (var s in BrokerConfiguration.Settings)
        {
            Assert.Contains(s.Flag, run.StdOut);
            Assert.Contains(s.Description, run.StdOut);
            if (s.Default.Length > 0) Assert.Contains($"default: {s.Default};", run.StdOut);
        }
        Assert.Contains("--version", run.StdOut);
        Assert.Equal("", run.StdErr);
    }

    [Fact]
    public async Task Version_prints_the_version_that_the_start_up_banner_shows()
    {
        var run = await BrokerCli.RunAsync(["--version"]);
        Assert.Equal(0, run.ExitCode);
        Assert.Equal($"HalfMsgBroker {BrokerConfiguration.Version}", run.StdOut.Trim());
        Assert.StartsWith("0.1.0", BrokerConfiguration.Version);
    }

    [Theory]
    [InlineData("6")]
    [InlineData("1.5")]
    [InlineData("0.5")]
    public void A_duration_without_a_unit_is_an_error_that_shows_the_accepted_forms(string value)
    {
        var config = new ConfigurationBuilder().AddInMemoryCollection(BrokerConfiguration.ParseCommandLine(["--transaction-timeout", value])).Build();
        var ex = Assert.Throws<BrokerConfigurationException>(() => BrokerConfiguration.Bind(config));
        Assert.Contains("--transaction-timeout needs a unit", ex.Message);
        Assert.Contains("500ms, 6s, 1m", ex.Message);
        Assert.False(BrokerConfiguration.TryParseDuration(value, out _));
    }

    [Theory]
    [InlineData("Broker__Flush", "maybe", "Broker__Flush must be 'sync' or 'async', not 'maybe'")]
    [InlineData("Broker__TransactionTimeout", "6", "Broker__TransactionTimeout needs a unit")]
    [InlineData("Broker__GrpcPort", "eighty", "Broker__GrpcPort must be a whole number")]
    [InlineData("Broker__Flsh", "async", "unknown setting Broker__Flsh (did you mean Flush?)")]
    [InlineData("Broker__RetentionTme", "1h", "unknown setting Broker__RetentionTme")]
    public async Task Bad_environment_values_and_misspelt_keys_are_reported_under_their_own_names(string name, string value, string expected)
    {
        var run = await BrokerCli.RunAsync([], new Dictionary<string, string> { [name] = value });
        Assert.Equal(2, run.ExitCode);
        Assert.Equal($"halfmsg-broker: ", run.StdErr[..16]);
        Assert.Contains(expected, run.StdErr);
        Assert.Single(run.StdErr.Trim().Split('\n'));
    }

    [Fact]
    public async Task A_port_in_use_is_one_line_naming_the_flag_with_exit_code_2_before_recovery()
    {
        using var squatter = new TcpListener(IPAddress.Loopback, 0);
        squatter.Start();
        int port = ((IPEndPoint)squatter.LocalEndpoint).Port;
        string dataDir = Path.Combine(Path.GetTempPath(), "halfmsg-port-" + Guid.NewGuid().ToString("N"));
        try
        {
            var run = await BrokerCli.RunAsync(["--data-dir", dataDir, "--http-port", port.ToString(), "--grpc-port", "0", "--remoting-port", "0", "--namesrv-port", "0"]);
            Assert.Equal(2, run.ExitCode);
            Assert.Equal($"halfmsg-broker: --http-port {port} is already in use on 127.0.0.1; stop the other process or choose another --http-port", run.StdErr.Trim());
            Assert.False(Directory.Exists(Path.Combine(dataDir, "log")), "recovery must not have run");
        }
        finally
        {
            if (Directory.Exists(dataDir)) Directory.Delete(dataDir, true);
        }
    }

    [Fact]
    public async Task A_data_dir_that_is_a_file_is_one_line_naming_the_flag()
    {
        string file = Path.GetTempFileName();
        try
        {
            var run = await BrokerCli.RunAsync(["--data-dir", file, "--http-port", "0", "--grpc-port", "0", "--remoting-port", "0", "--namesrv-port", "0"]);
            Assert.Equal(2, run.ExitCode);
            Assert.Equal($"halfmsg-broker: --data-dir {file} is a file; point --data-dir at a directory (it is created if missing)", run.StdErr.Trim());
        }
        finally
        {
            File.Delete(file);
        }
    }

    [Fact]
    public void The_sample_appsettings_lists_every_setting_with_its_default()
    {
        string path = Path.Combine(AppContext.BaseDirectory, "appsettings.json");
        string json = File.ReadAllText(path);
        using var doc = JsonDocument.Parse(json, new JsonDocumentOptions { CommentHandling = JsonCommentHandling.Skip });
        var broker = doc.RootElement.GetProperty("Broker");
        foreach (var s in BrokerConfiguration.Settings)
        {
            Assert.True(broker.TryGetProperty(s.Key["Broker:".Length..], out var value), $"appsettings.json lacks {s.Key}");
            string text = value.ValueKind switch { JsonValueKind.String => value.GetString()!, JsonValueKind.True => "true", JsonValueKind.False => "false", _ => value.GetRawText() };
            Assert.Equal(s.Default, text);
            Assert.Contains($"// {s.Flag}: {s.Description}\n", json.ReplaceLineEndings("\n"));
        }
        Assert.Equal(JsonValueKind.Object, broker.GetProperty("Credentials").ValueKind);
    }

    [Fact]
    public void The_readme_configuration_table_lists_every_flag_with_its_default()
    {
        var dir = new DirectoryInfo(AppContext.BaseDirectory);
        while (dir is not null && !File.Exists(Path.Combine(dir.FullName, "HalfMsgBroker.sln"))) dir = dir.Parent;
        Assert.NotNull(dir);
        string readme = File.ReadAllText(Path.Combine(dir.FullName, "README.md"));
        foreach (var s in BrokerConfiguration.Settings)
        {
            string defaultCell = s.Default.Length == 0 ? "(empty)" : $"`{s.Default}`";
            Assert.Contains($"| `{s.Flag}` | {defaultCell} | `{s.Key.Replace(":", "__", StringComparison.Ordinal)}` | {s.Description} |", readme);
        }
    }

    [Fact]
    public async Task Json_log_format_makes_every_line_json_and_shutdown_says_the_checkpoint_was_written()
    {
        string dataDir = Path.Combine(Path.GetTempPath(), "halfmsg-json-" + Guid.NewGuid().ToString("N"));
        int http = FreePorts.Next();
        var lines = new List<string>();
        using var process = new Process { StartInfo = BrokerCli.StartInfo(["--data-dir", dataDir, "--http-port", http.ToString(), "--grpc-port", FreePorts.Next().ToString(), "--remoting-port", "0", "--namesrv-port", "0", "--log-format", "json"]) };
        var ready = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        process.OutputDataReceived += (_, e) =>
        {
            if (e.Data is null) return;
            lock (lines) lines.Add(e.Data);
            if (e.Data.Contains("ready", StringComparison.Ordinal)) ready.TrySetResult();
        };
        process.ErrorDataReceived += (_, e) => { if (e.Data is not null) lock (lines) lines.Add(e.Data); };
        try
        {
            process.Start();
            process.BeginOutputReadLine();
            process.BeginErrorReadLine();
            await ready.Task.WaitAsync(TimeSpan.FromSeconds(30));
            BrokerCli.Terminate(process);
            await process.WaitForExitAsync().WaitAsync(TimeSpan.FromSeconds(30));
            Assert.Equal(0, process.ExitCode);
            List<string> all;
            lock (lines) all = [.. lines.Where(l => l.Length > 0)];
            Assert.NotEmpty(all);
            var messages = new List<string>();
            foreach (string line in all)
            {
                using var json = JsonDocument.Parse(line);   // throws on a non-JSON line
                messages.Add(json.RootElement.GetProperty("Message").GetString()!);
            }
            Assert.Contains(messages, m => m.StartsWith($"HalfMsgBroker {BrokerConfiguration.Version} ready", StringComparison.Ordinal));
            Assert.Contains(messages, m => m.StartsWith("HalfMsgBroker stopped: checkpoint at log address", StringComparison.Ordinal));
        }
        finally
        {
            if (!process.HasExited) process.Kill(entireProcessTree: true);
            if (Directory.Exists(dataDir)) Directory.Delete(dataDir, true);
        }
    }
}
