using System.Buffers;
using System.Net;
using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;
using Microsoft.AspNetCore.Connections;
using Microsoft.AspNetCore.Server.Kestrel.Core;
using Microsoft.AspNetCore.Server.Kestrel.Https;

namespace HalfMsg.Broker.Hosting;

/// <summary>How a port treats TLS (<c>--grpc-tls</c>, <c>--remoting-tls</c>).</summary>
public enum PortTlsMode
{
    /// <summary>TLS for a connection that opens with a TLS handshake, cleartext for one that opens with anything else,
    /// on the same port (as Apache's proxy serves its 8081, and its broker and name server with
    /// <c>tls.server.mode=permissive</c>, their default).</summary>
    Auto,
    /// <summary>TLS only: a connection that opens in cleartext is closed (Apache: <c>enforcing</c>).</summary>
    Required,
    /// <summary>Cleartext only: a TLS handshake is not answered (Apache: <c>disabled</c>).</summary>
    Off,
}

/// <summary>
/// TLS on the gRPC and Remoting ports, with one certificate for both. gRPC: the official Java, C# and Go clients start
/// TLS by default (<c>enableSsl</c> is true unless the application turns it off) and do not verify the server's
/// certificate; the Node client speaks cleartext unless <c>sslEnabled</c>, and then verifies it. Remoting: the Java 4.x
/// client starts TLS with <c>-Dtls.enable=true</c> or <c>ClientConfig.setUseTLS(true)</c> and by default
/// (<c>tls.test.mode.enable</c>) does not verify the certificate either; ali-ons (Node) speaks cleartext. So by default a
/// port answers both, told apart by a connection's first byte: a TLS record starts with 22 (handshake), the HTTP/2
/// preface with 'P', a Remoting frame with the high byte of its length (0 for any frame under 16 MiB). The TLS itself
/// is Kestrel's (<see cref="ListenOptionsHttpsExtensions.UseHttps(ListenOptions, HttpsConnectionAdapterOptions)"/>:
/// handshake timeout, ALPN); a cleartext connection goes around it, straight to what serves the port. The cleartext
/// path costs one peek per connection and nothing per frame.
/// </summary>
internal static class PortTls
{
    /// <summary>A gRPC connection that sends no first byte within this long is closed; also Kestrel's TLS handshake timeout on every port.</summary>
    public static readonly TimeSpan FirstByteTimeout = TimeSpan.FromSeconds(10);

    /// <summary>The first byte of a TLS record that carries a handshake (RFC 8446 §5.1, ContentType handshake).</summary>
    private const byte TlsHandshakeRecord = 22;

    /// <summary>
    /// The certificate to serve: the one configured (a PEM certificate with its key in the same file or in
    /// <paramref name="keyPath"/>, or a PKCS#12 file), checked at start so that a wrong path or password stops the
    /// broker with its flag named; or, when none is, a self-signed one, taken on the first TLS connection from
    /// <c>&lt;data&gt;/tls/self-signed.pfx</c> (<see cref="SelfSignedStore"/>) or made and kept there. Until 2026-12-07 it
    /// was made anew at each start, so a client that pinned or trusted it had to be reconfigured after every restart.
    /// A self-signed one names localhost, the loopback addresses, <paramref name="advertisedHost"/> (<c>--advertised-host</c>)
    /// and the machine's name when it is made (<paramref name="hostName"/>, default <see cref="Dns.GetHostName"/>).
    /// </summary>
    public static Func<ILogger, X509Certificate2> CertificateSource(string? certificatePath, string? keyPath, string? password, string? dataDir = null,
        Func<DateTimeOffset>? clock = null, string? advertisedHost = null, Func<string>? hostName = null)
    {
        if (string.IsNullOrEmpty(certificatePath))
        {
            if (!string.IsNullOrEmpty(keyPath))
                throw new BrokerConfigurationException("--grpc-tls-key needs --grpc-tls-certificate");
            X509Certificate2? made = null;
            var gate = new object();
            return logger =>
            {
                lock (gate)
                {
                    DateTimeOffset now = clock?.Invoke() ?? DateTimeOffset.UtcNow;
                    // Served until it has SelfSignedStore.MinRemaining left, then made again (and kept): a broker that
                    // runs longer than that does not serve an expired certificate. Until the review of 2026-12-07 the
                    // one taken at the first connection was served for the whole run, which with a kept certificate
                    // (reused while it has more than 30 days left) could outlive it.
                    if (made is not null && !SelfSignedStore.NearsExpiry(made, now)) return made;
                    string host = hostName?.Invoke() ?? Dns.GetHostName();
                    made = dataDir is null ? SelfSigned(host, advertisedHost)
                        : SelfSignedStore.LoadOrMake(Path.Combine(dataDir, SelfSignedStore.DirectoryName), host, advertisedHost, now, logger);
                    logger.LogWarning("TLS: no --grpc-tls-certificate, so a self-signed certificate for {Names} is served (thumbprint {Thumbprint}, valid until {Until:yyyy-MM-dd}). The Java, C# and Go gRPC clients and the Java Remoting client (tls.test.mode.enable, its default) accept it; clients that verify certificates (the Node gRPC client with sslEnabled) do not: configure a certificate for them.",
                        string.Join(", ", NamesOf(made)), made.Thumbprint, made.NotAfter);
                    return made;
                }
            };
        }
        var loaded = Load(certificatePath, keyPath, password);
        return _ => loaded;
    }

    private static X509Certificate2 Load(string certificatePath, string? keyPath, string? password)
    {
        if (!File.Exists(certificatePath))
            throw new BrokerConfigurationException($"--grpc-tls-certificate: no file '{certificatePath}'");
        if (!string.IsNullOrEmpty(keyPath) && !File.Exists(keyPath))
            throw new BrokerConfigurationException($"--grpc-tls-key: no file '{keyPath}'");
        try
        {
            X509Certificate2 cert;
            string ext = Path.GetExtension(certificatePath).ToLowerInvariant();
            if (ext is ".pfx" or ".p12")
            {
                cert = X509CertificateLoader.LoadPkcs12FromFile(certificatePath, string.IsNullOrEmpty(password) ? null : password);
            }
            else
            {
                using var pem = string.IsNullOrEmpty(password)
                    ? X509Certificate2.CreateFromPemFile(certificatePath, string.IsNullOrEmpty(keyPath) ? null : keyPath)
                    : X509Certificate2.CreateFromEncryptedPemFile(certificatePath, password, string.IsNullOrEmpty(keyPath) ? null : keyPath);
                // A key read from PEM is ephemeral; exported and read back it can be used by the TLS stack everywhere.
                cert = X509CertificateLoader.LoadPkcs12(pem.Export(X509ContentType.Pkcs12), null);
            }
            if (!cert.HasPrivateKey)
                throw new BrokerConfigurationException($"--grpc-tls-certificate: '{certificatePath}' holds no private key; give it with --grpc-tls-key");
            return cert;
        }
        catch (Exception ex) when (ex is CryptographicException or ArgumentException or IOException)
        {
            throw new BrokerConfigurationException($"--grpc-tls-certificate: '{certificatePath}' could not be read as a PEM certificate with its key{(string.IsNullOrEmpty(keyPath) ? "" : $" ('{keyPath}')")} or a PKCS#12 file: {ex.Message}");
        }
    }

    /// <summary>A self-signed certificate for <c>localhost</c>, 127.0.0.1, ::1, <paramref name="host"/> and
    /// <paramref name="advertisedHost"/> (a name or an address), valid for a year (ECDSA P-256: made in a millisecond).</summary>
    internal static X509Certificate2 SelfSigned(string host, string? advertisedHost = null)
    {
        using var key = ECDsa.Create(ECCurve.NamedCurves.nistP256);
        var request = new CertificateRequest($"CN={host}", key, HashAlgorithmName.SHA256);
        var names = new SubjectAlternativeNameBuilder();
        names.AddDnsName("localhost");
        if (!string.Equals(host, "localhost", StringComparison.OrdinalIgnoreCase)) names.AddDnsName(host);
        names.AddIpAddress(IPAddress.Loopback);
        names.AddIpAddress(IPAddress.IPv6Loopback);
        if (!string.IsNullOrEmpty(advertisedHost))
        {
            string bare = advertisedHost.Trim('[', ']');
            if (IPAddress.TryParse(bare, out var address))
            {
                if (!IPAddress.IsLoopback(address)) names.AddIpAddress(address);
            }
            else if (!string.Equals(advertisedHost, "localhost", StringComparison.OrdinalIgnoreCase)
                && !string.Equals(advertisedHost, host, StringComparison.OrdinalIgnoreCase))
            {
                names.AddDnsName(advertisedHost);
            }
        }
        request.CertificateExtensions.Add(names.Build());
        request.CertificateExtensions.Add(new X509BasicConstraintsExtension(false, false, 0, false));
        request.CertificateExtensions.Add(new X509KeyUsageExtension(X509KeyUsageFlags.DigitalSignature, false));
        request.CertificateExtensions.Add(new X509EnhancedKeyUsageExtension([new Oid("1.3.6.1.5.5.7.3.1")], false)); // server authentication
        var now = DateTimeOffset.UtcNow;
        using var made = request.CreateSelfSigned(now.AddMinutes(-5), now.AddYears(1));
        return X509CertificateLoader.LoadPkcs12(made.Export(X509ContentType.Pkcs12), null);
    }

    /// <summary>The DNS names and addresses <paramref name="certificate"/> is for (its subject alternative names).</summary>
    internal static IEnumerable<string> NamesOf(X509Certificate2 certificate)
        => certificate.Extensions.OfType<X509SubjectAlternativeNameExtension>()
            .SelectMany(e => e.EnumerateDnsNames().Concat(e.EnumerateIPAddresses().Select(a => a.ToString())));

    /// <summary>
    /// Adds TLS to <paramref name="listen"/> as <paramref name="mode"/> says. With <see cref="PortTlsMode.Auto"/> the
    /// connection's first byte picks the way: a handshake goes through Kestrel's TLS middleware, anything else around it
    /// to what follows it (learnt when the pipeline is built: Kestrel builds middleware from the last added to the first).
    /// <paramref name="port"/> ("gRPC", "Remoting") and <paramref name="flag"/> name the port in the log;
    /// <paramref name="firstByteTimeout"/> (default <see cref="FirstByteTimeout"/>) is how long a connection may stay
    /// silent before its first byte. <paramref name="clients"/> (<c>--tls-client-auth</c>), when set, asks TLS clients
    /// for a certificate and refuses the handshake of one that does not chain to <c>--tls-client-ca</c>.
    /// </summary>
    public static void Apply(ListenOptions listen, PortTlsMode mode, Func<ILogger, X509Certificate2> certificate, ILogger logger,
        string port = "gRPC", string flag = "--grpc-tls", TimeSpan? firstByteTimeout = null, ClientCertificates? clients = null)
    {
        if (mode == PortTlsMode.Off) return;
        var silentFor = firstByteTimeout ?? FirstByteTimeout;
        ConnectionDelegate? afterTls = null;
        listen.Use(next => async connection =>
        {
            byte? first = await FirstByteAsync(connection, silentFor).ConfigureAwait(false);
            if (first is null) return; // closed, or silent: nothing to serve
            if (first == TlsHandshakeRecord) await next(connection).ConfigureAwait(false);
            else if (mode == PortTlsMode.Auto) await afterTls!(connection).ConfigureAwait(false);
            else logger.LogDebug("{Port} connection from {Remote} closed: {Flag} required and it did not start TLS", port, connection.RemoteEndPoint, flag);
        });
        var https = new HttpsConnectionAdapterOptions
        {
            ServerCertificateSelector = (_, _) => certificate(logger),
            HandshakeTimeout = FirstByteTimeout,
        };
        clients?.Configure(https, certificate, logger, port);
        listen.UseHttps(https);
        listen.Use(next =>
        {
            afterTls = next;
            return next;
        });
    }

    /// <summary>The connection's first byte, left unread; null if the peer closed or sent nothing within
    /// <paramref name="timeout"/>, or Kestrel asked the connection to close (the host is stopping).</summary>
    private static async ValueTask<byte?> FirstByteAsync(ConnectionContext connection, TimeSpan timeout)
    {
        // A stop asks every connection to close (ConnectionClosedRequested), as a Remoting session and HTTP/2 heed; until
        // later on 2026-12-07 this wait did not, and a connection that had sent nothing yet (a TCP probe, a client between
        // its connect and its first request) held the stop for the host's whole shutdown timeout (found by review).
        var closeRequested = connection.Features.Get<Microsoft.AspNetCore.Connections.Features.IConnectionLifetimeNotificationFeature>()?.ConnectionClosedRequested ?? default;
        using var silent = CancellationTokenSource.CreateLinkedTokenSource(connection.ConnectionClosed, closeRequested);
        silent.CancelAfter(timeout);
        var input = connection.Transport.Input;
        try
        {
            while (true)
            {
                var result = await input.ReadAsync(silent.Token).ConfigureAwait(false);
                var buffer = result.Buffer;
                if (!buffer.IsEmpty)
                {
                    byte first = buffer.Slice(0, 1).ToArray()[0];
                    // Nothing consumed, nothing examined: the next reader gets the same bytes at once.
                    input.AdvanceTo(buffer.Start);
                    return first;
                }
                input.AdvanceTo(buffer.Start, buffer.End);
                if (result.IsCompleted || result.IsCanceled) return null;
            }
        }
        catch (OperationCanceledException)
        {
            return null;
        }
    }
}
