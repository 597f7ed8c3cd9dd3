using System.Diagnostics;
using System.Runtime.CompilerServices;
using System.Text;
using HalfMsg.Client.Tests.Infrastructure;

namespace HalfMsg.Client.Tests;

/// <summary>
/// <c>dotnet pack</c> of the client packages into a local folder feed, then a sample service outside the repository
/// that references only <c>HalfMsg.ProducerClient</c> from that feed (ClientCore and Protocol come as its
/// dependencies), registers it with <c>AddHalfMsgProducer</c> bound from configuration, and publishes to a real broker.
/// </summary>
[Trait("Category", "Pack")]
public sealed class PackageTests(BrokerFixture fixture) : IClassFixture<BrokerFixture>, IDisposable
{
    private readonly string _dir = Path.Combine(Path.GetTempPath(), "halfmsg-pack-" + Guid.NewGuid().ToString("N")[..10]);

    public void Dispose()
    {
        try
        {
            Directory.Delete(_dir, recursive: true);
        }
        catch (IOException)
        {
        }
    }

    private static string Repo([CallerFilePath] string path = "") => Path.GetFullPath(Path.Combine(Path.GetDirectoryName(path)!, "..", ".."));

    private static async Task<(int ExitCode, string Output)> RunAsync(string workingDirectory, params string[] args)
    {
        var psi = new ProcessStartInfo("dotnet") { WorkingDirectory = workingDirectory, RedirectStandardOutput = true, RedirectStandardError = true };
        foreach (string a in args)
        {
            psi.ArgumentList.Add(a);
        }

        psi.Environment["DOTNET_CLI_TELEMETRY_OPTOUT"] = "1";
        psi.Environment["DOTNET_NOLOGO"] = "1";
        using var process = Process.Start(psi)!;
        var output = new StringBuilder();
        process.OutputDataReceived += (_, e) => { lock (output) output.AppendLine(e.Data); };
        process.ErrorDataReceived += (_, e) => { lock (output) output.AppendLine(e.Data); };
        process.BeginOutputReadLine();
        process.BeginErrorReadLine();
        using var cts = new CancellationTokenSource(TimeSpan.FromMinutes(8));
        try
        {
            await process.WaitForExitAsync(cts.Token);
        }
        catch (OperationCanceledException)
        {
            process.Kill(entireProcessTree: true);
            throw new TimeoutException($"dotnet {string.Join(' ', args)} did not finish:\n{output}");
        }

        lock (output)
        {
            return (process.ExitCode, output.ToString());
        }
    }

    [Fact]
    public async Task The_packed_producer_package_is_consumed_from_a_local_feed_by_a_sample_using_AddHalfMsgProducer()
    {
        string feed = Path.Combine(_dir, "feed");
        string sample = Path.Combine(_dir, "sample");
        Directory.CreateDirectory(feed);
        Directory.CreateDirectory(sample);
        // A version of its own, so no package cached from an earlier run (or another source) can stand in.
        string version = "0.0.0-local." + Guid.NewGuid().ToString("N")[..12];

        foreach (string project in new[] { "src/Protocol", "src/ClientCore", "src/ProducerClient" })
        {
            // A configuration of its own: packing with another version in place would rebuild the Release outputs of
            // Protocol and the clients under that version while other test projects run from them (broker child
            // processes then failed to load HalfMsg.Protocol, Version=1.0.0.0, and exited 134).
            var (code, output) = await RunAsync(Repo(), "pack", project, "-c", "PackTest", "-o", feed, "-p:Version=" + version);
            Assert.True(code == 0, $"dotnet pack {project} failed:\n{output}");
        }

        Assert.True(File.Exists(Path.Combine(feed, $"HalfMsg.ProducerClient.{version}.nupkg")));
        Assert.True(File.Exists(Path.Combine(feed, $"HalfMsg.ClientCore.{version}.nupkg")));

        string here = Path.Combine(Repo(), "tests", "HalfMsg.Client.Tests", "PackageSample");
        File.Copy(Path.Combine(here, "Program.cs.txt"), Path.Combine(sample, "Program.cs"));
        File.Copy(Path.Combine(here, "PackageSample.csproj.txt"), Path.Combine(sample, "PackageSample.csproj"));
        // The local feed in addition to the machine's sources; outside the repository, so none of its build files apply.
        await File.WriteAllTextAsync(Path.Combine(sample, "nuget.config"), $"""
            <?xml version="1.0" encoding="utf-8"?>
            <configuration>
              <packageSources>
                <add key="halfmsg-local" value="{feed}" />
              </packageSources>
            </configuration>
            """);
        string topic = E2E.Unique("pack");
        await using (var warm = await E2E.ProducerAsync(fixture.Broker.Endpoint, topic))
        {
            // the topic exists
        }

        var (runCode, runOutput) = await RunAsync(sample, "run", "-c", "Release", "-p:HalfMsgVersion=" + version, "--",
            "--HalfMsg:Producer:Endpoints=" + fixture.Broker.Endpoint, "--HalfMsg:Producer:Topics:0=" + topic);

        Assert.True(runCode == 0, "the sample failed:\n" + runOutput);
        Assert.Contains("sent ", runOutput);
    }
}
