using System.Text.Encodings.Web;
using System.Text.Json;
using Microsoft.Extensions.Logging.Console;

namespace HalfMsg.Broker.Hosting;

/// <summary>
/// One console logging set-up for both logger factories (the host's, and the core's, which exists before the host is
/// built because recovery runs first), so <c>--log-format json</c> turns every line into JSON.
/// </summary>
internal static class BrokerLogging
{
    public static void Configure(ILoggingBuilder logging, IConfiguration config, BrokerOptions options)
    {
        logging.ClearProviders();
        logging.AddConfiguration(config.GetSection("Logging"));
        logging.AddFilter("Microsoft.AspNetCore", LogLevel.Warning);
        logging.Services.PostConfigure<LoggerFilterOptions>(QuietHostingDiagnostics);
        if (options.LogFormat == LogFormat.Json)
        {
            logging.AddJsonConsole(o =>
            {
                o.UseUtcTimestamp = true;
                o.TimestampFormat = "yyyy-MM-ddTHH:mm:ss.fffZ";
                // Log shippers read UTF-8 JSON; the default encoder would write '+' and non-ASCII as \uXXXX.
                o.JsonWriterOptions = new JsonWriterOptions { Encoder = JavaScriptEncoder.UnsafeRelaxedJsonEscaping };
            });
        }
        else
        {
            logging.AddSimpleConsole(o =>
            {
                o.UseUtcTimestamp = true;
                o.TimestampFormat = "HH:mm:ss.fff ";
                o.ColorBehavior = LoggerColorBehavior.Default;
            });
        }
    }

    /// <summary>The category of ASP.NET Core's per-request hosting log (request starting / finished).</summary>
    internal const string HostingDiagnostics = "Microsoft.AspNetCore.Hosting.Diagnostics";

    /// <summary>
    /// ASP.NET Core's hosting starts an <see cref="System.Diagnostics.Activity"/> for every request whenever its
    /// <c>Microsoft.AspNetCore.Hosting.Diagnostics</c> logger is enabled at any level, Critical included (so log scopes
    /// can carry a trace id), and that logger writes only the request start and finish lines, at Information and Debug.
    /// At the default Warning it logged nothing, yet every gRPC call paid for an Activity, its trace id string and an
    /// AsyncLocal change (measured: 4-5 % of the broker's allocations). So it is off unless a
    /// <c>Logging:LogLevel:Microsoft.AspNetCore.Hosting...</c> setting asks for it. Spans are unaffected: the broker's own
    /// take their parent from the message, and a listener on ASP.NET Core's source still gets its request activities.
    /// </summary>
    private static void QuietHostingDiagnostics(LoggerFilterOptions filters)
    {
        if (filters.Rules.Any(r => r.CategoryName?.StartsWith("Microsoft.AspNetCore.Hosting", StringComparison.Ordinal) == true))
        {
            return;
        }

        filters.Rules.Add(new LoggerFilterRule(null, HostingDiagnostics, LogLevel.None, null));
    }

    public static ILoggerFactory CreateFactory(IConfiguration config, BrokerOptions options)
        => LoggerFactory.Create(l => Configure(l, config, options));
}
