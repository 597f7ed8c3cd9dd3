using System.Text.Json;
using HalfMsg.ProducerClient;
using HalfMsg.TestKit;
using Xunit.Abstractions;

namespace HalfMsg.Reliability.Tests.Edge;

/// <summary>
/// The retention limits hold as a user sets them, with the default checkpoint interval (200,000 records): large
/// messages are cut back to the size limit after a few megabytes, and a slow trickle by age, against the real broker
/// process. Until the checkpoints came by bytes and time as well, neither limit was applied before 200,000 records.
/// </summary>
[Collection("edge")]
public sealed class RetentionLimitTests(ITestOutputHelper output)
{
    [Fact]
    public async Task Large_messages_are_cut_back_to_the_size_limit_with_the_default_checkpoint_interval()
    {
        const long limit = 4L << 20;
        await using var broker = await BrokerProcess.StartAsync("--retention-size", "4MiB", "--retention-time", "0s");
        try
        {
            await using var producer = await Producer.StartAsync(new ProducerOptions { Endpoints = broker.Endpoint, Topics = ["large"] });
            var body = new byte[256 * 1024];
            for (int i = 0; i < 48; i++) await producer.SendAsync(new Message("large", body)); // 12 MiB, three times the limit

            long size = -1, cuts = 0;
            await Admin.WaitForAsync(async () =>
            {
                JsonElement stats = (await Admin.GetJsonAsync(broker.AdminUrl + "/api/stats")).Body;
                size = stats.GetProperty("logTailAddress").GetInt64() - stats.GetProperty("logBeginAddress").GetInt64();
                cuts = stats.GetProperty("retentionCuts").GetInt64();
                // The cut goes an eighth deeper than the limit asks, to a record start remembered every eighth written.
                return cuts >= 1 && size <= limit + limit / 8 + body.Length;
            }, TimeSpan.FromSeconds(60), "the log cut back to its 4 MiB limit");
            output.WriteLine($"log {size} bytes after {cuts} cut(s)");
            Assert.True(size >= limit * 7 / 8, $"cut too deep: {size} bytes left");
        }
        catch
        {
            output.WriteLine(broker.Output[^Math.Min(broker.Output.Length, 20_000)..]);
            throw;
        }
    }

    [Fact]
    public async Task A_slow_trickle_is_cut_by_age_with_the_default_checkpoint_interval()
    {
        await using var broker = await BrokerProcess.StartAsync("--retention-time", "4s");
        try
        {
            await using var producer = await Producer.StartAsync(new ProducerOptions { Endpoints = broker.Endpoint, Topics = ["trickle"] });
            await producer.SendAsync(new Message("trickle", "one message, older than the limit soon"));

            await Admin.WaitForAsync(async () =>
            {
                JsonElement stats = (await Admin.GetJsonAsync(broker.AdminUrl + "/api/stats")).Body;
                return stats.GetProperty("retentionCuts").GetInt64() >= 1 && stats.GetProperty("messagesExpired").GetInt64() >= 1;
            }, TimeSpan.FromSeconds(60), "the message expired by age");
        }
        catch
        {
            output.WriteLine(broker.Output[^Math.Min(broker.Output.Length, 20_000)..]);
            throw;
        }
    }
}
