using System.Globalization;
using System.Reflection;
using System.Text;
using HalfMsg.Broker.Core;
using HalfMsg.Broker.FrontEnds;
using Microsoft.Extensions.Configuration.EnvironmentVariables;
using Microsoft.Extensions.Configuration.Json;
using Microsoft.Extensions.Configuration.Memory;

namespace HalfMsg.Broker.Hosting;

/// <summary>
/// One table of settings: flag, configuration key, default and meaning. The same table drives the command line, binding,
/// <c>--help</c>, the sample appsettings.json (a test keeps them equal) and the README.
/// </summary>
public static class BrokerConfiguration
{
    public sealed record Setting(string Flag, string Key, string Default, string Description);

    public static readonly Setting[] Settings =
    [
        new("--data-dir", "Broker:DataDir", "./data", "Where the log and checkpoints live, relative to the working directory (dotnet run: the project folder)."),
        new("--bind", "Broker:Bind", "127.0.0.1", "Address of the client ports (gRPC, Remoting); 0.0.0.0 for all interfaces."),
        new("--advertised-host", "Broker:AdvertisedHost", "", "Host returned to clients in routes (gRPC and Remoting). Empty: a gRPC route names the address the client says it reached (the request's endpoints, as Apache's proxy answers); a Remoting route, or a gRPC request naming none, the local address the connection arrived on."),
        new("--advertised-grpc-port", "Broker:AdvertisedGrpcPort", "0", "Port returned to gRPC clients in routes; 0 = --grpc-port. Setting it or --advertised-host makes gRPC routes name these instead of the address the client reached."),
        new("--advertised-remoting-port", "Broker:AdvertisedRemotingPort", "0", "Port returned to Remoting clients in routes and cluster info (the embedded name server's answers) and in offset message ids; 0 = --remoting-port. Set it when clients reach the Remoting port through a port forward (19876 for docker run -p 19876:10911), with --advertised-host when the host differs too: a Remoting request carries no address the client reached."),
        new("--broker-name", "Broker:BrokerName", BrokerNames.Default, "The broker's name (RocketMQ's brokerName) in the routes of both protocols, cluster info, queue locks and recall handles; letters, digits, '-', '_' and '.'. Recall handles naming halfmsg-broker, the gRPC routes' name before 2026-12-06, are still accepted."),
        new("--grpc-port", "Broker:GrpcPort", "8081", "RocketMQ 5 gRPC endpoint (HTTP/2; cleartext and TLS on the same port: --grpc-tls)."),
        new("--grpc-tls", "Broker:GrpcTls", "auto", "TLS on the gRPC port. auto: a connection that opens with a TLS handshake gets TLS (the official Java, C# and Go clients do unless told enableSsl(false)), one that opens with HTTP/2 gets cleartext (the Node client unless sslEnabled), both on the same port, as Apache's proxy; required: cleartext connections are closed; off: cleartext only."),
        new("--grpc-tls-certificate", "Broker:GrpcTlsCertificate", "", "Certificate for TLS on the gRPC port, and on the Remoting and name-server ports (--remoting-tls) and the admin port (--admin-tls): a PEM file (with its key, or the key in --grpc-tls-key) or a PKCS#12 file (.pfx, .p12). Empty: a self-signed certificate for localhost, --advertised-host and the machine's name is made at the first TLS connection and kept in <data>/tls/self-signed.pfx (reused while valid for more than 30 days and naming --advertised-host, whatever the machine is called later); the Java, C# and Go gRPC clients and the Java Remoting client accept it (they do not verify the server's certificate by default), clients that verify certificates do not."),
        new("--grpc-tls-key", "Broker:GrpcTlsKey", "", "PEM private key of --grpc-tls-certificate, when its file does not hold it."),
        new("--grpc-tls-certificate-password", "Broker:GrpcTlsCertificatePassword", "", "Password of an encrypted PEM key or of the PKCS#12 file in --grpc-tls-certificate (better given as the environment variable than on the command line)."),
        new("--grpc-max-connections", "Broker:GrpcMaxConnections", "1000", "Connections the gRPC port accepts at once; one more is closed at once (each client process normally holds one)."),
        new("--grpc-max-connections-per-address", "Broker:GrpcMaxConnectionsPerAddress", "0", "Connections one peer address (an IPv6 peer: its /64) may hold on the gRPC port at once, of --grpc-max-connections; 0 = all of them (the default). A new connection over this share is closed at once, and the address's open ones are kept (clients hold idle connections for check-backs and pushes). It keeps one host from taking the whole port and keeping every other client out, and from multiplying the per-connection bounds (--grpc-max-unsent-per-connection) by the whole port. Behind NAT or a proxy many clients share one address: leave them room."),
        new("--grpc-max-unsent-per-connection", "Broker:GrpcMaxUnsentPerConnection", "64MiB", "Answer bytes one gRPC connection may make the broker hold unsent (ReceiveMessage answers, queued Telemetry commands); a receive leases only what fits and, without room, waits at most its long poll and answers MESSAGE_NOT_FOUND (never below twice (--max-message-size + 1MiB)); Telemetry commands are never kept waiting by receive answers, and a Telemetry stream is ended only when its connection holds twice this."),
        new("--grpc-max-unsent", "Broker:GrpcMaxUnsent", "512MiB", "ReceiveMessage answer bytes all gRPC connections together may make the broker hold unsent; as above once reached (never below twice (--max-message-size + 1MiB))."),
        new("--grpc-write-timeout", "Broker:GrpcWriteTimeout", "30s", "Longest a ReceiveMessage answer may take to be written out, final flush included, plus a second per 256 KiB of the answer (an 8 MiB answer: 62 s); past it the stream is reset (RST_STREAM) and its messages released for other consumers."),
        new("--grpc-telemetry-stall-timeout", "Broker:GrpcTelemetryStallTimeout", "10s", "A producer's Telemetry stream (its check-back channel) whose unsent commands fill its queue (16 MiB, or twice (--max-message-size + 1MiB) when larger; or its connection holds twice --grpc-max-unsent-per-connection) gets no more check-backs until it has room again: they go to another instance of the group, or to it once half its queue is written. One that takes none of the commands queued on it for this long, its queue full or not (and a second per 256 KiB of the check being written, as a ReceiveMessage answer), is ended (ABORTED: a client that stopped reading) and its unsent check-backs go to another instance at once."),
        new("--grpc-retry-delays", "Broker:GrpcRetryDelays", "1s 5s 10s 30s 1m 2m 3m 4m 5m 6m 7m 8m 9m 10m 20m 30m 1h 2h", "Delays announced to gRPC push consumers (Settings backoff, customized, Apache's default group retry policy): after its n-th failed delivery a message is offered again this n-th delay later (the last repeats); 1 to 64 delays of 0 to 12h, separated by spaces. With --max-delivery-attempts 16 a message that keeps failing reaches %DLQ%<group> about 1 h 46 min after its first delivery, as with Apache. The Node client reads no customized backoff and retries at once."),
        new("--tls-client-auth", "Broker:TlsClientAuth", "none", "Client certificates on the TLS ports (gRPC, Remoting and name server, admin), as Apache's tls.server.need.client.auth. none: not asked for; optional: asked for, a TLS client without one is served, one whose certificate does not chain to --tls-client-ca is refused at the handshake; require: a TLS client must present one that chains to --tls-client-ca, and a port whose TLS is auto takes TLS only (cleartext would bypass the check; a port set to off stays cleartext, with a warning)."),
        new("--tls-client-ca", "Broker:TlsClientCa", "", "CA certificate(s) that client certificates must chain to, with --tls-client-auth optional or require: a PEM file (one or more certificates), DER, or PKCS#12 without a password. Only these are trusted, not the system's roots; a self-signed client certificate listed here is trusted as it is. Read again when the file changes (checked at each handshake by its time and size; a broken or removed file keeps the certificates read before, logged as an error), and named to clients in the handshake as the accepted CAs."),
        new("--remoting-port", "Broker:RemotingPort", "10911", "RocketMQ 4 Remoting endpoint (TCP; 0 = off; cleartext and TLS on the same port: --remoting-tls)."),
        new("--remoting-tls", "Broker:RemotingTls", "auto", "TLS on the Remoting and name-server ports, with the certificate of --grpc-tls-certificate. auto: a connection that opens with a TLS handshake gets TLS (a Java 4.x client with -Dtls.enable=true or ClientConfig.setUseTLS(true)), any other gets cleartext (ali-ons, Java without TLS), both on the same port, as Apache's broker and name server with tls.server.mode=permissive (their default); required: cleartext connections are closed (enforcing); off: cleartext only (disabled)."),
        new("--namesrv-port", "Broker:NameServerPort", "9876", "Embedded RocketMQ name server (TCP; 0 = off, as it is with --remoting-port 0; name-server requests also answer on the remoting port)."),
        new("--remoting-max-connections", "Broker:RemotingMaxConnections", "10000", "Connections the Remoting and name-server ports accept at once, together; one more is closed at once."),
        new("--remoting-max-connections-per-address", "Broker:RemotingMaxConnectionsPerAddress", "0", "Connections one peer address (an IPv6 peer: its /64) may hold on the Remoting and name-server ports at once, together, of --remoting-max-connections; 0 = all of them (the default). A new connection over this share is closed at once, and the address's open ones are kept (clients hold idle connections for check-backs and long polls). It keeps one host from taking the ports and keeping every other client out, and from multiplying the per-connection bounds (--remoting-max-in-flight-per-connection, --remoting-max-parked-pulls) by the whole port. Behind NAT or a proxy many clients share one address: leave them room."),
        new("--remoting-max-in-flight-per-connection", "Broker:RemotingMaxInFlightPerConnection", "64MiB", "Bytes one Remoting connection may make the broker hold: bodies of its requests being processed and answers not yet written to its socket; past it new requests and pull answers that do not fit are answered SYSTEM_BUSY (an answer alone on its connection always goes; never below twice (--max-message-size + 1MiB))."),
        new("--remoting-max-pull-bytes", "Broker:RemotingMaxPullBytes", "512MiB", "Bytes of pulled messages all Remoting connections together may make the broker hold: pull, VIEW_MESSAGE_BY_ID and QUERY_MESSAGE answers being built (each body is reserved, on this budget and on its connection's, before it is read) and not yet written to their sockets; past it a pull answers the messages that fit, and SYSTEM_BUSY when not even one does (a long poll first waits for room until its suspend time ends; the Java client pulls the same offset again 3 s later; never below twice (--max-message-size + 1MiB))."),
        new("--remoting-max-parked-pulls", "Broker:RemotingMaxParkedPulls", "4096", "Long-polling pulls (PULL_MESSAGE with SUSPEND) one Remoting connection may have waiting at once; past it a pull is answered at once, SYSTEM_BUSY when there is nothing new."),
        new("--remoting-write-timeout", "Broker:RemotingWriteTimeout", "30s", "A Remoting connection whose socket takes none of the next 1 MiB of answers for this long is closed (a client that stopped reading)."),
        new("--remoting-consumer-expiry", "Broker:RemotingConsumerExpiry", "120s", "A Remoting consumer leaves its group this long after the last heartbeat that named the group (Java's channelExpiredTimeout; clients heartbeat every 30 s); the group's other members are told to rebalance."),
        new("--remoting-max-queue-locks", "Broker:RemotingMaxQueueLocks", "4096", "Queue locks (orderly consumers' LOCK_BATCH_MQ) one Remoting connection holds at once; past it a queue is left out of the locked set until the connection's own locks end (a Warning log, once a minute at most)."),
        new("--http-port", "Broker:HttpPort", "8080", "Admin port (HTTP/1.1): admin API, dashboard, /metrics, /health (cleartext and TLS on the same port: --admin-tls)."),
        new("--admin-bind", "Broker:AdminBind", "127.0.0.1", "Address of the admin port, separate from --bind; expose it only with credentials configured."),
        new("--admin-tls", "Broker:AdminTls", "auto", "TLS on the admin port, with the certificate of --grpc-tls-certificate. auto: a connection that opens with a TLS handshake gets HTTPS, any other plain HTTP, on the same port (http:// probes, scrapers, the halfmsg CLI and the dashboard work as before, https:// works too); required: cleartext connections are closed, so credentials never cross the network in clear; off: plain HTTP only."),
        new("--admin-allowed-hosts", "Broker:AdminAllowedHosts", "localhost,127.0.0.1,[::1]", "Host header values the admin port answers (comma-separated; the --admin-bind address is added); guards against DNS rebinding."),
        new("--admin-max-connections-per-address", "Broker:AdminMaxConnectionsPerAddress", "64", "Connections one peer address (an IPv6 peer: its /64) may hold on the admin port at once, of the port's 256. A new connection over this share closes that address's longest idle connection (no request in progress), and one on a full port the longest idle connection of the address holding the most; only when none is idle is it closed at once. So no peer keeps the /health probes out. Behind a reverse proxy every connection comes from the proxy's address."),
        new("--metrics-anonymous", "Broker:MetricsAnonymous", "false", "true: GET /metrics needs no credentials even when credentials are configured."),
        new("--log-format", "Broker:LogFormat", "simple", "Console log format: simple or json (one JSON object per line)."),
        new("--flush", "Broker:Flush", "sync", "sync: acknowledged writes are on disk before the reply (group commit); async: periodic commit."),
        new("--decision-durability", "Broker:DecisionDurability", "sync", "sync: a commit or rollback is answered once it is durable; relaxed: answered at once (as RocketMQ's one-way END_TRANSACTION); the message still becomes visible only once durable, and a decision lost in a crash leaves its half pending for check-back."),
        new("--transaction-timeout", "Broker:TransactionTimeout", "6s", "A half younger than this is not checked."),
        new("--transaction-check-interval", "Broker:TransactionCheckInterval", "30s", "How often the check-back scheduler runs."),
        new("--transaction-check-max", "Broker:TransactionCheckMax", "15", "Check-backs before a half is parked: still pending, listed by /api/transactions/parked for an operator to resume or decide."),
        new("--max-delivery-attempts", "Broker:MaxDeliveryAttempts", "16", "Deliveries before a message goes to %DLQ%<group>."),
        new("--queues-per-topic", "Broker:QueuesPerTopic", "8", "Queues of an auto-created topic."),
        new("--max-message-size", "Broker:MaxMessageSize", "4MiB", "Largest accepted body. The log keeps at least four pages in memory, each holding the largest record: from about 16MiB its memory grows past the default 64 MiB (256 MiB at 32MiB)."),
        new("--auto-create-topics", "Broker:AutoCreateTopics", "true", "Create topics on first use. When false, topics are created by the admin API (POST /api/topics/{name}) or mqadmin's updateTopic; retry topics (%RETRY%{group}) are the broker's and always created."),
        new("--max-topics", "Broker:MaxTopics", "10000", "Topics the broker holds (every topic counts, retry and dead-letter topics too) before it stops creating them on first use (a send or receive naming a new topic is then TOPIC_NOT_FOUND) and over Remoting (UPDATE_AND_CREATE_TOPIC, as mqadmin updateTopic sends it, is then SYSTEM_ERROR for a new topic); the admin API still creates topics, and existing topics may still be given more queues."),
        new("--max-consumer-groups", "Broker:MaxConsumerGroups", "10000", "Consumer groups the broker keeps progress for, each counted once per topic it consumes: a receive or offset commit that would start one more is refused (gRPC FORBIDDEN, Remoting SUBSCRIPTION_GROUP_NOT_EXIST) until an operator deletes a group (halfmsg group delete) or raises the limit."),
        new("--default-group-order", "Broker:DefaultGroupOrder", "message-group", "How a consumer group that no operator configured (POST /api/groups/{group}/order) is served. message-group: a FIFO message group's message in flight holds that message group's later messages only, and the rest of its queue is delivered past them (up to 1,024 held messages per queue; past that the queue waits behind them, as every queue did before 2026-12-07); concurrent: nothing is held, as for a group configured concurrent. A group configured orderly (Apache's consumeMessageOrderly) holds each queue while a message of it is in flight, whatever this says."),
        new("--decision-retention", "Broker:DecisionRetention", "1h", "How long a decided transaction id is remembered, so that a repeated commit or rollback (a producer's retry, a check-back answer after the producer's own decision) is recognized and changes nothing; a decision for an id forgotten is answered 'not found' (gRPC NOT_FOUND)."),
        new("--max-remembered-decisions", "Broker:MaxRememberedDecisions", "1000000", "At most this many decided transaction ids are remembered (about 110 bytes each in memory, measured, and in every checkpoint), the oldest forgotten first, whatever --decision-retention says: at 25,000 transactions a second a million last 40 seconds."),
        new("--max-passed-over-per-queue", "Broker:MaxPassedOverPerQueue", "1024", "Messages per queue and consumer group that the pick passes over while their FIFO message group has a message in flight (groups served by message group), so the rest of the queue is delivered; each is remembered durably (8 bytes) until delivered. Past it the queue waits behind them; 0 = a busy message group holds its whole queue, as every queue did before 2026-12-07."),
        new("--max-remembered-recalls", "Broker:MaxRememberedRecalls", "1000000", "Recalls of delay messages (RecallMessage, RECALL_MESSAGE) the broker remembers until their delivery time, so that a copy of a recalled message stored after the recall (a producer's retry) is dropped; a recall beyond them is refused (gRPC TOO_MANY_REQUESTS, Remoting SYSTEM_BUSY) until some come due."),
        new("--commit-linger-yields", "Broker:CommitLingerYields", "2", "With --flush sync: before a log commit of less than 8 KiB, let the work already queued run this many times first, so requests the previous commit released share the commit instead of waiting behind a small one; 0 = commit at once."),
        new("--checkpoint-every", "Broker:CheckpointEvery", "200000", "Records between checkpoints (bounds replay at start)."),
        new("--checkpoint-every-bytes", "Broker:CheckpointEveryBytes", "1GiB", "Log bytes between checkpoints, however few records (bounds replay with large messages); an eighth of --retention-size and of --retention-time bound the distance too, since the log is cut only below a checkpoint. 0 = no byte bound."),
        new("--retention-size", "Broker:RetentionSize", "8GiB", "Cut the log head beyond this size; limits are limits, but pending halves and delays not yet due are always kept (README: Retention, the contract). A cut goes an eighth of the limit deeper than needed, so the log holds between seven eighths of the limit and the limit and cuts come once per eighth written. 0 = no size limit."),
        new("--max-concurrent-sends", "Broker:MaxConcurrentSends", "1024", "Sends (gRPC and Remoting together) processed at once; more wait for a slot."),
        new("--default-invisible-duration", "Broker:DefaultInvisibleDuration", "60s", "Lease of a gRPC receive that names none. The official push consumers name none and ask the broker to renew it (auto_renew): it is extended at each expiry while the consumer is active (seen within 30 s), up to 3 h from the delivery; an ack with the first receipt handle stays valid."),
        new("--send-queue-timeout", "Broker:SendQueueTimeout", "200ms", "A send that waited this long for a slot is answered busy (gRPC TOO_MANY_REQUESTS, Remoting SYSTEM_BUSY; RocketMQ's waitTimeMillsInSendQueue); clients back off and retry."),
        new("--send-queue-capacity", "Broker:SendQueueCapacity", "10000", "Sends waiting for a slot at once; more are answered busy at once (RocketMQ's sendThreadPoolQueueCapacity)."),
        new("--disk-min-free", "Broker:DiskMinFree", "256MiB", "Refuse new messages (SERVICE_NOT_AVAILABLE / INTERNAL_SERVER_ERROR, /health disk-full) while less is free on the data dir's file system; the rest is a reserve for decisions, acks and checkpoints. 0 = off."),
        new("--disk-max-used-ratio", "Broker:DiskMaxUsedRatio", "0.90", "Refuse new messages while the data dir's file system is used beyond this ratio (RocketMQ's diskSpaceWarningLevelRatio); 1 = off."),
        new("--message-index-capacity", "Broker:MessageIndexCapacity", "200000", "Messages the operator look-up index remembers (by id and key, with their histories; about 800 bytes each); the oldest are forgotten first."),
        new("--message-index-key-bytes", "Broker:MessageIndexKeyBytes", "128MiB", "Estimated bytes the message index's keys may hold in all (about 2 per character + 160 per indexed key); past it the oldest messages are forgotten first, even below --message-index-capacity (GET /api/message-index: messagesForgottenForKeyBytes)."),
        new("--retention-time", "Broker:RetentionTime", "72h", "Cut records older than this; limits are limits, but pending halves and delays not yet due are always kept (README: Retention, the contract). 0 = no age limit."),
    ];

    /// <summary>Sections under <c>Broker:</c> that are not single settings.</summary>
    private static readonly string[] KnownSections = ["Credentials"];

    /// <summary>The product version (informational version of this assembly, with the commit when the build knows it).</summary>
    public static string Version { get; } =
        typeof(BrokerConfiguration).Assembly.GetCustomAttribute<AssemblyInformationalVersionAttribute>()?.InformationalVersion ?? "0.0.0";

    /// <summary>What <c>--help</c> prints: every flag with its meaning, default and configuration key.</summary>
    public static string HelpText()
    {
        var sb = new StringBuilder();
        sb.AppendLine($"HalfMsgBroker {Version}: a RocketMQ-compatible transactional message broker.");
        sb.AppendLine();
        sb.AppendLine("Usage: HalfMsg.Broker [--flag value | --flag=value]...");
        sb.AppendLine();
        sb.AppendLine("Each flag can also be set in appsettings.json (\"Broker\": { \"GrpcPort\": 8081 }) or as an environment");
        sb.AppendLine("variable (Broker__GrpcPort=8081); flags win over the environment, which wins over appsettings.json.");
        sb.AppendLine("Durations take a unit: 500ms, 6s, 1m, 2h, 1d. Sizes: 4194304, 512KiB, 4MiB, 8GiB.");
        sb.AppendLine("Credentials (admin API and gRPC): Broker__Credentials__<accessKey>=<secret>.");
        sb.AppendLine();
        int width = Settings.Max(s => s.Flag.Length) + 2;
        foreach (var s in Settings)
        {
            sb.Append("  ").Append(s.Flag.PadRight(width)).AppendLine(s.Description);
            sb.Append("  ").Append(new string(' ', width))
              .AppendLine($"default: {(s.Default.Length == 0 ? "(empty)" : s.Default)}; {s.Key.Replace(":", "__", StringComparison.Ordinal)}");
        }
        sb.Append("  ").Append("-h, --help".PadRight(width)).AppendLine("Print this help and exit.");
        sb.Append("  ").Append("--version".PadRight(width)).AppendLine("Print the version and exit.");
        sb.AppendLine();
        sb.AppendLine("Exit codes: 0 stopped cleanly, 2 invalid configuration or a start-up check failed (port in use, bad data dir),");
        sb.AppendLine("74 storage failure (a data dir file that cannot be written, or the log failed while running): restart once the disk is fixed,");
        sb.AppendLine("1 any other failure.");
        return sb.ToString();
    }

    /// <summary>Turns <c>--flag value</c> / <c>--flag=value</c> pairs into configuration keys. Unknown flags are errors.</summary>
    public static Dictionary<string, string?> ParseCommandLine(string[] args)
    {
        var result = new Dictionary<string, string?>(StringComparer.OrdinalIgnoreCase);
        for (int i = 0; i < args.Length; i++)
        {
            string arg = args[i];
            if (!arg.StartsWith("--", StringComparison.Ordinal))
                throw new BrokerConfigurationException($"unexpected argument '{arg}'; flags look like --grpc-port 8081 (see --help)");
            string flag = arg, value;
            int eq = arg.IndexOf('=');
            if (eq > 0) { flag = arg[..eq]; value = arg[(eq + 1)..]; }
            else
            {
                if (i + 1 >= args.Length) throw new BrokerConfigurationException($"{flag} needs a value (see --help)");
                value = args[++i];
            }
            var setting = Array.Find(Settings, s => s.Flag.Equals(flag, StringComparison.OrdinalIgnoreCase))
                ?? throw new BrokerConfigurationException($"unknown flag {flag}{FlagHint(flag)} (see --help for the {Settings.Length} known flags)");
            result[setting.Key] = value;
        }
        return result;
    }

    /// <summary>
    /// Reads and validates every setting; the first bad one throws with the name the operator wrote it under: the flag,
    /// the environment variable (<c>Broker__Flush</c>) or the key in appsettings.json.
    /// </summary>
    public static BrokerOptions Bind(IConfiguration config)
    {
        RejectUnknownKeys(config);
        string N(string flag) => SourceName(config, flag);
        string Get(string flag)
        {
            string dflt = Array.Find(Settings, s => s.Flag == flag)!.Default;
            string? v = config[Key(flag)];
            if (v is null) return dflt;
            // An explicitly empty value (`--data-dir "$DATA_DIR"` with the variable unset, `--data-dir=`, Broker__DataDir=)
            // is a mistake, not a request for the default: until 2026-12-05 it silently became the default, and an empty
            // --data-dir started the broker on a new, empty ./data (found by review). Only settings whose empty value
            // means something (--advertised-host) take it.
            if (v.Trim().Length == 0 && dflt.Length > 0)
                throw new BrokerConfigurationException($"{N(flag)} is empty; give it a value or leave it out for the default ({dflt})");
            return v;
        }
        var core = new CoreOptions
        {
            DataDir = Get("--data-dir"),
            Flush = Get("--flush").ToLowerInvariant() switch
            {
                "sync" => FlushMode.Sync,
                "async" => FlushMode.Async,
                var v => throw new BrokerConfigurationException($"{N("--flush")} must be 'sync' or 'async', not '{v}'"),
            },
            DecisionDurability = Get("--decision-durability").ToLowerInvariant() switch
            {
                "sync" => DecisionDurability.Sync,
                "relaxed" => DecisionDurability.Relaxed,
                var v => throw new BrokerConfigurationException($"{N("--decision-durability")} must be 'sync' or 'relaxed', not '{v}'"),
            },
            TransactionTimeout = Duration(N("--transaction-timeout"), Get("--transaction-timeout"), TimeSpan.Zero),
            TransactionCheckInterval = Duration(N("--transaction-check-interval"), Get("--transaction-check-interval"), TimeSpan.FromMilliseconds(10), TimerMax),
            TransactionCheckMax = Int(N("--transaction-check-max"), Get("--transaction-check-max"), 1, 10_000),
            MaxDeliveryAttempts = Int(N("--max-delivery-attempts"), Get("--max-delivery-attempts"), 1, 1_000),
            QueuesPerTopic = Int(N("--queues-per-topic"), Get("--queues-per-topic"), 1, 1_024),
            MaxMessageSize = (int)Size(N("--max-message-size"), Get("--max-message-size"), 1, Broker.Core.Storage.RecordLimits.MaxMessageSizeLimit),
            AutoCreateTopics = Bool(N("--auto-create-topics"), Get("--auto-create-topics")),
            MaxTopics = Int(N("--max-topics"), Get("--max-topics"), 1, 10_000_000),
            MaxConsumerGroups = Int(N("--max-consumer-groups"), Get("--max-consumer-groups"), 1, 10_000_000),
            DefaultGroupOrder = Get("--default-group-order").ToLowerInvariant() switch
            {
                "message-group" => DefaultGroupOrder.MessageGroup,
                "concurrent" => DefaultGroupOrder.Concurrent,
                var v => throw new BrokerConfigurationException($"{N("--default-group-order")} must be 'message-group' or 'concurrent', not '{v}'"),
            },
            DecisionRetention = Duration(N("--decision-retention"), Get("--decision-retention"), TimeSpan.FromMinutes(1), TimeSpan.FromDays(7)),
            MaxRememberedDecisions = Int(N("--max-remembered-decisions"), Get("--max-remembered-decisions"), 1_000, 100_000_000),
            MaxPassedOverPerQueue = Int(N("--max-passed-over-per-queue"), Get("--max-passed-over-per-queue"), 0, 1_000_000),
            MaxRememberedRecalls = Int(N("--max-remembered-recalls"), Get("--max-remembered-recalls"), 1, 100_000_000),
            CommitLingerYields = Int(N("--commit-linger-yields"), Get("--commit-linger-yields"), 0, 16),
            CheckpointEveryRecords = Int(N("--checkpoint-every"), Get("--checkpoint-every"), 100, int.MaxValue),
            CheckpointEveryBytes = Size(N("--checkpoint-every-bytes"), Get("--checkpoint-every-bytes"), 0, long.MaxValue),
            RetentionBytes = Size(N("--retention-size"), Get("--retention-size"), 0, long.MaxValue),
            RetentionTime = Duration(N("--retention-time"), Get("--retention-time"), TimeSpan.Zero),
            DiskMinFreeBytes = Size(N("--disk-min-free"), Get("--disk-min-free"), 0, long.MaxValue),
            DiskMaxUsedRatio = Ratio(N("--disk-max-used-ratio"), Get("--disk-max-used-ratio")),
            MessageIndexCapacity = Int(N("--message-index-capacity"), Get("--message-index-capacity"), 1_000, 10_000_000),
            // At least 1 MiB: room for the keys of some 80 messages with the most keys indexed (32 of 128 characters).
            MessageIndexKeyBytes = Size(N("--message-index-key-bytes"), Get("--message-index-key-bytes"), 1L << 20, 1L << 40),
        };
        var credentials = config.GetSection("Broker:Credentials").GetChildren()
            .Where(c => !string.IsNullOrEmpty(c.Value)).ToDictionary(c => c.Key, c => c.Value!);
        string adminBind = Get("--admin-bind");
        var options = new BrokerOptions
        {
            DataDir = core.DataDir,
            Bind = Get("--bind"),
            AdvertisedHost = config[Key("--advertised-host")] is { Length: > 0 } host ? host : null,
            BrokerName = Get("--broker-name"),
            AdvertisedGrpcPort = Int(N("--advertised-grpc-port"), Get("--advertised-grpc-port"), 0, 65535),
            AdvertisedRemotingPort = Int(N("--advertised-remoting-port"), Get("--advertised-remoting-port"), 0, 65535),
            GrpcPort = Int(N("--grpc-port"), Get("--grpc-port"), 0, 65535),
            GrpcMaxConnections = Int(N("--grpc-max-connections"), Get("--grpc-max-connections"), 1, 1_000_000),
            GrpcMaxConnectionsPerAddress = Share(N("--grpc-max-connections-per-address"), Get("--grpc-max-connections-per-address"),
                N("--grpc-max-connections"), Int(N("--grpc-max-connections"), Get("--grpc-max-connections"), 1, 1_000_000)),
            GrpcTls = TlsMode(N("--grpc-tls"), Get("--grpc-tls")),
            GrpcTlsCertificate = config[Key("--grpc-tls-certificate")] is { Length: > 0 } certificate ? certificate : null,
            GrpcTlsKey = config[Key("--grpc-tls-key")] is { Length: > 0 } tlsKey ? tlsKey : null,
            GrpcTlsCertificatePassword = config[Key("--grpc-tls-certificate-password")] is { Length: > 0 } tlsPassword ? tlsPassword : null,
            RemotingTls = TlsMode(N("--remoting-tls"), Get("--remoting-tls")),
            AdminTls = TlsMode(N("--admin-tls"), Get("--admin-tls")),
            TlsClientAuth = Get("--tls-client-auth").ToLowerInvariant() switch
            {
                "none" => TlsClientAuth.None,
                "optional" => TlsClientAuth.Optional,
                "require" or "required" => TlsClientAuth.Require,
                var v => throw new BrokerConfigurationException($"{N("--tls-client-auth")} must be 'none', 'optional' or 'require', not '{v}'"),
            },
            TlsClientCa = config[Key("--tls-client-ca")] is { Length: > 0 } clientCa ? clientCa : null,
            RemotingPort = Int(N("--remoting-port"), Get("--remoting-port"), 0, 65535),
            NameServerPort = Int(N("--namesrv-port"), Get("--namesrv-port"), 0, 65535),
            RemotingMaxConnections = Int(N("--remoting-max-connections"), Get("--remoting-max-connections"), 1, 1_000_000),
            RemotingMaxConnectionsPerAddress = Share(N("--remoting-max-connections-per-address"), Get("--remoting-max-connections-per-address"),
                N("--remoting-max-connections"), Int(N("--remoting-max-connections"), Get("--remoting-max-connections"), 1, 1_000_000)),
            // Never below twice (largest message + 1 MiB), as the gRPC budgets: a lone request over it would be refused for ever.
            RemotingMaxInFlightPerConnection = Math.Max(Size(N("--remoting-max-in-flight-per-connection"), Get("--remoting-max-in-flight-per-connection"), 1L << 20, long.MaxValue),
                2 * ((long)core.MaxMessageSize + (1L << 20))),
            RemotingMaxPullBytes = Math.Max(Size(N("--remoting-max-pull-bytes"), Get("--remoting-max-pull-bytes"), 1L << 20, long.MaxValue),
                2 * ((long)core.MaxMessageSize + (1L << 20))),
            RemotingMaxParkedPulls = Int(N("--remoting-max-parked-pulls"), Get("--remoting-max-parked-pulls"), 1, 1_000_000),
            RemotingWriteTimeout = Duration(N("--remoting-write-timeout"), Get("--remoting-write-timeout"), TimeSpan.FromMilliseconds(100), TimerMax),
            RemotingConsumerExpiry = Duration(N("--remoting-consumer-expiry"), Get("--remoting-consumer-expiry"), TimeSpan.FromSeconds(1)),
            RemotingMaxQueueLocks = Int(N("--remoting-max-queue-locks"), Get("--remoting-max-queue-locks"), 1, 1_000_000),
            HttpPort = Int(N("--http-port"), Get("--http-port"), 0, 65535),
            AdminBind = adminBind,
            AdminAllowedHosts = AllowedHosts(Get("--admin-allowed-hosts"), adminBind),
            AdminMaxConnectionsPerAddress = Int(N("--admin-max-connections-per-address"), Get("--admin-max-connections-per-address"), 1, AdminEndpoint.MaxConnections),
            MetricsAnonymous = Bool(N("--metrics-anonymous"), Get("--metrics-anonymous")),
            LogFormat = Get("--log-format").ToLowerInvariant() switch
            {
                "simple" => LogFormat.Simple,
                "json" => LogFormat.Json,
                var v => throw new BrokerConfigurationException($"{N("--log-format")} must be 'simple' or 'json', not '{v}'"),
            },
            Core = core,
            Credentials = credentials,
            MaxConcurrentSends = Int(N("--max-concurrent-sends"), Get("--max-concurrent-sends"), 1, 1_000_000),
            SendQueueTimeout = Duration(N("--send-queue-timeout"), Get("--send-queue-timeout"), TimeSpan.Zero, TimerMax),
            DefaultInvisibleDuration = Duration(N("--default-invisible-duration"), Get("--default-invisible-duration"), TimeSpan.FromMilliseconds(100)),
            SendQueueCapacity = Int(N("--send-queue-capacity"), Get("--send-queue-capacity"), 0, 1_000_000),
            GrpcMaxUnsentPerConnection = Size(N("--grpc-max-unsent-per-connection"), Get("--grpc-max-unsent-per-connection"), 1, long.MaxValue),
            GrpcMaxUnsent = Size(N("--grpc-max-unsent"), Get("--grpc-max-unsent"), 1, long.MaxValue),
            GrpcWriteTimeout = Duration(N("--grpc-write-timeout"), Get("--grpc-write-timeout"), TimeSpan.FromMilliseconds(100), TimerMax),
            GrpcTelemetryStallTimeout = Duration(N("--grpc-telemetry-stall-timeout"), Get("--grpc-telemetry-stall-timeout"), TimeSpan.FromSeconds(1), TimerMax),
            GrpcRetryDelays = Durations(N("--grpc-retry-delays"), Get("--grpc-retry-delays"), MaxRetryDelays, core.MaxInvisibleDuration),
        };
        if (options.DefaultInvisibleDuration > options.Core.MaxInvisibleDuration)
            throw new BrokerConfigurationException($"{N("--default-invisible-duration")} must be at most {options.Core.MaxInvisibleDuration.TotalHours:0} h (the longest lease), not '{Get("--default-invisible-duration")}'");
        if (!BrokerNames.IsValid(options.BrokerName))
            throw new BrokerConfigurationException($"{N("--broker-name")} must be 1 to {BrokerNames.MaxLength} letters, digits, '-', '_' or '.', not '{options.BrokerName}'");
        if (!System.Net.IPAddress.TryParse(options.Bind, out _))
            throw new BrokerConfigurationException($"{N("--bind")} must be an IP address, not '{options.Bind}'");
        if (!System.Net.IPAddress.TryParse(options.AdminBind, out _))
            throw new BrokerConfigurationException($"{N("--admin-bind")} must be an IP address, not '{options.AdminBind}'");
        if (options.GrpcPort != 0 && options.GrpcPort == options.HttpPort)
            throw new BrokerConfigurationException($"{N("--grpc-port")} and {N("--http-port")} must differ (gRPC is HTTP/2-only; the admin port is HTTP/1.1)");
        return options;
    }

    private static void RejectUnknownKeys(IConfiguration config)
    {
        foreach (var child in config.GetSection("Broker").GetChildren())
        {
            if (Array.Exists(KnownSections, k => k.Equals(child.Key, StringComparison.OrdinalIgnoreCase))) continue;
            if (Array.Exists(Settings, s => s.Key.Equals("Broker:" + child.Key, StringComparison.OrdinalIgnoreCase))) continue;
            string name = SourceName(config, child.Path, child.Path);
            string? near = Array.Find(Settings, s => Distance(s.Key[7..].ToLowerInvariant(), child.Key.ToLowerInvariant()) <= 2)?.Key;
            string hint = near is null ? "" : $" (did you mean {near[7..]}?)";
            throw new BrokerConfigurationException($"unknown setting {name}{hint}; see --help for the known settings");
        }
    }

    /// <summary>" (did you mean --x?)" for the known flag nearest an unknown one, within two edits, as for an unknown
    /// environment variable or appsettings key (since the late-night session of 2026-12-07: a typo'd flag got no hint).</summary>
    private static string FlagHint(string flag)
    {
        string typed = flag.ToLowerInvariant();
        var near = Settings.Select(s => (s.Flag, Distance: Distance(s.Flag, typed))).Where(c => c.Distance <= 2).OrderBy(c => c.Distance).FirstOrDefault();
        return near.Flag is null ? "" : $" (did you mean {near.Flag}?)";
    }

    /// <summary>Levenshtein distance, for "did you mean" on short keys.</summary>
    private static int Distance(string a, string b)
    {
        var d = new int[a.Length + 1, b.Length + 1];
        for (int i = 0; i <= a.Length; i++) d[i, 0] = i;
        for (int j = 0; j <= b.Length; j++) d[0, j] = j;
        for (int i = 1; i <= a.Length; i++)
            for (int j = 1; j <= b.Length; j++)
                d[i, j] = Math.Min(Math.Min(d[i - 1, j] + 1, d[i, j - 1] + 1), d[i - 1, j - 1] + (a[i - 1] == b[j - 1] ? 0 : 1));
        return d[a.Length, b.Length];
    }

    private static string SourceName(IConfiguration config, string flag) => SourceName(config, Key(flag), flag);

    /// <summary>
    /// The name under which the winning value of <paramref name="key"/> was written: a command-line flag (in-memory
    /// provider), an environment variable, or a key in a JSON file. The last provider that has the key wins, as in binding.
    /// </summary>
    private static string SourceName(IConfiguration config, string key, string flag)
    {
        if (config is not IConfigurationRoot root) return flag;
        foreach (var provider in root.Providers.Reverse())
        {
            if (!provider.TryGet(key, out _)) continue;
            return provider switch
            {
                MemoryConfigurationProvider => flag,
                EnvironmentVariablesConfigurationProvider => key.Replace(":", "__", StringComparison.Ordinal),
                JsonConfigurationProvider json => $"{key} (in {json.Source.Path})",
                _ => key,
            };
        }
        return flag;
    }

    private static IReadOnlyList<string> AllowedHosts(string value, string adminBind)
    {
        var hosts = value.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries).ToList();
        if (System.Net.IPAddress.TryParse(adminBind, out var ip) && !ip.Equals(System.Net.IPAddress.Any) && !ip.Equals(System.Net.IPAddress.IPv6Any))
            hosts.Add(ip.AddressFamily == System.Net.Sockets.AddressFamily.InterNetworkV6 ? $"[{ip}]" : ip.ToString());
        return hosts.Distinct(StringComparer.OrdinalIgnoreCase).ToList();
    }

    private static string Key(string flag) => Array.Find(Settings, s => s.Flag == flag)!.Key;

    private static PortTlsMode TlsMode(string name, string value) => value.ToLowerInvariant() switch
    {
        "auto" => PortTlsMode.Auto,
        "required" => PortTlsMode.Required,
        "off" => PortTlsMode.Off,
        var v => throw new BrokerConfigurationException($"{name} must be 'auto', 'required' or 'off', not '{v}'"),
    };

    private static int Int(string name, string value, int min, int max)
    {
        if (!int.TryParse(value, NumberStyles.Integer, CultureInfo.InvariantCulture, out var n) || n < min || n > max)
            throw new BrokerConfigurationException($"{name} must be a whole number in [{min}, {max}], not '{value}'");
        return n;
    }

    /// <summary>A port's share per address: 0 (the whole port) or 1 to the port's own limit <paramref name="max"/>. A share
    /// above the limit is refused rather than clamped, as --admin-max-connections-per-address is: it would mean nothing.</summary>
    private static int Share(string name, string value, string maxName, int max)
    {
        if (!int.TryParse(value, NumberStyles.Integer, CultureInfo.InvariantCulture, out var n) || n < 0)
            throw new BrokerConfigurationException($"{name} must be a whole number from 1 to {maxName} ({max}), or 0 for all of them, not '{value}'");
        if (n > max)
            throw new BrokerConfigurationException($"{name} must be at most {maxName} ({max}), the connections the port takes in all, not '{value}'; 0 = all of them");
        return n;
    }

    private static double Ratio(string name, string value)
    {
        if (!double.TryParse(value, NumberStyles.Float, CultureInfo.InvariantCulture, out var r) || r <= 0 || r > 1)
            throw new BrokerConfigurationException($"{name} must be a ratio in (0, 1], like 0.90, not '{value}'");
        return r;
    }

    private static bool Bool(string name, string value) => value.ToLowerInvariant() switch
    {
        "true" or "1" or "yes" or "on" => true,
        "false" or "0" or "no" or "off" => false,
        _ => throw new BrokerConfigurationException($"{name} must be true or false, not '{value}'"),
    };

    /// <summary>Durations: <c>500ms</c>, <c>6s</c>, <c>2m</c>, <c>72h</c>, <c>1d</c>, or a TimeSpan like <c>00:00:30</c>.</summary>
    public static TimeSpan Duration(string name, string value, TimeSpan min) => Duration(name, value, min, TimeSpan.MaxValue);

    /// <summary>
    /// The longest duration a setting that arms a timer may take: <see cref="SemaphoreSlim.WaitAsync(TimeSpan)"/>,
    /// <see cref="Task.Delay(TimeSpan)"/> and <see cref="CancellationTokenSource.CancelAfter(TimeSpan)"/> take at most
    /// int.MaxValue ms (about 24.8 days). Until 2026-12-05 a longer one started the broker and then failed where it was
    /// used (the check-back loop threw every second; found by review).
    /// </summary>
    public static readonly TimeSpan TimerMax = TimeSpan.FromDays(24);

    /// <summary>Most delays <c>--grpc-retry-delays</c> takes (Apache's default has 18).</summary>
    public const int MaxRetryDelays = 64;

    /// <summary>A list of 1 to <paramref name="maxCount"/> durations separated by spaces (or commas), each from 0 to
    /// <paramref name="max"/>.</summary>
    public static TimeSpan[] Durations(string name, string value, int maxCount, TimeSpan max)
    {
        string[] parts = value.Split([' ', ',', '\t'], StringSplitOptions.RemoveEmptyEntries);
        if (parts.Length is 0 || parts.Length > maxCount)
            throw new BrokerConfigurationException($"{name} must list 1 to {maxCount} durations separated by spaces (like 1s 5s 30s 1m), not {parts.Length}");
        return [.. parts.Select(p => Duration(name, p, TimeSpan.Zero, max))];
    }

    /// <summary>As <see cref="Duration(string, string, TimeSpan)"/>, at most <paramref name="max"/>.</summary>
    public static TimeSpan Duration(string name, string value, TimeSpan min, TimeSpan max)
    {
        if (TryParseDuration(value, out var d) && d >= min && d <= max) return d;
        string why = double.TryParse(value.Trim(), NumberStyles.Float, CultureInfo.InvariantCulture, out _)
            ? "needs a unit"
            : max == TimeSpan.MaxValue ? $"must be a duration of at least {FormatDuration(min)}"
            : $"must be a duration of at least {FormatDuration(min)} and at most {FormatDuration(max)}";
        throw new BrokerConfigurationException($"{name} {why}: write it like 500ms, 6s, 1m, 2h or 1d (or 00:00:30), not '{value}'");
    }

    /// <summary>
    /// A duration in its largest whole unit, the way a setting is written (<c>10ms</c>, <c>90s</c>, <c>1m</c>,
    /// <c>12h</c>, <c>24d</c>; <c>0</c>; a fraction of a millisecond as <c>00:00:00.0000001</c>), so that an error can
    /// name a bound the user can type back. Since the late-night session of 2026-12-07: until then the bounds were shown
    /// as milliseconds and whole days, and <c>--grpc-retry-delays "1s 13h"</c> was refused as "at most 1d" (its 12 h
    /// bound rounded up; found by a new user's pass over the README).
    /// </summary>
    public static string FormatDuration(TimeSpan duration)
    {
        if (duration == TimeSpan.Zero) return "0";
        (string suffix, long ticks)[] units = [("d", TimeSpan.TicksPerDay), ("h", TimeSpan.TicksPerHour),
            ("m", TimeSpan.TicksPerMinute), ("s", TimeSpan.TicksPerSecond), ("ms", TimeSpan.TicksPerMillisecond)];
        foreach (var (suffix, ticks) in units)
        {
            if (duration.Ticks % ticks == 0) return (duration.Ticks / ticks).ToString(CultureInfo.InvariantCulture) + suffix;
        }
        return duration.ToString("c", CultureInfo.InvariantCulture);
    }

    /// <summary>
    /// Parses a duration with a unit. A bare number is refused: <see cref="TimeSpan.Parse(string)"/> would read
    /// <c>6</c> as six days, which is never what a <c>--transaction-timeout 6</c> meant. Zero is zero in any unit, so a
    /// bare zero is accepted (<c>--retention-time 0</c>: no age limit).
    /// </summary>
    public static bool TryParseDuration(string value, out TimeSpan duration)
    {
        duration = default;
        value = value.Trim();
        if (double.TryParse(value, NumberStyles.Float, CultureInfo.InvariantCulture, out var zero) && zero == 0) return true;
        (string suffix, double ms)[] units = [("ms", 1), ("s", 1000), ("m", 60_000), ("h", 3_600_000), ("d", 86_400_000)];
        foreach (var (suffix, ms) in units)
        {
            if (suffix == "m" && value.EndsWith("ms", StringComparison.Ordinal)) continue;
            if (value.EndsWith(suffix, StringComparison.Ordinal)
                && double.TryParse(value[..^suffix.Length], NumberStyles.Float, CultureInfo.InvariantCulture, out var n) && n >= 0)
            {
                // 1e300d or Infinity: TimeSpan.FromMilliseconds would throw OverflowException (found by fuzzing, issue 13).
                if (!(n * ms < TimeSpan.MaxValue.TotalMilliseconds)) return false;
                duration = TimeSpan.FromMilliseconds(n * ms);
                return true;
            }
        }
        return value.Contains(':', StringComparison.Ordinal)
            && TimeSpan.TryParse(value, CultureInfo.InvariantCulture, out duration) && duration >= TimeSpan.Zero;
    }

    /// <summary>Sizes: <c>4194304</c>, <c>4MiB</c>, <c>512KiB</c>, <c>8GiB</c> (also KB/MB/GB as binary units).</summary>
    public static long Size(string name, string value, long min, long max)
    {
        string original = value;
        value = value.Trim();
        (string suffix, long mult)[] units = [("KiB", 1L << 10), ("MiB", 1L << 20), ("GiB", 1L << 30), ("KB", 1L << 10), ("MB", 1L << 20), ("GB", 1L << 30), ("B", 1)];
        long multiplier = 1;
        foreach (var (suffix, mult) in units)
        {
            if (value.EndsWith(suffix, StringComparison.OrdinalIgnoreCase)) { multiplier = mult; value = value[..^suffix.Length]; break; }
        }
        if (long.TryParse(value, NumberStyles.Integer, CultureInfo.InvariantCulture, out var n) && n >= 0 && n <= max / multiplier && n * multiplier >= min)
            return n * multiplier;
        throw new BrokerConfigurationException($"{name} must be a size like 4194304, 4MiB or 8GiB in [{min}, {max}] bytes, not '{original}'");
    }
}

/// <summary>A configuration value or start-up check that prevents start-up. The message names the flag to change.</summary>
public sealed class BrokerConfigurationException(string message) : Exception(message);
