using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;
using HalfMsg.Broker.Hosting;
using HalfMsg.Cli;
using HalfMsg.TestKit;

namespace HalfMsg.Ops.Tests;

/// <summary>
/// The <c>halfmsg</c> CLI against a broker that requires client certificates (<c>--tls-client-auth require</c>, which
/// makes the admin port TLS-only): <c>--client-certificate</c> presents one. Without it the CLI could not reach such a
/// broker at all.
/// </summary>
public sealed class CliClientCertificateTests
{
    private static X509Certificate2 Ca()
    {
        using var key = ECDsa.Create(ECCurve.NamedCurves.nistP256);
        var request = new CertificateRequest("CN=cli-test-ca", key, HashAlgorithmName.SHA256);
        request.CertificateExtensions.Add(new X509BasicConstraintsExtension(true, false, 0, true));
        request.CertificateExtensions.Add(new X509KeyUsageExtension(X509KeyUsageFlags.KeyCertSign, true));
        using var made = request.CreateSelfSigned(DateTimeOffset.UtcNow.AddMinutes(-10), DateTimeOffset.UtcNow.AddDays(1));
        return X509CertificateLoader.LoadPkcs12(made.Export(X509ContentType.Pkcs12), null);
    }

    private static X509Certificate2 Client(X509Certificate2 ca)
    {
        using var key = ECDsa.Create(ECCurve.NamedCurves.nistP256);
        var request = new CertificateRequest("CN=cli-operator", key, HashAlgorithmName.SHA256);
        request.CertificateExtensions.Add(new X509EnhancedKeyUsageExtension([new Oid("1.3.6.1.5.5.7.3.2")], false));
        using var issued = request.Create(ca, DateTimeOffset.UtcNow.AddMinutes(-5), DateTimeOffset.UtcNow.AddHours(12), RandomNumberGenerator.GetBytes(8));
        using var withKey = issued.CopyWithPrivateKey(key);
        return X509CertificateLoader.LoadPkcs12(withKey.Export(X509ContentType.Pkcs12), null);
    }

    private static async Task<(int Code, string Out, string Err)> Halfmsg(params string[] args)
    {
        using var output = new StringWriter();
        using var error = new StringWriter();
        int code = await HalfMsgCli.RunAsync(args, output, error, _ => null);
        return (code, output.ToString(), error.ToString());
    }

    [Fact]
    public async Task Stats_over_https_with_a_client_certificate_from_the_brokers_CA_and_refused_without()
    {
        string dir = Path.Combine(Path.GetTempPath(), "halfmsg-cli-mtls-" + Guid.NewGuid().ToString("N")[..12]);
        Directory.CreateDirectory(dir);
        try
        {
            using var ca = Ca();
            using var client = Client(ca);
            string caPem = Path.Combine(dir, "ca.pem"), pfx = Path.Combine(dir, "client.pfx"), pem = Path.Combine(dir, "client.pem");
            await File.WriteAllTextAsync(caPem, ca.ExportCertificatePem());
            await File.WriteAllBytesAsync(pfx, client.Export(X509ContentType.Pkcs12));
            await File.WriteAllTextAsync(pem, client.ExportCertificatePem() + "\n" + client.GetECDsaPrivateKey()!.ExportPkcs8PrivateKeyPem());
            int http = FreePorts.Next();
            await using var host = await BrokerHost.StartAsync(["--data-dir", Path.Combine(dir, "data"), "--grpc-port", FreePorts.Next().ToString(),
                "--http-port", http.ToString(), "--remoting-port", "0", "--namesrv-port", "0", "--tls-client-auth", "require", "--tls-client-ca", caPem]);
            string https = $"https://127.0.0.1:{http}";

            foreach (string file in new[] { pfx, pem })
            {
                var stats = await Halfmsg("--url", https, "--insecure", "--client-certificate", file, "stats", "--json");
                Assert.True(stats.Code == ExitCodes.Ok, stats.Err);
                Assert.Contains("halvesStored", stats.Out);
            }
            var without = await Halfmsg("--url", https, "--insecure", "stats");
            Assert.Equal(ExitCodes.Unreachable, without.Code);
            var missing = await Halfmsg("--url", https, "--client-certificate", Path.Combine(dir, "nope.pfx"), "stats");
            Assert.Equal(ExitCodes.Usage, missing.Code);
            Assert.Contains("--client-certificate: no file", missing.Err);
        }
        finally
        {
            try { Directory.Delete(dir, recursive: true); } catch (IOException) { }
        }
    }

    /// <summary>The Docker image's health check as <c>docker</c> would run it: the arguments after <c>halfmsg.dll</c> in
    /// the Dockerfile's <c>HEALTHCHECK CMD</c>, with its <c>ENV</c> lines overlaid by <paramref name="runEnvironment"/>
    /// (<c>docker run -e</c>); the container's admin port 8080 is <paramref name="adminPort"/> here.</summary>
    private static async Task<(int Code, string Out, string Err)> DockerHealthCheck(int adminPort, IReadOnlyDictionary<string, string> runEnvironment)
    {
        var dir = new DirectoryInfo(AppContext.BaseDirectory);
        while (dir is not null && !File.Exists(Path.Combine(dir.FullName, "HalfMsgBroker.sln"))) dir = dir.Parent;
        Assert.NotNull(dir);
        string dockerfile = (await File.ReadAllTextAsync(Path.Combine(dir.FullName, "Dockerfile"))).Replace("\\\n", " ", StringComparison.Ordinal);
        string Mapped(string value) => value.Replace("127.0.0.1:8080", $"127.0.0.1:{adminPort}", StringComparison.Ordinal);
        var environment = new Dictionary<string, string>();
        foreach (var line in dockerfile.Split('\n').Where(l => l.StartsWith("ENV ", StringComparison.Ordinal)))
            foreach (var pair in line[4..].Split(' ', StringSplitOptions.RemoveEmptyEntries))
                environment[pair[..pair.IndexOf('=', StringComparison.Ordinal)]] = Mapped(pair[(pair.IndexOf('=', StringComparison.Ordinal) + 1)..]);
        foreach (var (key, value) in runEnvironment) environment[key] = value;
        string healthCheck = dockerfile.Split('\n').Single(l => l.StartsWith("HEALTHCHECK ", StringComparison.Ordinal));
        string[] command = System.Text.Json.JsonSerializer.Deserialize<string[]>(healthCheck[(healthCheck.IndexOf("CMD", StringComparison.Ordinal) + 3)..])!;
        string[] args = [.. command.SkipWhile(a => !a.EndsWith("halfmsg.dll", StringComparison.Ordinal)).Skip(1).Select(Mapped)];
        Assert.Equal("health", args[0]);
        using var output = new StringWriter();
        using var error = new StringWriter();
        int code = await HalfMsgCli.RunAsync(args, output, error, name => environment.GetValueOrDefault(name));
        return (code, output.ToString(), error.ToString());
    }

    [Fact]
    public async Task The_Docker_images_health_check_passes_under_require_with_the_probes_certificate_given_by_environment()
    {
        string dir = Path.Combine(Path.GetTempPath(), "halfmsg-cli-mtls-" + Guid.NewGuid().ToString("N")[..12]);
        Directory.CreateDirectory(dir);
        try
        {
            using var ca = Ca();
            using var client = Client(ca);
            string caPem = Path.Combine(dir, "ca.pem"), pfx = Path.Combine(dir, "probe.pfx"), data = Path.Combine(dir, "data");
            await File.WriteAllTextAsync(caPem, ca.ExportCertificatePem());
            await File.WriteAllBytesAsync(pfx, client.Export(X509ContentType.Pkcs12));

            // The default image (no client certificates): the health check probes plain HTTP on loopback, as it always did.
            int plain = FreePorts.Next();
            await using (var host = await BrokerHost.StartAsync(["--data-dir", Path.Combine(dir, "plain"), "--grpc-port", FreePorts.Next().ToString(),
                "--http-port", plain.ToString(), "--remoting-port", "0", "--namesrv-port", "0"]))
            {
                var healthy = await DockerHealthCheck(plain, new Dictionary<string, string>());
                Assert.True(healthy.Code == ExitCodes.Ok, healthy.Err);
            }

            int http = FreePorts.Next();
            await using var broker = await BrokerHost.StartAsync(["--data-dir", data, "--grpc-port", FreePorts.Next().ToString(),
                "--http-port", http.ToString(), "--remoting-port", "0", "--namesrv-port", "0", "--tls-client-auth", "require", "--tls-client-ca", caPem]);
            // As the Dockerfile's comment says: HTTPS, the probe's certificate, and the broker's self-signed certificate
            // (kept in the data directory from the start, before any TLS connection).
            var run = new Dictionary<string, string>
            {
                ["HALFMSG_URL"] = $"https://127.0.0.1:{http}",
                ["HALFMSG_CLIENT_CERTIFICATE"] = pfx,
                ["HALFMSG_ADMIN_CA"] = Path.Combine(data, "tls", "self-signed.pfx"),
            };
            var check = await DockerHealthCheck(http, run);
            Assert.True(check.Code == ExitCodes.Ok, $"exit {check.Code}: {check.Err}");
            // Without the probe's certificate the check fails (the broker refuses the handshake).
            run.Remove("HALFMSG_CLIENT_CERTIFICATE");
            var refused = await DockerHealthCheck(http, run);
            Assert.Equal(ExitCodes.Unreachable, refused.Code);
        }
        finally
        {
            try { Directory.Delete(dir, recursive: true); } catch (IOException) { }
        }
    }
}
