using System.Text.Json;
using System.Text.RegularExpressions;

namespace HalfMsg.Broker.Tests.Admin;

/// <summary>
/// Review (ops, 2026-12-06): /health answers "degraded" (damage found and contained, an operator must look) or "disk-full", but the
/// dashboard's health card showed only ready/starting (DashboardEndpoints.Overview), so the overview said "ready".
/// </summary>
public sealed class DashboardHealthTests() : InProcessAdminHost("ops-health")
{
    [Fact]
    public async Task The_dashboard_health_card_says_degraded_when_health_does()
    {
        _host.Engine.Health.ReportDegraded("review: a damaged record was skipped");
        var health = JsonDocument.Parse(await _http.GetStringAsync("/health")).RootElement;
        Assert.Equal("degraded", health.GetProperty("status").GetString());
        string page = await _http.GetStringAsync("/dashboard");
        var card = Regex.Match(page, "data-testid=\"status\"><div class=\"v\">(.*?)</div>").Groups[1].Value;
        Assert.Contains("degraded", card);
        Assert.Contains("review: a damaged record was skipped", page); // and why, as /health says
    }
}
