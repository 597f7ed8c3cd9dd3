using System.Collections.Concurrent;
using Microsoft.Playwright;

namespace HalfMsg.Ops.Tests;

/// <summary>
/// The dashboard over HTTPS (<c>--admin-tls auto</c>, the default, with the broker's self-signed certificate) in a real
/// browser, with admin credentials on: pages load with their data, a confirmed action posts and comes back, the JSON API
/// answers in the same context, and every request the browser made stayed on https (no absolute http:// link, form
/// action or redirect, which a browser would block as mixed content or send in clear). The browser is told to accept
/// the self-signed certificate, as an operator who accepted its warning. Until 2026-12-07 the dashboard was tried over
/// plain HTTP only. A broker of its own: the action changes state.
/// </summary>
public sealed class DashboardHttpsTests(OpsBroker broker, BrowserFixture browser) : IClassFixture<OpsBroker>, IClassFixture<BrowserFixture>, IAsyncLifetime
{
    private IBrowserContext _context = null!;
    private IPage _page = null!;
    private readonly ConcurrentQueue<string> _requests = new();
    private readonly ConcurrentQueue<string> _failures = new();
    private readonly ConcurrentQueue<string> _console = new();

    private string Https => $"https://127.0.0.1:{broker.HttpPort}";

    public async Task InitializeAsync()
    {
        _context = await browser.Browser.NewContextAsync(new BrowserNewContextOptions
        {
            BaseURL = Https,
            IgnoreHTTPSErrors = true,
            HttpCredentials = new HttpCredentials { Username = OpsBroker.AccessKey, Password = OpsBroker.Secret },
            ViewportSize = new ViewportSize { Width = 1200, Height = 800 },
        });
        _context.SetDefaultTimeout(120_000);
        _context.SetDefaultNavigationTimeout(120_000);
        _page = await _context.NewPageAsync();
        _page.Request += (_, r) => _requests.Enqueue($"{r.Method} {r.Url}");
        _page.RequestFailed += (_, r) => _failures.Enqueue($"{r.Method} {r.Url}: {r.Failure}");
        _page.Response += (_, r) => { if (r.Status >= 400) _failures.Enqueue($"{r.Request.Method} {r.Url}: HTTP {r.Status}"); };
        // The browser's own request for /favicon.ico is a 404 (the dashboard has none, over http as over https).
        _page.Console += (_, m) =>
        {
            if (m.Type is "error" or "warning" && !m.Location.StartsWith($"{Https}/favicon.ico", StringComparison.Ordinal))
                _console.Enqueue($"{m.Type}: {m.Text} ({m.Location})");
        };
    }

    public async Task DisposeAsync() => await _context.DisposeAsync();

    [Fact]
    public async Task The_dashboard_over_https_with_the_self_signed_certificate_loads_its_pages_and_posts_an_action()
    {
        // The root redirects to the overview, over https.
        var response = await _page.GotoAsync("/");
        Assert.Equal(200, response!.Status);
        Assert.StartsWith($"{Https}/dashboard", _page.Url);
        Assert.Equal("Overview · HalfMsgBroker", await _page.TitleAsync());
        Assert.Equal("ready", await _page.GetByTestId("status").Locator(".v").InnerTextAsync());
        Assert.Equal(OpsBroker.ParkedCount.ToString(), await _page.GetByTestId("parked").Locator(".v").InnerTextAsync());
        Assert.Equal(1, await _page.Locator("svg[aria-label='Message rates per second']").CountAsync());

        // Links the page offers are relative or https (none to http://, which would leave TLS).
        var hrefs = await _page.Locator("a[href]").EvaluateAllAsync<string[]>("els => els.map(e => e.href)");
        Assert.NotEmpty(hrefs);
        Assert.All(hrefs, h => Assert.StartsWith("https://", h));

        await _page.GotoAsync("/dashboard/topics");
        Assert.Contains(OpsBroker.Consumers, await _page.Locator($"tr[data-topic='{OpsBroker.PendingTopic}']").InnerTextAsync());

        // A confirmed action: the form posts over https, passes the admin port's same-origin check, and is redirected
        // back over https with its result.
        await _page.GotoAsync("/dashboard/transactions?view=parked");
        Assert.Equal(OpsBroker.ParkedCount, await _page.Locator("tr[data-tx]").CountAsync());
        var actions = await _page.Locator("form[method=post]").EvaluateAllAsync<string[]>("els => els.map(e => e.action)");
        Assert.All(actions, a => Assert.StartsWith($"{Https}/", a));
        _page.Dialog += (_, d) => _ = d.AcceptAsync();
        await _page.Locator("tr[data-tx='ops-parked-0']").GetByRole(AriaRole.Button, new() { Name = "Commit" }).ClickAsync();
        await _page.GetByRole(AriaRole.Status).WaitForAsync();
        Assert.Equal("Transaction ops-parked-0 committed.", await _page.GetByRole(AriaRole.Status).InnerTextAsync());
        Assert.StartsWith($"{Https}/dashboard/transactions", _page.Url);
        Assert.Null(broker.Engine.FindTransaction("ops-parked-0"));

        // The JSON API in the same browser context (its credentials, the accepted certificate).
        var stats = await _context.APIRequest.GetAsync("/api/stats");
        Assert.Equal(200, stats.Status);
        Assert.Contains("\"halvesStored\"", await stats.TextAsync());

        Assert.True(_failures.IsEmpty, "failed requests: " + string.Join("; ", _failures));
        Assert.True(_console.IsEmpty, "console: " + string.Join("; ", _console));
        Assert.Contains(_requests, r => r.StartsWith("POST ", StringComparison.Ordinal));
        Assert.All(_requests, r => Assert.Contains($" {Https}/", r));
    }
}
