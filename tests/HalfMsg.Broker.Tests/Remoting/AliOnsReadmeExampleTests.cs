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
        var (exitCode, output, errors) = await NodeScript.RunReadmeExampleAsync("ons-readme-example.js", fixture.Broker.NameServer, topic);
        Assert.True(exitCode == 0, $"exit {exitCode}\n{output}\n{errors}");
        Assert.Contains("sent: SEND_OK", output);
        Assert.Contains("received: order 1 created", output);
    }

    [Fact]
    public void The_readme_contains_the_tested_ali_ons_example_verbatim()
    {
        NodeScript.AssertReadmeContains("ons-readme-example.js");
    }
}
