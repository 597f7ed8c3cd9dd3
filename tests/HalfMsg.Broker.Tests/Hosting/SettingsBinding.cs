using HalfMsg.Broker.Hosting;
using Microsoft.Extensions.Configuration;

namespace HalfMsg.Broker.Tests.Hosting;

/// <summary>The broker's options bound from a command line alone, as the host binds them (settings tests).</summary>
internal static class SettingsBinding
{
    public static BrokerOptions Bind(params string[] args)
        => BrokerConfiguration.Bind(new ConfigurationBuilder().AddInMemoryCollection(BrokerConfiguration.ParseCommandLine(args)).Build());
}
