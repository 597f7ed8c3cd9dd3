using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;
using HalfMsg.Broker.Core.Storage;

namespace HalfMsg.Broker.Hosting;

/// <summary>
/// The gRPC port's self-signed certificate, kept in <c>&lt;data&gt;/tls/self-signed.pfx</c> (PKCS#12 without a
/// password, owner-only 0600 in an owner-only 0700 directory) so that it stays the same across restarts: a client that
/// pins or trusts it keeps working. It is reused while it holds its key, is valid for more than
/// <see cref="MinRemaining"/> and names the configured <c>--advertised-host</c> (if any); otherwise a new one is made
/// and replaces it (written to a temporary file, flushed, then renamed over the old one). The machine's name
/// (<c>Dns.GetHostName()</c>) is put in a certificate when it is made, but a kept one that does not name the current
/// machine is reused all the same: a container started without a fixed <c>--hostname</c> has a new name at every
/// start, and until 2026-12-07 got a new certificate at every start too, which broke the clients that had pinned it
/// (<c>halfmsg --admin-ca</c>). A client that checks names reaches the broker by a configured name
/// (<c>--advertised-host</c>, which is kept named) or needs a configured certificate anyway. A file that cannot be
/// read is replaced with a warning: it never stops the broker. The directory is the broker's own: nothing else under
/// the data dir reads it (the log's layout checks look in <c>&lt;data&gt;/log</c> only, the lock is
/// <c>&lt;data&gt;/broker.lock</c>).
/// </summary>
internal static class SelfSignedStore
{
    public const string DirectoryName = "tls";
    public const string FileName = "self-signed.pfx";

    /// <summary>A kept certificate with less validity left than this is replaced at the next start.</summary>
    public static readonly TimeSpan MinRemaining = TimeSpan.FromDays(30);

    private const UnixFileMode OwnerOnlyFile = UnixFileMode.UserRead | UnixFileMode.UserWrite;
    private const UnixFileMode OwnerOnlyDirectory = UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute;

    /// <summary>The kept certificate of <paramref name="directory"/> if it is still fit (<see cref="Unfit"/>), else a
    /// new one for <paramref name="host"/> (the machine's name now) and <paramref name="advertisedHost"/>, kept there.
    /// A new one that cannot be written is served all the same (with a warning).</summary>
    public static X509Certificate2 LoadOrMake(string directory, string host, string? advertisedHost, DateTimeOffset now, ILogger logger)
    {
        string path = Path.Combine(directory, FileName);
        string? why = null;
        if (File.Exists(path))
        {
            try
            {
                X509Certificate2 kept = X509CertificateLoader.LoadPkcs12FromFile(path, null);
                why = Unfit(kept, advertisedHost, now);
                if (why is null)
                {
                    if (!OperatingSystem.IsWindows() && (File.GetUnixFileMode(path) & ~OwnerOnlyFile) != 0)
                    {
                        File.SetUnixFileMode(path, OwnerOnlyFile); // copied or restored with wider permissions
                    }

                    logger.LogInformation("TLS: the self-signed certificate kept in {Path} is served again", path);
                    return kept;
                }
                kept.Dispose();
                logger.LogInformation("TLS: the self-signed certificate kept in {Path} is replaced: {Reason}", path, why);
            }
            catch (Exception ex) when (ex is CryptographicException or IOException or UnauthorizedAccessException)
            {
                logger.LogWarning("TLS: the self-signed certificate kept in {Path} could not be read ({Error}); a new one replaces it", path, ex.Message);
            }
        }

        X509Certificate2 made = PortTls.SelfSigned(host, advertisedHost);
        try
        {
            Write(directory, path, made.Export(X509ContentType.Pkcs12));
        }
        catch (Exception ex) when (ex is IOException or UnauthorizedAccessException)
        {
            logger.LogWarning("TLS: the self-signed certificate could not be kept in {Path} ({Error}); it is served, and a new one is made at the next start", path, ex.Message);
        }
        return made;
    }

    /// <summary>Why a kept certificate is not served again, or null when it may be: no key, not yet valid,
    /// <see cref="MinRemaining"/> or less left, or the configured <paramref name="advertisedHost"/> (a name or an
    /// address) not named. The machine's name is not asked for (see the class).</summary>
    internal static string? Unfit(X509Certificate2 kept, string? advertisedHost, DateTimeOffset now)
    {
        if (!kept.HasPrivateKey) return "it holds no private key";
        if (kept.NotBefore.ToUniversalTime() > now.UtcDateTime) return $"it is not valid before {kept.NotBefore.ToUniversalTime():u}";
        if (NearsExpiry(kept, now))
            return $"it expires on {kept.NotAfter.ToUniversalTime():u}, in {MinRemaining.TotalDays:0} days or less";
        if (!string.IsNullOrEmpty(advertisedHost) && !Names(kept, advertisedHost))
            return $"it does not name the advertised host {advertisedHost}";
        return null;
    }

    /// <summary>Whether <paramref name="certificate"/>'s subject alternative names hold <paramref name="host"/>: an
    /// address among its IP addresses, a name among its DNS names.</summary>
    internal static bool Names(X509Certificate2 certificate, string host)
    {
        var names = certificate.Extensions.OfType<X509SubjectAlternativeNameExtension>();
        string bare = host.Trim('[', ']');
        return System.Net.IPAddress.TryParse(bare, out var address)
            ? names.SelectMany(e => e.EnumerateIPAddresses()).Contains(address)
            : names.SelectMany(e => e.EnumerateDnsNames()).Contains(host, StringComparer.OrdinalIgnoreCase);
    }

    /// <summary>Whether <paramref name="certificate"/> has <see cref="MinRemaining"/> or less left at <paramref name="now"/>:
    /// not served again at a start, and made anew by a running broker (PortTls.CertificateSource).</summary>
    internal static bool NearsExpiry(X509Certificate2 certificate, DateTimeOffset now)
        => certificate.NotAfter.ToUniversalTime() - now.UtcDateTime <= MinRemaining;

    private static void Write(string directory, string path, byte[] pfx)
    {
        if (OperatingSystem.IsWindows()) Directory.CreateDirectory(directory);
        else Directory.CreateDirectory(directory, OwnerOnlyDirectory);
        string tmp = path + ".tmp";
        var options = new FileStreamOptions { Mode = FileMode.Create, Access = FileAccess.Write, Share = FileShare.None };
        if (!OperatingSystem.IsWindows()) options.UnixCreateMode = OwnerOnlyFile;
        using (var file = new FileStream(tmp, options))
        {
            // A temporary file left by a crash with wider permissions is truncated here, not made anew: narrow it.
            if (!OperatingSystem.IsWindows()) File.SetUnixFileMode(file.SafeFileHandle, OwnerOnlyFile);
            file.Write(pfx);
            file.Flush(flushToDisk: true);
        }
        File.Move(tmp, path, overwrite: true);
        DirectorySync.Fsync(directory);
    }
}
