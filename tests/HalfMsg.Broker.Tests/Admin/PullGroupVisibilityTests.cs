using System.Net;
using System.Text.Json;
using System.Text.RegularExpressions;
using HalfMsg.Broker.Core.Model;

namespace HalfMsg.Broker.Tests.Admin;

/// <summary>
/// Review (ops, 2026-12-06): a RocketMQ 4 pull group (Remoting consumers, committed offsets) is shown by GET /api/groups/{group}
/// since 2026-12-05, but /metrics' rocketmq_consumer_lag_messages, the dashboard's group list and group page, and
/// /api/topics' consumerGroups know only lease (gRPC) groups: a Remoting consumer that stops consuming has no lag series
/// to alert on and is absent from the dashboard.
/// </summary>
public sealed class PullGroupVisibilityTests() : InProcessAdminHost("ops-pull")
{
    private async Task PullGroupWithLagAsync()
    {
        for (int i = 0; i < 5; i++)
            Assert.True((await _host.Engine.SendAsync(new MessageDraft { Topic = "pull-orders", MessageId = $"p-{i}", Body = new byte[] { 1 } })).IsOk);
        // What a Remoting consumer's periodic UPDATE_CONSUMER_OFFSET does: consumed 2 of 5 on queue 0.
        Assert.True((await _host.Engine.CommitConsumerOffsetAsync("pull-consumers", "pull-orders", 0, 2)).IsOk);
        // The API sees it (fixed 2026-12-05).
        var api = JsonDocument.Parse(await _http.GetStringAsync("/api/groups/pull-consumers")).RootElement;
        Assert.Equal(3, api.GetProperty("topics")[0].GetProperty("lag").GetInt64());
    }

    [Fact]
    public async Task A_pull_group_has_a_consumer_lag_series_in_metrics()
    {
        await PullGroupWithLagAsync();
        string text = await _http.GetStringAsync("/metrics");
        Assert.Matches(new Regex(@"^rocketmq_consumer_lag_messages\{[^}]*consumer_group=""pull-consumers""[^}]*\} 3$", RegexOptions.Multiline), text);
    }

    [Fact]
    public async Task A_pull_group_is_on_the_dashboard_and_in_the_topic_list()
    {
        await PullGroupWithLagAsync();
        var topics = JsonDocument.Parse(await _http.GetStringAsync("/api/topics")).RootElement;
        var orders = topics.EnumerateArray().Single(t => t.GetProperty("name").GetString() == "pull-orders");
        Assert.Contains("pull-consumers", orders.GetProperty("consumerGroups").EnumerateArray().Select(g => g.GetString()));
        Assert.Contains("data-group=\"pull-consumers\"", await _http.GetStringAsync("/dashboard/groups"));
        Assert.Equal(HttpStatusCode.OK, (await _http.GetAsync("/dashboard/groups/pull-consumers")).StatusCode);
    }

    /// <summary>
    /// Left by the evening session of 2026-12-06: a group known only by its members (a consumer connected, heartbeating,
    /// that has not received or pulled yet) had its page and its API answer, but the dashboard's group list left it out.
    /// </summary>
    [Fact]
    public async Task A_group_seen_only_as_members_is_in_the_dashboards_group_list()
    {
        _host.Engine.Consumers.Seen("members-only", "starting-consumer", "gRPC");
        Assert.Equal(HttpStatusCode.OK, (await _http.GetAsync("/api/groups/members-only")).StatusCode);
        string row = GroupOrderAdminTests.GroupRow(await _http.GetStringAsync("/dashboard/groups"), "members-only");
        Assert.Contains("<code>starting-consumer</code>", row);
        Assert.Contains("href=\"/dashboard/groups/members-only\"", row);
        Assert.Equal(HttpStatusCode.OK, (await _http.GetAsync("/dashboard/groups/members-only")).StatusCode);
        Assert.DoesNotContain("data-testid=\"groups-not-listed\"", await _http.GetStringAsync("/dashboard/groups"));
    }

    /// <summary>Members name groups freely (up to 100,000 members in all): the list shows at most 1,000 groups known only
    /// by their members, and says how many there are.</summary>
    [Fact]
    public async Task The_group_list_shows_at_most_a_thousand_groups_known_only_by_their_members()
    {
        // A group listed anyway (configured) whose name sorts first, with a member, does not take one of the 1,000
        // places (the review of the change found it did: a members-only group after ordinary ones was left out).
        Assert.True((await _host.Engine.SetGroupOrderAsync("aaa-configured", HalfMsg.Broker.Core.GroupOrder.Concurrent, CancellationToken.None)).IsOk);
        _host.Engine.Consumers.Seen("aaa-configured", "c", "gRPC");
        for (int i = 0; i < 1005; i++) _host.Engine.Consumers.Seen($"mo-{i:D4}", "c", "Remoting");
        string html = await _http.GetStringAsync("/dashboard/groups");
        Assert.Contains("<tr data-group=\"aaa-configured\">", html);
        Assert.Contains("<tr data-group=\"mo-0999\">", html);
        Assert.Contains("<tr data-group=\"mo-0000\">", html);
        Assert.DoesNotContain("<tr data-group=\"mo-1004\">", html);
        Assert.Contains("data-testid=\"groups-not-listed\"", html);
        Assert.Contains("of 1005", html);
        Assert.Equal(HttpStatusCode.OK, (await _http.GetAsync("/dashboard/groups/mo-1004")).StatusCode);
    }
}
