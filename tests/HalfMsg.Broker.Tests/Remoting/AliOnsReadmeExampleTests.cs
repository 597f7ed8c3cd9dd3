using HalfMsg.Broker.Tests.Infrastructure;

namespace HalfMsg.Broker.Tests.Remoting;

/// <summary>The README's ali-ons example (tests/compat/node/ons-readme-example.js), run verbatim against a real broker.</summary>
[Trait("Category", "Compat")]
public sealed class AliOnsReadmeExampleTests(RemotingCompatFixture fixture) : IClassFixture<RemotingCompatFixture>
{
    [Fact]
    public async Task The_readme_ali_ons_example_sends_through_the_name_server_and_receives_its_message()
    {
        string topic = "ReadmeOns_" + Guid.NewGuid().ToString("N")[..8];
        NodeScript.EnsureAvailable();
        var psi = new System.Diagnostics.ProcessStartInfo("node", ["ons-readme-example.js", fixture.Broker.NameServer, topic])
        {
            WorkingDirectory = NodeScript.Directory, RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false,
        };
        using var process = System.Diagnostics.Process.Start(psi)!;
        var stdout = process.StandardOutput.ReadToEndAsync();
        var stderr = process.StandardError.ReadToEndAsync();
        using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(60));
        try { await process.WaitForExitAsync(timeout.Token); }
        catch (OperationCanceledException) { process.Kill(entireProcessTree: true); }
        string output = await stdout;
        string errors = await stderr;
        Assert.True(process.ExitCode == 0, $"exit {process.ExitCode}\n{output}\n{errors}");
        Assert.Contains("sent: SEND_OK", output);
        Assert.Contains("received: order 1 created", output);
    }

    [Fact]
    public void The_readme_contains_the_tested_ali_ons_example_verbatim()
    {
        string example = File.ReadAllText(Path.Combine(NodeScript.Directory, "ons-readme-example.js")).Trim().ReplaceLineEndings("\n");
        string readme = File.ReadAllText(Path.Combine(NodeScript.Directory, "..", "..", "..", "README.md")).ReplaceLineEndings("\n");
        Assert.Contains(example, readme);
    }
}
