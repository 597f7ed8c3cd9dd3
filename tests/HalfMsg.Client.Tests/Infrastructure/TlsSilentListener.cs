using System.Net.Security;
using System.Net.Sockets;
using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;

namespace HalfMsg.Client.Tests.Infrastructure;

/// <summary>
/// An address that completes the TLS handshake (a self-signed certificate, ALPN h2) and then never writes a byte: a
/// TLS-terminating load balancer with no backend, or a broker process hung after its TLS layer answered. Reads whatever
/// comes. Counts the connections accepted and the handshakes completed. With <paramref name="resetAfterHandshake"/> it
/// resets each connection (TCP RST) right after the handshake instead, as a broker process that dies, or a proxy that
/// drops the connection, does.
/// </summary>
public sealed class TlsSilentListener(int port = 0, bool resetAfterHandshake = false) : LoopbackListener(port)
{
    private readonly X509Certificate2 _certificate = SelfSigned();
    private int _handshakes;

    /// <summary>TLS handshakes completed so far.</summary>
    public int Handshakes => Volatile.Read(ref _handshakes);

    protected override async Task HandleAsync(TcpClient client, CancellationToken stop)
    {
        var tls = new SslStream(client.GetStream(), leaveInnerStreamOpen: false);
        Track(tls);
        await tls.AuthenticateAsServerAsync(new SslServerAuthenticationOptions
        {
            ServerCertificate = _certificate,
            ApplicationProtocols = [SslApplicationProtocol.Http2],
        }, stop);
        Interlocked.Increment(ref _handshakes);
        if (resetAfterHandshake)
        {
            client.Client.LingerState = new System.Net.Sockets.LingerOption(true, 0);
            client.Client.Close();
            return;
        }

        byte[] buffer = new byte[4096];
        while (await tls.ReadAsync(buffer, stop) > 0)
        {
        }
    }

    /// <summary>A self-signed server certificate for 127.0.0.1 and localhost (ECDSA P-256, a day's validity), with its key.</summary>
    public static X509Certificate2 SelfSigned()
    {
        using var key = ECDsa.Create(ECCurve.NamedCurves.nistP256);
        var request = new CertificateRequest("CN=halfmsg-test-tls", key, HashAlgorithmName.SHA256);
        var names = new SubjectAlternativeNameBuilder();
        names.AddIpAddress(System.Net.IPAddress.Loopback);
        names.AddDnsName("localhost");
        request.CertificateExtensions.Add(names.Build());
        request.CertificateExtensions.Add(new X509EnhancedKeyUsageExtension([new Oid("1.3.6.1.5.5.7.3.1")], false));
        using X509Certificate2 made = request.CreateSelfSigned(DateTimeOffset.UtcNow.AddMinutes(-10), DateTimeOffset.UtcNow.AddDays(1));
        return X509CertificateLoader.LoadPkcs12(made.Export(X509ContentType.Pkcs12), null);
    }
}
