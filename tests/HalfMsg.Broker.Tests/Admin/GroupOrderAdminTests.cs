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

        Assert.Equal(HttpStatusCode.OK, (await SetOrder("ord-g", "Concurrent")).Status);
        Assert.Equal("concurrent", (await _http.GetFromJsonAsync<JsonElement>("/api/groups/ord-g")).GetProperty("order").GetString());

        // Back to the broker's default: nothing else is known of the group, so it is not found.
        Assert.Equal(HttpStatusCode.OK, (await SetOrder("ord-g", "default")).Status);
        Assert.Equal(GroupOrder.NotConfigured, _host.Engine.GroupOrderOf("ord-g"));
        Assert.Equal(HttpStatusCode.NotFound, (await _http.GetAsync("/api/groups/ord-g")).StatusCode);
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
