using System.Security.Cryptography.X509Certificates;

namespace HalfMsg.ClientCore;

/// <summary>
/// How a client checks the broker's certificate and which certificate it presents, when it speaks TLS (the options'
/// <c>UseTls</c>, or an <c>https://</c> access point). The broker's certificate is verified by default, against the
/// system's trusted roots, and must name the host the client connects to; set <see cref="TrustedCertificateFile"/> (or
/// <see cref="TrustedCertificate"/>) to trust a broker's self-signed certificate or a private CA instead. Bound from
/// configuration as the section <c>Tls</c> of the client's options (e.g. <c>HalfMsg:Producer:Tls:TrustedCertificateFile</c>).
/// Setting any of these without TLS is refused at start (they would be silently unused).
/// </summary>
public sealed record TlsOptions
{
    /// <summary>A file of the certificate(s) to trust instead of the system's roots: the broker's self-signed
    /// certificate (exported from its <c>&lt;data&gt;/tls/self-signed.pfx</c>), or the CA that issued the broker's.
    /// PEM (one or more <c>CERTIFICATE</c> blocks), DER, or PKCS#12 without a password.</summary>
    public string? TrustedCertificateFile { get; init; }

    /// <summary>A certificate to trust instead of the system's roots (as <see cref="TrustedCertificateFile"/>, not
    /// both).</summary>
    public X509Certificate2? TrustedCertificate { get; init; }

    /// <summary>Accepts any server certificate: expired, self-signed, issued for another name. Anyone between the
    /// client and the broker can then read and change the traffic, so this is for tests only (the official Java, C# and
    /// Go clients behave this way by default; this client does not). A warning is logged at start when set. Not with
    /// <see cref="TrustedCertificateFile"/> or <see cref="TrustedCertificate"/>.</summary>
    public bool AllowUntrustedServerCertificate { get; init; }

    /// <summary>The certificate (with its private key) presented to a broker that asks for one
    /// (<c>--tls-client-auth</c>). Not with <see cref="ClientCertificateFile"/>.</summary>
    public X509Certificate2? ClientCertificate { get; init; }

    /// <summary>A file of the client certificate with its private key: PKCS#12 (<c>.pfx</c>/<c>.p12</c>, the password
    /// in <see cref="ClientCertificatePassword"/>; other certificates in it are sent as intermediates), or PEM (the key
    /// in the same file or in <see cref="ClientCertificateKeyFile"/>; encrypted with <see cref="ClientCertificatePassword"/>).</summary>
    public string? ClientCertificateFile { get; init; }

    /// <summary>The PEM private key of <see cref="ClientCertificateFile"/>, when that file does not hold it.</summary>
    public string? ClientCertificateKeyFile { get; init; }

    /// <summary>Password of the PKCS#12 file or the encrypted PEM key of <see cref="ClientCertificateFile"/>.</summary>
    public string? ClientCertificatePassword { get; init; }

    /// <summary>Hides the password.</summary>
    public override string ToString() =>
        $"TlsOptions {{ TrustedCertificateFile = {TrustedCertificateFile}, TrustedCertificate = {TrustedCertificate?.Subject}, AllowUntrustedServerCertificate = {AllowUntrustedServerCertificate}, ClientCertificate = {ClientCertificate?.Subject}, ClientCertificateFile = {ClientCertificateFile}, ClientCertificateKeyFile = {ClientCertificateKeyFile} }}";

    internal bool IsEmpty => string.IsNullOrEmpty(TrustedCertificateFile) && TrustedCertificate is null && !AllowUntrustedServerCertificate
        && ClientCertificate is null && string.IsNullOrEmpty(ClientCertificateFile) && string.IsNullOrEmpty(ClientCertificateKeyFile)
        && string.IsNullOrEmpty(ClientCertificatePassword);
}
