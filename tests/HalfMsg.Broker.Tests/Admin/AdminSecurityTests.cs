using HalfMsg.TestKit;
using System.Globalization;
using System.Net;
using System.Net.Sockets;
using System.Net.Http.Headers;
using System.Net.Http.Json;
using System.Text;
using System.Text.Json;
using HalfMsg.Broker.Tests.Infrastructure;

namespace HalfMsg.Broker.Tests.Admin;

/// <summary>One real broker process with credentials configured and Debug logging, shared by the security tests.</summary>
public sealed class SecuredBrokerFixture : IAsyncLifetime
{
    public const string AccessKey = "ops";
    public const string Secret = "s3cret-Zq81-never-logged";

    public BrokerProcess Broker { get; private set; } = null!;
    public HttpClient Http { get; private set; } = null!;

    public async Task InitializeAsync()
    {
        Broker = await BrokerProcess.StartWithEnvironmentAsync(new Dictionary<string, string>
        {
            [$"Broker__Credentials__{AccessKey}"] = Secret,
            ["Logging__LogLevel__Default"] = "Debug",
            ["Logging__LogLevel__Microsoft.AspNetCore"] = "Debug",
        });
        Http = new HttpClient { BaseAddress = new Uri($"http://127.0.0.1:{Broker.HttpPort}") };
    }

    public async Task DisposeAsync()
    {
        Http.Dispose();
        await Broker.DisposeAsync();
    }

    public static AuthenticationHeaderValue Basic(string user, string password)
        => new("Basic", Convert.ToBase64String(Encoding.UTF8.GetBytes($"{user}:{password}")));
}

public sealed class AdminSecurityTests(SecuredBrokerFixture fixture) : IClassFixture<SecuredBrokerFixture>
{
    private HttpClient Http => fixture.Http;

    private static HttpRequestMessage Request(string method, string path, AuthenticationHeaderValue? auth = null)
    {
        var r = new HttpRequestMessage(new HttpMethod(method), path);
        r.Headers.Authorization = auth;
        return r;
    }

    /// <summary>HTTP/2 without TLS from the first byte, as gRPC clients talk to the gRPC port.</summary>
    private static HttpRequestMessage Http2(HttpRequestMessage request)
    {
        request.Version = HttpVersion.Version20;
        request.VersionPolicy = HttpVersionPolicy.RequestVersionExact;
        return request;
    }

    private static AuthenticationHeaderValue Good => SecuredBrokerFixture.Basic(SecuredBrokerFixture.AccessKey, SecuredBrokerFixture.Secret);

    private static async Task<JsonElement> AssertJsonError(HttpResponseMessage response, HttpStatusCode status, string code)
    {
        Assert.Equal(status, response.StatusCode);
        Assert.Equal("application/json", response.Content.Headers.ContentType?.MediaType);
        var body = await response.Content.ReadFromJsonAsync<JsonElement>();
        Assert.Equal(code, body.GetProperty("code").GetString());
        Assert.False(string.IsNullOrWhiteSpace(body.GetProperty("error").GetString()));
        return body;
    }

    /// <summary>Every kind of admin request: reads, each state change, the dashboard, the metrics.</summary>
    public static TheoryData<string, string> GuardedPaths => new()
    {
        { "GET", "/api/transactions/pending" },
        { "GET", "/api/stats" },
        { "POST", "/api/transactions/any-tx/commit" },
        { "POST", "/api/transactions/any-tx/rollback" },
        { "POST", "/api/transactions/any-tx/resume" },
        { "GET", "/dashboard" },
        { "GET", "/metrics" },
    };

    [Theory]
    [MemberData(nameof(GuardedPaths))]
    public async Task Unsigned_requests_are_refused_with_401_a_challenge_and_a_json_body(string method, string path)
    {
        var response = await Http.SendAsync(Request(method, path));
        await AssertJsonError(response, HttpStatusCode.Unauthorized, "Unauthorized");
        Assert.Equal("Basic", response.Headers.WwwAuthenticate.Single().Scheme);
    }

    [Theory]
    [InlineData(SecuredBrokerFixture.AccessKey, "wrong-secret")]
    [InlineData(SecuredBrokerFixture.AccessKey, "")]
    [InlineData("someone-else", SecuredBrokerFixture.Secret)]
    [InlineData("", SecuredBrokerFixture.Secret)]
    public async Task Wrongly_signed_requests_are_refused(string user, string password)
    {
        foreach (var (method, path) in new[] { ("GET", "/api/transactions/pending"), ("POST", "/api/transactions/any-tx/commit") })
            await AssertJsonError(await Http.SendAsync(Request(method, path, SecuredBrokerFixture.Basic(user, password))), HttpStatusCode.Unauthorized, "Unauthorized");
        var bearer = Request("GET", "/api/stats", new AuthenticationHeaderValue("Bearer", SecuredBrokerFixture.Secret));
        await AssertJsonError(await Http.SendAsync(bearer), HttpStatusCode.Unauthorized, "Unauthorized");
        var garbage = Request("GET", "/api/stats", new AuthenticationHeaderValue("Basic", "%%%not-base64"));
        await AssertJsonError(await Http.SendAsync(garbage), HttpStatusCode.Unauthorized, "Unauthorized");
    }

    [Fact]
    public async Task A_refusal_says_whether_credentials_were_missing_malformed_or_not_accepted()
    {
        async Task<string> ErrorOf(AuthenticationHeaderValue? auth)
            => (await AssertJsonError(await Http.SendAsync(Request("GET", "/api/stats", auth)), HttpStatusCode.Unauthorized, "Unauthorized"))
                .GetProperty("error").GetString()!;

        Assert.StartsWith("credentials required", await ErrorOf(null));
        Assert.StartsWith("the Authorization header is not HTTP Basic", await ErrorOf(new AuthenticationHeaderValue("Bearer", SecuredBrokerFixture.Secret)));
        Assert.StartsWith("the Authorization header is not HTTP Basic", await ErrorOf(new AuthenticationHeaderValue("Basic", "%%%not-base64")));
        Assert.StartsWith("the Authorization header is not HTTP Basic", await ErrorOf(new AuthenticationHeaderValue("Basic", Convert.ToBase64String("no-colon"u8.ToArray()))));
        // A wrong secret and an unknown key read the same: the answer does not tell which keys exist.
        string wrongSecret = await ErrorOf(SecuredBrokerFixture.Basic(SecuredBrokerFixture.AccessKey, "wrong-secret"));
        Assert.StartsWith("credentials not accepted", wrongSecret);
        Assert.Equal(wrongSecret, await ErrorOf(SecuredBrokerFixture.Basic("someone-else", SecuredBrokerFixture.Secret)));
        Assert.DoesNotContain(SecuredBrokerFixture.AccessKey, wrongSecret);
    }

    [Fact]
    public async Task Correct_credentials_reach_the_api_and_the_engine()
    {
        var pending = await Http.SendAsync(Request("GET", "/api/transactions/pending", Good));
        Assert.Equal(HttpStatusCode.OK, pending.StatusCode);
        // Reaches the engine: an unknown id is the engine's 404, not the guard's 401/403.
        await AssertJsonError(await Http.SendAsync(Request("POST", "/api/transactions/unknown-tx/commit", Good)), HttpStatusCode.NotFound, "NotFound");
    }

    [Theory]
    [InlineData("Origin", "http://evil.example")]
    [InlineData("Origin", "null")]
    [InlineData("Sec-Fetch-Site", "cross-site")]
    [InlineData("Sec-Fetch-Site", "same-site")]
    public async Task Cross_site_posts_are_refused_even_with_valid_credentials(string header, string value)
    {
        foreach (string path in new[] { "/api/transactions/unknown-tx/commit", "/api/transactions/unknown-tx/rollback", "/dashboard/transactions/unknown-tx/commit" })
        {
            var request = Request("POST", path, Good);
            request.Headers.TryAddWithoutValidation(header, value);
            await AssertJsonError(await Http.SendAsync(request), HttpStatusCode.Forbidden, "CrossSiteRequest");
        }
    }

    [Fact]
    public async Task Same_origin_posts_from_the_dashboard_pass_the_cross_site_check()
    {
        var request = Request("POST", "/api/transactions/unknown-tx/commit", Good);
        request.Headers.TryAddWithoutValidation("Origin", $"http://127.0.0.1:{fixture.Broker.HttpPort}");
        request.Headers.TryAddWithoutValidation("Sec-Fetch-Site", "same-origin");
        await AssertJsonError(await Http.SendAsync(request), HttpStatusCode.NotFound, "NotFound");
    }

    [Theory]
    [InlineData("evil.example")]
    [InlineData("evil.example:80")]
    [InlineData("127.0.0.1.evil.example")]
    public async Task A_foreign_Host_header_is_refused_even_with_valid_credentials(string host)
    {
        foreach (string path in new[] { "/api/transactions/pending", "/health", "/dashboard" })
        {
            var request = Request("GET", path, Good);
            request.Headers.Host = host;
            await AssertJsonError(await Http.SendAsync(request), HttpStatusCode.BadRequest, "HostNotAllowed");
        }
        var localhost = Request("GET", "/api/stats", Good);
        localhost.Headers.Host = $"localhost:{fixture.Broker.HttpPort}";
        Assert.Equal(HttpStatusCode.OK, (await Http.SendAsync(localhost)).StatusCode);
    }

    /// <summary>
    /// A refusal closes its connection: until 2026-12-06 a 401 kept the connection alive, so anyone who could reach the
    /// admin port held its connections with unauthenticated requests and kept the /health probes out.
    /// </summary>
    [Theory]
    [InlineData("GET /api/stats HTTP/1.1\r\nHost: 127.0.0.1:{0}\r\n\r\n", "401")]
    [InlineData("POST /api/transactions/any-tx/commit HTTP/1.1\r\nHost: 127.0.0.1:{0}\r\nContent-Length: 0\r\n\r\n", "401")]
    [InlineData("GET /health HTTP/1.1\r\nHost: evil.example\r\n\r\n", "400")]
    [InlineData("POST /api/transactions/any-tx/commit HTTP/1.1\r\nHost: 127.0.0.1:{0}\r\nAuthorization: {1}\r\nSec-Fetch-Site: cross-site\r\nContent-Length: 0\r\n\r\n", "403")]
    public async Task A_refused_request_is_answered_with_connection_close_and_the_connection_is_closed(string requestFormat, string status)
    {
        using var socket = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        await socket.ConnectAsync(IPAddress.Loopback, fixture.Broker.HttpPort);
        await socket.SendAsync(Encoding.ASCII.GetBytes(string.Format(CultureInfo.InvariantCulture, requestFormat, fixture.Broker.HttpPort, Good)));
        // Read until the broker closes the connection; a connection kept alive runs into the bound instead.
        var received = new MemoryStream();
        var buffer = new byte[4096];
        using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(30));
        bool closed = false;
        try
        {
            while (!closed)
            {
                int n = await socket.ReceiveAsync(buffer, SocketFlags.None, cts.Token);
                if (n == 0) closed = true;
                else received.Write(buffer, 0, n);
            }
        }
        catch (OperationCanceledException)
        {
        }
        string answer = Encoding.ASCII.GetString(received.ToArray());
        Assert.StartsWith($"HTTP/1.1 {status}", answer);
        Assert.Contains("\r\nConnection: close\r\n", answer, StringComparison.OrdinalIgnoreCase);
        Assert.True(closed, "the broker kept the refused connection open");
    }

    [Fact]
    public async Task Health_stays_open_for_probes_and_says_nothing_else()
    {
        var response = await Http.GetAsync("/health");
        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        var body = await response.Content.ReadFromJsonAsync<JsonElement>();
        Assert.Equal("ready", body.GetProperty("status").GetString());
        Assert.Single(body.EnumerateObject());
    }

    [Theory]
    [InlineData("GET", "/api/transactions/some-tx/commit", HttpStatusCode.MethodNotAllowed, "MethodNotAllowed")]
    [InlineData("DELETE", "/api/transactions/some-tx", HttpStatusCode.MethodNotAllowed, "MethodNotAllowed")]
    [InlineData("GET", "/api/no-such-endpoint", HttpStatusCode.NotFound, "NotFound")]
    [InlineData("GET", "/api/transactions/pending?limit=abc", HttpStatusCode.BadRequest, "BadRequest")]
    [InlineData("GET", "/api/transactions/pending?limit=0", HttpStatusCode.BadRequest, "BadRequest")]
    public async Task Every_4xx_of_the_admin_port_has_a_json_body(string method, string path, HttpStatusCode status, string code)
        => await AssertJsonError(await Http.SendAsync(Request(method, path, Good)), status, code);

    /// <summary>
    /// The admin API, the dashboard and the metrics live on the admin port only. ASP.NET Core matches a request against
    /// every mapped endpoint before the port's own pipeline runs, so until 2026-12-02 the gRPC port (the one that may be
    /// public) ran them with none of the admin port's checks: an unsigned POST there committed a transaction.
    /// </summary>
    [Theory]
    [MemberData(nameof(GuardedPaths))]
    [InlineData("GET", "/health")]
    [InlineData("GET", "/")]
    public async Task The_gRPC_port_serves_no_admin_endpoint_signed_or_not(string method, string path)
    {
        using var h2 = new HttpClient { BaseAddress = new Uri($"http://127.0.0.1:{fixture.Broker.GrpcPort}") };
        foreach (var auth in new[] { null, Good })
        {
            var response = await h2.SendAsync(Http2(Request(method, path, auth)));
            Assert.Equal(HttpVersion.Version20, response.Version);
            Assert.Equal(HttpStatusCode.NotFound, response.StatusCode);
            // A bare 404: not the engine's answer for an unknown transaction, which carries a JSON body.
            Assert.Empty(await response.Content.ReadAsByteArrayAsync());
        }
    }

    [Fact]
    public async Task The_gRPC_port_still_answers_an_unknown_gRPC_method_as_unimplemented()
    {
        using var h2 = new HttpClient { BaseAddress = new Uri($"http://127.0.0.1:{fixture.Broker.GrpcPort}") };
        foreach (string path in new[] { "/apache.rocketmq.v2.MessagingService/NoSuchMethod", "/no.such.Service/Call" })
        {
            var request = Request("POST", path);
            request.Content = new ByteArrayContent(new byte[5]);
            request.Content.Headers.ContentType = new MediaTypeHeaderValue("application/grpc");
            var response = await h2.SendAsync(Http2(request));
            await response.Content.ReadAsByteArrayAsync();
            string? status = response.TrailingHeaders.TryGetValues("grpc-status", out var t) ? t.Single()
                : response.Headers.TryGetValues("grpc-status", out var h) ? h.Single() : null;
            Assert.Equal("12", status); // UNIMPLEMENTED
        }
    }

    [Fact]
    public async Task The_admin_port_serves_no_gRPC_method_even_signed()
    {
        var request = Request("POST", "/apache.rocketmq.v2.MessagingService/QueryRoute", Good);
        request.Content = new ByteArrayContent(new byte[5]);
        request.Content.Headers.ContentType = new MediaTypeHeaderValue("application/grpc");
        await AssertJsonError(await Http.SendAsync(request), HttpStatusCode.NotFound, "NotFound");
    }

    [Fact]
    public async Task The_secret_never_appears_in_the_logs()
    {
        // Debug logging is on (fixture); send it right, wrong, and as a bearer token.
        await Http.SendAsync(Request("GET", "/api/stats", Good));
        await Http.SendAsync(Request("GET", "/api/stats", SecuredBrokerFixture.Basic(SecuredBrokerFixture.AccessKey, SecuredBrokerFixture.Secret + "x")));
        await Http.SendAsync(Request("GET", "/api/stats", new AuthenticationHeaderValue("Bearer", SecuredBrokerFixture.Secret)));
        var wrongHost = Request("GET", "/api/stats", Good);
        wrongHost.Headers.Host = "evil.example";
        await Http.SendAsync(wrongHost);
        string output = fixture.Broker.Output;
        Assert.Contains("auth on", output);   // the banner was logged, so the log is being captured
        Assert.DoesNotContain(SecuredBrokerFixture.Secret, output);
        Assert.DoesNotContain(Convert.ToBase64String(Encoding.UTF8.GetBytes($"{SecuredBrokerFixture.AccessKey}:{SecuredBrokerFixture.Secret}")), output);
    }
}

public sealed class MetricsSwitchTests
{
    [Fact]
    public async Task Metrics_anonymous_opens_only_the_metrics_endpoint()
    {
        await using var broker = await BrokerProcess.StartWithEnvironmentAsync(
            new Dictionary<string, string> { ["Broker__Credentials__ops"] = "pw-123456" }, "--metrics-anonymous", "true");
        using var http = new HttpClient { BaseAddress = new Uri($"http://127.0.0.1:{broker.HttpPort}") };
        var metrics = await http.GetAsync("/metrics");
        Assert.Equal(HttpStatusCode.OK, metrics.StatusCode);
        Assert.Contains("halfmsg_transactions_pending", await metrics.Content.ReadAsStringAsync());
        Assert.Equal(HttpStatusCode.Unauthorized, (await http.GetAsync("/api/stats")).StatusCode);
        Assert.Equal(HttpStatusCode.Unauthorized, (await http.GetAsync("/dashboard")).StatusCode);
    }
}
