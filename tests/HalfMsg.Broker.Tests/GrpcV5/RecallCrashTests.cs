using System.Text.Json;
using Apache.Rocketmq.V2;
using HalfMsg.Broker.Tests.Infrastructure;
using HalfMsg.TestKit;

namespace HalfMsg.Broker.Tests.GrpcV5;

/// <summary>A recall answered OK holds across a kill -9 of the broker process and its restart on the same data dir.</summary>
public sealed class RecallCrashTests
{
    private static async Task<long> CheckpointsAsync(BrokerProcess broker)
    {
        using var http = new HttpClient();
        using var stats = JsonDocument.Parse(await http.GetStringAsync($"{broker.AdminUrl}/api/stats"));
        return stats.RootElement.GetProperty("checkpointsWhole").GetInt64() + stats.RootElement.GetProperty("checkpointsDelta").GetInt64();
    }

    /// <summary>
    /// A send of the recalled message after its recall (same id, topic and delivery time) is accepted and dropped; after
    /// a kill -9 it is dropped again, and so is one more after the restart: rebuilt by replay of the recall's record
    /// (<paramref name="checkpointAfterRecall"/> false), or from a checkpoint that starts after that record (true: two
    /// checkpoints written after the recall was answered, so the second began after it).
    /// </summary>
    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public async Task A_send_after_the_recall_stays_undelivered_across_kill_9(bool checkpointAfterRecall)
    {
        await using BrokerProcess broker = checkpointAfterRecall ? await BrokerProcess.StartAsync("--checkpoint-every", "100") : await BrokerProcess.StartAsync();
        string topic = "recall-later-" + Guid.NewGuid().ToString("N")[..8];
        string group = "g-" + Guid.NewGuid().ToString("N")[..8];
        // Long enough for the restart and the send after it to come before the delivery time on a busy machine (a message
        // sent after its time is not delayed); the test waits for the control, due 1 ms later, not for the time.
        var due = DateTimeOffset.UtcNow.AddSeconds(20);
        var message = RecallTests.NewMessage(topic, "recalled", due);
        using (var client = new GrpcTestClient(broker.Endpoint))
        {
            var recalled = await RecallTests.SendAsync(client, message);
            await RecallTests.SendAsync(client, RecallTests.NewMessage(topic, "control", due.AddMilliseconds(1)));
            Assert.Equal(Code.Ok, (await RecallTests.RecallAsync(client, topic, recalled.RecallHandle)).Status.Code);
            if (checkpointAfterRecall)
            {
                long before = await CheckpointsAsync(broker);
                var deadline = DateTime.UtcNow.AddSeconds(60);
                while (await CheckpointsAsync(broker) < before + 2)
                {
                    Assert.True(DateTime.UtcNow < deadline, $"no two checkpoints after the recall in 60 s\n--- broker ---\n{broker.Output}");
                    for (int i = 0; i < 50; i++) await RecallTests.SendAsync(client, RecallTests.NewMessage(topic + "-filler", "f"));
                }
            }
            await RecallTests.SendAsync(client, message); // the producer's retry, after the recall (and the checkpoints)
        }

        broker.Kill();
        await broker.RestartAsync();

        using (var client = new GrpcTestClient(broker.Endpoint))
        {
            Assert.True(DateTimeOffset.UtcNow < due, "the restart took past the delivery time: the send below would not be delayed");
            await RecallTests.SendAsync(client, message);
            var got = await NamespaceTests.ReceiveAllAsync(client, topic, group, 1);
            Assert.True(got.Select(m => m.Body.ToStringUtf8()).SequenceEqual(["control"]),
                $"received [{string.Join(", ", got.Select(m => m.Body.ToStringUtf8()))}]\n--- broker ---\n{broker.Output}");
        }
    }

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
