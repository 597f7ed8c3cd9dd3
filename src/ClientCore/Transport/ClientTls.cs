using System.Net.Security;
using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;
using Microsoft.Extensions.Logging;

namespace HalfMsg.ClientCore.Transport;

/// <summary>
/// The TLS a client's channels use, resolved once at start from the options' <c>UseTls</c>, the access point's scheme
/// and <see cref="TlsOptions"/>: files are read here, so a bad setting fails the client's start with an
/// <see cref="ArgumentException"/> naming the option, not its first call.
/// </summary>
internal sealed class ClientTls
{
    private readonly X509Certificate2Collection? _trusted;
    private readonly SslStreamCertificateContext? _clientCertificate;
    private readonly bool _allowUntrusted;

    private ClientTls(X509Certificate2Collection? trusted, SslStreamCertificateContext? clientCertificate, bool allowUntrusted)
    {
        _trusted = trusted;
        _clientCertificate = clientCertificate;
        _allowUntrusted = allowUntrusted;
    }

    /// <summary>
    /// The TLS of a client whose options are named <paramref name="optionsName"/> (for errors), or null for cleartext.
    /// TLS is on with <paramref name="useTls"/> or an <c>https://</c> access point; an <c>http://</c> one with
    /// <paramref name="useTls"/>, or <paramref name="tls"/> settings without TLS, are refused (they contradict each other).
    /// </summary>
    public static ClientTls? Create(string optionsName, string endpoints, bool useTls, TlsOptions? tls, ILoggerFactory? loggerFactory)
    {
        bool? scheme = Endpoint.ParseTlsScheme(endpoints);
        if (scheme == false && useTls)
        {
            throw new ArgumentException($"{optionsName}.UseTls is set but {optionsName}.Endpoints '{endpoints}' says http://; use https:// or no scheme.", "options");
        }

        if (!useTls && scheme != true)
        {
            if (tls is { IsEmpty: false })
            {
                throw new ArgumentException($"{optionsName}.Tls is set but TLS is off: set {optionsName}.UseTls (or give the endpoints as https://).", "options");
            }

            return null;
        }

        tls ??= new TlsOptions();
        string prefix = optionsName + ".Tls.";
        if (!string.IsNullOrEmpty(tls.TrustedCertificateFile) && tls.TrustedCertificate is not null)
        {
            throw new ArgumentException($"{prefix}TrustedCertificateFile and {prefix}TrustedCertificate are both set; give one.", "options");
        }

        if (tls.AllowUntrustedServerCertificate && (!string.IsNullOrEmpty(tls.TrustedCertificateFile) || tls.TrustedCertificate is not null))
        {
            throw new ArgumentException($"{prefix}AllowUntrustedServerCertificate contradicts {prefix}TrustedCertificate(File): the first accepts any certificate, the second only the one trusted.", "options");
        }

        if (!string.IsNullOrEmpty(tls.ClientCertificateFile) && tls.ClientCertificate is not null)
        {
            throw new ArgumentException($"{prefix}ClientCertificateFile and {prefix}ClientCertificate are both set; give one.", "options");
        }

        if (string.IsNullOrEmpty(tls.ClientCertificateFile) && (!string.IsNullOrEmpty(tls.ClientCertificateKeyFile) || !string.IsNullOrEmpty(tls.ClientCertificatePassword)))
        {
            throw new ArgumentException($"{prefix}ClientCertificateKeyFile and {prefix}ClientCertificatePassword go with {prefix}ClientCertificateFile, which is not set.", "options");
        }

        X509Certificate2Collection? trusted = tls.TrustedCertificate is { } one ? [one]
            : string.IsNullOrEmpty(tls.TrustedCertificateFile) ? null
            : LoadTrusted(prefix + "TrustedCertificateFile", tls.TrustedCertificateFile);

        SslStreamCertificateContext? client = null;
        if (tls.ClientCertificate is { } given)
        {
            if (!given.HasPrivateKey)
            {
                throw new ArgumentException($"{prefix}ClientCertificate ({given.Subject}) has no private key.", "options");
            }

            client = SslStreamCertificateContext.Create(given, additionalCertificates: null, offline: true);
        }
        else if (!string.IsNullOrEmpty(tls.ClientCertificateFile))
        {
            client = LoadClientCertificate(prefix, tls.ClientCertificateFile, tls.ClientCertificateKeyFile, tls.ClientCertificatePassword);
        }

        if (tls.AllowUntrustedServerCertificate)
        {
            loggerFactory?.CreateLogger("HalfMsg.Client").LogWarning(
                "{Option}AllowUntrustedServerCertificate is set: the broker's certificate is not checked, so anyone between this client and the broker can read and change its traffic. Trust the broker's certificate with {Option}TrustedCertificateFile instead.",
                prefix, prefix);
        }

        return new ClientTls(trusted, client, tls.AllowUntrustedServerCertificate);
    }

    /// <summary>Whether a client certificate is presented.</summary>
    public bool HasClientCertificate => _clientCertificate is not null;

    /// <summary>Applies this TLS to a channel's handler.</summary>
    public void Apply(SocketsHttpHandler handler)
    {
        SslClientAuthenticationOptions ssl = handler.SslOptions;
        if (_allowUntrusted)
        {
            ssl.RemoteCertificateValidationCallback = static (_, _, _, _) => true;
        }
        else if (_trusted is not null)
        {
            // Only these roots (not the system's); the certificate must still name the host (SslStream checks that).
            var policy = new X509ChainPolicy
            {
                TrustMode = X509ChainTrustMode.CustomRootTrust,
                RevocationMode = X509RevocationMode.NoCheck,
            };
            policy.CustomTrustStore.AddRange(_trusted);
            ssl.CertificateChainPolicy = policy;
        }

        if (!_allowUntrusted)
        {
            // SslStream's own check (the chain, with the policy above, and the name), with its refusal as a type of ours,
            // so that RpcChannel.TlsFailure tells it from a refusal of the client's by type, not by the runtime's text.
            // The evening session of 2026-12-07.
            ssl.RemoteCertificateValidationCallback = static (_, _, chain, errors) =>
                errors == System.Net.Security.SslPolicyErrors.None ? true : throw new BrokerCertificateRejectedException(errors, chain);
        }

        if (_clientCertificate is not null)
        {
            ssl.ClientCertificateContext = _clientCertificate;
        }
    }

    private static X509Certificate2Collection LoadTrusted(string option, string path)
    {
        byte[] bytes = ReadFile(option, path);
        X509Certificate2Collection certificates;
        try
        {
            certificates = HalfMsg.Protocol.Tls.CertificateFiles.Parse(bytes);
        }
        catch (CryptographicException ex)
        {
            throw new ArgumentException($"{option} '{path}' could not be read as certificates (PEM, DER, or PKCS#12 without a password): {ex.Message}", "options", ex);
        }

        if (certificates.Count == 0)
        {
            throw new ArgumentException($"{option} '{path}' holds no certificate.", "options");
        }

        return certificates;
    }

    private static SslStreamCertificateContext LoadClientCertificate(string prefix, string path, string? keyPath, string? password)
    {
        string option = prefix + "ClientCertificateFile";
        byte[] bytes = ReadFile(option, path);
        password = string.IsNullOrEmpty(password) ? null : password;
        string text = System.Text.Encoding.ASCII.GetString(bytes);
        if (text.Contains("-----BEGIN CERTIFICATE-----", StringComparison.Ordinal))
        {
            string keyText = string.IsNullOrEmpty(keyPath) ? text : System.Text.Encoding.ASCII.GetString(ReadFile(prefix + "ClientCertificateKeyFile", keyPath));
            X509Certificate2 pem;
            try
            {
                pem = password is null ? X509Certificate2.CreateFromPem(text, keyText) : X509Certificate2.CreateFromEncryptedPem(text, keyText, password);
            }
            catch (Exception ex) when (ex is CryptographicException or ArgumentException)
            {
                string where = string.IsNullOrEmpty(keyPath) ? $"'{path}'" : $"'{path}' with the key in {prefix}ClientCertificateKeyFile '{keyPath}'";
                throw new ArgumentException($"{option} {where} could not be read as a PEM certificate and private key{(password is null ? " (an encrypted key needs " + prefix + "ClientCertificatePassword)" : " with " + prefix + "ClientCertificatePassword")}: {ex.Message}", "options", ex);
            }

            using (pem)
            {
                // A PEM key is ephemeral; through PKCS#12 it can be used for the handshake on every platform.
                X509Certificate2 leaf = X509CertificateLoader.LoadPkcs12(pem.Export(X509ContentType.Pkcs12), null);
                var chain = new X509Certificate2Collection();
                chain.ImportFromPem(text);
                X509Certificate2[] others = [.. chain.Where(c => c.Thumbprint != leaf.Thumbprint)];
                return SslStreamCertificateContext.Create(leaf, new X509Certificate2Collection(others), offline: true);
            }
        }

        if (!string.IsNullOrEmpty(keyPath))
        {
            throw new ArgumentException($"{prefix}ClientCertificateKeyFile goes with a PEM {option}; '{path}' is not PEM (a PKCS#12 file holds its key).", "options");
        }

        X509Certificate2Collection all;
        try
        {
            all = X509CertificateLoader.LoadPkcs12Collection(bytes, password);
        }
        catch (CryptographicException ex)
        {
            throw new ArgumentException($"{option} '{path}' could not be read as PKCS#12{(password is null ? " without a password (set " + prefix + "ClientCertificatePassword)" : " with " + prefix + "ClientCertificatePassword (wrong password?)")}: {ex.Message}", "options", ex);
        }

        X509Certificate2? withKey = all.FirstOrDefault(c => c.HasPrivateKey)
            ?? throw new ArgumentException($"{option} '{path}' holds no certificate with a private key.", "options");
        X509Certificate2[] intermediates = [.. all.Where(c => !ReferenceEquals(c, withKey))];
        return SslStreamCertificateContext.Create(withKey, new X509Certificate2Collection(intermediates), offline: true);
    }

    private static byte[] ReadFile(string option, string path)
    {
        try
        {
            return File.ReadAllBytes(path);
        }
        catch (Exception ex) when (ex is IOException or UnauthorizedAccessException or ArgumentException or NotSupportedException)
        {
            throw new ArgumentException($"{option} '{path}' could not be read: {ex.Message}", "options", ex);
        }
    }
}

/// <summary>The broker's certificate was not accepted (its chain does not end at a trusted root, or it does not name the
/// host connected to): thrown by the client's certificate check, under the handshake's failure. Its message says what
/// was wrong with the chain (<see cref="ChainStatus"/>: NotTimeValid, UntrustedRoot, Revoked, ...), as the runtime's
/// own refusal did; until review in the evening session of 2026-12-07 it said only RemoteCertificateChainErrors, the
/// same for an expired, a revoked or an untrusted certificate.</summary>
internal sealed class BrokerCertificateRejectedException : System.Security.Authentication.AuthenticationException
{
    public BrokerCertificateRejectedException(SslPolicyErrors errors, X509Chain? chain)
        : this(errors, chain is null ? X509ChainStatusFlags.NoError : chain.ChainStatus.Aggregate(X509ChainStatusFlags.NoError, static (all, s) => all | s.Status))
    {
    }

    private BrokerCertificateRejectedException(SslPolicyErrors errors, X509ChainStatusFlags chainStatus)
        : base($"The remote certificate (the broker's) was not accepted: {errors}"
            + (chainStatus == X509ChainStatusFlags.NoError ? "." : $" ({chainStatus})."))
    {
        Errors = errors;
        ChainStatus = chainStatus;
    }

    public SslPolicyErrors Errors { get; }

    /// <summary>What the chain's elements were refused for (NoError when only the name did not match).</summary>
    public X509ChainStatusFlags ChainStatus { get; }
}
