using System.Globalization;
using HalfMsg.Broker.Core;

namespace HalfMsg.Broker.Hosting;

/// <summary>One table of settings: flag, configuration key, default and parser. Used for flags, binding and the README.</summary>
public static class BrokerConfiguration
{
    public sealed record Setting(string Flag, string Key, string Default, string Description);

    public static readonly Setting[] Settings =
    [
        new("--data-dir", "Broker:DataDir", "./data", "Where the log and checkpoints live."),
        new("--bind", "Broker:Bind", "127.0.0.1", "Address to listen on (0.0.0.0 for all interfaces)."),
        new("--advertised-host", "Broker:AdvertisedHost", "(connection's local address)", "Host returned to clients in QueryRoute."),
        new("--grpc-port", "Broker:GrpcPort", "8081", "RocketMQ 5 gRPC endpoint (HTTP/2 cleartext)."),
        new("--remoting-port", "Broker:RemotingPort", "10911", "RocketMQ 4 Remoting endpoint (TCP; 0 = off)."),
        new("--namesrv-port", "Broker:NameServerPort", "9876", "Embedded RocketMQ name server (TCP; 0 = off)."),
        new("--http-port", "Broker:HttpPort", "8080", "Admin API and GET /health (HTTP/1.1)."),
        new("--flush", "Broker:Flush", "sync", "sync: acknowledged writes are on disk before the reply (group commit); async: periodic commit."),
        new("--transaction-timeout", "Broker:TransactionTimeout", "6s", "A half younger than this is not checked."),
        new("--transaction-check-interval", "Broker:TransactionCheckInterval", "30s", "How often the check-back scheduler runs."),
        new("--transaction-check-max", "Broker:TransactionCheckMax", "15", "Check-backs before a half is parked in TRANS_CHECK_MAX_TIME_TOPIC."),
        new("--max-delivery-attempts", "Broker:MaxDeliveryAttempts", "16", "Deliveries before a message goes to %DLQ%<group>."),
        new("--queues-per-topic", "Broker:QueuesPerTopic", "8", "Queues of an auto-created topic."),
        new("--max-message-size", "Broker:MaxMessageSize", "4MiB", "Largest accepted body."),
        new("--auto-create-topics", "Broker:AutoCreateTopics", "true", "Create topics on first use."),
        new("--checkpoint-every", "Broker:CheckpointEvery", "200000", "Records between checkpoints (bounds replay at start)."),
        new("--retention-size", "Broker:RetentionSize", "8GiB", "Truncate the log head beyond this size (live records are re-appended first)."),
        new("--retention-time", "Broker:RetentionTime", "72h", "Truncate records older than this (live records are re-appended first)."),
    ];

    /// <summary>Turns <c>--flag value</c> / <c>--flag=value</c> pairs into configuration keys. Unknown flags are errors.</summary>
    public static Dictionary<string, string?> ParseCommandLine(string[] args)
    {
        var result = new Dictionary<string, string?>(StringComparer.OrdinalIgnoreCase);
        for (int i = 0; i < args.Length; i++)
        {
            string arg = args[i];
            if (!arg.StartsWith("--", StringComparison.Ordinal))
                throw new BrokerConfigurationException($"unexpected argument '{arg}'; flags look like --grpc-port 8081");
            string flag = arg, value;
            int eq = arg.IndexOf('=');
            if (eq > 0) { flag = arg[..eq]; value = arg[(eq + 1)..]; }
            else
            {
                if (i + 1 >= args.Length) throw new BrokerConfigurationException($"{flag} needs a value");
                value = args[++i];
            }
            var setting = Array.Find(Settings, s => s.Flag.Equals(flag, StringComparison.OrdinalIgnoreCase))
                ?? throw new BrokerConfigurationException($"unknown flag {flag}; known flags: {string.Join(", ", Settings.Select(s => s.Flag))}");
            result[setting.Key] = value;
        }
        return result;
    }

    /// <summary>Reads and validates every setting; the first bad one throws with its flag name.</summary>
    public static BrokerOptions Bind(IConfiguration config)
    {
        string Get(string flag) => config[Key(flag)] ?? Array.Find(Settings, s => s.Flag == flag)!.Default;
        var core = new CoreOptions
        {
            DataDir = Get("--data-dir"),
            Flush = Get("--flush").ToLowerInvariant() switch
            {
                "sync" => FlushMode.Sync,
                "async" => FlushMode.Async,
                var v => throw new BrokerConfigurationException($"--flush must be 'sync' or 'async', not '{v}'"),
            },
            TransactionTimeout = Duration("--transaction-timeout", Get("--transaction-timeout"), TimeSpan.Zero),
            TransactionCheckInterval = Duration("--transaction-check-interval", Get("--transaction-check-interval"), TimeSpan.FromMilliseconds(10)),
            TransactionCheckMax = Int("--transaction-check-max", Get("--transaction-check-max"), 1, 10_000),
            MaxDeliveryAttempts = Int("--max-delivery-attempts", Get("--max-delivery-attempts"), 1, 1_000),
            QueuesPerTopic = Int("--queues-per-topic", Get("--queues-per-topic"), 1, 1_024),
            MaxMessageSize = (int)Size("--max-message-size", Get("--max-message-size"), 1, Broker.Core.Storage.RecordLimits.MaxMessageSizeLimit),
            AutoCreateTopics = Bool("--auto-create-topics", Get("--auto-create-topics")),
            CheckpointEveryRecords = Int("--checkpoint-every", Get("--checkpoint-every"), 100, int.MaxValue),
            RetentionBytes = Size("--retention-size", Get("--retention-size"), 0, long.MaxValue),
            RetentionTime = Duration("--retention-time", Get("--retention-time"), TimeSpan.Zero),
        };
        var credentials = config.GetSection("Broker:Credentials").GetChildren()
            .Where(c => !string.IsNullOrEmpty(c.Value)).ToDictionary(c => c.Key, c => c.Value!);
        var options = new BrokerOptions
        {
            DataDir = core.DataDir,
            Bind = Get("--bind"),
            AdvertisedHost = config[Key("--advertised-host")],
            GrpcPort = Int("--grpc-port", Get("--grpc-port"), 0, 65535),
            RemotingPort = Int("--remoting-port", Get("--remoting-port"), 0, 65535),
            NameServerPort = Int("--namesrv-port", Get("--namesrv-port"), 0, 65535),
            HttpPort = Int("--http-port", Get("--http-port"), 0, 65535),
            Core = core,
            Credentials = credentials,
        };
        if (!System.Net.IPAddress.TryParse(options.Bind, out _))
            throw new BrokerConfigurationException($"--bind must be an IP address, not '{options.Bind}'");
        if (options.GrpcPort != 0 && options.GrpcPort == options.HttpPort)
            throw new BrokerConfigurationException("--grpc-port and --http-port must differ (gRPC is HTTP/2-only; the admin port is HTTP/1.1)");
        return options;
    }

    private static string Key(string flag) => Array.Find(Settings, s => s.Flag == flag)!.Key;

    private static int Int(string flag, string value, int min, int max)
    {
        if (!int.TryParse(value, NumberStyles.Integer, CultureInfo.InvariantCulture, out var n) || n < min || n > max)
            throw new BrokerConfigurationException($"{flag} must be a whole number in [{min}, {max}], not '{value}'");
        return n;
    }

    private static bool Bool(string flag, string value) => value.ToLowerInvariant() switch
    {
        "true" or "1" or "yes" or "on" => true,
        "false" or "0" or "no" or "off" => false,
        _ => throw new BrokerConfigurationException($"{flag} must be true or false, not '{value}'"),
    };

    /// <summary>Durations: <c>500ms</c>, <c>6s</c>, <c>2m</c>, <c>72h</c>, <c>1d</c>, or a TimeSpan like <c>00:00:30</c>.</summary>
    public static TimeSpan Duration(string flag, string value, TimeSpan min)
    {
        if (TryParseDuration(value, out var d) && d >= min) return d;
        throw new BrokerConfigurationException($"{flag} must be a duration like 500ms, 6s, 2m, 72h (at least {min.TotalMilliseconds} ms), not '{value}'");
    }

    public static bool TryParseDuration(string value, out TimeSpan duration)
    {
        duration = default;
        value = value.Trim();
        (string suffix, double ms)[] units = [("ms", 1), ("s", 1000), ("m", 60_000), ("h", 3_600_000), ("d", 86_400_000)];
        foreach (var (suffix, ms) in units)
        {
            if (value.EndsWith(suffix, StringComparison.Ordinal) && double.TryParse(value[..^suffix.Length], NumberStyles.Float, CultureInfo.InvariantCulture, out var n) && n >= 0)
            {
                if (suffix == "m" && value.EndsWith("ms", StringComparison.Ordinal)) continue;
                duration = TimeSpan.FromMilliseconds(n * ms);
                return true;
            }
        }
        return TimeSpan.TryParse(value, CultureInfo.InvariantCulture, out duration) && duration >= TimeSpan.Zero;
    }

    /// <summary>Sizes: <c>4194304</c>, <c>4MiB</c>, <c>512KiB</c>, <c>8GiB</c> (also KB/MB/GB as binary units).</summary>
    public static long Size(string flag, string value, long min, long max)
    {
        value = value.Trim();
        (string suffix, long mult)[] units = [("KiB", 1L << 10), ("MiB", 1L << 20), ("GiB", 1L << 30), ("KB", 1L << 10), ("MB", 1L << 20), ("GB", 1L << 30), ("B", 1)];
        long multiplier = 1;
        foreach (var (suffix, mult) in units)
        {
            if (value.EndsWith(suffix, StringComparison.OrdinalIgnoreCase)) { multiplier = mult; value = value[..^suffix.Length]; break; }
        }
        if (long.TryParse(value, NumberStyles.Integer, CultureInfo.InvariantCulture, out var n) && n >= 0 && n <= max / multiplier && n * multiplier >= min)
            return n * multiplier;
        throw new BrokerConfigurationException($"{flag} must be a size like 4194304, 4MiB or 8GiB in [{min}, {max}] bytes");
    }
}

/// <summary>A configuration value that prevents start-up. The message names the flag.</summary>
public sealed class BrokerConfigurationException(string message) : Exception(message);
