using HalfMsg.Broker.Core;

namespace HalfMsg.Broker.Hosting;

/// <summary>
/// The broker's whole configuration, bound from appsettings.json, environment variables (<c>Broker__GrpcPort</c>) and
/// command-line flags (<c>--grpc-port</c>), in increasing priority. Validated on start; a bad value names its flag.
/// </summary>
public sealed record BrokerOptions
{
    public string DataDir { get; init; } = "./data";
    public string Bind { get; init; } = "127.0.0.1";
    /// <summary>Host advertised in routes; null = for gRPC the address the request names, else the connection's local address.</summary>
    public string? AdvertisedHost { get; init; }
    /// <summary>The machine's name as a self-signed certificate made now names it; null = <see cref="System.Net.Dns.GetHostName"/>.
    /// A seam for tests (a container's name that changes at each start).</summary>
    internal Func<string>? MachineHostName { get; init; }
    /// <summary>Port advertised in gRPC routes; 0 = <see cref="GrpcPort"/> (see <see cref="FrontEnds.GrpcV5.GrpcV5Options.AdvertisedPort"/>).</summary>
    public int AdvertisedGrpcPort { get; init; }
    /// <summary>Port advertised in Remoting routes and offset message ids; 0 = <see cref="RemotingPort"/> (see
    /// <see cref="FrontEnds.Remoting.RemotingOptions.AdvertisedPort"/>).</summary>
    public int AdvertisedRemotingPort { get; init; }
    /// <summary>The broker's name in both front-ends' routes and in recall handles (<see cref="FrontEnds.BrokerNames"/>).</summary>
    public string BrokerName { get; init; } = FrontEnds.BrokerNames.Default;
    public int GrpcPort { get; init; } = 8081;
    /// <summary>Connections the gRPC port accepts at once (the port's own limit; Remoting and admin have theirs).</summary>
    public int GrpcMaxConnections { get; init; } = 1_000;
    /// <summary>Of <see cref="GrpcMaxConnections"/>, what one peer address (IPv6: its /64) may hold at once; one more from
    /// it is closed at once, open ones are kept (<see cref="AddressShare"/>). 0 = the whole port (the default).</summary>
    public int GrpcMaxConnectionsPerAddress { get; init; }
    /// <summary>TLS on the gRPC port (<see cref="PortTls"/>): by default a connection that starts TLS gets it.</summary>
    public PortTlsMode GrpcTls { get; init; } = PortTlsMode.Auto;
    /// <summary>TLS on the Remoting and name-server ports (<see cref="PortTls"/>), with the gRPC port's certificate.</summary>
    public PortTlsMode RemotingTls { get; init; } = PortTlsMode.Auto;
    /// <summary>TLS on the admin port (<see cref="PortTls"/>), with the gRPC port's certificate.</summary>
    public PortTlsMode AdminTls { get; init; } = PortTlsMode.Auto;
    /// <summary>PEM or PKCS#12 certificate for the gRPC and Remoting ports' TLS; null = a self-signed one.</summary>
    public string? GrpcTlsCertificate { get; init; }
    /// <summary>PEM private key of <see cref="GrpcTlsCertificate"/> when its file does not hold it.</summary>
    public string? GrpcTlsKey { get; init; }
    /// <summary>Password of an encrypted PEM key or of a PKCS#12 file.</summary>
    public string? GrpcTlsCertificatePassword { get; init; }
    /// <summary>Whether the TLS ports ask for client certificates (<see cref="ClientCertificates"/>).</summary>
    public TlsClientAuth TlsClientAuth { get; init; } = TlsClientAuth.None;
    /// <summary>PEM, DER or PKCS#12 file of the CA certificate(s) client certificates must chain to.</summary>
    public string? TlsClientCa { get; init; }
    /// <summary>RocketMQ 4 Remoting front-end (0 = off).</summary>
    public int RemotingPort { get; init; } = 10911;
    /// <summary>Embedded name server (0 = off; name-server requests still answer on the remoting port).</summary>
    public int NameServerPort { get; init; } = 9876;
    /// <summary>Connections the Remoting and name-server ports accept at once, together.</summary>
    public int RemotingMaxConnections { get; init; } = 10_000;
    /// <summary>Of <see cref="RemotingMaxConnections"/>, what one peer address (IPv6: its /64) may hold on the Remoting and
    /// name-server ports at once, together; as <see cref="GrpcMaxConnectionsPerAddress"/>. 0 = the whole ports (the default).</summary>
    public int RemotingMaxConnectionsPerAddress { get; init; }
    /// <summary>Request bodies and unsent answer bytes one Remoting connection may make the broker hold.</summary>
    public long RemotingMaxInFlightPerConnection { get; init; } = 64L * 1024 * 1024;
    /// <summary>Bytes of pulled messages all Remoting connections together may make the broker hold.</summary>
    public long RemotingMaxPullBytes { get; init; } = 512L * 1024 * 1024;
    /// <summary>Long-polling pulls one Remoting connection may have waiting at once.</summary>
    public int RemotingMaxParkedPulls { get; init; } = 4096;
    /// <summary>A Remoting connection whose socket takes no answer byte for this long is closed.</summary>
    public TimeSpan RemotingWriteTimeout { get; init; } = TimeSpan.FromSeconds(30);
    /// <summary>A Remoting consumer leaves its group this long after the last heartbeat naming it.</summary>
    public TimeSpan RemotingConsumerExpiry { get; init; } = TimeSpan.FromSeconds(120);
    /// <summary>Queue locks one Remoting connection holds at once.</summary>
    public int RemotingMaxQueueLocks { get; init; } = 4096;
    public int HttpPort { get; init; } = 8080;
    /// <summary>Address of the admin port; separate from <see cref="Bind"/> so client ports can be public while admin stays local.</summary>
    public string AdminBind { get; init; } = "127.0.0.1";
    /// <summary>Host header values (without port) the admin port answers; <c>*</c> = any.</summary>
    public IReadOnlyList<string> AdminAllowedHosts { get; init; } = ["localhost", "127.0.0.1", "[::1]"];
    /// <summary>Admin-port connections one peer address (IPv6: its /64) may hold at once, of <see cref="AdminEndpoint.MaxConnections"/>.</summary>
    public int AdminMaxConnectionsPerAddress { get; init; } = AdminEndpoint.DefaultMaxConnectionsPerAddress;
    /// <summary>GET /metrics without credentials even when credentials are configured.</summary>
    public bool MetricsAnonymous { get; init; }
    public LogFormat LogFormat { get; init; } = LogFormat.Simple;
    /// <summary>Sends (gRPC and Remoting together) in the engine at once; beyond it a send waits for a slot.</summary>
    public int MaxConcurrentSends { get; init; } = 1024;
    /// <summary>How long a send may wait for a slot before it is answered busy (RocketMQ's waitTimeMillsInSendQueue).</summary>
    public TimeSpan SendQueueTimeout { get; init; } = TimeSpan.FromMilliseconds(200);
    /// <summary>Lease of a gRPC receive that names none (push consumers; renewed while they are active).</summary>
    public TimeSpan DefaultInvisibleDuration { get; init; } = TimeSpan.FromSeconds(60);
    /// <summary>Sends waiting for a slot at once; beyond it a send is answered busy without waiting (RocketMQ's sendThreadPoolQueueCapacity).</summary>
    public int SendQueueCapacity { get; init; } = 10_000;
    /// <summary>Unsent gRPC answer bytes one connection may make the broker hold (raised to twice the largest request).</summary>
    public long GrpcMaxUnsentPerConnection { get; init; } = 64L * 1024 * 1024;
    /// <summary>Unsent ReceiveMessage answer bytes all gRPC connections together may make the broker hold.</summary>
    public long GrpcMaxUnsent { get; init; } = 512L * 1024 * 1024;
    /// <summary>Longest a ReceiveMessage answer may take to be written out; past it the stream is reset.</summary>
    public TimeSpan GrpcWriteTimeout { get; init; } = TimeSpan.FromSeconds(30);
    /// <summary>How long a Telemetry stream over its queue bound may take nothing before it is ended for not reading.</summary>
    public TimeSpan GrpcTelemetryStallTimeout { get; init; } = TimeSpan.FromSeconds(10);
    /// <summary>Delays announced to gRPC push consumers between failed deliveries (<see cref="FrontEnds.GrpcV5.GrpcV5Options.RetryDelays"/>).</summary>
    public IReadOnlyList<TimeSpan> GrpcRetryDelays { get; init; } = FrontEnds.GrpcV5.GrpcV5Options.ApacheRetryDelays;
    public CoreOptions Core { get; init; } = new();
    /// <summary>Access key → secret. Empty = authentication off.</summary>
    public IReadOnlyDictionary<string, string> Credentials { get; init; } = new Dictionary<string, string>();
}

public enum LogFormat
{
    Simple,
    Json,
}
