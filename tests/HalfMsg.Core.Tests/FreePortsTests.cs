using HalfMsg.TestKit;

namespace HalfMsg.Core.Tests;

/// <summary>
/// The test kit's free ports: a CI run failed because a broker was given the same port for two listeners (Linux handed
/// a just-released port out again on the next bind to port 0) and refused to start.
/// </summary>
public sealed class FreePortsTests
{
    [Fact]
    public void A_test_process_is_never_handed_the_same_port_twice()
    {
        // 1,000 draws from about 28,000 ephemeral ports: without the check, a repeat is all but certain (birthday bound).
        var ports = Enumerable.Range(0, 1_000).Select(_ => FreePorts.Next()).ToList();
        Assert.Equal(ports.Count, ports.Distinct().Count());
        Assert.All(ports, p => Assert.InRange(p, 1, 65_535));
    }
}
