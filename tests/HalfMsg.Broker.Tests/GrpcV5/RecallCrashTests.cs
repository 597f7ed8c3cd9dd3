using Apache.Rocketmq.V2;
using HalfMsg.Broker.Tests.Infrastructure;
using HalfMsg.TestKit;

namespace HalfMsg.Broker.Tests.GrpcV5;

/// <summary>A recall answered OK holds across a kill -9 of the broker process and its restart on the same data dir.</summary>
public sealed class RecallCrashTests
{
    [Fact]
    public async Task A_recall_answered_OK_survives_kill_9_and_the_message_is_never_delivered()
    {
        await using BrokerProcess broker = await BrokerProcess.StartAsync();
        string topic = "recall-crash-" + Guid.NewGuid().ToString("N")[..8];
        string group = "g-" + Guid.NewGuid().ToString("N")[..8];
        var due = DateTimeOffset.UtcNow.AddSeconds(8);
        SendResultEntry recalled;
        using (var client = new GrpcTestClient(broker.Endpoint))
        {
            recalled = await RecallTests.SendAsync(client, RecallTests.NewMessage(topic, "recalled", due));
            await RecallTests.SendAsync(client, RecallTests.NewMessage(topic, "control", due.AddMilliseconds(1)));
            Assert.Equal(Code.Ok, (await RecallTests.RecallAsync(client, topic, recalled.RecallHandle)).Status.Code);
        }

        broker.Kill();
        await broker.RestartAsync();

        using (var client = new GrpcTestClient(broker.Endpoint))
        {
            // Released after the restart (or before the kill, if the restart was slow): the control is due 1 ms after
            // the recalled one, so once it came, the recalled one would have too.
            var got = await NamespaceTests.ReceiveAllAsync(client, topic, group, 1);
            Assert.True(got.Select(m => m.Body.ToStringUtf8()).SequenceEqual(["control"]),
                $"received [{string.Join(", ", got.Select(m => m.Body.ToStringUtf8()))}]\n--- broker ---\n{broker.Output}");
            // The handle still names the message after the restart: a second recall is OK, as before it (not yet due) or
            // refused as past its time, never an unreadable handle.
            var again = await RecallTests.RecallAsync(client, topic, recalled.RecallHandle);
            Assert.DoesNotContain("invalid", again.Status.Message.Replace("timestamp invalid", "", StringComparison.Ordinal));
        }
    }
}
