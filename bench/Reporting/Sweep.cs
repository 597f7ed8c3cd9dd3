using System.Globalization;
using System.Text;

namespace HalfMsg.Bench.Reporting;

/// <summary>
/// One level of the concurrency sweep: the raw-log ceiling, RabbitMQ and the broker, each with <see cref="InFlight"/>
/// transactions (appends / confirmed publishes) outstanding, measured one after another in the same run. Flattened from
/// the three rows so the JSON and the chart do not depend on metric key names. Null = not measured.
/// </summary>
public sealed record SweepRow
{
    public int InFlight { get; init; }
    public string DecisionDurability { get; init; } = "sync";
    /// <summary>1-minute load average when the level started and when its broker row ended (2 cores: 2.0 = full).</summary>
    public double? LoadAvgStart { get; init; }
    public double? LoadAvgEnd { get; init; }
    /// <summary>Machine CPU (cores) used by neither the bench nor the broker during the broker row: other people's work.</summary>
    public double? OthersCpuCoresDuringBroker { get; init; }

    public double? CeilingTxPerS { get; init; }
    public double? CeilingAppendP99Ms { get; init; }
    public double? CeilingCpuMsPerTx { get; init; }

    public double? RabbitMqMsgsPerS { get; init; }
    public double? RabbitMqDeliveredPerS { get; init; }
    public double? RabbitMqConfirmP99Ms { get; init; }
    public double? RabbitMqDeliveryP50Ms { get; init; }
    public double? RabbitMqDeliveryP99Ms { get; init; }
    public double? RabbitMqServerCpuMsPerMsg { get; init; }
    public double? RabbitMqClientCpuMsPerMsg { get; init; }

    public double? BrokerTxPerS { get; init; }
    public double? BrokerDeliveredPerS { get; init; }
    public double? BrokerTxP99Ms { get; init; }
    /// <summary>Commit completion (producer holds the commit response) → first delivery to a consumer.</summary>
    public double? BrokerCommitToDeliveryP50Ms { get; init; }
    public double? BrokerCommitToDeliveryP99Ms { get; init; }
    public double? BrokerCpuMsPerTx { get; init; }
    public double? BrokerCpuCores { get; init; }
    public double? BenchClientCpuMsPerTx { get; init; }
    public double? BenchClientCpuCores { get; init; }
    /// <summary>Group commits of the broker's log per second during the row, and transactions per commit.</summary>
    public double? BrokerLogCommitsPerS { get; init; }
    public double? BrokerTxPerLogCommit { get; init; }
    /// <summary>Machine-wide busy CPU during the broker row, in cores (2 = both cores busy, whoever used them).</summary>
    public double? MachineCpuCoresDuringBroker { get; init; }

    /// <summary>The same flow over the RocketMQ 4 Remoting front-end (half send + one-way END_TRANSACTION commit,
    /// PULL_MESSAGE consumers); null when not measured (older runs have none).</summary>
    public double? RemotingTxPerS { get; init; }
    public double? RemotingDeliveredPerS { get; init; }
    public double? RemotingHalfSendP99Ms { get; init; }
    /// <summary>One-way commit written → first delivery to a pull consumer.</summary>
    public double? RemotingCommitToDeliveryP50Ms { get; init; }
    public double? RemotingCommitToDeliveryP99Ms { get; init; }
    public double? RemotingCpuMsPerTx { get; init; }
    public double? RemotingBenchClientCpuMsPerTx { get; init; }
    public double? RemotingLoadAvgEnd { get; init; }

    public double? RemotingVsCeiling => RemotingTxPerS / CeilingTxPerS;
    public double? RemotingDeliveredVsCeiling => RemotingDeliveredPerS / CeilingTxPerS;
    public double? RemotingVsGrpc => RemotingTxPerS / BrokerTxPerS;

    public double? BrokerVsCeiling => BrokerTxPerS / CeilingTxPerS;
    public double? BrokerVsRabbitMq => BrokerTxPerS / RabbitMqMsgsPerS;
    public double? DeliveredVsCommitted => BrokerDeliveredPerS / BrokerTxPerS;

    /// <summary>Why a system was not measured at this level, if it was not.</summary>
    public List<string> NotMeasured { get; init; } = new();

    public static SweepRow From(int inFlight, string decisionDurability, double? loadStart, BenchResult ceiling, BenchResult rabbit, BenchResult broker,
        BenchResult? remoting = null)
    {
        double? M(BenchResult r, string key) => r.Measured ? r.Get(key) : null;
        double? R(string key) => remoting is { Measured: true } ? remoting.Get(key) : null;
        var row = new SweepRow
        {
            InFlight = inFlight,
            DecisionDurability = decisionDurability,
            LoadAvgStart = loadStart,
            LoadAvgEnd = broker.Get("loadavg_1m_end"),
            OthersCpuCoresDuringBroker = M(broker, "others_cpu_cores"),
            CeilingTxPerS = M(ceiling, Metric.Throughput),
            CeilingAppendP99Ms = M(ceiling, "send_p99_ms"),
            CeilingCpuMsPerTx = M(ceiling, "client_cpu_ms_per_tx"),
            RabbitMqMsgsPerS = M(rabbit, Metric.Throughput),
            RabbitMqDeliveredPerS = M(rabbit, Metric.Delivered),
            RabbitMqConfirmP99Ms = M(rabbit, "send_p99_ms"),
            RabbitMqDeliveryP50Ms = M(rabbit, "e2e_p50_ms"),
            RabbitMqDeliveryP99Ms = M(rabbit, "e2e_p99_ms"),
            RabbitMqServerCpuMsPerMsg = M(rabbit, "rabbitmq_cpu_ms_per_tx"),
            RabbitMqClientCpuMsPerMsg = M(rabbit, "client_cpu_ms_per_tx"),
            BrokerTxPerS = M(broker, Metric.Throughput),
            BrokerDeliveredPerS = M(broker, Metric.Delivered),
            BrokerTxP99Ms = M(broker, "tx_p99_ms"),
            BrokerCommitToDeliveryP50Ms = M(broker, "e2e_p50_ms"),
            BrokerCommitToDeliveryP99Ms = M(broker, "e2e_p99_ms"),
            BrokerCpuMsPerTx = M(broker, "broker_cpu_ms_per_tx"),
            BrokerCpuCores = M(broker, "broker_cpu_cores"),
            BenchClientCpuMsPerTx = M(broker, "client_cpu_ms_per_tx"),
            BenchClientCpuCores = M(broker, "client_cpu_cores"),
            BrokerLogCommitsPerS = M(broker, "log_commits_per_s"),
            BrokerTxPerLogCommit = M(broker, "tx_per_log_commit"),
            MachineCpuCoresDuringBroker = M(broker, "machine_cpu_cores"),
            RemotingTxPerS = R(Metric.Throughput),
            RemotingDeliveredPerS = R(Metric.Delivered),
            RemotingHalfSendP99Ms = R("send_p99_ms"),
            RemotingCommitToDeliveryP50Ms = R("e2e_p50_ms"),
            RemotingCommitToDeliveryP99Ms = R("e2e_p99_ms"),
            RemotingCpuMsPerTx = R("broker_cpu_ms_per_tx"),
            RemotingBenchClientCpuMsPerTx = R("client_cpu_ms_per_tx"),
            RemotingLoadAvgEnd = remoting?.Get("loadavg_1m_end"),
        };
        foreach (var r in remoting is null ? new[] { ceiling, rabbit, broker } : [ceiling, rabbit, broker, remoting])
            if (!r.Measured) row.NotMeasured.Add($"{r.Name}: {r.NotMeasured}");
        return row;
    }

    public static string ToMarkdown(IReadOnlyList<SweepRow> rows, string? chartFile)
    {
        var inv = CultureInfo.InvariantCulture;
        string N(double? v, string fmt) => v is double d && double.IsFinite(d) ? d.ToString(fmt, inv) : "–";
        string X(double? v) => v is double d && double.IsFinite(d) ? d.ToString("0.00", inv) + "×" : "–";
        string P(double? a, double? b, string fmt) => a is null && b is null ? "–" : $"{N(a, fmt)} / {N(b, fmt)}";
        var sb = new StringBuilder();
        sb.AppendLine("### Concurrency sweep");
        sb.AppendLine();
        if (chartFile is not null)
        {
            sb.AppendLine($"![throughput and p99 against transactions in flight]({chartFile})");
            sb.AppendLine();
        }
        sb.AppendLine("| in flight | raw log ceiling tx/s | RabbitMQ msgs/s | broker tx/s | broker ÷ ceiling | broker ÷ RabbitMQ | broker delivered/s (÷ committed) | broker commit→first delivery p50 / p99 ms | RabbitMQ publish→delivery p50 / p99 ms | broker CPU ms/tx | bench client CPU ms/tx (broker row) | RabbitMQ CPU ms/msg (server / client) | broker log commits/s (tx per commit) | CPU cores during broker row: broker / bench / whole machine | decision durability | load avg 1 min (start → end) |");
        sb.AppendLine("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---|");
        foreach (var r in rows)
        {
            sb.AppendLine(string.Join(" | ",
                "| " + r.InFlight.ToString(inv),
                N(r.CeilingTxPerS, "N0"),
                N(r.RabbitMqMsgsPerS, "N0"),
                N(r.BrokerTxPerS, "N0"),
                X(r.BrokerVsCeiling),
                X(r.BrokerVsRabbitMq),
                $"{N(r.BrokerDeliveredPerS, "N0")} ({N(r.DeliveredVsCommitted * 100, "0")} %)",
                P(r.BrokerCommitToDeliveryP50Ms, r.BrokerCommitToDeliveryP99Ms, "0.0"),
                P(r.RabbitMqDeliveryP50Ms, r.RabbitMqDeliveryP99Ms, "0.0"),
                N(r.BrokerCpuMsPerTx, "0.000"),
                N(r.BenchClientCpuMsPerTx, "0.000"),
                P(r.RabbitMqServerCpuMsPerMsg, r.RabbitMqClientCpuMsPerMsg, "0.000"),
                $"{N(r.BrokerLogCommitsPerS, "N0")} ({N(r.BrokerTxPerLogCommit, "0.0")})",
                $"{N(r.BrokerCpuCores, "0.00")} / {N(r.BenchClientCpuCores, "0.00")} / {N(r.MachineCpuCoresDuringBroker, "0.00")}",
                r.DecisionDurability,
                $"{N(r.LoadAvgStart, "0.00")} → {N(r.LoadAvgEnd, "0.00")}") + " |");
        }
        sb.AppendLine();
        sb.AppendLine("Each level runs the three systems one after another with the same number of transactions in flight: the ceiling's " +
                      "writers, RabbitMQ's publishers (confirms) and the broker's producers (half-send then commit) each keep one outstanding. " +
                      "Ceiling tx/s = appends/s ÷ 2. broker CPU = the broker process, bench client CPU = this process (producers and " +
                      "consumers), both over the broker row's measured window ÷ committed transactions. 2 cores: a load average above 2 " +
                      "means other work competed for the CPU during the level.");
        if (rows.Any(r => r.RemotingTxPerS is not null))
        {
            sb.AppendLine();
            sb.AppendLine("#### Remoting transactional flow (RocketMQ 4 wire)");
            sb.AppendLine();
            sb.AppendLine("| in flight | raw log ceiling tx/s | Remoting tx/s (half send + one-way commit) | Remoting ÷ ceiling | Remoting delivered/s (÷ ceiling) | Remoting ÷ gRPC broker tx/s | half-send p99 ms | commit→first delivery p50 / p99 ms | broker CPU ms/tx | bench client CPU ms/tx | load avg 1 min at end |");
            sb.AppendLine("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
            foreach (var r in rows)
                sb.AppendLine(string.Join(" | ",
                    "| " + r.InFlight.ToString(inv),
                    N(r.CeilingTxPerS, "N0"),
                    N(r.RemotingTxPerS, "N0"),
                    X(r.RemotingVsCeiling),
                    $"{N(r.RemotingDeliveredPerS, "N0")} ({X(r.RemotingDeliveredVsCeiling)})",
                    X(r.RemotingVsGrpc),
                    N(r.RemotingHalfSendP99Ms, "0.0"),
                    P(r.RemotingCommitToDeliveryP50Ms, r.RemotingCommitToDeliveryP99Ms, "0.0"),
                    N(r.RemotingCpuMsPerTx, "0.000"),
                    N(r.RemotingBenchClientCpuMsPerTx, "0.000"),
                    N(r.RemotingLoadAvgEnd, "0.00")) + " |");
            sb.AppendLine();
            sb.AppendLine("The Remoting row runs after the gRPC broker row of the same level, against its own broker process, with the bench's " +
                          "own Remoting driver doing what Java's DefaultMQProducerImpl does: HEART_BEAT, SEND_MESSAGE_V2 with sysFlag PREPARED, " +
                          "then END_TRANSACTION one-way. A transaction ends for the producer when the one-way commit is written, not when it " +
                          "is durable (the gRPC commit reply waits for its fsync), so compare delivered/s and commit→first delivery too. " +
                          "Consumers: PULL_MESSAGE long polling per queue with commitOffset, UPDATE_CONSUMER_OFFSET one-way.");
            sb.AppendLine();
        }
        foreach (var r in rows)
            foreach (var nm in r.NotMeasured)
                sb.AppendLine($"- {r.InFlight} in flight: not measured: {nm.Replace("|", "\\|").Replace("\n", " ")}");
        sb.AppendLine();
        return sb.ToString();
    }
}
