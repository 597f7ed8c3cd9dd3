using System.Net;
using System.Text;

namespace HalfMsg.Broker.Dashboard;

/// <summary>
/// The dashboard's page frame: plain HTML rendered on the server, inline CSS, one tiny script for confirm dialogs.
/// Everything that comes from data goes through <see cref="E"/>.
/// </summary>
internal static class Html
{
    public static string E(string? text) => WebUtility.HtmlEncode(text ?? "");

    /// <summary>Escapes a query-string or path segment.</summary>
    public static string U(string text) => Uri.EscapeDataString(text);

    public static IResult Page(string title, string active, string body, int status = 200)
    {
        var sb = new StringBuilder();
        sb.Append("<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width\">");
        sb.Append("<title>").Append(E(title)).Append(" · HalfMsgBroker</title><style>").Append(Css).Append("</style></head><body>");
        sb.Append("<header><span class=\"brand\">HalfMsgBroker</span><nav>");
        foreach (var (href, label) in new[] { ("/dashboard", "Overview"), ("/dashboard/transactions", "Transactions"), ("/dashboard/topics", "Topics"), ("/dashboard/groups", "Consumer groups"), ("/dashboard/messages", "Messages") })
            sb.Append("<a href=\"").Append(href).Append('"').Append(label == active ? " class=\"active\" aria-current=\"page\"" : "").Append('>').Append(label).Append("</a>");
        sb.Append("</nav></header><main><h1>").Append(E(title)).Append("</h1>").Append(body).Append("</main>");
        sb.Append("<script>").Append(Script).Append("</script></body></html>");
        return new HtmlResult(sb.ToString(), status);
    }

    /// <summary>A confirm-before-submit POST button (Resume / Commit / Rollback).</summary>
    public static string ActionButton(string action, string label, string confirm, string cssClass = "")
        => $"<form method=\"post\" action=\"{E(action)}\" data-confirm=\"{E(confirm)}\"><button type=\"submit\" class=\"{cssClass}\">{E(label)}</button></form>";

    private const string Script = "document.querySelectorAll('form[data-confirm]').forEach(function(f){f.addEventListener('submit',function(e){if(!confirm(f.dataset.confirm))e.preventDefault();});});";

    private const string Css = """
        body{font:14px/1.4 system-ui,sans-serif;margin:0;color:#1d2430;background:#f6f7f9}
        header{display:flex;gap:24px;align-items:center;background:#1d2430;color:#fff;padding:10px 20px}
        .brand{font-weight:600}nav a{color:#c9d1dd;text-decoration:none;margin-right:16px}nav a.active{color:#fff;border-bottom:2px solid #5aa0ff}
        main{padding:16px 20px;max-width:1200px}h1{font-size:20px;margin:4px 0 16px}h2{font-size:16px;margin:20px 0 8px}
        table{border-collapse:collapse;background:#fff;width:100%}th,td{text-align:left;padding:6px 10px;border-bottom:1px solid #e3e6ea;vertical-align:top}
        th{background:#eef1f5;font-weight:600}td.num,th.num{text-align:right;font-variant-numeric:tabular-nums}
        .cards{display:flex;flex-wrap:wrap;gap:12px;margin-bottom:16px}.card{background:#fff;border:1px solid #e3e6ea;border-radius:6px;padding:10px 14px;min-width:130px}
        .card .v{font-size:22px;font-weight:600}.card .k{color:#5b6676;font-size:12px}
        .ok{color:#17803d}.warn{color:#b45309}.bad{color:#b91c1c}form{display:inline}button{margin-right:4px;cursor:pointer}
        button.danger{color:#b91c1c}.flash{background:#e7f5ec;border:1px solid #9bd3ae;padding:8px 12px;margin-bottom:12px}
        .flash.error{background:#fdecec;border-color:#f1a9a9}.muted{color:#5b6676}.filters{margin-bottom:10px}code{font-size:12px}
        svg{background:#fff;border:1px solid #e3e6ea}
        table[data-testid=headers] th{width:160px}pre.body{background:#fff;border:1px solid #e3e6ea;padding:8px 10px;white-space:pre-wrap;word-break:break-all;max-height:480px;overflow:auto}
        """;

    private sealed class HtmlResult(string html, int status) : IResult
    {
        public Task ExecuteAsync(HttpContext context)
        {
            context.Response.StatusCode = status;
            context.Response.ContentType = "text/html; charset=utf-8";
            // Inline style and script only; no framing (clickjacking), forms post only to this origin.
            context.Response.Headers.ContentSecurityPolicy =
                "default-src 'none'; style-src 'unsafe-inline'; script-src 'unsafe-inline'; img-src 'self' data:; form-action 'self'; frame-ancestors 'none'";
            context.Response.Headers.XContentTypeOptions = "nosniff";
            return context.Response.WriteAsync(html);
        }
    }
}
