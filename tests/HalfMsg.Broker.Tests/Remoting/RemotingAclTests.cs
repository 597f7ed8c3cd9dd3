using HalfMsg.TestKit;
using HalfMsg.Broker.Tests.Infrastructure;
using HalfMsg.Protocol.Remoting;
using static HalfMsg.Broker.Tests.Infrastructure.RemotingBroker;

namespace HalfMsg.Broker.Tests.Remoting;

/// <summary>
/// RocketMQ 4 ACL against a child broker whose credentials come from its environment (<c>Broker__Credentials__&lt;ak&gt;</c>),
/// the same credentials gRPC checks: unsigned or badly signed requests get NO_PERMISSION.
/// </summary>
public sealed class RemotingAclTests : IAsyncLifetime
{
    private const string AccessKey = "rocketmq2";
    private const string Secret = "12345678";
    private BrokerProcess _broker = null!;

    public async Task InitializeAsync()
        => _broker = await BrokerProcess.StartWithEnvironmentAsync(new Dictionary<string, string> { ["Broker__Credentials__" + AccessKey] = Secret });

    public async Task DisposeAsync() => await _broker.DisposeAsync();

    [Fact]
    public async Task Unsigned_request_is_refused_and_a_signed_one_is_served()
    {
        await using var c = await RemotingTestClient.ConnectAsync(_broker.RemotingPort);
        string topic = Unique("Acl");
        var unsigned = await c.InvokeAsync(RequestCode.SendMessageV2, SendHeader("PG", topic, Props()), "x"u8.ToArray());
        Assert.Equal(ResponseCode.NoPermission, unsigned.Code);

        var wrong = RemotingCommand.Request(RequestCode.SendMessageV2, SendHeader("PG", topic, Props()), "x"u8.ToArray());
        RemotingAclSignature.Sign(wrong, AccessKey, "not-the-secret");
        Assert.Equal(ResponseCode.NoPermission, (await c.InvokeAsync(wrong)).Code);

        var signed = RemotingCommand.Request(RequestCode.SendMessageV2, SendHeader("PG", topic, Props()), "x"u8.ToArray());
        RemotingAclSignature.Sign(signed, AccessKey, Secret);
        Assert.Equal(ResponseCode.Success, (await c.InvokeAsync(signed)).Code);

        // A signed request whose body was altered on the way fails the check.
        var tampered = RemotingCommand.Request(RequestCode.SendMessageV2, SendHeader("PG", topic, Props()), "x"u8.ToArray());
        RemotingAclSignature.Sign(tampered, AccessKey, Secret);
        tampered.Body = "y"u8.ToArray();
        Assert.Equal(ResponseCode.NoPermission, (await c.InvokeAsync(tampered)).Code);
    }

    /// <summary>RECALL_MESSAGE is checked like every request (until 2026-12-06 it was REQUEST_CODE_NOT_SUPPORTED).</summary>
    [Fact]
    public async Task An_unsigned_recall_is_refused_and_a_signed_one_is_served()
    {
        await using var c = await RemotingTestClient.ConnectAsync(_broker.RemotingPort);
        string topic = Unique("AclRcl");
        string due = (DateTimeOffset.UtcNow.ToUnixTimeMilliseconds() + 60_000).ToString(System.Globalization.CultureInfo.InvariantCulture);
        var send = RemotingCommand.Request(RequestCode.SendMessageV2, SendHeader("PG", topic, Props(null, null, null, (MessageConst.TimerDeliverMs, due))), "x"u8.ToArray());
        RemotingAclSignature.Sign(send, AccessKey, Secret);
        var sent = await c.InvokeAsync(send);
        Assert.Equal(ResponseCode.Success, sent.Code);
        var header = new Dictionary<string, string> { ["producerGroup"] = "PG", ["topic"] = topic, ["recallHandle"] = sent.Get("recallHandle")! };

        Assert.Equal(ResponseCode.NoPermission, (await c.InvokeAsync(RequestCode.RecallMessage, header)).Code);
        var signed = RemotingCommand.Request(RequestCode.RecallMessage, header);
        RemotingAclSignature.Sign(signed, AccessKey, Secret);
        var recalled = await c.InvokeAsync(signed);
        Assert.True(recalled.Code == ResponseCode.Success, $"{recalled.Code} {recalled.Remark}");
    }

    /// <summary>CHECK_CLIENT_CONFIG is checked like every request (until 2026-12-06 it was REQUEST_CODE_NOT_SUPPORTED).</summary>
    [Fact]
    public async Task An_unsigned_check_client_config_is_refused_and_a_signed_one_is_served()
    {
        await using var c = await RemotingTestClient.ConnectAsync(_broker.RemotingPort);
        var body = System.Text.Json.JsonSerializer.SerializeToUtf8Bytes(new
        {
            clientId = c.ClientId, group = "AclCheckGroup",
            subscriptionData = new { topic = Unique("AclChk"), subString = "a > 1", expressionType = "SQL92", subVersion = 1L },
        });

        Assert.Equal(ResponseCode.NoPermission, (await c.InvokeAsync(RequestCode.CheckClientConfig, body: body)).Code);
        var signed = RemotingCommand.Request(RequestCode.CheckClientConfig, null, body);
        RemotingAclSignature.Sign(signed, AccessKey, Secret);
        var checkedOk = await c.InvokeAsync(signed);
        Assert.True(checkedOk.Code == ResponseCode.Success, $"{checkedOk.Code} {checkedOk.Remark}");
    }

    [Fact]
    [Trait("Category", "Compat")]
    public async Task Ali_ons_signs_its_requests_and_is_served_only_with_the_right_secret()
    {
        string topic = Unique("AclOns");
        var ok = await NodeScript.RunAsync("ons.js", TimeSpan.FromSeconds(60), "produce", _broker.NameServer, topic,
            System.Text.Json.JsonSerializer.Serialize(new { count = 1, prefix = "signed", tag = "T", accessKey = AccessKey, secretKey = Secret }));
        Assert.True(ok.ExitCode == 0, ok.Describe());
        Assert.Equal("SEND_OK", ok.Final.GetProperty("sent")[0].GetProperty("status").GetString());

        var denied = await NodeScript.RunAsync("ons.js", TimeSpan.FromSeconds(60), "produce", _broker.NameServer, topic,
            System.Text.Json.JsonSerializer.Serialize(new { count = 1, prefix = "bad", tag = "T", accessKey = AccessKey, secretKey = "wrong" }));
        Assert.NotEqual(0, denied.ExitCode);
        Assert.Contains("Check signature failed", denied.Describe());
    }
}
