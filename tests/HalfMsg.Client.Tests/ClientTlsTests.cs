using System.Diagnostics;
using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;
using HalfMsg.Client.Tests.Infrastructure;
using HalfMsg.ClientCore;
using HalfMsg.ConsumerClient;
using HalfMsg.ProducerClient;
using HalfMsg.TestKit;
using Microsoft.Extensions.Configuration;
using Xunit.Abstractions;
using ProducerMessage = HalfMsg.ProducerClient.Message;

namespace HalfMsg.Client.Tests;

/// <summary>
/// Our clients over TLS (<c>UseTls</c>, an <c>https://</c> access point, <see cref="TlsOptions"/>): against a broker
/// with <c>--grpc-tls required</c> (its self-signed certificate pinned) and with <c>--tls-client-auth require</c>, for
/// unary calls, receives and the Telemetry stream (check-backs). The broker's certificate is verified by default; bad
/// settings fail the start naming the option. Until 2026-12-07 the clients spoke cleartext only, so they could not
/// reach a broker whose gRPC port required TLS (review of our clients).
/// </summary>
[Trait("Category", "E2E")]
public sealed class ClientTlsTests(ITestOutputHelper output) : IDisposable
{
    private static readonly TimeSpan Wait = TimeSpan.FromSeconds(40);
    private readonly string _dir = Directory.CreateDirectory(Path.Combine(Path.GetTempPath(), "halfmsg-client-tls-" + Guid.NewGuid().ToString("N"))).FullName;

    public void Dispose()
    {
        try { Directory.Delete(_dir, recursive: true); } catch (IOException) { }
    }

    /// <summary>The broker's self-signed certificate (kept in &lt;data&gt;/tls/self-signed.pfx), exported as PEM without
    /// its key. The broker makes it at the first TLS handshake, so one is made first (accepting any certificate).</summary>
    private async Task<string> ExportBrokerCertificateAsync(BrokerProcess broker)
    {
        string kept = Path.Combine(broker.DataDir, "tls", "self-signed.pfx");
        using (var tcp = new System.Net.Sockets.TcpClient())
        {
            await tcp.ConnectAsync(System.Net.IPAddress.Loopback, broker.GrpcPort);
            await using var ssl = new System.Net.Security.SslStream(tcp.GetStream(), false, (_, _, _, _) => true);
            try
            {
                await ssl.AuthenticateAsClientAsync(new System.Net.Security.SslClientAuthenticationOptions
                {
                    TargetHost = "127.0.0.1",
                    ApplicationProtocols = [System.Net.Security.SslApplicationProtocol.Http2],
                }).WaitAsync(TimeSpan.FromSeconds(20));
            }
            catch (Exception ex) when (ex is IOException or System.Security.Authentication.AuthenticationException)
            {
                // A broker that requires a client certificate refuses this one; the certificate is made all the same.
            }
        }

        await E2E.EventuallyAsync(() => File.Exists(kept), TimeSpan.FromSeconds(20), "the broker kept its self-signed certificate");
        using X509Certificate2 certificate = X509CertificateLoader.LoadPkcs12FromFile(kept, null);
        string pem = Path.Combine(_dir, "broker.pem");
        File.WriteAllText(pem, certificate.ExportCertificatePem());
        return pem;
    }

    private static ProducerOptions Producer(string endpoints, string topic, ITransactionChecker? checker = null) =>
        ProducerOptions.Default with { Endpoints = endpoints, Topics = [topic], TransactionChecker = checker };

    private static SimpleConsumerOptions Consumer(string endpoints, string topic) => SimpleConsumerOptions.Default with
    {
        Endpoints = endpoints,
        ConsumerGroup = E2E.Unique("g"),
        Subscriptions = new Dictionary<string, string> { [topic] = "*" },
        AwaitDuration = TimeSpan.FromSeconds(1),
    };

    private static async Task<List<string>> ReceiveAsync(SimpleConsumer consumer, int expected)
    {
        List<ReceivedMessage> got = await E2E.DrainAsync(consumer, expected, Wait);
        return [.. got.Select(m => m.BodyAsString())];
    }

    [Fact]
    public async Task With_grpc_tls_required_and_the_broker_certificate_pinned_a_transaction_commits_and_is_received()
    {
        await using BrokerProcess broker = await BrokerProcess.StartAsync("--grpc-tls", "required");
        string pem = await ExportBrokerCertificateAsync(broker);
        string topic = E2E.Unique("tls");
        var tls = new TlsOptions { TrustedCertificateFile = pem };

        await using Producer producer = await ProducerClient.Producer.StartAsync(Producer(broker.Endpoint, topic) with { UseTls = true, Tls = tls });
        // The consumer turns TLS on by its https:// access point alone.
        await using SimpleConsumer consumer = await SimpleConsumer.StartAsync(Consumer("https://" + broker.Endpoint, topic) with { Tls = tls });

        ITransaction transaction = producer.BeginTransaction();
        await transaction.SendAsync(new ProducerMessage(topic, "committed over tls"));
        await transaction.CommitAsync();

        Assert.Equal(["committed over tls"], await ReceiveAsync(consumer, 1));
    }

    [Fact]
    public async Task A_check_back_arrives_over_the_tls_telemetry_stream_and_the_checker_commits()
    {
        await using BrokerProcess broker = await BrokerProcess.StartAsync("--grpc-tls", "required");
        var tls = new TlsOptions { TrustedCertificateFile = await ExportBrokerCertificateAsync(broker) };
        string topic = E2E.Unique("tls-check");
        var checker = new RecordingChecker(new FuncChecker(_ => TransactionResolution.Commit));

        await using Producer producer = await ProducerClient.Producer.StartAsync(Producer(broker.Endpoint, topic, checker) with { UseTls = true, Tls = tls });
        await using SimpleConsumer consumer = await SimpleConsumer.StartAsync(Consumer(broker.Endpoint, topic) with { UseTls = true, Tls = tls });

        // Left undecided: only a check-back over the producer's Telemetry stream (TLS) commits it.
        SendReceipt undecided = await producer.BeginTransaction().SendAsync(new ProducerMessage(topic, "checked over tls"));

        Assert.Equal(["checked over tls"], await ReceiveAsync(consumer, 1));
        Assert.Contains(checker.Calls, c => c.TransactionId == undecided.TransactionId && c.Result == TransactionResolution.Commit);
    }

    [Fact]
    public async Task Over_tls_an_access_point_of_several_addresses_fails_over_from_one_whose_handshake_fails_and_one_that_is_down()
    {
        // The first address speaks cleartext only (the TLS handshake fails there: the request never left), the second is
        // closed, the third requires TLS: the route, sends, the receive and the Telemetry stream (check-back) use the third.
        await using BrokerProcess cleartext = await BrokerProcess.StartAsync("--grpc-tls", "off");
        await using BrokerProcess broker = await BrokerProcess.StartAsync("--grpc-tls", "required");
        var tls = new TlsOptions { TrustedCertificateFile = await ExportBrokerCertificateAsync(broker) };
        int closed;
        using (var socket = new System.Net.Sockets.Socket(System.Net.Sockets.AddressFamily.InterNetwork, System.Net.Sockets.SocketType.Stream, System.Net.Sockets.ProtocolType.Tcp))
        {
            socket.Bind(new System.Net.IPEndPoint(System.Net.IPAddress.Loopback, 0));
            closed = ((System.Net.IPEndPoint)socket.LocalEndPoint!).Port;
        }

        string endpoints = $"{cleartext.Endpoint};127.0.0.1:{closed};{broker.Endpoint}";
        string topic = E2E.Unique("tls-fo");
        var checker = new RecordingChecker(new FuncChecker(_ => TransactionResolution.Commit));
        await using Producer producer = await ProducerClient.Producer.StartAsync(Producer(endpoints, topic, checker) with { UseTls = true, Tls = tls });
        await using SimpleConsumer consumer = await SimpleConsumer.StartAsync(Consumer(endpoints, topic) with { UseTls = true, Tls = tls });

        ITransaction committed = producer.BeginTransaction();
        await committed.SendAsync(new ProducerMessage(topic, "committed"));
        await committed.CommitAsync();
        SendReceipt undecided = await producer.BeginTransaction().SendAsync(new ProducerMessage(topic, "checked"));

        Assert.Equal(["checked", "committed"], (await ReceiveAsync(consumer, 2)).Order(StringComparer.Ordinal));
        Assert.Contains(checker.Calls, c => c.TransactionId == undecided.TransactionId && c.Result == TransactionResolution.Commit);
    }

    [Fact]
    public async Task With_verification_on_and_no_pin_the_first_call_fails_at_once_with_a_certificate_error()
    {
        await using BrokerProcess broker = await BrokerProcess.StartAsync("--grpc-tls", "required");
        var clock = Stopwatch.StartNew();
        var ex = await Assert.ThrowsAnyAsync<ClientException>(() =>
            ProducerClient.Producer.StartAsync(Producer(broker.Endpoint, E2E.Unique("tls-untrusted")) with { UseTls = true }));
        output.WriteLine($"without a pin ({clock.Elapsed}): {ex.Message}");
        Assert.True(clock.Elapsed < TimeSpan.FromSeconds(15), $"took {clock.Elapsed}");
        Assert.Contains("TLS handshake failed", ex.Message, StringComparison.Ordinal);
        Assert.Contains("remote certificate", ex.Message, StringComparison.OrdinalIgnoreCase);
        Assert.Contains("Tls.TrustedCertificateFile", ex.Message, StringComparison.Ordinal);

        // Pinning another certificate does not let the broker's through.
        using X509Certificate2 other = SelfSigned("CN=not-this-broker", "not-this-broker.example");
        var pinnedOther = await Assert.ThrowsAnyAsync<ClientException>(() => SimpleConsumer.StartAsync(
            Consumer(broker.Endpoint, E2E.Unique("tls-other")) with { UseTls = true, Tls = new TlsOptions { TrustedCertificate = other } }));
        output.WriteLine($"pinned another certificate: {pinnedOther.Message}");
        Assert.Contains("TLS handshake failed", pinnedOther.Message, StringComparison.Ordinal);

        // For tests only: accepting any certificate reaches the broker (and says so in the log).
        var logs = new RecordingLoggerFactory();
        await using Producer producer = await ProducerClient.Producer.StartAsync(Producer(broker.Endpoint, E2E.Unique("tls-any")) with
        {
            UseTls = true,
            Tls = new TlsOptions { AllowUntrustedServerCertificate = true },
            LoggerFactory = logs,
        });
        Assert.Single(logs.AtLeast(Microsoft.Extensions.Logging.LogLevel.Warning, "AllowUntrustedServerCertificate is set"));
    }

    [Fact]
    public async Task With_client_certificates_required_a_client_with_a_ca_issued_certificate_works_and_one_without_is_refused()
    {
        using X509Certificate2 ca = MakeCa("halfmsg-client-tls-ca");
        using X509Certificate2 issued = Issue(ca, "halfmsg-client");
        string caPem = Path.Combine(_dir, "client-ca.pem");
        File.WriteAllText(caPem, ca.ExportCertificatePem());
        string clientPfx = Path.Combine(_dir, "client.pfx");
        File.WriteAllBytes(clientPfx, issued.Export(X509ContentType.Pkcs12, "s3cret"));

        // --admin-tls off: the harness probes /health over plain HTTP.
        await using BrokerProcess broker = await BrokerProcess.StartAsync("--tls-client-auth", "require", "--tls-client-ca", caPem, "--admin-tls", "off");
        string brokerPem = await ExportBrokerCertificateAsync(broker);
        string topic = E2E.Unique("mtls");

        // The producer's certificate from a password-protected PKCS#12 file, the consumer's as an X509Certificate2.
        await using Producer producer = await ProducerClient.Producer.StartAsync(Producer(broker.Endpoint, topic) with
        {
            UseTls = true,
            Tls = new TlsOptions { TrustedCertificateFile = brokerPem, ClientCertificateFile = clientPfx, ClientCertificatePassword = "s3cret" },
        });
        await using SimpleConsumer consumer = await SimpleConsumer.StartAsync(Consumer(broker.Endpoint, topic) with
        {
            UseTls = true,
            Tls = new TlsOptions { TrustedCertificateFile = brokerPem, ClientCertificate = issued },
        });
        ITransaction transaction = producer.BeginTransaction();
        await transaction.SendAsync(new ProducerMessage(topic, "mutual"));
        await transaction.CommitAsync();
        Assert.Equal(["mutual"], await ReceiveAsync(consumer, 1));

        // A push consumer with the certificate and its key in PEM files (the key apart).
        string certPem = Path.Combine(_dir, "client.crt");
        string keyPem = Path.Combine(_dir, "client.key");
        File.WriteAllText(certPem, issued.ExportCertificatePem());
        File.WriteAllText(keyPem, issued.GetECDsaPrivateKey()!.ExportPkcs8PrivateKeyPem());
        var pushed = new System.Collections.Concurrent.ConcurrentQueue<string>();
        await using PushConsumer push = await PushConsumer.StartAsync(PushConsumerOptions.Default with
        {
            Endpoints = broker.Endpoint,
            ConsumerGroup = E2E.Unique("g"),
            Subscriptions = new Dictionary<string, string> { [topic] = "*" },
            AwaitDuration = TimeSpan.FromSeconds(1),
            Handler = (m, _) => { pushed.Enqueue(m.BodyAsString()); return Task.FromResult(ConsumeResult.Success); },
            UseTls = true,
            Tls = new TlsOptions { TrustedCertificateFile = brokerPem, ClientCertificateFile = certPem, ClientCertificateKeyFile = keyPem },
        });
        await producer.SendAsync(new ProducerMessage(topic, "pushed"));
        await E2E.EventuallyAsync(() => pushed.Contains("pushed"), Wait, "the push consumer with a PEM certificate received the message");

        // Without a certificate: refused, clearly and at once.
        var clock = Stopwatch.StartNew();
        var refused = await Assert.ThrowsAnyAsync<ClientException>(() => ProducerClient.Producer.StartAsync(Producer(broker.Endpoint, E2E.Unique("mtls-none")) with
        {
            UseTls = true,
            Tls = new TlsOptions { TrustedCertificateFile = brokerPem },
        }));
        output.WriteLine($"without a client certificate ({clock.Elapsed}): {refused.Message}");
        Assert.True(clock.Elapsed < TimeSpan.FromSeconds(15), $"took {clock.Elapsed}");
        Assert.True(refused.Message.Contains("client certificate", StringComparison.Ordinal) && refused.Message.Contains("Tls.ClientCertificate", StringComparison.Ordinal),
            refused.ToString());
    }

    [Fact]
    public async Task Bad_tls_settings_fail_the_start_naming_the_option()
    {
        using X509Certificate2 ca = MakeCa("halfmsg-client-tls-bad");
        using X509Certificate2 issued = Issue(ca, "halfmsg-client");
        string pfx = Path.Combine(_dir, "client.pfx");
        File.WriteAllBytes(pfx, issued.Export(X509ContentType.Pkcs12, "right"));
        string garbage = Path.Combine(_dir, "garbage.pem");
        File.WriteAllText(garbage, "not a certificate");
        string missing = Path.Combine(_dir, "missing.pem");
        // Nothing listens here: every case must fail before any call.
        const string Endpoint = "127.0.0.1:1";

        async Task<string> ProducerRefusedAsync(ProducerOptions options) =>
            (await Assert.ThrowsAnyAsync<ArgumentException>(() => ProducerClient.Producer.StartAsync(options))).Message;

        ProducerOptions tlsOn = Producer(Endpoint, "t") with { UseTls = true };
        Assert.Contains($"ProducerOptions.Tls.TrustedCertificateFile '{missing}' could not be read",
            await ProducerRefusedAsync(tlsOn with { Tls = new TlsOptions { TrustedCertificateFile = missing } }));
        Assert.Contains($"ProducerOptions.Tls.TrustedCertificateFile '{garbage}' could not be read as certificates",
            await ProducerRefusedAsync(tlsOn with { Tls = new TlsOptions { TrustedCertificateFile = garbage } }));
        Assert.Contains($"ProducerOptions.Tls.ClientCertificateFile '{pfx}' could not be read as PKCS#12 with ProducerOptions.Tls.ClientCertificatePassword (wrong password?)",
            await ProducerRefusedAsync(tlsOn with { Tls = new TlsOptions { ClientCertificateFile = pfx, ClientCertificatePassword = "wrong" } }));
        Assert.Contains($"ProducerOptions.Tls.ClientCertificateFile '{missing}' could not be read",
            await ProducerRefusedAsync(tlsOn with { Tls = new TlsOptions { ClientCertificateFile = missing } }));
        using (X509Certificate2 publicOnly = X509CertificateLoader.LoadCertificate(issued.RawData))
        {
            Assert.Contains("ProducerOptions.Tls.ClientCertificate (CN=halfmsg-client) has no private key",
                await ProducerRefusedAsync(tlsOn with { Tls = new TlsOptions { ClientCertificate = publicOnly } }));
        }

        Assert.Contains("ProducerOptions.Tls.AllowUntrustedServerCertificate contradicts",
            await ProducerRefusedAsync(tlsOn with { Tls = new TlsOptions { AllowUntrustedServerCertificate = true, TrustedCertificateFile = garbage } }));
        // Certificate settings without TLS would be silently unused; http:// contradicts UseTls.
        Assert.Contains("ProducerOptions.Tls is set but TLS is off",
            await ProducerRefusedAsync(Producer(Endpoint, "t") with { Tls = new TlsOptions { TrustedCertificateFile = garbage } }));
        Assert.Contains("ProducerOptions.UseTls is set but ProducerOptions.Endpoints",
            await ProducerRefusedAsync(Producer("http://" + Endpoint, "t") with { UseTls = true }));

        var consumerEx = await Assert.ThrowsAnyAsync<ArgumentException>(() => SimpleConsumer.StartAsync(
            Consumer(Endpoint, "t") with { UseTls = true, Tls = new TlsOptions { ClientCertificateFile = pfx } }));
        Assert.Contains("SimpleConsumerOptions.Tls.ClientCertificateFile", consumerEx.Message, StringComparison.Ordinal);
        var pushEx = await Assert.ThrowsAnyAsync<ArgumentException>(() => PushConsumer.StartAsync(PushConsumerOptions.Default with
        {
            Endpoints = Endpoint,
            ConsumerGroup = "g",
            Subscriptions = new Dictionary<string, string> { ["t"] = "*" },
            Handler = (_, _) => Task.FromResult(ConsumeResult.Success),
            UseTls = true,
            Tls = new TlsOptions { TrustedCertificateFile = missing },
        }));
        Assert.Contains("PushConsumerOptions.Tls.TrustedCertificateFile", pushEx.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void The_tls_options_bind_from_configuration()
    {
        IConfiguration config = new ConfigurationBuilder().AddInMemoryCollection(new Dictionary<string, string?>
        {
            ["Endpoints"] = "broker:8081",
            ["UseTls"] = "true",
            ["Tls:TrustedCertificateFile"] = "/etc/halfmsg/broker.pem",
            ["Tls:ClientCertificateFile"] = "/etc/halfmsg/client.pfx",
            ["Tls:ClientCertificatePassword"] = "pw",
        }).Build();
        foreach (object bound in new object[] { config.Get<ProducerOptions>()!, config.Get<SimpleConsumerOptions>()!, config.Get<PushConsumerOptions>()! })
        {
            (bool useTls, TlsOptions? tls) = bound switch
            {
                ProducerOptions p => (p.UseTls, p.Tls),
                SimpleConsumerOptions s => (s.UseTls, s.Tls),
                PushConsumerOptions q => (q.UseTls, q.Tls),
                _ => throw new InvalidOperationException(),
            };
            Assert.True(useTls);
            Assert.Equal("/etc/halfmsg/broker.pem", tls?.TrustedCertificateFile);
            Assert.Equal("/etc/halfmsg/client.pfx", tls?.ClientCertificateFile);
            Assert.Equal("pw", tls?.ClientCertificatePassword);
            Assert.DoesNotContain("pw", tls!.ToString(), StringComparison.Ordinal);
        }
    }

    private static X509Certificate2 SelfSigned(string subject, string dnsName)
    {
        using var key = ECDsa.Create(ECCurve.NamedCurves.nistP256);
        var request = new CertificateRequest(subject, key, HashAlgorithmName.SHA256);
        var names = new SubjectAlternativeNameBuilder();
        names.AddDnsName(dnsName);
        request.CertificateExtensions.Add(names.Build());
        using X509Certificate2 made = request.CreateSelfSigned(DateTimeOffset.UtcNow.AddMinutes(-10), DateTimeOffset.UtcNow.AddDays(1));
        return X509CertificateLoader.LoadCertificate(made.RawData);
    }

    /// <summary>A CA (ECDSA P-256, a day's validity) that can issue certificates.</summary>
    private static X509Certificate2 MakeCa(string name)
    {
        using var key = ECDsa.Create(ECCurve.NamedCurves.nistP256);
        var request = new CertificateRequest($"CN={name}", key, HashAlgorithmName.SHA256);
        request.CertificateExtensions.Add(new X509BasicConstraintsExtension(true, false, 0, true));
        request.CertificateExtensions.Add(new X509KeyUsageExtension(X509KeyUsageFlags.KeyCertSign | X509KeyUsageFlags.CrlSign, true));
        request.CertificateExtensions.Add(new X509SubjectKeyIdentifierExtension(request.PublicKey, false));
        using X509Certificate2 made = request.CreateSelfSigned(DateTimeOffset.UtcNow.AddMinutes(-10), DateTimeOffset.UtcNow.AddDays(1));
        return X509CertificateLoader.LoadPkcs12(made.Export(X509ContentType.Pkcs12), null);
    }

    /// <summary>A client-authentication certificate issued by <paramref name="ca"/>, with its key.</summary>
    private static X509Certificate2 Issue(X509Certificate2 ca, string name)
    {
        using var key = ECDsa.Create(ECCurve.NamedCurves.nistP256);
        var request = new CertificateRequest($"CN={name}", key, HashAlgorithmName.SHA256);
        request.CertificateExtensions.Add(new X509BasicConstraintsExtension(false, false, 0, false));
        request.CertificateExtensions.Add(new X509KeyUsageExtension(X509KeyUsageFlags.DigitalSignature, false));
        request.CertificateExtensions.Add(new X509EnhancedKeyUsageExtension([new Oid("1.3.6.1.5.5.7.3.2")], false));
        request.CertificateExtensions.Add(X509AuthorityKeyIdentifierExtension.CreateFromCertificate(ca, true, false));
        byte[] serial = RandomNumberGenerator.GetBytes(12);
        serial[0] &= 0x7f;
        using X509Certificate2 made = request.Create(ca, DateTimeOffset.UtcNow.AddMinutes(-5), DateTimeOffset.UtcNow.AddHours(12), serial);
        using X509Certificate2 withKey = made.CopyWithPrivateKey(key);
        return X509CertificateLoader.LoadPkcs12(withKey.Export(X509ContentType.Pkcs12), null);
    }
}
