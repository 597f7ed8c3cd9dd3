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

    public static ILoggerFactory CreateFactory(IConfiguration config, BrokerOptions options)
        => LoggerFactory.Create(l => Configure(l, config, options));
}
