using System.Globalization;
using System.Net;
using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;
using System.Text.Json;
using Apache.Rocketmq.V2;
using HalfMsg.Broker.Hosting;
using HalfMsg.Broker.Tests.Admin;
using HalfMsg.Broker.Tests.Infrastructure;
using HalfMsg.Protocol.Grpc;
using HalfMsg.TestKit;

namespace HalfMsg.Broker.Tests.Hosting;

/// <summary>
/// TLS on the gRPC port (<c>--grpc-tls</c>). The official Java, C# and Go clients start TLS unless the application
/// says <c>enableSsl(false)</c>; until 2026-12-07 the port spoke cleartext only, so they could not connect unchanged.
/// </summary>
public sealed class GrpcTlsTests
{
    private static string P(int port) => port.ToString(CultureInfo.InvariantCulture);

    private static async Task<T> WithBrokerAsync<T>(Func<string, Task<T>> run, params string[] flags)
    {
        string dataDir = Path.Combine(Path.GetTempPath(), "halfmsg-tls-" + Guid.NewGuid().ToString("N"));
        int grpcPort = FreePorts.Next();
        try
        {
            await using var host = await BrokerHost.StartAsync(["--data-dir", dataDir, "--grpc-port", P(grpcPort), "--http-port", P(FreePorts.Next()),
                "--remoting-port", "0", "--namesrv-port", "0", .. flags]);
            return await run($"127.0.0.1:{grpcPort}");
        }
        finally
        {
            try { Directory.Delete(dataDir, recursive: true); } catch (IOException) { }
        }
    }

    private static async Task<int> RouteStatusAsync(GrpcTestClient client)
    {
        var route = await client.UnaryAsync(GrpcMethods.QueryRoute, new QueryRouteRequest { Topic = new Resource { Name = "tls" } },
            QueryRouteResponse.Parser, timeout: TimeSpan.FromSeconds(20));
        return route.Response is { } r ? (int)r.Status.Code : -route.GrpcStatus;
    }

    [Fact]
    public async Task By_default_the_port_answers_TLS_and_cleartext_and_a_self_signed_certificate_names_the_loopback_address()
    {
        X509Certificate2? seen = null;
        var (tls, clear) = await WithBrokerAsync(async endpoint =>
        {
            using var secure = new GrpcTestClient(endpoint, tls: (_, cert, _, _) =>
            {
                seen = cert is null ? null : new X509Certificate2(cert);
                return true; // as the official Java, C# and Go clients: no verification
            });
            using var plain = new GrpcTestClient(endpoint);
            return (await RouteStatusAsync(secure), await RouteStatusAsync(plain));
        });
        Assert.Equal((int)Code.Ok, tls);
        Assert.Equal((int)Code.Ok, clear);
        Assert.NotNull(seen);
        Assert.Equal(seen!.Subject, seen.Issuer);
        var names = seen.Extensions.OfType<X509SubjectAlternativeNameExtension>().Single();
        Assert.Contains(IPAddress.Loopback, names.EnumerateIPAddresses());
        Assert.Contains("localhost", names.EnumerateDnsNames());
    }

    [Fact]
    public async Task Required_closes_cleartext_connections_and_off_answers_no_handshake()
    {
        var (requiredTls, requiredClear) = await WithBrokerAsync(async endpoint =>
        {
            using var secure = new GrpcTestClient(endpoint, tls: (_, _, _, _) => true);
            using var plain = new GrpcTestClient(endpoint);
            return (await RouteStatusAsync(secure), await RouteStatusAsync(plain));
        }, "--grpc-tls", "required");
        Assert.Equal((int)Code.Ok, requiredTls);
        Assert.True(requiredClear < 0, $"a cleartext call was answered ({requiredClear})");

        var (offTls, offClear) = await WithBrokerAsync(async endpoint =>
        {
            using var secure = new GrpcTestClient(endpoint, tls: (_, _, _, _) => true);
            using var plain = new GrpcTestClient(endpoint);
            return (await RouteStatusAsync(secure), await RouteStatusAsync(plain));
        }, "--grpc-tls", "off");
        Assert.True(offTls < 0, $"a TLS call was answered ({offTls})");
        Assert.Equal((int)Code.Ok, offClear);
    }

    /// <summary>Starts the broker on <paramref name="dataDir"/> (kept), connects once with TLS, and returns the
    /// thumbprint of the certificate it presented.</summary>
    private static async Task<string> PresentedThumbprintAsync(string dataDir, params string[] flags)
    {
        int grpcPort = FreePorts.Next();
        await using var host = await BrokerHost.StartAsync(["--data-dir", dataDir, "--grpc-port", P(grpcPort), "--http-port", P(FreePorts.Next()),
            "--remoting-port", "0", "--namesrv-port", "0", .. flags]);
        string? thumbprint = null;
        using var secure = new GrpcTestClient($"127.0.0.1:{grpcPort}", tls: (_, cert, _, _) =>
        {
            thumbprint = cert?.GetCertHashString();
            return true;
        });
        Assert.Equal((int)Code.Ok, await RouteStatusAsync(secure));
        Assert.NotNull(thumbprint);
        return thumbprint!;
    }

    private static string KeptPath(string dataDir) => Path.Combine(dataDir, SelfSignedStore.DirectoryName, SelfSignedStore.FileName);

    [Fact]
    public async Task The_self_signed_certificate_is_kept_in_the_data_dir_owner_only_and_served_again_after_a_restart()
    {
        string dataDir = Path.Combine(Path.GetTempPath(), "halfmsg-tls-kept-" + Guid.NewGuid().ToString("N"));
        try
        {
            string first = await PresentedThumbprintAsync(dataDir);
            Assert.True(File.Exists(KeptPath(dataDir)), "no self-signed certificate kept in the data dir");
            using (var kept = X509CertificateLoader.LoadPkcs12FromFile(KeptPath(dataDir), null))
            {
                Assert.Equal(first, kept.Thumbprint);
                Assert.True(kept.HasPrivateKey);
            }
            if (!OperatingSystem.IsWindows())
            {
                Assert.Equal(UnixFileMode.UserRead | UnixFileMode.UserWrite, File.GetUnixFileMode(KeptPath(dataDir)));
                Assert.Equal(UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute,
                    File.GetUnixFileMode(Path.Combine(dataDir, SelfSignedStore.DirectoryName)));
            }

            // A restart (required mode too) serves the same certificate: a client that pinned or trusted it keeps working.
            Assert.Equal(first, await PresentedThumbprintAsync(dataDir));
            Assert.Equal(first, await PresentedThumbprintAsync(dataDir, "--grpc-tls", "required"));
        }
        finally
        {
            try { Directory.Delete(dataDir, recursive: true); } catch (IOException) { }
        }
    }

    [Fact]
    public async Task Two_starts_of_the_broker_process_on_one_data_dir_present_the_same_certificate_even_after_kill_9()
    {
        string dataDir = BrokerChild.NewDataDir("tls-process");
        try
        {
            async Task<string> PresentedAsync(BrokerChild broker)
            {
                await broker.WaitHealthyAsync();
                string? thumbprint = null;
                using var secure = new GrpcTestClient(broker.Endpoint, tls: (_, cert, _, _) =>
                {
                    thumbprint = cert?.GetCertHashString();
                    return true;
                });
                Assert.Equal((int)Code.Ok, await RouteStatusAsync(secure));
                return thumbprint!;
            }

            string first;
            await using (var broker = BrokerChild.Start(dataDir))
            {
                first = await PresentedAsync(broker);
                broker.Kill(); // kill -9: the certificate was kept when it was made
            }
            await using (var broker = BrokerChild.Start(dataDir))
            {
                Assert.Equal(first, await PresentedAsync(broker));
            }
        }
        finally
        {
            BrokerChild.DeleteDir(dataDir);
        }
    }

    [Fact]
    public async Task A_damaged_kept_certificate_is_replaced_and_the_broker_starts()
    {
        string dataDir = Path.Combine(Path.GetTempPath(), "halfmsg-tls-damaged-" + Guid.NewGuid().ToString("N"));
        try
        {
            string first = await PresentedThumbprintAsync(dataDir);
            byte[] bytes = File.ReadAllBytes(KeptPath(dataDir));
            File.WriteAllBytes(KeptPath(dataDir), bytes.AsSpan(0, bytes.Length / 2).ToArray()); // cut in half

            string second = await PresentedThumbprintAsync(dataDir);
            Assert.NotEqual(first, second);
            using (var kept = X509CertificateLoader.LoadPkcs12FromFile(KeptPath(dataDir), null))
            {
                Assert.Equal(second, kept.Thumbprint);
            }
            if (!OperatingSystem.IsWindows())
            {
                Assert.Equal(UnixFileMode.UserRead | UnixFileMode.UserWrite, File.GetUnixFileMode(KeptPath(dataDir)));
            }

            // Garbage from the start of the file, an empty file: the same.
            File.WriteAllText(KeptPath(dataDir), "not a certificate");
            string third = await PresentedThumbprintAsync(dataDir);
            Assert.NotEqual(second, third);
            File.WriteAllBytes(KeptPath(dataDir), []);
            Assert.NotEqual(third, await PresentedThumbprintAsync(dataDir));
        }
        finally
        {
            try { Directory.Delete(dataDir, recursive: true); } catch (IOException) { }
        }
    }

    /// <summary>A broker that runs longer than its kept self-signed certificate has left (reused at a start while it has
    /// more than 30 days) serves a new one once 30 days are left, instead of the expired one. Until the review of
    /// 2026-12-07 the certificate taken at the first TLS connection was served for the whole run.</summary>
    [Fact]
    public void A_running_broker_serves_a_new_self_signed_certificate_once_its_own_nears_expiry()
    {
        string dataDir = Path.Combine(Path.GetTempPath(), "halfmsg-tls-renew-" + Guid.NewGuid().ToString("N"));
        try
        {
            var start = DateTimeOffset.UtcNow;
            var now = start;
            var logger = Microsoft.Extensions.Logging.Abstractions.NullLogger.Instance;
            var source = PortTls.CertificateSource(null, null, null, dataDir, () => now);
            X509Certificate2 first = source(logger);
            Assert.Same(first, source(logger));           // the same instance while it has time left
            now = start.AddDays(200);
            Assert.Same(first, source(logger));
            now = new DateTimeOffset(first.NotAfter).AddDays(-10); // 10 days left
            X509Certificate2 renewed = source(logger);
            Assert.NotEqual(first.Thumbprint, renewed.Thumbprint); // before: the first, until it expired and after
            Assert.True(renewed.HasPrivateKey);
        }
        finally
        {
            try { Directory.Delete(dataDir, recursive: true); } catch (IOException) { }
        }
    }

    /// <summary>
    /// The kept certificate is reused whatever the machine's name is now (a container started without a fixed
    /// <c>--hostname</c> has a new one at each start; until 2026-12-07 that made a new certificate at each start, and
    /// broke clients that had pinned it), but not once it lacks a configured <c>--advertised-host</c> (a name or an
    /// address), nor close to expiry, nor without its key.
    /// </summary>
    [Fact]
    public void A_kept_certificate_close_to_expiry_or_not_naming_the_advertised_host_or_without_its_key_is_replaced()
    {
        string dir = Path.Combine(Path.GetTempPath(), "halfmsg-tls-store-" + Guid.NewGuid().ToString("N"));
        try
        {
            var now = DateTimeOffset.UtcNow;
            var logger = Microsoft.Extensions.Logging.Abstractions.NullLogger.Instance;
            using var made = SelfSignedStore.LoadOrMake(dir, "host-a", null, now, logger);
            Assert.True(SelfSignedStore.Names(made, "host-a"));
            using (var again = SelfSignedStore.LoadOrMake(dir, "host-a", null, now, logger))
            {
                Assert.Equal(made.Thumbprint, again.Thumbprint);
            }
            // The machine has another name (a container's new start): the same certificate, still naming the first.
            using (var renamed = SelfSignedStore.LoadOrMake(dir, "host-b", null, now, logger))
            {
                Assert.Equal(made.Thumbprint, renamed.Thumbprint);
                Assert.False(SelfSignedStore.Names(renamed, "host-b"));
            }
            // An advertised host it does not name: replaced by one naming it and the machine's name now, which is kept.
            using var advertised = SelfSignedStore.LoadOrMake(dir, "host-b", "broker.example", now, logger);
            Assert.NotEqual(made.Thumbprint, advertised.Thumbprint);
            Assert.True(SelfSignedStore.Names(advertised, "broker.example"));
            Assert.True(SelfSignedStore.Names(advertised, "host-b"));
            Assert.True(SelfSignedStore.Names(advertised, "localhost"));
            using (var again = SelfSignedStore.LoadOrMake(dir, "host-c", "BROKER.example", now, logger))
            {
                Assert.Equal(advertised.Thumbprint, again.Thumbprint);
            }
            // An advertised address: named as an address.
            using var address = SelfSignedStore.LoadOrMake(dir, "host-c", "10.1.2.3", now, logger);
            Assert.NotEqual(advertised.Thumbprint, address.Thumbprint);
            Assert.True(SelfSignedStore.Names(address, "10.1.2.3"));
            Assert.False(SelfSignedStore.Names(address, "10.1.2.4"));
            using (var again = SelfSignedStore.LoadOrMake(dir, "host-d", "10.1.2.3", now, logger))
            {
                Assert.Equal(address.Thumbprint, again.Thumbprint);
            }
            // Valid for 30 days or less (a year less 20 days later): replaced.
            using (var late = SelfSignedStore.LoadOrMake(dir, "host-d", "10.1.2.3", now.AddDays(345), logger))
            {
                Assert.NotEqual(address.Thumbprint, late.Thumbprint);
            }
            // A certificate without its key: replaced.
            File.WriteAllBytes(Path.Combine(dir, SelfSignedStore.FileName), address.Export(X509ContentType.Cert));
            using (var keyless = SelfSignedStore.LoadOrMake(dir, "host-d", null, now, logger))
            {
                Assert.True(keyless.HasPrivateKey);
                Assert.NotEqual(address.Thumbprint, keyless.Thumbprint);
            }
            Assert.False(File.Exists(Path.Combine(dir, SelfSignedStore.FileName + ".tmp")));
        }
        finally
        {
            try { Directory.Delete(dir, recursive: true); } catch (IOException) { }
        }
    }

    /// <summary>The certificate one start of the broker on <paramref name="dataDir"/> presents on its gRPC port, the
    /// machine being called <paramref name="machineName"/>.</summary>
    private static async Task<X509Certificate2> PresentedOnAsync(string dataDir, string machineName, params string[] flags)
    {
        int grpcPort = FreePorts.Next();
        await using var host = await BrokerHost.StartAsync(["--data-dir", dataDir, "--grpc-port", P(grpcPort), "--http-port", P(FreePorts.Next()),
            "--remoting-port", "0", "--namesrv-port", "0", .. flags], options => options with { MachineHostName = () => machineName });
        X509Certificate2? seen = null;
        using var secure = new GrpcTestClient($"127.0.0.1:{grpcPort}", tls: (_, cert, _, _) =>
        {
            seen = cert is null ? null : new X509Certificate2(cert);
            return true;
        });
        Assert.Equal((int)Code.Ok, await RouteStatusAsync(secure));
        return seen!;
    }

    /// <summary>
    /// A broker in a container started without a fixed <c>--hostname</c> (the machine's name differs at each start,
    /// simulated through <see cref="BrokerOptions.MachineHostName"/>) serves the same kept certificate at each start, so a
    /// client that pinned it keeps working; an <c>--advertised-host</c> the certificate does not name makes a new one
    /// naming it, kept in turn. Until 2026-12-07 each start with a new machine name made a new certificate.
    /// </summary>
    [Fact]
    public async Task The_kept_certificate_survives_a_machine_name_that_changes_at_each_start()
    {
        string dataDir = Path.Combine(Path.GetTempPath(), "halfmsg-tls-rename-" + Guid.NewGuid().ToString("N"));
        try
        {
            using var first = await PresentedOnAsync(dataDir, "3f2a9c1d7b4e");
            Assert.True(SelfSignedStore.Names(first, "3f2a9c1d7b4e"));
            using var second = await PresentedOnAsync(dataDir, "8d0e4b6a2c15");
            Assert.Equal(first.Thumbprint, second.Thumbprint);

            using var advertised = await PresentedOnAsync(dataDir, "a1b2c3d4e5f6", "--advertised-host", "mq.example.internal");
            Assert.NotEqual(first.Thumbprint, advertised.Thumbprint);
            Assert.True(SelfSignedStore.Names(advertised, "mq.example.internal"));
            using var again = await PresentedOnAsync(dataDir, "0f9e8d7c6b5a", "--advertised-host", "mq.example.internal");
            Assert.Equal(advertised.Thumbprint, again.Thumbprint);
        }
        finally
        {
            try { Directory.Delete(dataDir, recursive: true); } catch (IOException) { }
        }
    }

    /// <summary>A certificate and its key as two PEM files, for 127.0.0.1; its own authority, as `openssl req -x509`
    /// makes one, so that a client may trust it as a root.</summary>
    internal static (string Certificate, string Key, X509Certificate2 Made) WritePem(string dir)
    {
        using var key = ECDsa.Create(ECCurve.NamedCurves.nistP256);
        var request = new CertificateRequest("CN=halfmsg-test", key, HashAlgorithmName.SHA256);
        var names = new SubjectAlternativeNameBuilder();
        names.AddIpAddress(IPAddress.Loopback);
        request.CertificateExtensions.Add(names.Build());
        request.CertificateExtensions.Add(new X509BasicConstraintsExtension(true, false, 0, true));
        request.CertificateExtensions.Add(new X509EnhancedKeyUsageExtension([new Oid("1.3.6.1.5.5.7.3.1")], false));
        var made = request.CreateSelfSigned(DateTimeOffset.UtcNow.AddMinutes(-5), DateTimeOffset.UtcNow.AddDays(1));
        Directory.CreateDirectory(dir);
        string certificate = Path.Combine(dir, "broker.crt"), keyFile = Path.Combine(dir, "broker.key");
        File.WriteAllText(certificate, made.ExportCertificatePem());
        File.WriteAllText(keyFile, key.ExportPkcs8PrivateKeyPem());
        return (certificate, keyFile, made);
    }

    [Fact]
    public async Task A_configured_certificate_is_served_and_a_wrong_one_stops_the_start_with_its_flag_named()
    {
        string dir = Path.Combine(Path.GetTempPath(), "halfmsg-tls-cert-" + Guid.NewGuid().ToString("N"));
        try
        {
            var (certificate, key, made) = WritePem(dir);
            string? thumbprint = null;
            int status = await WithBrokerAsync(async endpoint =>
            {
                using var secure = new GrpcTestClient(endpoint, tls: (_, cert, _, _) =>
                {
                    thumbprint = cert?.GetCertHashString();
                    return true;
                });
                return await RouteStatusAsync(secure);
            }, "--grpc-tls-certificate", certificate, "--grpc-tls-key", key);
            Assert.Equal((int)Code.Ok, status);
            Assert.Equal(made.Thumbprint, thumbprint);

            var missing = await BrokerCli.RunAsync(["--grpc-tls-certificate", Path.Combine(dir, "nope.crt"), "--data-dir", Path.Combine(dir, "data")]);
            Assert.NotEqual(0, missing.ExitCode);
            Assert.Contains("--grpc-tls-certificate: no file", missing.StdOut + missing.StdErr);
            var keyless = await BrokerCli.RunAsync(["--grpc-tls-certificate", certificate, "--data-dir", Path.Combine(dir, "data")]);
            Assert.NotEqual(0, keyless.ExitCode);
            Assert.Contains("--grpc-tls-certificate", keyless.StdOut + keyless.StdErr);
            var mode = await BrokerCli.RunAsync(["--grpc-tls", "maybe", "--data-dir", Path.Combine(dir, "data")]);
            Assert.NotEqual(0, mode.ExitCode);
            Assert.Contains("--grpc-tls must be 'auto', 'required' or 'off', not 'maybe'", mode.StdOut + mode.StdErr);
        }
        finally
        {
            try { Directory.Delete(dir, recursive: true); } catch (IOException) { }
        }
    }

    [Fact]
    [Trait("Category", "Compat")]
    public async Task The_official_Node_client_with_sslEnabled_commits_a_transaction_and_receives_it_over_TLS()
    {
        string dir = Path.Combine(Path.GetTempPath(), "halfmsg-tls-node-" + Guid.NewGuid().ToString("N"));
        try
        {
            var (certificate, key, _) = WritePem(dir);
            // The Node client verifies the server's certificate: grpc-js reads its roots from this file when it is set.
            var tls = new Dictionary<string, string> { ["HALFMSG_NODE_SSL"] = "1", ["GRPC_DEFAULT_SSL_ROOTS_FILE_PATH"] = certificate };
            string topic = "TlsTx_" + Guid.NewGuid().ToString("N")[..8];
            var (tx, got) = await WithBrokerAsync(async endpoint =>
            {
                var sent = await NodeScript.Start("tx.js", TimeSpan.FromSeconds(60), tls, endpoint, topic, "commit").WaitAsync();
                var received = await NodeScript.Start("simple.js", TimeSpan.FromSeconds(60), tls, endpoint, topic, "G_" + topic, "collect",
                    JsonSerializer.Serialize(new { count = 1, timeoutMs = 20_000 })).WaitAsync();
                return (sent, received);
            }, "--grpc-tls", "required", "--grpc-tls-certificate", certificate, "--grpc-tls-key", key);
            Assert.True(tx.ExitCode == 0 && tx.Final.ValueKind != JsonValueKind.Undefined, tx.Describe());
            Assert.True(got.ExitCode == 0 && got.Final.ValueKind != JsonValueKind.Undefined, got.Describe());
            var message = Assert.Single(got.Final.GetProperty("got").EnumerateArray());
            Assert.Equal(tx.Final.GetProperty("id").GetString(), message.GetProperty("id").GetString());
            Assert.Equal("tx-commit", message.GetProperty("body").GetString());
        }
        finally
        {
            try { Directory.Delete(dir, recursive: true); } catch (IOException) { }
        }
    }
}
