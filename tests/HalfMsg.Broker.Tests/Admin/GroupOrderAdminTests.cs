using System.Net;
using System.Net.Http.Json;
using System.Text.Json;
using HalfMsg.Broker.Core;

namespace HalfMsg.Broker.Tests.Admin;

/// <summary>POST /api/groups/{group}/order and the mode in GET /api/groups/{group}, against a real in-process host.</summary>
public sealed class GroupOrderAdminTests() : InProcessAdminHost("grouporder")
{
    private async Task<(HttpStatusCode Status, JsonElement Body)> SetOrder(string group, string? mode)
    {
        var response = await _http.PostAsync($"/api/groups/{Uri.EscapeDataString(group)}/order" + (mode is null ? "" : $"?mode={Uri.EscapeDataString(mode)}"), null);
        return (response.StatusCode, await response.Content.ReadFromJsonAsync<JsonElement>());
    }

    [Fact]
    public async Task A_group_is_configured_before_it_receives_and_shows_its_mode()
    {
        var (status, body) = await SetOrder("ord-g", "orderly");
        Assert.Equal(HttpStatusCode.OK, status);
        Assert.Equal("orderly", body.GetProperty("order").GetString());
        Assert.Equal(GroupOrder.Orderly, _host.Engine.GroupOrderOf("ord-g"));
        var shown = await _http.GetFromJsonAsync<JsonElement>("/api/groups/ord-g");
        Assert.Equal("orderly", shown.GetProperty("order").GetString());
        // The dashboard lists it and has its page, as the API does (until the evening session of 2026-12-06 a group
        // configured before any consumer came was missing from the list and its page answered 404).
        Assert.Contains("<td class=\"order\">orderly</td>", GroupRow(await _http.GetStringAsync("/dashboard/groups"), "ord-g"));
        var page = await _http.GetAsync("/dashboard/groups/ord-g");
        Assert.Equal(HttpStatusCode.OK, page.StatusCode);
        Assert.Contains("<b data-testid=\"order\">orderly</b>", await page.Content.ReadAsStringAsync());

        Assert.Equal(HttpStatusCode.OK, (await SetOrder("ord-g", "Concurrent")).Status);
        Assert.Equal("concurrent", (await _http.GetFromJsonAsync<JsonElement>("/api/groups/ord-g")).GetProperty("order").GetString());

        // Back to the broker's default: nothing else is known of the group, so it is not found.
        Assert.Equal(HttpStatusCode.OK, (await SetOrder("ord-g", "default")).Status);
        Assert.Equal(GroupOrder.NotConfigured, _host.Engine.GroupOrderOf("ord-g"));
        Assert.Equal(HttpStatusCode.NotFound, (await _http.GetAsync("/api/groups/ord-g")).StatusCode);
        Assert.Equal(HttpStatusCode.NotFound, (await _http.GetAsync("/dashboard/groups/ord-g")).StatusCode);
        Assert.DoesNotContain("data-group=\"ord-g\"", await _http.GetStringAsync("/dashboard/groups"));
    }

    [Fact]
    public async Task The_groups_order_mode_is_shown_by_the_api_and_the_dashboards_group_list_and_page()
    {
        // A pull group with progress, nobody configured it: served as the broker's default (message-group here).
        Assert.True((await _host.Engine.SendAsync(new HalfMsg.Broker.Core.Model.MessageDraft { Topic = "ord-shown-topic", MessageId = "ord-shown-1", Body = new byte[] { 1 } })).IsOk);
        Assert.True((await _host.Engine.CommitConsumerOffsetAsync("ord-shown", "ord-shown-topic", 0, 0)).IsOk);
        var api = await _http.GetFromJsonAsync<JsonElement>("/api/groups/ord-shown");
        Assert.Equal("default", api.GetProperty("order").GetString());
        Assert.Equal("message-group", api.GetProperty("effectiveOrder").GetString());
        Assert.Contains("<td class=\"order\">default (message-group)</td>", GroupRow(await _http.GetStringAsync("/dashboard/groups"), "ord-shown"));
        Assert.Contains("<b data-testid=\"order\">default (message-group)</b>", await _http.GetStringAsync("/dashboard/groups/ord-shown"));

        Assert.Equal(HttpStatusCode.OK, (await SetOrder("ord-shown", "orderly")).Status);
        api = await _http.GetFromJsonAsync<JsonElement>("/api/groups/ord-shown");
        Assert.Equal("orderly", api.GetProperty("order").GetString());
        Assert.Equal("orderly", api.GetProperty("effectiveOrder").GetString());
        Assert.Contains("<td class=\"order\">orderly</td>", GroupRow(await _http.GetStringAsync("/dashboard/groups"), "ord-shown"));
        Assert.Contains("<b data-testid=\"order\">orderly</b>", await _http.GetStringAsync("/dashboard/groups/ord-shown"));
    }

    /// <summary>The dashboard group list's row of the group (its HTML up to the row's end).</summary>
    internal static string GroupRow(string html, string group)
    {
        int start = html.IndexOf($"<tr data-group=\"{group}\">", StringComparison.Ordinal);
        Assert.True(start >= 0, $"no row for {group}");
        return html[start..html.IndexOf("</tr>", start, StringComparison.Ordinal)];
    }

    [Fact]
    public async Task A_bad_mode_or_group_is_refused_with_400_and_changes_nothing()
    {
        var (status, body) = await SetOrder("ord-bad", "fifo");
        Assert.Equal(HttpStatusCode.BadRequest, status);
        Assert.Contains("mode must be orderly, concurrent or default, not 'fifo'", body.GetProperty("error").GetString());
        Assert.Equal(HttpStatusCode.BadRequest, (await SetOrder("ord-bad", null)).Status);
        Assert.Equal(HttpStatusCode.BadRequest, (await SetOrder("bad group name", "orderly")).Status);
        var (cursorStatus, cursorBody) = await SetOrder(BrokerEngine.RedrivePrefix + "ord-bad", "orderly");
        Assert.Equal(HttpStatusCode.BadRequest, cursorStatus);
        Assert.Contains("re-drive cursor", cursorBody.GetProperty("error").GetString());
        Assert.Equal(GroupOrder.NotConfigured, _host.Engine.GroupOrderOf("ord-bad"));
    }
}

/// <summary>With --default-group-order concurrent, a group nobody configured is shown as served concurrent.</summary>
public sealed class GroupOrderDefaultConcurrentShownTests() : InProcessAdminHost("grouporder-conc", "--default-group-order", "concurrent")
{
    [Fact]
    public async Task A_group_not_configured_is_shown_with_the_brokers_default_concurrent()
    {
        Assert.True((await _host.Engine.SendAsync(new HalfMsg.Broker.Core.Model.MessageDraft { Topic = "conc-topic", MessageId = "conc-1", Body = new byte[] { 1 } })).IsOk);
        Assert.True((await _host.Engine.CommitConsumerOffsetAsync("conc-group", "conc-topic", 0, 0)).IsOk);
        var api = await _http.GetFromJsonAsync<JsonElement>("/api/groups/conc-group");
        Assert.Equal("default", api.GetProperty("order").GetString());
        Assert.Equal("concurrent", api.GetProperty("effectiveOrder").GetString());
        Assert.Contains("<td class=\"order\">default (concurrent)</td>", GroupOrderAdminTests.GroupRow(await _http.GetStringAsync("/dashboard/groups"), "conc-group"));
        Assert.Contains("<b data-testid=\"order\">default (concurrent)</b>", await _http.GetStringAsync("/dashboard/groups/conc-group"));
    }
}
