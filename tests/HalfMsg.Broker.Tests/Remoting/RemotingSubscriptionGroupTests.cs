using System.Text;
using HalfMsg.Broker.Core;
using HalfMsg.Broker.Tests.Infrastructure;
using HalfMsg.Protocol.Remoting;
using static HalfMsg.Broker.Tests.Infrastructure.RemotingBroker;

namespace HalfMsg.Broker.Tests.Remoting;

/// <summary>
/// UPDATE_AND_CREATE_SUBSCRIPTIONGROUP (200), as <c>mqadmin updateSubGroup</c> sends it: the SubscriptionGroupConfig's
/// consumeMessageOrderly sets the group's order mode (true: orderly, false: concurrent); the other fields are ignored.
/// </summary>
[Collection("remoting")]
public sealed class RemotingSubscriptionGroupTests(RemotingBrokerFixture broker)
{
    // As Java's fastjson writes a SubscriptionGroupConfig (fields this broker ignores included).
    private static byte[] Config(string group, bool? orderly) => Encoding.UTF8.GetBytes(
        "{\"brokerId\":0,\"consumeBroadcastEnable\":true,\"consumeEnable\":true,\"consumeFromMinEnable\":true,"
        + (orderly is { } o ? $"\"consumeMessageOrderly\":{(o ? "true" : "false")}," : "")
        + $"\"groupName\":\"{group}\",\"groupRetryPolicy\":{{\"type\":\"CUSTOMIZED\"}},\"retryMaxTimes\":16,\"retryQueueNums\":1,\"whichBrokerWhenConsumeSlowly\":1}}");

    [Fact]
    /// <summary>true makes the group orderly; false (what every `mqadmin updateSubGroup` without -o true sends) sets it back
    /// to the broker's default, not to concurrent (until the review of the merge it made the group concurrent).</summary>
    public async Task ConsumeMessageOrderly_sets_the_groups_order_mode_and_a_config_without_it_leaves_the_mode()
    {
        await using var c = await broker.ConnectAsync();
        string group = Unique("SubG");
        Assert.Equal(ResponseCode.Success, (await c.InvokeAsync(RequestCode.UpdateAndCreateSubscriptionGroup, body: Config(group, true))).Code);
        Assert.Equal(GroupOrder.Orderly, broker.Host.Engine.GroupOrderOf(group));
        Assert.Equal(ResponseCode.Success, (await c.InvokeAsync(RequestCode.UpdateAndCreateSubscriptionGroup, body: Config(group, null))).Code);
        Assert.Equal(GroupOrder.Orderly, broker.Host.Engine.GroupOrderOf(group));
        Assert.Equal(ResponseCode.Success, (await c.InvokeAsync(RequestCode.UpdateAndCreateSubscriptionGroup, body: Config(group, false))).Code);
        Assert.Equal(GroupOrder.NotConfigured, broker.Host.Engine.GroupOrderOf(group));
    }

    [Fact]
    public async Task A_config_without_a_group_name_or_that_is_not_JSON_is_refused_with_a_remark()
    {
        await using var c = await broker.ConnectAsync();
        var noName = await c.InvokeAsync(RequestCode.UpdateAndCreateSubscriptionGroup, body: Encoding.UTF8.GetBytes("{\"consumeMessageOrderly\":true}"));
        Assert.Equal((ResponseCode.InvalidParameter, true), (noName.Code, noName.Remark!.Contains("groupName")));
        var garbage = await c.InvokeAsync(RequestCode.UpdateAndCreateSubscriptionGroup, body: "not json"u8.ToArray());
        Assert.Equal(ResponseCode.InvalidParameter, garbage.Code);
        var badName = await c.InvokeAsync(RequestCode.UpdateAndCreateSubscriptionGroup, body: Config("bad group", true));
        Assert.NotEqual(ResponseCode.Success, badName.Code);
        Assert.Equal(GroupOrder.NotConfigured, broker.Host.Engine.GroupOrderOf("bad group"));
    }
}
