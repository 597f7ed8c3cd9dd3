using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;
using HalfMsg.Protocol.Tls;

namespace HalfMsg.Protocol.Tests.Tls;

/// <summary>The certificate-file reader the broker (--tls-client-ca), the clients (Tls.TrustedCertificateFile) and the
/// CLI (--admin-ca) share: by content, never by extension, and never with a key.</summary>
public sealed class CertificateFilesTests
{
    private static X509Certificate2 SelfSigned(string name)
    {
        using var key = ECDsa.Create(ECCurve.NamedCurves.nistP256);
        var request = new CertificateRequest($"CN={name}", key, HashAlgorithmName.SHA256);
        return request.CreateSelfSigned(DateTimeOffset.UtcNow.AddMinutes(-1), DateTimeOffset.UtcNow.AddDays(1));
    }

    [Fact]
    public void Pem_with_several_certificates_der_and_pkcs12_without_a_password_are_read_without_keys()
    {
        using var a = SelfSigned("a");
        using var b = SelfSigned("b");

        var pem = CertificateFiles.Parse(System.Text.Encoding.ASCII.GetBytes(a.ExportCertificatePem() + "\n" + b.ExportCertificatePem()));
        Assert.Equal([a.Thumbprint, b.Thumbprint], pem.Select(c => c.Thumbprint));

        var der = CertificateFiles.Parse(a.Export(X509ContentType.Cert));
        Assert.Equal(a.Thumbprint, Assert.Single(der).Thumbprint);

        Assert.True(a.HasPrivateKey);
        var pfx = CertificateFiles.Parse(a.Export(X509ContentType.Pkcs12));
        var fromPfx = Assert.Single(pfx);
        Assert.Equal(a.Thumbprint, fromPfx.Thumbprint);
        Assert.False(fromPfx.HasPrivateKey);
    }

    [Fact]
    public void Bytes_that_hold_no_certificate_throw_a_cryptographic_exception()
    {
        Assert.ThrowsAny<CryptographicException>(() => CertificateFiles.Parse("not a certificate"u8.ToArray()));
        Assert.ThrowsAny<CryptographicException>(() => CertificateFiles.Parse(System.Text.Encoding.ASCII.GetBytes("-----BEGIN CERTIFICATE-----\n-----END CERTIFICATE-----\n")));
    }
}
