using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;
using HalfMsg.Broker.FrontEnds.GrpcV5;
using Microsoft.AspNetCore.Server.Kestrel.Https;

namespace HalfMsg.Broker.Hosting;

/// <summary>Whether the TLS ports ask for client certificates (<c>--tls-client-auth</c>; Apache's
/// <c>tls.server.need.client.auth</c>, with the same three values).</summary>
public enum TlsClientAuth
{
    /// <summary>No client certificate is asked for (Apache's default).</summary>
    None,
    /// <summary>One is asked for; a TLS client without one is served, one with a certificate that does not chain to
    /// <c>--tls-client-ca</c> is refused at the handshake (as Netty's <c>ClientAuth.OPTIONAL</c>).</summary>
    Optional,
    /// <summary>A TLS client must present a certificate that chains to <c>--tls-client-ca</c>; a port left at
    /// <see cref="PortTlsMode.Auto"/> takes TLS only (<see cref="ClientCertificates.Enforce"/>).</summary>
    Require,
}

/// <summary>
/// Client-certificate authentication on the TLS ports (gRPC, Remoting and name server, admin): the certificates of
/// <c>--tls-client-ca</c> are the only roots a client certificate may chain to (the system's are not used: a
/// certificate any public CA issued must not open the broker), read once at start so that a missing or unreadable file
/// stops the start with its flag named. Until 2026-12-07 no port asked for a client certificate.
/// </summary>
internal sealed class ClientCertificates
{
    private static readonly Oid ClientAuthentication = new("1.3.6.1.5.5.7.3.2");
    private readonly X509Certificate2Collection _roots;
    private readonly LogRateLimiter _logLimit = new(1, TimeProvider.System);

    private ClientCertificates(TlsClientAuth mode, X509Certificate2Collection roots)
    {
        Mode = mode;
        _roots = roots;
    }

    public TlsClientAuth Mode { get; }

    /// <summary>The policy <paramref name="mode"/> and <paramref name="caPath"/> configure; null for
    /// <see cref="TlsClientAuth.None"/>.</summary>
    public static ClientCertificates? Load(TlsClientAuth mode, string? caPath)
    {
        if (mode == TlsClientAuth.None)
        {
            if (!string.IsNullOrEmpty(caPath))
                throw new BrokerConfigurationException("--tls-client-ca is set but --tls-client-auth is none: no client certificate would be asked for; set --tls-client-auth require (or optional), or leave --tls-client-ca out");
            return null;
        }
        string flag = mode == TlsClientAuth.Require ? "require" : "optional";
        if (string.IsNullOrEmpty(caPath))
            throw new BrokerConfigurationException($"--tls-client-auth {flag} needs --tls-client-ca: the CA certificate(s) (PEM, DER or PKCS#12) that client certificates must chain to");
        return new ClientCertificates(mode, ReadRoots(caPath));
    }

    /// <summary>PEM (one or more certificates), DER, or a PKCS#12 file without a password; only the certificates are kept.</summary>
    private static X509Certificate2Collection ReadRoots(string path)
    {
        if (!File.Exists(path)) throw new BrokerConfigurationException($"--tls-client-ca: no file '{path}'");
        try
        {
            var found = HalfMsg.Protocol.Tls.CertificateFiles.Parse(File.ReadAllBytes(path));
            if (found.Count == 0) throw new BrokerConfigurationException($"--tls-client-ca: '{path}' holds no certificate");
            return found;
        }
        catch (Exception ex) when (ex is CryptographicException or ArgumentException or IOException or UnauthorizedAccessException)
        {
            throw new BrokerConfigurationException($"--tls-client-ca: '{path}' could not be read as PEM, DER or PKCS#12 certificates: {ex.Message}");
        }
    }

    /// <summary>
    /// With <see cref="TlsClientAuth.Require"/> no port may let a client in without a certificate: a port left at
    /// <see cref="PortTlsMode.Auto"/> (every port's default, also in the sample appsettings.json, so it cannot be told
    /// from a choice) takes TLS only, as with <c>required</c>, since a cleartext connection would bypass the check. A port
    /// set to <c>off</c> stays cleartext (an explicit choice, such as an admin port probed over plain HTTP); the host
    /// warns about it. <paramref name="raised"/> names the ports made TLS-only.
    /// </summary>
    public static BrokerOptions Enforce(BrokerOptions options, out IReadOnlyList<string> raised)
    {
        var names = new List<string>();
        if (options.TlsClientAuth != TlsClientAuth.Require)
        {
            raised = names;
            return options;
        }
        PortTlsMode Raise(PortTlsMode mode, string flag, bool used)
        {
            if (mode != PortTlsMode.Auto) return mode;
            if (used) names.Add(flag);
            return PortTlsMode.Required;
        }
        var enforced = options with
        {
            GrpcTls = Raise(options.GrpcTls, "--grpc-tls", true),
            RemotingTls = Raise(options.RemotingTls, "--remoting-tls", options.RemotingPort != 0),
            AdminTls = Raise(options.AdminTls, "--admin-tls", true),
        };
        raised = names;
        return enforced;
    }

    /// <summary>Asks for the client's certificate on a port's TLS handshake, and accepts it only when it chains to
    /// <c>--tls-client-ca</c>: Kestrel fails the handshake otherwise (a TLS alert; with TLS 1.3 the client learns it at
    /// its first read).</summary>
    public void Configure(HttpsConnectionAdapterOptions https, ILogger logger, string port)
    {
        https.ClientCertificateMode = Mode == TlsClientAuth.Require ? ClientCertificateMode.RequireCertificate : ClientCertificateMode.AllowCertificate;
        https.ClientCertificateValidation = (certificate, offered, _) =>
        {
            if (Trusts(certificate, offered, out string why)) return true;
            if (_logLimit.TryEnter(out long suppressed))
                logger.LogWarning("{Port} TLS handshake refused: the client certificate {Subject} (issuer {Issuer}) does not chain to --tls-client-ca: {Why} ({Suppressed} more refusals not logged since the last line)",
                    port, certificate.Subject, certificate.Issuer, why, suppressed);
            return false;
        };
    }

    /// <summary>Whether <paramref name="presented"/> chains to one of the configured roots (or is one of them) and may
    /// authenticate a client (no extended key usage, or one that includes client authentication). Revocation is not
    /// checked (Apache's broker does not either).</summary>
    internal bool Trusts(X509Certificate2 presented, X509Chain? offered, out string why)
    {
        using var chain = new X509Chain();
        chain.ChainPolicy.TrustMode = X509ChainTrustMode.CustomRootTrust;
        chain.ChainPolicy.CustomTrustStore.AddRange(_roots);
        chain.ChainPolicy.RevocationMode = X509RevocationMode.NoCheck;
        chain.ChainPolicy.ApplicationPolicy.Add(ClientAuthentication);
        if (offered is not null)
        {
            // Intermediates the client sent with its certificate.
            foreach (var element in offered.ChainElements)
                if (!element.Certificate.RawDataMemory.Span.SequenceEqual(presented.RawDataMemory.Span)) chain.ChainPolicy.ExtraStore.Add(element.Certificate);
        }
        if (chain.Build(presented))
        {
            why = "";
            return true;
        }
        why = string.Join("; ", chain.ChainStatus.Select(s => s.StatusInformation.Trim()).Where(s => s.Length > 0).Distinct());
        if (why.Length == 0) why = "no chain to a configured certificate";
        return false;
    }
}
