using System.Net;

namespace HalfMsg.Broker.Tests.Admin;

/// <summary>
/// Review (ops, 2026-12-06): the README says to put the admin port behind TLS (a reverse proxy) when it is reached
/// remotely. The browser then posts the dashboard's own forms with Sec-Fetch-Site: same-origin and Origin: https://name;
/// the broker sees scheme http (and, unless the proxy keeps Host, another authority), so AdminGuard.IsCrossSite refused
/// every Commit / Rollback / Resume / Re-drive button with 403 CrossSiteRequest, although the browser itself vouched
/// same-origin. Now Sec-Fetch-Site decides alone when present; the Origin (host and port, not scheme) only without it.
/// </summary>
public sealed class DashboardBehindTlsProxyTests() : InProcessAdminHost("ops-tls")
{
    [Fact]
    public async Task A_same_origin_dashboard_post_through_a_TLS_proxy_reaches_the_engine()
    {
        // nginx: proxy_pass http://127.0.0.1:PORT; proxy_set_header Host $host (host kept, scheme lost).
        var request = new HttpRequestMessage(HttpMethod.Post, "/dashboard/transactions/no-such-tx/commit");
        request.Headers.Add("Sec-Fetch-Site", "same-origin");
        request.Headers.Add("Origin", $"https://{_http.BaseAddress!.Authority}");
        var response = await _http.SendAsync(request);
        Assert.NotEqual(HttpStatusCode.Forbidden, response.StatusCode); // 302 back to the list with the engine's "unknown"
    }

    [Theory]
    // A proxy that does not keep Host: the browser's origin names the proxy, the broker sees its own address.
    [InlineData("same-origin", "https://broker.example", false)]
    [InlineData("none", null, false)]
    // Fetch Metadata decides alone: a same-site page (another port or name of the site) stays refused, Origin or not.
    [InlineData("same-site", "http://127.0.0.1:{port}", true)]
    [InlineData("cross-site", "http://127.0.0.1:{port}", true)]
    // Without Fetch Metadata (older browsers): the Origin's host and port, whatever its scheme.
    [InlineData(null, "https://127.0.0.1:{port}", false)]
    [InlineData(null, "http://127.0.0.1:{port}", false)]
    [InlineData(null, "http://127.0.0.1:1", true)]
    [InlineData(null, "https://127.0.0.1", true)]
    [InlineData(null, "http://localhost:{port}", true)]
    [InlineData(null, "null", true)]
    public async Task Fetch_metadata_decides_when_present_and_the_origin_host_and_port_otherwise(string? site, string? origin, bool refused)
    {
        var request = new HttpRequestMessage(HttpMethod.Post, "/api/transactions/no-such-tx/commit");
        if (site is not null) request.Headers.Add("Sec-Fetch-Site", site);
        if (origin is not null) request.Headers.TryAddWithoutValidation("Origin", origin.Replace("{port}", _http.BaseAddress!.Port.ToString()));
        var response = await _http.SendAsync(request);
        // Not refused: the engine's 404 for the unknown transaction.
        Assert.Equal(refused ? HttpStatusCode.Forbidden : HttpStatusCode.NotFound, response.StatusCode);
    }
}
