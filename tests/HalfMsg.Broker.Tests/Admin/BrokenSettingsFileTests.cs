using HalfMsg.Broker.Hosting;

namespace HalfMsg.Broker.Tests.Admin;

/// <summary>
/// A settings file the broker cannot read (a JSON syntax error, a key written twice) is a configuration mistake: one
/// line on stderr that says what is wrong and where, and exit code 2, so systemd's <c>RestartPreventExitStatus=2</c>
/// does not restart it in a loop. Until the late-night session of 2026-12-07 it was exit code 1 and
/// "failed: InvalidDataException: Failed to load configuration from file '…'", without the reason (found by a new
/// user's pass over the README). The file is an environment's own <c>appsettings.{Environment}.json</c>, loaded the
/// same way as <c>appsettings.json</c>, so the test binary's shipped file stays untouched for the other tests.
/// </summary>
public sealed class BrokenSettingsFileTests
{
    [Theory]
    [InlineData("{ \"Broker\": { \"Flush\": \"sync\", } ", "LineNumber")]
    [InlineData("{ \"Broker\": { \"Flush\": \"sync\", \"Flush\": \"async\" } }", "duplicate key 'Broker:Flush'")]
    public async Task A_settings_file_that_cannot_be_read_stops_the_start_with_exit_code_2_and_the_reason(string json, string reason)
    {
        string environment = "HalfMsgBrokenSettings" + Guid.NewGuid().ToString("N");
        string file = Path.Combine(AppContext.BaseDirectory, $"appsettings.{environment}.json");
        string dataDir = Path.Combine(Path.GetTempPath(), "halfmsg-brokensettings-" + Guid.NewGuid().ToString("N"));
        await File.WriteAllTextAsync(file, json);
        try
        {
            var run = await BrokerCli.RunAsync(["--data-dir", dataDir],
                new Dictionary<string, string> { ["DOTNET_ENVIRONMENT"] = environment });

            Assert.Equal(BrokerHost.ExitConfiguration, run.ExitCode);
            string line = Assert.Single(run.StdErr.Split('\n', StringSplitOptions.RemoveEmptyEntries));
            Assert.StartsWith("halfmsg-broker: ", line, StringComparison.Ordinal);
            Assert.Contains($"appsettings.{environment}.json", line, StringComparison.Ordinal);
            Assert.Contains(reason, line, StringComparison.Ordinal);
            Assert.DoesNotContain("InvalidDataException", line, StringComparison.Ordinal);
            Assert.False(Directory.Exists(dataDir), "nothing is opened before the settings are read");
        }
        finally
        {
            File.Delete(file);
            try { Directory.Delete(dataDir, recursive: true); } catch (DirectoryNotFoundException) { }
        }
    }

    /// <summary>
    /// A settings file that opens but cannot be read (an I/O error: here a link to <c>/proc/self/mem</c>, whose first
    /// page is never mapped, so its first read fails with EIO) is not a configuration mistake: the start ends as for any
    /// I/O failure (exit 74, restarted by systemd once the disk is fixed), not with exit 2 and "fix the file". Until the
    /// late-night session of 2026-12-07 (found by review) every failure of the JSON provider's read was exit 2.
    /// </summary>
    [Fact]
    public async Task A_settings_file_that_fails_to_read_is_an_IO_failure_not_exit_code_2()
    {
        if (!OperatingSystem.IsLinux()) return; // needs /proc/self/mem
        string environment = "HalfMsgUnreadableSettings" + Guid.NewGuid().ToString("N");
        string file = Path.Combine(AppContext.BaseDirectory, $"appsettings.{environment}.json");
        string dataDir = Path.Combine(Path.GetTempPath(), "halfmsg-unreadablesettings-" + Guid.NewGuid().ToString("N"));
        File.CreateSymbolicLink(file, "/proc/self/mem");
        try
        {
            var run = await BrokerCli.RunAsync(["--data-dir", dataDir],
                new Dictionary<string, string> { ["DOTNET_ENVIRONMENT"] = environment });

            Assert.Equal(BrokerHost.ExitStorageFailure, run.ExitCode);
            Assert.DoesNotContain("fix the file", run.StdErr, StringComparison.Ordinal);
            Assert.Contains($"appsettings.{environment}.json", run.StdErr, StringComparison.Ordinal);
            Assert.False(Directory.Exists(dataDir), "nothing is opened before the settings are read");
        }
        finally
        {
            File.Delete(file);
            try { Directory.Delete(dataDir, recursive: true); } catch (DirectoryNotFoundException) { }
        }
    }
}
