using HalfMsg.Broker.Core;
using HalfMsg.Broker.Hosting;
using Microsoft.Extensions.Configuration;

namespace HalfMsg.Broker.Tests.Hosting;

/// <summary>--default-group-order: how consumer groups nobody configured are served.</summary>
public sealed class DefaultGroupOrderSettingTests
{
    private static BrokerOptions Bind(params string[] args) => SettingsBinding.Bind(args);

    [Fact]
    public void The_default_group_order_is_message_group_and_takes_concurrent()
    {
        Assert.Equal(DefaultGroupOrder.MessageGroup, Bind().Core.DefaultGroupOrder);
        Assert.Equal(DefaultGroupOrder.Concurrent, Bind("--default-group-order", "concurrent").Core.DefaultGroupOrder);
        Assert.Equal(DefaultGroupOrder.MessageGroup, Bind("--default-group-order", "Message-Group").Core.DefaultGroupOrder);
        var ex = Assert.Throws<BrokerConfigurationException>(() => Bind("--default-group-order", "orderly"));
        Assert.Contains("--default-group-order must be 'message-group' or 'concurrent', not 'orderly'", ex.Message);
    }
}
