using HalfMsg.Broker.Tests.Infrastructure;

namespace HalfMsg.Broker.Tests.Compat;

/// <summary>The README's Node.js example, run verbatim with the unmodified official client, so the README cannot rot.</summary>
[Trait("Category", "Compat")]
public sealed class ReadmeExampleTests(NodeClientFixture fixture) : IClassFixture<NodeClientFixture>
{
    [Fact]
    public async Task The_readme_node_example_publishes_a_transactional_message_and_receives_it()
    {
        string topic = "Readme_" + Guid.NewGuid().ToString("N")[..8];
        NodeScript.EnsureAvailable();
        var psi = new System.Diagnostics.ProcessStartInfo("node", ["readme-example.js", fixture.Broker.Endpoint, topic])
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
        Assert.Contains("received our event: order 1 created", output);
    }

    [Fact]
    public void The_readme_contains_the_tested_node_example_verbatim()
    {
        string example = File.ReadAllText(Path.Combine(NodeScript.Directory, "readme-example.js")).Trim().ReplaceLineEndings("\n");
        string readme = File.ReadAllText(Path.Combine(NodeScript.Directory, "..", "..", "..", "README.md")).ReplaceLineEndings("\n");
        Assert.Contains(example, readme);
    }
}
