using Apache.Rocketmq.V2;
using Google.Protobuf;
using HalfMsg.Broker.Tests.Infrastructure;
using HalfMsg.Protocol.Grpc;
using HalfMsg.TestKit;

namespace HalfMsg.Broker.Tests.GrpcV5;

/// <summary>
/// A bad client must not flood the broker's log: malformed protobuf, a gzip bomb, an HTTP/1.1 request, an unknown
/// method and a stalled upload leave nothing above Debug in the output of a broker at its default log levels.
/// </summary>
public sealed class BadInputLoggingTests
{
    [Fact]
    public async Task Bad_input_from_a_client_is_logged_at_Debug_only()
    {
        await using BrokerProcess broker = await BrokerProcess.StartAsync();
        using var client = new GrpcTestClient(broker.Endpoint);

        var (malformed, _) = await client.RawUnaryAsync(GrpcMethods.SendMessage, [0x0A, 100, 1, 2]);
        Assert.NotEqual(0, malformed);
        var bomb = await client.UnaryAsync(GrpcMethods.SendMessage,
            new SendMessageRequest { Messages = { new Message { Body = ByteString.CopyFrom(new byte[8 * 1024 * 1024]) } } },
            SendMessageResponse.Parser, new Dictionary<string, string> { ["grpc-internal-encoding-request"] = "gzip" });
        Assert.Equal((int)Grpc.Core.StatusCode.ResourceExhausted, bomb.GrpcStatus);
        Assert.NotNull(await RawGrpc.Http1RequestAsync(broker.GrpcPort, GrpcMethods.Heartbeat, TimeSpan.FromSeconds(10)));
        Assert.Equal(12, (await client.UnaryAsync("/no.such.Service/Method", new HeartbeatRequest(), HeartbeatResponse.Parser)).GrpcStatus);
        Assert.NotNull(await RawGrpc.StalledUploadAsync(broker.Endpoint, GrpcMethods.SendMessage, 100, 10, new Dictionary<string, string>(),
            TimeSpan.FromSeconds(20)));

        // Still serving, and a last call whose own Debug-free completion marks the end of the bad input.
        var heartbeat = await client.UnaryAsync(GrpcMethods.Heartbeat, new HeartbeatRequest(), HeartbeatResponse.Parser);
        Assert.Equal(Code.Ok, heartbeat.Response!.Status.Code);

        string output = broker.Output;
        Assert.Contains("ready", output);
        string[] loud = output.Split('\n').Where(l => l.StartsWith("warn:", StringComparison.Ordinal)
            || l.StartsWith("fail:", StringComparison.Ordinal) || l.StartsWith("crit:", StringComparison.Ordinal)).ToArray();
        Assert.True(loud.Length == 0, "logged above Debug:\n" + output);
    }
}
