using HalfMsg.Broker.Tests.Infrastructure;
using HalfMsg.TestKit;

namespace HalfMsg.Broker.Tests.Compat;

/// <summary>One broker child process shared by the Node compatibility tests of a class; each test uses its own topic
/// and group. Three delivery attempts, so the dead-letter scenario is quick.</summary>
public sealed class NodeClientFixture : IAsyncLifetime
{
    private BrokerProcess? _broker;

    public BrokerProcess Broker => _broker ?? throw new InvalidOperationException("broker not started");

    public async Task InitializeAsync() => _broker = await BrokerProcess.StartAsync("--max-delivery-attempts", "3");

    public async Task DisposeAsync()
    {
        if (_broker is not null)
        {
            await _broker.DisposeAsync();
        }
    }
}
