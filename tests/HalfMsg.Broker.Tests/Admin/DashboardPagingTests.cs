using HalfMsg.Broker.Core.Model;

namespace HalfMsg.Broker.Tests.Admin;

/// <summary>The dashboard's transactions page past its first 1,000 halves: until 2026-12-05 it looked at the oldest 1,000
/// only, so "newest first" showed the 1,000th and the filters missed every later half (found by review).</summary>
public sealed class DashboardPagingTests() : InProcessAdminHost("dashboard-paging")
{
    private static string FirstRow(string html)
    {
        int at = html.IndexOf("data-tx=\"", StringComparison.Ordinal);
        Assert.True(at >= 0, "no transaction row");
        at += "data-tx=\"".Length;
        return html[at..html.IndexOf('"', at)];
    }

    [Fact]
    public async Task Newest_first_and_the_filters_reach_past_the_first_thousand_halves()
    {
        for (int i = 0; i < 1050; i++)
        {
            string topic = i == 1030 ? "late-topic" : "many";
            Assert.True((await _host.Engine.SendHalfAsync(new MessageDraft { Topic = topic, MessageId = $"tx-{i:D4}", Body = new byte[] { 1 } }, "pg", null, null)).IsOk);
        }

        string newest = await _http.GetStringAsync("/dashboard/transactions?view=pending&sort=newest");
        Assert.Equal("tx-1049", FirstRow(newest));
        Assert.Contains("1000 shown of 1050 pending", newest);
        string oldest = await _http.GetStringAsync("/dashboard/transactions?view=pending&sort=oldest");
        Assert.Equal("tx-0000", FirstRow(oldest));

        string filtered = await _http.GetStringAsync("/dashboard/transactions?view=pending&topic=late-topic");
        Assert.Equal("tx-1030", FirstRow(filtered));
        Assert.Contains("1 shown of 1050 pending", filtered);
    }
}
