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
        var (exitCode, output, errors) = await NodeScript.RunReadmeExampleAsync("readme-example.js", fixture.Broker.Endpoint, topic);
        Assert.True(exitCode == 0, $"exit {exitCode}\n{output}\n{errors}");
        Assert.Contains("received our event: order 1 created", output);
    }

    [Fact]
    public void The_readme_contains_the_tested_node_example_verbatim()
    {
        NodeScript.AssertReadmeContains("readme-example.js");
    }
}
