using HalfMsg.Broker.Hosting;
using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.Logging;

namespace HalfMsg.Broker.Tests.Hosting;

/// <summary>
/// The broker's logging defaults: ASP.NET Core's per-request hosting log is off (while it is enabled at any level,
/// ASP.NET Core starts an Activity for every request), everything else keeps its level, and appsettings can turn it on.
/// </summary>
public sealed class LoggingDefaultsTests
{
    private static ILoggerFactory Factory(params (string Key, string Value)[] settings)
    {
        var config = new ConfigurationBuilder()
            .AddInMemoryCollection(settings.Select(s => new KeyValuePair<string, string?>(s.Key, s.Value)))
            .Build();
        return BrokerLogging.CreateFactory(config, BrokerConfiguration.Bind(config));
    }

    [Fact]
    public void The_hosting_request_log_is_off_by_default_and_the_rest_keeps_its_levels()
    {
        using var factory = Factory();
        Assert.False(factory.CreateLogger(BrokerLogging.HostingDiagnostics).IsEnabled(LogLevel.Critical));
        Assert.True(factory.CreateLogger("Microsoft.AspNetCore.Server.Kestrel").IsEnabled(LogLevel.Warning));
        Assert.False(factory.CreateLogger("Microsoft.AspNetCore.Server.Kestrel").IsEnabled(LogLevel.Information));
        Assert.True(factory.CreateLogger("Microsoft.AspNetCore.Hosting.Lifetime").IsEnabled(LogLevel.Warning));
        Assert.True(factory.CreateLogger("HalfMsg.Broker.Core").IsEnabled(LogLevel.Information));
    }

    [Fact]
    public void A_setting_for_the_hosting_category_turns_the_request_log_back_on()
    {
        using var factory = Factory(("Logging:LogLevel:Microsoft.AspNetCore.Hosting.Diagnostics", "Information"));
        Assert.True(factory.CreateLogger(BrokerLogging.HostingDiagnostics).IsEnabled(LogLevel.Information));
    }
}
