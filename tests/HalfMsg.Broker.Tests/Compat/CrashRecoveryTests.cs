using System.Net.Sockets;
using System.Text.Json;
using HalfMsg.Broker.Tests.Infrastructure;
using HalfMsg.TestKit;

namespace HalfMsg.Broker.Tests.Compat;

[Trait("Category", "Compat")]
public sealed class CrashRecoveryTests
{
    [Fact]
    public async Task Broker_killed_and_restarted_while_clients_run_loses_no_acknowledged_message()
    {
        await using BrokerProcess broker = await BrokerProcess.StartAsync();
        string topic = "Crash_" + Guid.NewGuid().ToString("N")[..8];
        const int count = 30;

        NodeScript.RunningScript consumer = NodeScript.Start("simple.js", TimeSpan.FromSeconds(90), broker.Endpoint, topic, "CrashGroup", "collect",
            JsonSerializer.Serialize(new { count, timeoutMs = 70_000, awaitMs = 2000, invisibleMs = 5000, distinctBy = "body" }));
        NodeScript.RunningScript producer = NodeScript.Start("produce.js", TimeSpan.FromSeconds(90), broker.Endpoint, topic,
            JsonSerializer.Serialize(new { count, intervalMs = 100, retryForMs = 30_000 }));

        // The consumer counts distinct bodies: a send whose reply the crash lost is retried by produce.js and stored twice,
        // under two message ids, and counting ids let that duplicate stand in for the last message (seen once under load).
        // Crash once about a third of the messages were acknowledged to the producer.
        var until = DateTime.UtcNow.AddSeconds(30);
        while (DateTime.UtcNow < until && !producer.HasLine(l => l.TryGetProperty("i", out var i) && i.GetInt32() >= 10))
        {
            await Task.Delay(50);
        }

        broker.Kill();
        // Not a pause: the clients run into the dead broker before it comes back (produce.js prints a retry line for a
        // send that failed); the outage lasts until they have.
        await RemotingBroker.EventuallyAsync(() => Task.FromResult(producer.HasLine(l => l.TryGetProperty("retry", out _))), seen => seen,
            TimeSpan.FromSeconds(60), "a send of the producer failed against the killed broker");
        await broker.RestartAsync();

        NodeScript.Result produced = await producer.WaitAsync();
        Assert.True(produced.ExitCode == 0, produced.Describe() + "\n--- broker ---\n" + broker.Output);
        NodeScript.Result consumed = await consumer.WaitAsync();
        Assert.True(consumed.ExitCode == 0, consumed.Describe() + "\n--- broker ---\n" + broker.Output);

        HashSet<string> acknowledged = [.. produced.Final.GetProperty("sent").EnumerateArray().Select(s => s.GetProperty("id").GetString()!)];
        HashSet<string> received = [.. consumed.Final.GetProperty("got").EnumerateArray().Select(s => s.GetProperty("id").GetString()!)];
        Assert.Equal(count, acknowledged.Count);
        // Counting distinct bodies still lets the consumer stop with only the unacknowledged copy of a retried send (same
        // body, the id the producer never saw acknowledged) and not the acknowledged one: whatever acknowledged id is
        // still missing is waited for by id, in the same group, before judging.
        var orphans = received.Except(acknowledged).ToList();
        var missing = acknowledged.Except(received).ToList();
        NodeScript.Result? second = null;
        if (missing.Count > 0)
        {
            second = await NodeScript.RunAsync("simple.js", TimeSpan.FromSeconds(60), broker.Endpoint, topic, "CrashGroup", "collect",
                JsonSerializer.Serialize(new { ids = missing, timeoutMs = 40_000, awaitMs = 2000, invisibleMs = 5000 }));
            received.UnionWith(second.Final.GetProperty("got").EnumerateArray().Select(s => s.GetProperty("id").GetString()!));
        }
        var lost = acknowledged.Except(received).ToList();
        Assert.True(lost.Count == 0, $"{lost.Count} acknowledged messages never received: {string.Join(", ", lost)}; {orphans.Count} received messages were never acknowledged (retried sends): {string.Join(", ", orphans)}\n--- consumer ---\n{consumed.Describe()}\n--- second consumer ---\n{second?.Describe()}\n--- producer ---\n{produced.Describe()}\n--- broker ---\n{broker.Output}");
    }

    [Fact]
    public async Task Garbage_on_the_grpc_port_does_not_stop_the_broker_serving_others()
    {
        await using BrokerProcess broker = await BrokerProcess.StartAsync();
        byte[][] payloads =
        [
            "GET / HTTP/1.1\r\nHost: x\r\n\r\n"u8.ToArray(),
            [.. "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"u8.ToArray(), 0xFF, 0xFF, 0xFF, 0x09, 0x00, 0x00, 0x00, 0x00, 0x01, 1, 2, 3],
            [.. Enumerable.Range(0, 4096).Select(i => (byte)(i * 31 + 7))],
        ];
        foreach (byte[] payload in payloads)
        {
            using var socket = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
            await socket.ConnectAsync("127.0.0.1", broker.GrpcPort);
            await socket.SendAsync(payload);
            var buffer = new byte[4096];
            using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(5));
            try
            {
                while (await socket.ReceiveAsync(buffer, SocketFlags.None, cts.Token) > 0)
                {
                }
            }
            catch (Exception ex) when (ex is OperationCanceledException or SocketException)
            {
                // the server may keep the connection open or reset it: both are fine
            }
        }

        string topic = "AfterGarbage_" + Guid.NewGuid().ToString("N")[..8];
        NodeScript.Result sent = await NodeScript.RunAsync("produce.js", TimeSpan.FromSeconds(30), broker.Endpoint, topic, "{\"count\":1}");
        Assert.True(sent.ExitCode == 0, sent.Describe() + "\n--- broker ---\n" + broker.Output);
        NodeScript.Result got = await NodeScript.RunAsync("simple.js", TimeSpan.FromSeconds(30), broker.Endpoint, topic, "G", "collect",
            "{\"count\":1,\"timeoutMs\":8000}");
        Assert.Equal(1, got.Final.GetProperty("got").GetArrayLength());
    }
}
