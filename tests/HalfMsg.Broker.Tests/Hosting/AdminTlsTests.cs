using System.Globalization;
using System.Net;
using System.Net.Http.Headers;
using System.Security.Cryptography.X509Certificates;
using System.Text.RegularExpressions;
using Apache.Rocketmq.V2;
using HalfMsg.Broker.Hosting;
using HalfMsg.Broker.Tests.Admin;
using HalfMsg.Broker.Tests.Infrastructure;
using HalfMsg.Protocol.Grpc;
using HalfMsg.TestKit;

namespace HalfMsg.Broker.Tests.Hosting;

/// <summary>
/// TLS on the admin port (<c>--admin-tls</c>): the admin API, dashboard, /metrics and /health over HTTPS, with the
/// certificate of the gRPC and Remoting ports. Until 2026-12-07 the port spoke plain HTTP only, so the credentials of
/// every admin call crossed the network in clear unless a TLS reverse proxy stood in front of it.
/// </summary>
public sealed class AdminTlsTests
{
    private const string AccessKey = "ops";
    private const string Secret = "admin-tls-Secret-9913";

    private static string P(int port) => port.ToString(CultureInfo.InvariantCulture);

    private static AuthenticationHeaderValue Signed
        => new("Basic", Convert.ToBase64String(System.Text.Encoding.UTF8.GetBytes($"{AccessKey}:{Secret}")));

    /// <summary>An HTTPS client that accepts any certificate and records the one presented.</summary>
    private static HttpClient Https(Action<X509Certificate2>? seen = null) => new(new SocketsHttpHandler
    {
        SslOptions =
        {
            RemoteCertificateValidationCallback = (_, cert, _, _) =>
            {
                if (cert is not null) seen?.Invoke(new X509Certificate2(cert));
                return true;
            },
        },
    }) { Timeout = TimeSpan.FromSeconds(20) };

    private static HttpClient Plain() => new() { Timeout = TimeSpan.FromSeconds(20) };

    private static HttpRequestMessage Request(HttpMethod method, string url, AuthenticationHeaderValue? auth = null)
        => new(method, url) { Headers = { Authorization = auth } };

    [Fact]
    public async Task By_default_the_admin_port_answers_https_and_http_with_the_gRPC_ports_certificate_and_the_ready_line_says_so()
    {
        await using var broker = await BrokerProcess.StartWithEnvironmentAsync(new Dictionary<string, string> { [$"Broker__Credentials__{AccessKey}"] = Secret });
        string https = $"https://127.0.0.1:{broker.HttpPort}";
        X509Certificate2? adminCert = null;
        using var secure = Https(c => adminCert = c);

        // /health, and an authenticated admin call, over HTTPS; unsigned it is refused as over HTTP.
        using (var health = await secure.GetAsync($"{https}/health"))
        {
            Assert.Equal(HttpStatusCode.OK, health.StatusCode);
        }
        using (var topics = await secure.SendAsync(Request(HttpMethod.Get, $"{https}/api/topics", Signed)))
        {
            Assert.Equal(HttpStatusCode.OK, topics.StatusCode);
            Assert.StartsWith("[", (await topics.Content.ReadAsStringAsync()).TrimStart(), StringComparison.Ordinal);
        }
        using (var unsigned = await secure.SendAsync(Request(HttpMethod.Get, $"{https}/api/topics")))
        {
            Assert.Equal(HttpStatusCode.Unauthorized, unsigned.StatusCode);
        }

        // A browser without Fetch Metadata on the dashboard over https: its Origin is https://host:port, and a POST
        // from it passes the guard (the Origin's scheme is not compared); another port's page is still refused.
        string topic = "AdminTls_" + Guid.NewGuid().ToString("N")[..8];
        var fromPage = Request(HttpMethod.Post, $"{https}/api/topics/{topic}", Signed);
        fromPage.Headers.Add("Origin", https);
        using (var created = await secure.SendAsync(fromPage))
        {
            Assert.True(created.IsSuccessStatusCode, $"{(int)created.StatusCode} {await created.Content.ReadAsStringAsync()}");
        }
        var fromElsewhere = Request(HttpMethod.Post, $"{https}/api/topics/{topic}x", Signed);
        fromElsewhere.Headers.Add("Origin", $"https://127.0.0.1:{broker.HttpPort + 1}");
        using (var refused = await secure.SendAsync(fromElsewhere))
        {
            Assert.Equal(HttpStatusCode.Forbidden, refused.StatusCode);
        }

        // Plain HTTP on the same port, unchanged: probes, scrapers, the CLI and the dashboard keep their http:// URLs.
        using var plain = Plain();
        using (var health = await plain.GetAsync($"http://127.0.0.1:{broker.HttpPort}/health"))
        {
            Assert.Equal(HttpStatusCode.OK, health.StatusCode);
        }
        using (var topics = await plain.SendAsync(Request(HttpMethod.Get, $"http://127.0.0.1:{broker.HttpPort}/api/topics", Signed)))
        {
            Assert.Equal(HttpStatusCode.OK, topics.StatusCode);
            Assert.Contains(topic, await topics.Content.ReadAsStringAsync(), StringComparison.Ordinal);
        }

        // One certificate for every port: the self-signed one the gRPC port serves.
        string? grpcCert = null;
        using (var grpc = new GrpcTestClient(broker.Endpoint, tls: (_, cert, _, _) => { grpcCert = cert?.GetCertHashString(); return true; }))
        {
            var route = await grpc.UnaryAsync(GrpcMethods.QueryRoute, new QueryRouteRequest { Topic = new Resource { Name = topic } },
                QueryRouteResponse.Parser, timeout: TimeSpan.FromSeconds(20));
            Assert.NotNull(route.Response);
        }
        Assert.NotNull(adminCert);
        Assert.Equal(adminCert!.Subject, adminCert.Issuer);
        Assert.Equal(grpcCert, adminCert.Thumbprint);

        Assert.Matches(new Regex($@"admin http://127\.0\.0\.1:{broker.HttpPort} \(TLS auto, self-signed; auth on\)"), broker.Output);
    }

    private static async Task WithBrokerAsync(Func<int, Task> run, params string[] flags)
    {
        string dataDir = Path.Combine(Path.GetTempPath(), "halfmsg-admin-tls-" + Guid.NewGuid().ToString("N"));
        int httpPort = FreePorts.Next();
        try
        {
            await using var host = await BrokerHost.StartAsync(["--data-dir", dataDir, "--grpc-port", P(FreePorts.Next()), "--http-port", P(httpPort),
                "--remoting-port", "0", "--namesrv-port", "0", .. flags], [new($"Broker:Credentials:{AccessKey}", Secret)]);
            await run(httpPort);
        }
        finally
        {
            try { Directory.Delete(dataDir, recursive: true); } catch (IOException) { }
        }
    }

    [Fact]
    public async Task Required_closes_plain_http_and_serves_a_certificate_even_when_no_other_port_uses_TLS()
    {
        string? thumbprint = null;
        await WithBrokerAsync(async port =>
        {
            using var secure = Https(c => thumbprint = c.Thumbprint);
            using (var health = await secure.GetAsync($"https://127.0.0.1:{port}/health"))
            {
                Assert.Equal(HttpStatusCode.OK, health.StatusCode);
            }
            using (var stats = await secure.SendAsync(Request(HttpMethod.Get, $"https://127.0.0.1:{port}/api/stats", Signed)))
            {
                Assert.Equal(HttpStatusCode.OK, stats.StatusCode);
            }
            // Plain HTTP is closed before any answer: the credentials it carried were never read.
            using var plain = Plain();
            await Assert.ThrowsAsync<HttpRequestException>(() => plain.SendAsync(Request(HttpMethod.Get, $"http://127.0.0.1:{port}/api/stats", Signed)));
            await Assert.ThrowsAsync<HttpRequestException>(() => plain.GetAsync($"http://127.0.0.1:{port}/health"));
            // The port keeps serving HTTPS after the refusals.
            using (var again = await secure.GetAsync($"https://127.0.0.1:{port}/health"))
            {
                Assert.Equal(HttpStatusCode.OK, again.StatusCode);
            }
        }, "--admin-tls", "required", "--grpc-tls", "off", "--remoting-tls", "off");
        Assert.NotNull(thumbprint);
    }

    [Fact]
    public async Task Required_serves_the_configured_certificate_which_a_verifying_client_trusts()
    {
        string dir = Path.Combine(Path.GetTempPath(), "halfmsg-admin-tls-cert-" + Guid.NewGuid().ToString("N"));
        try
        {
            var (certificate, key, made) = GrpcTlsTests.WritePem(dir);
            await WithBrokerAsync(async port =>
            {
                // A client that verifies, trusting only the configured certificate as its root.
                using var verifying = new HttpClient(new SocketsHttpHandler
                {
                    SslOptions =
                    {
                        RemoteCertificateValidationCallback = (_, cert, _, _) =>
                        {
                            using var chain = new X509Chain();
                            chain.ChainPolicy.TrustMode = X509ChainTrustMode.CustomRootTrust;
                            chain.ChainPolicy.CustomTrustStore.Add(made);
                            chain.ChainPolicy.RevocationMode = X509RevocationMode.NoCheck;
                            return cert is not null && chain.Build(new X509Certificate2(cert));
                        },
                    },
                }) { Timeout = TimeSpan.FromSeconds(20) };
                using var health = await verifying.GetAsync($"https://127.0.0.1:{port}/health");
                Assert.Equal(HttpStatusCode.OK, health.StatusCode);
            }, "--admin-tls", "required", "--grpc-tls-certificate", certificate, "--grpc-tls-key", key);
        }
        finally
        {
            try { Directory.Delete(dir, recursive: true); } catch (IOException) { }
        }
    }

    [Fact]
    public async Task Off_answers_no_handshake_and_plain_http_works_and_a_wrong_mode_is_refused_with_its_flag_named()
    {
        await WithBrokerAsync(async port =>
        {
            using var secure = Https();
            await Assert.ThrowsAsync<HttpRequestException>(() => secure.GetAsync($"https://127.0.0.1:{port}/health"));
            using var plain = Plain();
            using var health = await plain.GetAsync($"http://127.0.0.1:{port}/health");
            Assert.Equal(HttpStatusCode.OK, health.StatusCode);
        }, "--admin-tls", "off");

        string dir = Path.Combine(Path.GetTempPath(), "halfmsg-admin-tls-bad-" + Guid.NewGuid().ToString("N"));
        try
        {
            var mode = await BrokerCli.RunAsync(["--admin-tls", "maybe", "--data-dir", Path.Combine(dir, "data")]);
            Assert.NotEqual(0, mode.ExitCode);
            Assert.Contains("--admin-tls must be 'auto', 'required' or 'off', not 'maybe'", mode.StdOut + mode.StdErr);
            var missing = await BrokerCli.RunAsync(["--grpc-tls", "off", "--remoting-tls", "off", "--admin-tls", "required",
                "--grpc-tls-certificate", Path.Combine(dir, "nope.crt"), "--data-dir", Path.Combine(dir, "data")]);
            Assert.NotEqual(0, missing.ExitCode);
            Assert.Contains("--grpc-tls-certificate: no file", missing.StdOut + missing.StdErr);
        }
        finally
        {
            try { Directory.Delete(dir, recursive: true); } catch (IOException) { }
        }
    }
}
