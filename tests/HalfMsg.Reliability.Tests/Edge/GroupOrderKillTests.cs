using System.Text.Json;
using HalfMsg.ProducerClient;
using HalfMsg.TestKit;
using Xunit.Abstractions;

namespace HalfMsg.Reliability.Tests.Edge;

/// <summary>
/// A consumer group's order mode, answered once durable, survives a kill -9 of the real broker process: rebuilt by
/// replay of the log, and read from a checkpoint that covers its record.
/// </summary>
[Collection("edge")]
public sealed class GroupOrderKillTests(ITestOutputHelper output)
{
    private static readonly HttpClient Http = new() { Timeout = TimeSpan.FromSeconds(10) };

    private static async Task SetOrderAsync(BrokerProcess broker, string group, string mode)
    {
        using var response = await Http.PostAsync($"{broker.AdminUrl}/api/groups/{group}/order?mode={mode}", null);
        Assert.True(response.IsSuccessStatusCode, await response.Content.ReadAsStringAsync());
    }

    private static async Task<string?> OrderOfAsync(BrokerProcess broker, string group)
    {
        var (status, body) = await Admin.GetJsonAsync($"{broker.AdminUrl}/api/groups/{group}");
        return status == 200 ? body.GetProperty("order").GetString() : $"HTTP {status}";
    }

    private static async Task<long> CheckpointsAsync(BrokerProcess broker)
    {
        JsonElement stats = (await Admin.GetJsonAsync(broker.AdminUrl + "/api/stats")).Body;
        return stats.GetProperty("checkpointsWhole").GetInt64() + stats.GetProperty("checkpointsDelta").GetInt64();
    }

    [Fact]
    public async Task The_order_mode_survives_kill_9_by_replay_and_by_checkpoint()
    {
        await using var broker = await BrokerProcess.StartAsync("--checkpoint-every", "100");
        try
        {
            await SetOrderAsync(broker, "kill-orderly", "orderly");
            await SetOrderAsync(broker, "kill-concurrent", "concurrent");
            broker.Kill();                                                    // SIGKILL: no final checkpoint
            await broker.RestartAsync();
            Assert.Equal("orderly", await OrderOfAsync(broker, "kill-orderly"));
            Assert.Equal("concurrent", await OrderOfAsync(broker, "kill-concurrent"));

            // Then a checkpoint that covers the record: enough records after it for one (--checkpoint-every 100).
            await SetOrderAsync(broker, "kill-late", "orderly");
            await SetOrderAsync(broker, "kill-concurrent", "default");
            long before = await CheckpointsAsync(broker);
            await using (var producer = await Producer.StartAsync(new ProducerOptions { Endpoints = broker.Endpoint, Topics = ["kill-order"] }))
            {
                for (int i = 0; i < 150; i++) await producer.SendAsync(new Message("kill-order", $"m{i}"));
            }
            await Admin.WaitForAsync(async () => await CheckpointsAsync(broker) > before, TimeSpan.FromSeconds(60), "a checkpoint after the settings");
            broker.Kill();
            await broker.RestartAsync();
            Assert.Equal("orderly", await OrderOfAsync(broker, "kill-orderly"));
            Assert.Equal("orderly", await OrderOfAsync(broker, "kill-late"));
            Assert.Equal("HTTP 404", await OrderOfAsync(broker, "kill-concurrent"));  // set back to default: nothing left of it
        }
        catch
        {
            output.WriteLine(broker.Output[^Math.Min(broker.Output.Length, 20_000)..]);
            throw;
        }
    }
}
