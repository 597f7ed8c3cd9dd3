using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;

namespace HalfMsg.Protocol.Tls;

/// <summary>
/// Certificates to trust, read from a file an operator names (a CA for client certificates, a broker's certificate to
/// pin): PEM (one or more certificates), DER, or PKCS#12 without a password (such as the broker's kept
/// <c>self-signed.pfx</c>), told apart by content, not by the file's extension. Only the certificates are kept, never a
/// key. Used by the broker, the clients and the CLI (linked there as a source file), each wrapping the failures in an
/// error that names its own option.
/// </summary>
public static class CertificateFiles
{
    /// <summary>The certificates in <paramref name="bytes"/>; empty when it holds none.</summary>
    /// <exception cref="CryptographicException">The bytes are neither PEM certificates, DER, nor PKCS#12 without a password.</exception>
    public static X509Certificate2Collection Parse(byte[] bytes)
    {
        var found = new X509Certificate2Collection();
        string text = System.Text.Encoding.ASCII.GetString(bytes);
        if (text.Contains("-----BEGIN CERTIFICATE-----", StringComparison.Ordinal))
        {
            found.ImportFromPem(text);
            return found;
        }
        try
        {
            found.Add(X509CertificateLoader.LoadCertificate(bytes));
        }
        catch (CryptographicException)
        {
            foreach (var c in X509CertificateLoader.LoadPkcs12Collection(bytes, null))
            {
                found.Add(X509CertificateLoader.LoadCertificate(c.RawData)); // without its key
                c.Dispose();
            }
        }
        return found;
    }
}
