using System.Net.Security;
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
/// certificate any public CA issued must not open the broker). The file is read at start, so that a missing or
/// unreadable one stops the start with its flag named, and again when it changes (its modification time or length,
/// looked at on each handshake): a rotated CA is taken by the next handshakes without a restart, and a file changed into
/// something unreadable (or removed) keeps the certificates last read, with an error in the log. The handshake names
/// these certificates to the client (the "certificate authorities" of its CertificateRequest), so a client that holds
/// several certificates can pick the one the broker takes. Until 2026-12-07 no port asked for a client certificate; until
/// the midday session of 2026-12-07, the file was read at start only and no names were sent.
/// </summary>
internal sealed class ClientCertificates
{
    private static readonly Oid ClientAuthentication = new("1.3.6.1.5.5.7.3.2");
    private readonly string _path;
    private readonly object _reloadGate = new();
    private readonly LogRateLimiter _logLimit = new(1, TimeProvider.System);
    private volatile Roots _roots;
    /// <summary>The stamp of a changed file that could not be read (null stamp: gone), so that it is read (and logged)
    /// once, not at every handshake.</summary>
    private (bool Seen, FileStamp? Stamp) _unreadable;

    /// <summary>The certificates read from the file, the stamp of the file they were read from, and the server
    /// certificate context last made with them (one per server certificate: the self-signed one is renewed).</summary>
    private sealed class Roots(X509Certificate2Collection certificates, FileStamp? stamp)
    {
        public X509Certificate2Collection Certificates { get; } = certificates;
        public FileStamp? Stamp { get; } = stamp;
        public volatile Served? Made;
    }

    private sealed record Served(X509Certificate2 Server, SslStreamCertificateContext Context);

    private readonly record struct FileStamp(DateTime Written, long Length);

    private ClientCertificates(TlsClientAuth mode, string path, X509Certificate2Collection roots, FileStamp? stamp)
    {
        Mode = mode;
        _path = path;
        _roots = new Roots(roots, stamp);
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
        if (!File.Exists(caPath)) throw new BrokerConfigurationException($"--tls-client-ca: no file '{caPath}'");
        FileStamp? stamp = StampOf(caPath);
        return new ClientCertificates(mode, caPath, ReadRoots(caPath), stamp);
    }

    /// <summary>
    /// The time and length of the file <paramref name="path"/> leads to (null: gone, or not to be looked at). A symbolic
    /// link is looked at where it leads, through every link: a Kubernetes secret's or config map's file is a link
    /// (<c>ca.pem -&gt; ..data/ca.pem</c>) that a rotation leaves alone (it points <c>..data</c> at a new directory), and a
    /// link to a file rewritten in place does not change either. Until review on 2026-12-07 the link's own time and
    /// length were taken (.NET's FileInfo does not follow a link for them), so such a rotation was never seen. One
    /// more system call per handshake for a link (reading it), none for a plain file.
    /// </summary>
    private static FileStamp? StampOf(string path)
    {
        try
        {
            FileInfo info = new(path);
            if (info.Exists && (info.Attributes & FileAttributes.ReparsePoint) != 0)
                info = info.ResolveLinkTarget(returnFinalTarget: true) as FileInfo ?? info;
            return info.Exists ? new FileStamp(info.LastWriteTimeUtc, info.Length) : null;
        }
        catch (Exception ex) when (ex is IOException or UnauthorizedAccessException)
        {
            return null;
        }
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

    /// <summary>The certificates client certificates must chain to now: read again first when the file changed since
    /// they were read. A changed file that cannot be read (or a removed one) leaves them as they were, logged once.</summary>
    internal X509Certificate2Collection Current(ILogger logger)
    {
        var roots = _roots;
        FileStamp? now = StampOf(_path);
        if (now == roots.Stamp) return roots.Certificates;
        lock (_reloadGate)
        {
            roots = _roots;
            if (now == roots.Stamp || (_unreadable.Seen && now == _unreadable.Stamp)) return roots.Certificates;
            try
            {
                var read = ReadRoots(_path);
                _roots = new Roots(read, now);
                _unreadable = default;
                logger.LogInformation("--tls-client-ca: '{Path}' changed and was read again: client certificates must now chain to {Subjects}",
                    _path, string.Join("; ", read.Select(c => c.Subject)));
                return read;
            }
            catch (BrokerConfigurationException ex)
            {
                _unreadable = (true, now);
                logger.LogError("{Problem}; the certificates read before stay in use ({Subjects}) until the file is fixed (it is read again when it changes)",
                    now is null ? $"--tls-client-ca: '{_path}' is gone or cannot be looked at" : ex.Message, string.Join("; ", roots.Certificates.Select(c => c.Subject)));
                return roots.Certificates;
            }
        }
    }

    /// <summary>The context a handshake serves <paramref name="server"/> with: it names the current roots to the client
    /// in the CertificateRequest (OpenSSL's client CA list; TLS 1.3's certificate_authorities extension), made once
    /// per server certificate and file version.</summary>
    internal SslStreamCertificateContext ContextFor(X509Certificate2 server, ILogger logger)
    {
        Current(logger);
        var roots = _roots;
        var made = roots.Made;
        if (made is not null && ReferenceEquals(made.Server, server)) return made.Context;
        SslCertificateTrust trust;
        try
        {
            trust = SslCertificateTrust.CreateForX509Collection(roots.Certificates, sendTrustInHandshake: true);
        }
        catch (PlatformNotSupportedException)
        {
            // Windows sends names only from a certificate store; the check itself does not depend on them.
            trust = SslCertificateTrust.CreateForX509Collection(roots.Certificates, sendTrustInHandshake: false);
        }
        var context = SslStreamCertificateContext.Create(server, additionalCertificates: null, offline: false, trust);
        roots.Made = new Served(server, context);
        return context;
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
    public void Configure(HttpsConnectionAdapterOptions https, Func<ILogger, X509Certificate2> certificate, ILogger logger, string port)
    {
        // The certificate is served through a context that carries the roots, so the CertificateRequest names them.
        https.OnAuthenticate = (_, ssl) =>
        {
            ssl.ServerCertificateSelectionCallback = null;
            ssl.ServerCertificate = null;
            ssl.ServerCertificateContext = ContextFor(certificate(logger), logger);
        };
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
        chain.ChainPolicy.CustomTrustStore.AddRange(_roots.Certificates);
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
