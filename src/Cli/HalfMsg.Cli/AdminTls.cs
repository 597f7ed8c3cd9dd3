using System.Net.Security;
using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;

namespace HalfMsg.Cli;

/// <summary>
/// HTTPS to the admin port when the broker's certificate is not one the system trusts (<c>--admin-tls</c> with its
/// self-signed certificate): <c>--admin-ca</c> trusts the given certificate(s) besides the system's roots,
/// <c>--insecure</c> verifies nothing.
/// </summary>
internal static class AdminTls
{
    /// <summary>A handler for <paramref name="caPath"/> or <paramref name="insecure"/>; an unreadable file is an
    /// <see cref="ArgumentException"/> naming the option.</summary>
    public static SocketsHttpHandler Handler(string? caPath, bool insecure, string? clientCertificatePath = null)
    {
        var handler = new SocketsHttpHandler();
        if (!string.IsNullOrEmpty(clientCertificatePath))
        {
            // Presented when the broker asks for one (--tls-client-auth), whatever CA names it lists.
            var client = LoadClientCertificate(clientCertificatePath);
            handler.SslOptions.LocalCertificateSelectionCallback = (_, _, _, _, _) => client;
        }
        if (insecure)
        {
            handler.SslOptions.RemoteCertificateValidationCallback = (_, _, _, _) => true;
            return handler;
        }
        if (string.IsNullOrEmpty(caPath)) return handler; // the system's roots
        var trusted = Load(caPath);
        handler.SslOptions.RemoteCertificateValidationCallback = (_, certificate, _, errors) => Verify(certificate, errors, trusted);
        return handler;
    }

    /// <summary>
    /// The system's verdict when it has no complaint; otherwise the presented certificate must be one of
    /// <paramref name="trusted"/> (a self-signed certificate given as it is), or chain up to one of them and name the
    /// host the client asked for.
    /// </summary>
    internal static bool Verify(X509Certificate? certificate, SslPolicyErrors errors, X509Certificate2Collection trusted)
    {
        if (errors == SslPolicyErrors.None) return true;
        if (certificate is null) return false;
        using var presented = new X509Certificate2(certificate);
        foreach (var t in trusted)
            if (t.RawDataMemory.Span.SequenceEqual(presented.RawDataMemory.Span)) return true;
        if ((errors & SslPolicyErrors.RemoteCertificateNameMismatch) != 0) return false;
        using var chain = new X509Chain();
        chain.ChainPolicy.TrustMode = X509ChainTrustMode.CustomRootTrust;
        chain.ChainPolicy.CustomTrustStore.AddRange(trusted);
        chain.ChainPolicy.RevocationMode = X509RevocationMode.NoCheck;
        return chain.Build(presented);
    }

    /// <summary>The certificate, with its key, for a broker that asks for one (<c>--tls-client-auth</c>): a PKCS#12 file
    /// without a password, or PEM with the certificate and its unencrypted key in the same file.</summary>
    internal static X509Certificate2 LoadClientCertificate(string path)
    {
        if (!File.Exists(path)) throw new ArgumentException($"--client-certificate: no file '{path}'");
        try
        {
            string ext = Path.GetExtension(path).ToLowerInvariant();
            X509Certificate2 certificate;
            if (ext is ".pfx" or ".p12")
            {
                certificate = X509CertificateLoader.LoadPkcs12FromFile(path, null);
            }
            else
            {
                using var pem = X509Certificate2.CreateFromPemFile(path);
                certificate = X509CertificateLoader.LoadPkcs12(pem.Export(X509ContentType.Pkcs12), null);
            }
            if (!certificate.HasPrivateKey) throw new ArgumentException($"--client-certificate: '{path}' holds no private key");
            return certificate;
        }
        catch (Exception ex) when (ex is CryptographicException or IOException or UnauthorizedAccessException)
        {
            throw new ArgumentException($"--client-certificate: '{path}' could not be read as PKCS#12 or as PEM with the certificate and its key: {ex.Message}");
        }
    }

    /// <summary>PEM (one or more certificates), DER, or a PKCS#12 file without a password (the broker's kept
    /// self-signed certificate); only the certificates are kept.</summary>
    internal static X509Certificate2Collection Load(string path)
    {
        if (!File.Exists(path)) throw new ArgumentException($"--admin-ca: no file '{path}'");
        try
        {
            var found = HalfMsg.Protocol.Tls.CertificateFiles.Parse(File.ReadAllBytes(path));
            if (found.Count == 0) throw new ArgumentException($"--admin-ca: '{path}' holds no certificate");
            return found;
        }
        catch (Exception ex) when (ex is CryptographicException or IOException or UnauthorizedAccessException)
        {
            throw new ArgumentException($"--admin-ca: '{path}' could not be read as a PEM, DER or PKCS#12 certificate: {ex.Message}");
        }
    }
}
