using System.Security.Cryptography;
using System.Text;

namespace HalfMsg.Broker.Admin;

/// <summary>
/// The lock on the admin port, in the order a request meets it:
/// <list type="number">
/// <item>Host filtering: the Host header must name this broker (<c>--admin-allowed-hosts</c>), so a page on another
/// site cannot reach a loopback broker through DNS rebinding (400).</item>
/// <item>Authentication, when credentials are configured: HTTP Basic with an access key as user name and its secret as
/// password, the same pairs as the gRPC signatures (401 with <c>WWW-Authenticate</c>, so a browser asks for them).
/// <c>/health</c> stays open for probes and says only ready/starting; <c>/metrics</c> opens with
/// <c>--metrics-anonymous</c>.</item>
/// <item>Cross-site protection for state-changing requests: only POST changes state, and a POST whose
/// <c>Sec-Fetch-Site</c> is not <c>same-origin</c>/<c>none</c> (or, from a browser that sends none, whose <c>Origin</c>
/// is not this host and port) is refused (403). Browsers send Basic credentials cross-site on their own, so this is
/// what stops a forged form.</item>
/// </list>
/// Every refusal has a JSON body <c>{"error": ..., "code": ...}</c> and closes its connection. Credentials are never
/// logged or echoed.
/// </summary>
public sealed class AdminGuard(IReadOnlyList<string> allowedHosts, IReadOnlyDictionary<string, string> credentials, bool metricsAnonymous)
{
    public const string Realm = "HalfMsgBroker admin";

    /// <summary>Secrets hashed once, so a comparison costs the same whatever the lengths (no timing hint on length).</summary>
    private readonly Dictionary<string, byte[]> _secretHashes = credentials.ToDictionary(
        c => c.Key, c => SHA256.HashData(Encoding.UTF8.GetBytes(c.Value)), StringComparer.Ordinal);

    private readonly bool _anyHost = allowedHosts.Contains("*");

    public bool AuthenticationOn => _secretHashes.Count > 0;

    public async Task InvokeAsync(HttpContext context, RequestDelegate next)
    {
        var request = context.Request;
        string host = request.Host.Host;
        if (!_anyHost && !allowedHosts.Contains(host, StringComparer.OrdinalIgnoreCase))
        {
            await Refuse(context, 400, "HostNotAllowed", "this Host is not served by the admin port; add it to --admin-allowed-hosts");
            return;
        }

        string path = request.Path.Value ?? "/";
        bool open = path == "/health" || (metricsAnonymous && path == "/metrics");
        if (AuthenticationOn && !open)
        {
            string header = request.Headers.Authorization.ToString();
            string? accessKey = Authenticate(header, out string? refusal);
            if (accessKey is null)
            {
                context.Response.Headers.WWWAuthenticate = $"Basic realm=\"{Realm}\", charset=\"UTF-8\"";
                await Refuse(context, 401, "Unauthorized", refusal!);
                return;
            }
            context.Items["halfmsg.accessKey"] = accessKey;
        }

        if (!HttpMethods.IsGet(request.Method) && !HttpMethods.IsHead(request.Method) && IsCrossSite(request))
        {
            await Refuse(context, 403, "CrossSiteRequest", "state-changing requests must come from the admin port's own pages or a non-browser client");
            return;
        }

        await next(context);
    }

    private const string HowToSign = "HTTP Basic with an access key from Broker:Credentials as user name and its secret as password";

    /// <summary>
    /// The access key when the Basic credentials match a configured pair; null otherwise, with why in
    /// <paramref name="refusal"/>: none sent, not Basic credentials, or not accepted. The last does not say whether the
    /// key or the secret was wrong (nor does its timing), so the answer does not tell a prober which keys exist.
    /// Until the small-hours session of 2026-12-08 every refusal said "credentials required", so an operator whose
    /// secret was wrong was told to send what they had sent.
    /// </summary>
    private string? Authenticate(string header, out string? refusal)
    {
        const string scheme = "Basic ";
        refusal = header.Length == 0
            ? $"credentials required: {HowToSign}"
            : $"the Authorization header is not HTTP Basic credentials (base64 of accessKey:secret); send {HowToSign}";
        if (!header.StartsWith(scheme, StringComparison.OrdinalIgnoreCase)) return null;
        string decoded;
        try
        {
            decoded = Encoding.UTF8.GetString(Convert.FromBase64String(header[scheme.Length..].Trim()));
        }
        catch (FormatException)
        {
            return null;
        }
        int colon = decoded.IndexOf(':');
        if (colon <= 0) return null;
        refusal = "credentials not accepted: unknown access key or wrong secret (the pairs of Broker:Credentials)";
        string accessKey = decoded[..colon];
        byte[] given = SHA256.HashData(Encoding.UTF8.GetBytes(decoded[(colon + 1)..]));
        // Compare against a dummy for unknown keys too, so a wrong key and a wrong secret take the same time.
        byte[] expected = _secretHashes.TryGetValue(accessKey, out var hash) ? hash : new byte[32];
        bool ok = CryptographicOperations.FixedTimeEquals(given, expected);
        if (!ok || hash is null) return null;
        refusal = null;
        return accessKey;
    }

    /// <summary>
    /// Fetch Metadata alone when the request has it (every current browser sends it, and a page's scripts cannot set
    /// it): only <c>same-origin</c> and <c>none</c> (typed or bookmarked) pass; <c>same-site</c> and <c>cross-site</c> do not.
    /// For older browsers, which send none, the <c>Origin</c> must name this host and port (<see cref="IsSameHostAndPort"/>).
    /// A request with neither header is not from a browser page (curl, the CLI) and passes.
    /// </summary>
    /// <remarks>
    /// Behind the TLS reverse proxy the README recommends, the browser's origin is <c>https://name</c> while the broker
    /// sees <c>http</c> and, unless the proxy keeps the Host header, another authority: until 2026-12-06 the Origin was
    /// compared (scheme and authority) even when the browser had said <c>same-origin</c>, and every dashboard button
    /// was refused there (found by review).
    /// </remarks>
    private static bool IsCrossSite(HttpRequest request)
    {
        string site = request.Headers["Sec-Fetch-Site"].ToString();
        if (site.Length > 0) return site is not ("same-origin" or "none");
        string origin = request.Headers.Origin.ToString();
        if (origin.Length == 0) return false;
        if (origin == "null") return true;
        return !Uri.TryCreate(origin, UriKind.Absolute, out var uri) || !IsSameHostAndPort(uri, request.Host);
    }

    /// <summary>
    /// The Origin's host is the Host header's, and so is its port: the Host's explicit port, or, when the Host names
    /// none (a proxy that passes the bare name on), the Origin's scheme's default port. The scheme is not compared: the
    /// broker sees <c>http</c> behind a TLS proxy whatever the browser used, and one host and port speak one scheme.
    /// </summary>
    /// <remarks>
    /// What this lets through that a scheme comparison would not, for browsers without Fetch Metadata only: with a bare
    /// Host, a page of the same host name on the other default port (https://name beside http://name). Both are served
    /// by the host the name points at, which is the proxy in that set-up; a page of another host, of another explicit
    /// port, or of another name of the same site is still refused. A plain-HTTP page of the same name was already let
    /// through behind a proxy that keeps Host (the broker sees http either way).
    /// </remarks>
    private static bool IsSameHostAndPort(Uri origin, HostString host)
    {
        if (!string.Equals(origin.Host, host.Host, StringComparison.OrdinalIgnoreCase)) return false;
        return host.Port is int port ? origin.Port == port : origin.IsDefaultPort;
    }

    /// <summary>
    /// Answers a refusal and closes the connection after it. A caller the guard refuses has no business keeping one of
    /// the admin port's <see cref="Hosting.AdminEndpoint.MaxConnections"/> connections: kept alive, a loop of unsigned
    /// requests held them all and the <c>/health</c> probes were closed at once (until 2026-12-06). A browser that is
    /// challenged with 401 opens a new connection for its signed retry, so nothing legitimate pays for it.
    /// </summary>
    internal static Task Refuse(HttpContext context, int status, string code, string message)
    {
        context.Response.StatusCode = status;
        context.Response.Headers.Connection = "close";
        return context.Response.WriteAsJsonAsync(new ErrorBody(message, code));
    }
}

/// <summary>The one shape of every admin error body.</summary>
public sealed record ErrorBody(string Error, string Code);
