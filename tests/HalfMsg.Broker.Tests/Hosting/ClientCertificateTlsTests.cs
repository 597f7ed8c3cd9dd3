using System.Globalization;
using System.Net;
using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;
using System.Text.RegularExpressions;
using Apache.Rocketmq.V2;
using HalfMsg.Broker.Hosting;
using HalfMsg.Broker.Tests.Admin;
using HalfMsg.Broker.Tests.Infrastructure;
using HalfMsg.Protocol.Grpc;
using HalfMsg.Protocol.Remoting;
using HalfMsg.TestKit;
using static HalfMsg.Broker.Tests.Infrastructure.RemotingBroker;

namespace HalfMsg.Broker.Tests.Hosting;

/// <summary>
/// Client certificates on the TLS ports (<c>--tls-client-auth none|optional|require</c>, <c>--tls-client-ca</c>), as
/// Apache's <c>tls.server.need.client.auth</c>. Until 2026-12-07 no port asked for one: anyone who could reach a port
/// could use it (README, "Not done yet").
/// </summary>
public sealed class ClientCertificateTlsTests
{
    private static string P(int port) => port.ToString(CultureInfo.InvariantCulture);

    /// <summary>A CA (ECDSA P-256, a day's validity) that can issue certificates.</summary>
    internal static X509Certificate2 MakeCa(string name)
    {
        using var key = ECDsa.Create(ECCurve.NamedCurves.nistP256);
        var request = new CertificateRequest($"CN={name}", key, HashAlgorithmName.SHA256);
        request.CertificateExtensions.Add(new X509BasicConstraintsExtension(true, false, 0, true));
        request.CertificateExtensions.Add(new X509KeyUsageExtension(X509KeyUsageFlags.KeyCertSign | X509KeyUsageFlags.CrlSign, true));
        request.CertificateExtensions.Add(new X509SubjectKeyIdentifierExtension(request.PublicKey, false));
        using var made = request.CreateSelfSigned(DateTimeOffset.UtcNow.AddMinutes(-10), DateTimeOffset.UtcNow.AddDays(1));
        return X509CertificateLoader.LoadPkcs12(made.Export(X509ContentType.Pkcs12), null);
    }

    /// <summary>A client certificate issued by <paramref name="ca"/> (with its key), for client authentication unless
    /// <paramref name="usage"/> says otherwise.</summary>
    internal static X509Certificate2 Issue(X509Certificate2 ca, string name, string usage = "1.3.6.1.5.5.7.3.2")
    {
        using var key = ECDsa.Create(ECCurve.NamedCurves.nistP256);
        var request = new CertificateRequest($"CN={name}", key, HashAlgorithmName.SHA256);
        request.CertificateExtensions.Add(new X509BasicConstraintsExtension(false, false, 0, false));
        request.CertificateExtensions.Add(new X509KeyUsageExtension(X509KeyUsageFlags.DigitalSignature, false));
        request.CertificateExtensions.Add(new X509EnhancedKeyUsageExtension([new Oid(usage)], false));
        request.CertificateExtensions.Add(X509AuthorityKeyIdentifierExtension.CreateFromCertificate(ca, true, false));
        byte[] serial = RandomNumberGenerator.GetBytes(12);
        serial[0] &= 0x7f;
        using var issued = request.Create(ca, DateTimeOffset.UtcNow.AddMinutes(-5), DateTimeOffset.UtcNow.AddHours(12), serial);
        using var withKey = issued.CopyWithPrivateKey(key);
        return X509CertificateLoader.LoadPkcs12(withKey.Export(X509ContentType.Pkcs12), null);
    }

    /// <summary>Two CAs, a client certificate from each, and the first CA written as PEM (the file --tls-client-ca names).</summary>
    private sealed class Pki : IDisposable
    {
        public Pki()
        {
            Directory.CreateDirectory(Dir);
            Trusted = Issue(Ca, "trusted-client");
            Foreign = Issue(OtherCa, "foreign-client");
            File.WriteAllText(CaPem, Ca.ExportCertificatePem());
        }

        public string Dir { get; } = Path.Combine(Path.GetTempPath(), "halfmsg-mtls-" + Guid.NewGuid().ToString("N"));
        public X509Certificate2 Ca { get; } = MakeCa("halfmsg-test-client-ca");
        public X509Certificate2 OtherCa { get; } = MakeCa("halfmsg-test-other-ca");
        public X509Certificate2 Trusted { get; }
        public X509Certificate2 Foreign { get; }
        public string CaPem => Path.Combine(Dir, "client-ca.pem");
        public string DataDir => Path.Combine(Dir, "data");

        public void Dispose()
        {
            foreach (var c in new[] { Ca, OtherCa, Trusted, Foreign }) c.Dispose();
            try { Directory.Delete(Dir, recursive: true); } catch (IOException) { }
        }
    }

    private sealed record Ports(int Grpc, int Remoting, int NameServer, int Http)
    {
        public static Ports Free() => new(FreePorts.Next(), FreePorts.Next(), FreePorts.Next(), FreePorts.Next());
        public string Endpoint => $"127.0.0.1:{Grpc}";
        public string[] Flags(string dataDir) => ["--data-dir", dataDir, "--grpc-port", P(Grpc), "--remoting-port", P(Remoting), "--namesrv-port", P(NameServer), "--http-port", P(Http)];
    }

    private static async Task<int> RouteStatusAsync(string endpoint, bool tls, X509Certificate2? clientCertificate = null)
    {
        using var client = new GrpcTestClient(endpoint, tls: tls ? (_, _, _, _) => true : null, clientCertificate: clientCertificate);
        var route = await client.UnaryAsync(GrpcMethods.QueryRoute, new QueryRouteRequest { Topic = new Resource { Name = "mtls" } },
            QueryRouteResponse.Parser, timeout: TimeSpan.FromSeconds(20));
        return route.Response is { } r ? (int)r.Status.Code : -route.GrpcStatus;
    }

    /// <summary>A route request on the Remoting or name-server port: true if answered with success, false if the
    /// connection was refused (at the handshake, or, with TLS 1.3, closed with an alert before the answer).</summary>
    private static async Task<bool> RemotingAnsweredAsync(int port, bool tls, X509Certificate2? clientCertificate = null)
    {
        RemotingTestClient client;
        try
        {
            client = tls
                ? await RemotingTestClient.ConnectTlsAsync(port, handshakeTimeout: TimeSpan.FromSeconds(20), clientCertificate: clientCertificate)
                : await RemotingTestClient.ConnectAsync(port);
        }
        catch (Exception ex) when (ex is IOException or System.Security.Authentication.AuthenticationException or System.Net.Sockets.SocketException)
        {
            return false;
        }
        await using (client)
        {
            try
            {
                var route = await client.InvokeAsync(RequestCode.GetRouteInfoByTopic, new() { ["topic"] = "TBW102" }, timeout: TimeSpan.FromSeconds(20));
                Assert.Equal(ResponseCode.Success, route.Code);
                return true;
            }
            catch (Exception ex) when (ex is IOException or System.Security.Authentication.AuthenticationException or ObjectDisposedException)
            {
                return false;
            }
        }
    }

    /// <summary>GET /health on the admin port: the status, or null if the connection was refused.</summary>
    private static async Task<HttpStatusCode?> HealthAsync(int port, bool tls, X509Certificate2? clientCertificate = null)
    {
        using var handler = new SocketsHttpHandler();
        handler.SslOptions.RemoteCertificateValidationCallback = (_, _, _, _) => true;
        if (clientCertificate is not null) handler.SslOptions.LocalCertificateSelectionCallback = (_, _, _, _, _) => clientCertificate;
        using var http = new HttpClient(handler) { Timeout = TimeSpan.FromSeconds(20) };
        try
        {
            using var response = await http.GetAsync($"{(tls ? "https" : "http")}://127.0.0.1:{port}/health");
            return response.StatusCode;
        }
        catch (HttpRequestException)
        {
            return null;
        }
    }

    [Fact]
    public async Task Require_serves_a_certificate_from_the_CA_on_every_port_and_refuses_none_another_CAs_and_cleartext()
    {
        using var pki = new Pki();
        var ports = Ports.Free();
        await using var host = await BrokerHost.StartAsync([.. ports.Flags(pki.DataDir), "--tls-client-auth", "require", "--tls-client-ca", pki.CaPem]);
        // Every port was auto: require takes them as required, or cleartext would walk around the certificate check.
        Assert.Equal((PortTlsMode.Required, PortTlsMode.Required, PortTlsMode.Required), (host.Options.GrpcTls, host.Options.RemotingTls, host.Options.AdminTls));

        // gRPC
        Assert.Equal((int)Code.Ok, await RouteStatusAsync(ports.Endpoint, tls: true, pki.Trusted));
        int none = await RouteStatusAsync(ports.Endpoint, tls: true);
        Assert.True(none < 0, $"a gRPC TLS call without a client certificate was answered ({none})");
        int foreign = await RouteStatusAsync(ports.Endpoint, tls: true, pki.Foreign);
        Assert.True(foreign < 0, $"a gRPC TLS call with another CA's certificate was answered ({foreign})");
        int clear = await RouteStatusAsync(ports.Endpoint, tls: false);
        Assert.True(clear < 0, $"a cleartext gRPC call was answered ({clear})");

        // Remoting and name server
        foreach (int port in new[] { ports.Remoting, ports.NameServer })
        {
            Assert.True(await RemotingAnsweredAsync(port, tls: true, pki.Trusted), $"port {port}: a client certificate from the CA was refused");
            Assert.False(await RemotingAnsweredAsync(port, tls: true), $"port {port}: a TLS client without a certificate was answered");
            Assert.False(await RemotingAnsweredAsync(port, tls: true, pki.Foreign), $"port {port}: another CA's certificate was answered");
            Assert.False(await RemotingAnsweredAsync(port, tls: false), $"port {port}: a cleartext client was answered");
        }

        // Admin
        Assert.Equal(HttpStatusCode.OK, await HealthAsync(ports.Http, tls: true, pki.Trusted));
        Assert.Null(await HealthAsync(ports.Http, tls: true));
        Assert.Null(await HealthAsync(ports.Http, tls: true, pki.Foreign));
        Assert.Null(await HealthAsync(ports.Http, tls: false));

        // The broker keeps serving after the refusals: a send over Remoting with the certificate.
        await using (var c = await RemotingTestClient.ConnectTlsAsync(ports.Remoting, clientCertificate: pki.Trusted))
        {
            var sent = await SendAsync(c, Unique("Mtls"), "with a client certificate");
            Assert.Equal(ResponseCode.Success, sent.Code);
        }
        Assert.Equal((int)Code.Ok, await RouteStatusAsync(ports.Endpoint, tls: true, pki.Trusted));
    }

    [Fact]
    public async Task Optional_serves_clients_with_and_without_a_certificate_and_cleartext_but_refuses_another_CAs_certificate()
    {
        using var pki = new Pki();
        var ports = Ports.Free();
        await using var host = await BrokerHost.StartAsync([.. ports.Flags(pki.DataDir), "--tls-client-auth", "optional", "--tls-client-ca", pki.CaPem]);
        Assert.Equal((PortTlsMode.Auto, PortTlsMode.Auto, PortTlsMode.Auto), (host.Options.GrpcTls, host.Options.RemotingTls, host.Options.AdminTls));

        Assert.Equal((int)Code.Ok, await RouteStatusAsync(ports.Endpoint, tls: true, pki.Trusted));
        Assert.Equal((int)Code.Ok, await RouteStatusAsync(ports.Endpoint, tls: true));
        Assert.Equal((int)Code.Ok, await RouteStatusAsync(ports.Endpoint, tls: false));
        int foreign = await RouteStatusAsync(ports.Endpoint, tls: true, pki.Foreign);
        Assert.True(foreign < 0, $"a gRPC TLS call with another CA's certificate was answered ({foreign})");

        Assert.True(await RemotingAnsweredAsync(ports.Remoting, tls: true, pki.Trusted));
        Assert.True(await RemotingAnsweredAsync(ports.Remoting, tls: true));
        Assert.True(await RemotingAnsweredAsync(ports.Remoting, tls: false));
        Assert.False(await RemotingAnsweredAsync(ports.Remoting, tls: true, pki.Foreign), "another CA's certificate was answered on the Remoting port");

        Assert.Equal(HttpStatusCode.OK, await HealthAsync(ports.Http, tls: true, pki.Trusted));
        Assert.Equal(HttpStatusCode.OK, await HealthAsync(ports.Http, tls: true));
        Assert.Equal(HttpStatusCode.OK, await HealthAsync(ports.Http, tls: false));
        Assert.Null(await HealthAsync(ports.Http, tls: true, pki.Foreign));
    }

    [Fact]
    public async Task By_default_no_certificate_is_asked_for_and_any_presented_is_not_checked()
    {
        using var pki = new Pki();
        var ports = Ports.Free();
        await using var host = await BrokerHost.StartAsync([.. ports.Flags(pki.DataDir)]);
        Assert.Equal(TlsClientAuth.None, host.Options.TlsClientAuth);
        Assert.Equal((int)Code.Ok, await RouteStatusAsync(ports.Endpoint, tls: true));
        Assert.Equal((int)Code.Ok, await RouteStatusAsync(ports.Endpoint, tls: true, pki.Foreign));
        Assert.True(await RemotingAnsweredAsync(ports.Remoting, tls: true, pki.Foreign));
        Assert.True(await RemotingAnsweredAsync(ports.Remoting, tls: false));
    }

    [Fact]
    public async Task Require_shows_on_the_ready_line_and_a_port_left_off_is_warned_about()
    {
        using var pki = new Pki();
        // --admin-tls off: the test harness probes /health over plain HTTP; the broker warns that it bypasses the check.
        await using var broker = await BrokerProcess.StartAsync("--tls-client-auth", "require", "--tls-client-ca", pki.CaPem, "--admin-tls", "off");
        Assert.Matches(new Regex($@"ready: gRPC \S+:{broker.GrpcPort} \(TLS required, self-signed, client certificate required\), Remoting \S+:{broker.RemotingPort}, name server :{broker.NameServerPort} \(TLS required, self-signed, client certificate required\), admin http://\S+:{broker.HttpPort} \(TLS off;"),
            broker.Output);
        Assert.Contains("--tls-client-auth require: --grpc-tls, --remoting-tls auto taken as required", broker.Output, StringComparison.Ordinal);
        Assert.Contains("--tls-client-auth require: admin (--admin-tls off) speak cleartext", broker.Output, StringComparison.Ordinal);
        await using var c = await RemotingTestClient.ConnectTlsAsync(broker.RemotingPort, clientCertificate: pki.Trusted);
        Assert.Equal(ResponseCode.Success, (await SendAsync(c, Unique("MtlsProc"), "over the real process")).Code);
        Assert.False(await RemotingAnsweredAsync(broker.RemotingPort, tls: true), "a TLS client without a certificate was answered");
        // A refused certificate is logged with why (at most once a minute).
        Assert.False(await RemotingAnsweredAsync(broker.RemotingPort, tls: true, pki.Foreign));
        await EventuallyAsync(() => Task.FromResult(broker.Output), o => o.Contains("Remoting TLS handshake refused: the client certificate CN=foreign-client", StringComparison.Ordinal),
            TimeSpan.FromSeconds(20), "the refusal of another CA's certificate to be logged");
    }

    [Fact]
    public async Task Bad_client_certificate_settings_stop_the_start_with_the_flag_named()
    {
        using var pki = new Pki();
        // As a process: one line naming the flag and a non-zero exit, no stack trace.
        var run = await BrokerCli.RunAsync(["--tls-client-auth", "require", "--data-dir", pki.DataDir]);
        Assert.Equal(BrokerHost.ExitConfiguration, run.ExitCode);
        Assert.Contains("--tls-client-auth require needs --tls-client-ca", run.StdOut + run.StdErr);
        Assert.DoesNotContain("   at ", run.StdOut + run.StdErr);

        async Task<string> RefusedAsync(params string[] flags)
        {
            var ex = await Assert.ThrowsAsync<BrokerConfigurationException>(() => BrokerHost.StartAsync([.. Ports.Free().Flags(pki.DataDir), .. flags]));
            return ex.Message;
        }
        Assert.Contains("--tls-client-auth optional needs --tls-client-ca", await RefusedAsync("--tls-client-auth", "optional"));
        Assert.Contains("--tls-client-ca: no file", await RefusedAsync("--tls-client-auth", "require", "--tls-client-ca", Path.Combine(pki.Dir, "nope.pem")));
        string garbage = Path.Combine(pki.Dir, "garbage.pem");
        await File.WriteAllTextAsync(garbage, "not a certificate");
        Assert.Contains("--tls-client-ca: '" + garbage + "' could not be read", await RefusedAsync("--tls-client-auth", "require", "--tls-client-ca", garbage));
        Assert.Contains("--tls-client-auth must be 'none', 'optional' or 'require', not 'maybe'", await RefusedAsync("--tls-client-auth", "maybe"));
        Assert.Contains("--tls-client-ca is set but --tls-client-auth is none", await RefusedAsync("--tls-client-ca", pki.CaPem));
    }

    [Fact]
    public void A_certificate_must_chain_to_the_CA_file_and_be_for_client_authentication()
    {
        using var pki = new Pki();
        var policy = ClientCertificates.Load(TlsClientAuth.Require, pki.CaPem)!;
        Assert.True(policy.Trusts(pki.Trusted, null, out _));
        Assert.False(policy.Trusts(pki.Foreign, null, out string why));
        Assert.NotEqual("", why);
        using var serverOnly = Issue(pki.Ca, "server-only", usage: "1.3.6.1.5.5.7.3.1");
        Assert.False(policy.Trusts(serverOnly, null, out _));

        // Issued by an intermediate CA the client sends with its certificate (the chain the TLS stack built from it).
        using (var intermediateKey = ECDsa.Create(ECCurve.NamedCurves.nistP256))
        {
            var request = new CertificateRequest("CN=halfmsg-test-intermediate", intermediateKey, HashAlgorithmName.SHA256);
            request.CertificateExtensions.Add(new X509BasicConstraintsExtension(true, false, 0, true));
            request.CertificateExtensions.Add(new X509KeyUsageExtension(X509KeyUsageFlags.KeyCertSign, true));
            request.CertificateExtensions.Add(new X509SubjectKeyIdentifierExtension(request.PublicKey, false));
            request.CertificateExtensions.Add(X509AuthorityKeyIdentifierExtension.CreateFromCertificate(pki.Ca, true, false));
            using var issued = request.Create(pki.Ca, DateTimeOffset.UtcNow.AddMinutes(-8), DateTimeOffset.UtcNow.AddHours(20), RandomNumberGenerator.GetBytes(8));
            using var intermediate = issued.CopyWithPrivateKey(intermediateKey);
            using var leaf = Issue(intermediate, "via-intermediate");
            Assert.False(policy.Trusts(leaf, null, out _)); // the intermediate is not in the file and was not sent
            using var sent = new X509Chain();
            sent.ChainPolicy.ExtraStore.Add(X509CertificateLoader.LoadCertificate(intermediate.RawData));
            sent.ChainPolicy.RevocationMode = X509RevocationMode.NoCheck;
            _ = sent.Build(leaf); // not trusted by the system: only its elements matter
            Assert.True(policy.Trusts(leaf, sent, out string viaWhy), viaWhy);
        }

        // A self-signed client certificate listed in the file (DER here) is trusted as it is; so is a PKCS#12 bundle's CA.
        using var selfSigned = MakeCa("self-signed-client");
        string der = Path.Combine(pki.Dir, "pinned.cer");
        File.WriteAllBytes(der, selfSigned.Export(X509ContentType.Cert));
        Assert.True(ClientCertificates.Load(TlsClientAuth.Optional, der)!.Trusts(selfSigned, null, out _));
        string pfx = Path.Combine(pki.Dir, "ca.pfx");
        File.WriteAllBytes(pfx, pki.Ca.Export(X509ContentType.Pkcs12));
        Assert.True(ClientCertificates.Load(TlsClientAuth.Require, pfx)!.Trusts(pki.Trusted, null, out _));
    }

    /// <summary>A TLS handshake with the port: the distinguished names of the CAs the broker said it accepts (empty when
    /// it named none), and whether a route request was then answered. <paramref name="choose"/> picks the certificate to
    /// present from those names.</summary>
    private static async Task<(string[] Issuers, bool Answered)> HandshakeAsync(int port, Func<string[], X509Certificate2?> choose)
    {
        string[] seen = [];
        using var tcp = new System.Net.Sockets.TcpClient();
        await tcp.ConnectAsync(IPAddress.Loopback, port);
        await using var ssl = new System.Net.Security.SslStream(tcp.GetStream());
        var options = new System.Net.Security.SslClientAuthenticationOptions
        {
            TargetHost = "localhost",
            RemoteCertificateValidationCallback = (_, _, _, _) => true,
            // Called before the handshake with no names (returning none there lets it be asked again), then when the
            // server asks for a certificate, with the names it sent.
            LocalCertificateSelectionCallback = (_, _, _, _, issuers) =>
            {
                if (issuers.Length == 0) return null!;
                seen = issuers;
                return choose(issuers)!;
            },
        };
        using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(20));
        try
        {
            await ssl.AuthenticateAsClientAsync(options, timeout.Token);
        }
        catch (Exception ex) when (ex is IOException or System.Security.Authentication.AuthenticationException)
        {
            return (seen, false);
        }
        return (seen, await RemotingOverAsync(ssl));
    }

    /// <summary>A route request over an established TLS stream: true if answered (with TLS 1.3 a refused certificate
    /// shows here, as the connection closed with an alert).</summary>
    private static async Task<bool> RemotingOverAsync(System.Net.Security.SslStream ssl)
    {
        var route = RemotingCommand.Request(RequestCode.GetRouteInfoByTopic, new() { ["topic"] = "TBW102" }, ReadOnlyMemory<byte>.Empty);
        route.Opaque = 7;
        route.Version = RemotingTestClient.JavaClientVersion;
        var request = RemotingFrame.ToArray(route);
        try
        {
            await ssl.WriteAsync(request);
            var buffer = new byte[4];
            using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(20));
            await ssl.ReadExactlyAsync(buffer, timeout.Token);
            return true;
        }
        catch (Exception ex) when (ex is IOException or System.Security.Authentication.AuthenticationException or EndOfStreamException or OperationCanceledException)
        {
            return false;
        }
    }

    [Fact]
    public async Task The_handshake_names_the_accepted_CAs_so_a_client_with_several_certificates_presents_the_right_one()
    {
        using var pki = new Pki();
        var ports = Ports.Free();
        await using var host = await BrokerHost.StartAsync([.. ports.Flags(pki.DataDir), "--tls-client-auth", "require", "--tls-client-ca", pki.CaPem]);
        foreach (int port in new[] { ports.Remoting, ports.Grpc, ports.Http })
        {
            var (issuers, _) = await HandshakeAsync(port, _ => pki.Trusted);
            Assert.True(issuers.Contains(pki.Ca.Subject), $"port {port}: the client saw the accepted CAs [{string.Join("; ", issuers)}], not {pki.Ca.Subject}");
            Assert.DoesNotContain(pki.OtherCa.Subject, issuers);
        }
        // A client holding a certificate from another CA and one from the accepted CA presents the one the names point to,
        // as the Java and OpenSSL clients' key managers choose (the first one when the server names none) and is served.
        X509Certificate2[] held = [pki.Foreign, pki.Trusted];
        var (named, answered) = await HandshakeAsync(ports.Remoting, issuers => held.FirstOrDefault(c => issuers.Contains(c.Issuer)) ?? held[0]);
        Assert.True(answered, $"a client holding a certificate from the accepted CA was refused (names seen: [{string.Join("; ", named)}])");
    }

    [Fact]
    public async Task A_changed_CA_file_is_taken_by_new_handshakes_and_a_broken_one_keeps_the_previous_CA_with_an_error()
    {
        using var pki = new Pki();
        // --admin-tls off: the test harness probes /health over plain HTTP.
        await using var broker = await BrokerProcess.StartAsync("--tls-client-auth", "require", "--tls-client-ca", pki.CaPem, "--admin-tls", "off");
        Assert.True(await RemotingAnsweredAsync(broker.RemotingPort, tls: true, pki.Trusted), "the CA's client certificate was refused");
        Assert.False(await RemotingAnsweredAsync(broker.RemotingPort, tls: true, pki.Foreign), "the other CA's certificate was answered before the rotation");

        // Rotated: the file now holds the other CA (written beside it and moved over it, as a rotation does).
        string next = pki.CaPem + ".next";
        await File.WriteAllTextAsync(next, pki.OtherCa.ExportCertificatePem());
        File.Move(next, pki.CaPem, overwrite: true);
        await EventuallyAsync(() => RemotingAnsweredAsync(broker.RemotingPort, tls: true, pki.Foreign), answered => answered, TimeSpan.FromSeconds(20),
            "the rotated CA's client certificate to be served");
        Assert.False(await RemotingAnsweredAsync(broker.RemotingPort, tls: true, pki.Trusted), "the replaced CA's certificate was still answered");
        Assert.Contains(pki.OtherCa.Subject, (await HandshakeAsync(broker.RemotingPort, _ => pki.Foreign)).Issuers);
        await EventuallyAsync(() => Task.FromResult(broker.Output), o => o.Contains($"'{pki.CaPem}' changed and was read again", StringComparison.Ordinal),
            TimeSpan.FromSeconds(20), "the reload to be logged");

        // Removed: the certificates read last stay in use, the broker keeps serving, and an error says so.
        File.Delete(pki.CaPem);
        Assert.True(await RemotingAnsweredAsync(broker.RemotingPort, tls: true, pki.Foreign), "a removed CA file dropped the certificates read before");
        await EventuallyAsync(() => Task.FromResult(broker.Output), o => o.Contains($"--tls-client-ca: '{pki.CaPem}' is gone or cannot be looked at", StringComparison.Ordinal),
            TimeSpan.FromSeconds(20), "the removed file to be logged as an error");

        // Broken: the same.
        await File.WriteAllTextAsync(pki.CaPem, "-----BEGIN CERTIFICATE-----\nnot base64 at all\n-----END CERTIFICATE-----\n");
        Assert.True(await RemotingAnsweredAsync(broker.RemotingPort, tls: true, pki.Foreign), "a broken CA file dropped the certificates read before");
        Assert.False(await RemotingAnsweredAsync(broker.RemotingPort, tls: true, pki.Trusted));
        await EventuallyAsync(() => Task.FromResult(broker.Output), o => o.Contains($"--tls-client-ca: '{pki.CaPem}' holds no certificate", StringComparison.Ordinal)
            && o.Contains("the certificates read before stay in use (CN=halfmsg-test-other-ca)", StringComparison.Ordinal),
            TimeSpan.FromSeconds(20), "the broken file to be logged as an error");

        // Fixed (both CAs): both are taken.
        await File.WriteAllTextAsync(pki.CaPem, pki.Ca.ExportCertificatePem() + "\n" + pki.OtherCa.ExportCertificatePem());
        await EventuallyAsync(() => RemotingAnsweredAsync(broker.RemotingPort, tls: true, pki.Trusted), answered => answered, TimeSpan.FromSeconds(20),
            "the first CA's certificate to be served again once the file is fixed");
        Assert.True(await RemotingAnsweredAsync(broker.RemotingPort, tls: true, pki.Foreign));
        await using var c = await RemotingTestClient.ConnectTlsAsync(broker.RemotingPort, clientCertificate: pki.Trusted);
        Assert.Equal(ResponseCode.Success, (await SendAsync(c, Unique("MtlsRotated"), "after the rotations")).Code);
    }

    /// <summary>
    /// A <c>--tls-client-ca</c> that is a symbolic link: a Kubernetes secret or config map mounts each key as a link
    /// (<c>ca.pem -&gt; ..data/ca.pem</c>, <c>..data -&gt; ..2026_12_07...</c>) and rotates by pointing <c>..data</c> at a
    /// new directory; or a link to a file rewritten in place. The rotated CA is taken, as for a plain file. Until review
    /// on 2026-12-07 the change was looked for in the link's own time and length, which neither rotation changes: the
    /// CA read at start stayed in use until a restart, without a word in the log.
    /// </summary>
    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void A_CA_file_that_is_a_symbolic_link_is_read_again_when_what_it_points_at_changes(bool kubernetesLayout)
    {
        using var pki = new Pki();
        string dir = Path.Combine(pki.Dir, "mounted");
        Directory.CreateDirectory(Path.Combine(dir, "v1"));
        Directory.CreateDirectory(Path.Combine(dir, "v2"));
        File.WriteAllText(Path.Combine(dir, "v1", "ca.pem"), pki.Ca.ExportCertificatePem());
        string link = Path.Combine(dir, "ca.pem");
        string data = Path.Combine(dir, "..data");
        if (kubernetesLayout)
        {
            Directory.CreateSymbolicLink(data, "v1");
            File.CreateSymbolicLink(link, Path.Combine("..data", "ca.pem"));
        }
        else File.CreateSymbolicLink(link, Path.Combine("v1", "ca.pem"));
        var clients = ClientCertificates.Load(TlsClientAuth.Require, link)!;
        Assert.True(clients.Trusts(pki.Trusted, null, out string first), first);
        Assert.Equal([pki.Ca.Subject], clients.Current(Microsoft.Extensions.Logging.Abstractions.NullLogger.Instance).Select(c => c.Subject));
        DateTime before = File.GetLastWriteTimeUtc(Path.Combine(dir, "v1", "ca.pem"));

        if (kubernetesLayout)
        {
            // The new version beside the old, then the directory link pointed at it (the link itself is left alone).
            File.WriteAllText(Path.Combine(dir, "v2", "ca.pem"), pki.OtherCa.ExportCertificatePem());
            Directory.Delete(data);
            Directory.CreateSymbolicLink(data, "v2");
        }
        else
        {
            string next = Path.Combine(dir, "v1", "ca.pem.next");
            File.WriteAllText(next, pki.OtherCa.ExportCertificatePem());
            File.Move(next, Path.Combine(dir, "v1", "ca.pem"), overwrite: true);
        }
        // A rotation comes later than the file it replaces: the change is looked for in the time and length (the two
        // PEM files can be as long as each other, and written within one tick of the file system's clock here).
        File.SetLastWriteTimeUtc(Path.Combine(dir, kubernetesLayout ? "v2" : "v1", "ca.pem"), before.AddSeconds(2));
        var now = clients.Current(Microsoft.Extensions.Logging.Abstractions.NullLogger.Instance);
        Assert.True(now.Count == 1 && now[0].Subject == pki.OtherCa.Subject,
            $"after the rotation behind the link the CA in use is [{string.Join("; ", now.Select(c => c.Subject))}], not {pki.OtherCa.Subject}");
        Assert.True(clients.Trusts(pki.Foreign, null, out string why), why);
        Assert.False(clients.Trusts(pki.Trusted, null, out _));
        // Unchanged since: not read again (the same collection).
        Assert.Same(now, clients.Current(Microsoft.Extensions.Logging.Abstractions.NullLogger.Instance));
    }
}
