using System.Globalization;
using System.Text;
using System.Text.Json;
using System.Text.Json.Serialization;

namespace HalfMsg.Bench.Reporting;

/// <summary>A whole run: machine, options and every flow's result.</summary>
public sealed record BenchRun(
    string Name,
    DateTimeOffset StartedAt,
    double DurationS,
    MachineInfo Machine,
    string Options,
    IReadOnlyList<BenchResult> Results);

/// <summary>Writes <c>&lt;out&gt;/&lt;yyyy-MM-dd-HHmmss&gt;-&lt;name&gt;.json</c> (+ .md) and renders the Markdown summary.</summary>
public static class ResultWriter
{
    private static readonly JsonSerializerOptions Json = new()
    {
        WriteIndented = true,
        PropertyNamingPolicy = JsonNamingPolicy.CamelCase,
        Converters = { new JsonStringEnumConverter(JsonNamingPolicy.CamelCase) },
        NumberHandling = JsonNumberHandling.AllowNamedFloatingPointLiterals,
    };

    public static (string JsonPath, string MarkdownPath) Write(BenchRun run, string outDir)
    {
        Directory.CreateDirectory(outDir);
        string stem = Path.Combine(outDir, $"{run.StartedAt.ToLocalTime():yyyy-MM-dd-HHmmss}-{run.Name}");
        string jsonPath = stem + ".json", mdPath = stem + ".md";
        File.WriteAllText(jsonPath, JsonSerializer.Serialize(run, Json));
        File.WriteAllText(mdPath, ToMarkdown(run));
        return (jsonPath, mdPath);
    }

    public static string ToMarkdown(BenchRun run)
    {
        var sb = new StringBuilder();
        var inv = CultureInfo.InvariantCulture;
        sb.AppendLine($"## HalfMsg bench `{run.Name}` — {run.StartedAt:yyyy-MM-dd HH:mm:ss zzz}");
        sb.AppendLine();
        sb.AppendLine($"- machine: {run.Machine}");
        sb.AppendLine($"- options: {run.Options}");
        sb.AppendLine($"- run time: {run.DurationS:0.0} s");
        sb.AppendLine();

        var ceiling = run.Results.FirstOrDefault(r => r.Kind == BenchKind.Ceiling && r.Measured && r.Get(Metric.Throughput) is > 0);
        var rabbit = run.Results.FirstOrDefault(r => r.Kind == BenchKind.Peer && r.Measured && r.Get(Metric.Throughput) is > 0);

        sb.AppendLine("| flow | msgs/s (tx/s) | delivered/s | send p50 ms | send p90 ms | send p99 ms | send p99.9 ms | e2e p50 ms | e2e p99 ms | × ceiling | × RabbitMQ | key figures |");
        sb.AppendLine("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|");
        foreach (var r in run.Results)
        {
            if (!r.Measured)
            {
                sb.AppendLine($"| {r.Name} | not measured: {Escape(r.NotMeasured!)} | | | | | | | | | | |");
                continue;
            }
            string F(string key, string fmt) => r.Get(key) is double v ? v.ToString(fmt, inv) : "–";
            string Ratio(BenchResult? baseline) =>
                baseline is null || ReferenceEquals(baseline, r) || r.Get(Metric.Throughput) is not double t
                    ? "–"
                    : (t / baseline.Get(Metric.Throughput)!.Value).ToString("0.00", inv) + "×";
            sb.AppendLine(string.Join(" | ",
                "| " + r.Name,
                F(Metric.Throughput, "N0"),
                F(Metric.Delivered, "N0"),
                F($"{Metric.Send}_p50_ms", "0.000"),
                F($"{Metric.Send}_p90_ms", "0.000"),
                F($"{Metric.Send}_p99_ms", "0.000"),
                F($"{Metric.Send}_p999_ms", "0.000"),
                F($"{Metric.EndToEnd}_p50_ms", "0.000"),
                F($"{Metric.EndToEnd}_p99_ms", "0.000"),
                Ratio(ceiling),
                Ratio(rabbit),
                Escape(r.Summary ?? "")) + " |");
        }
        sb.AppendLine();
        sb.AppendLine("msgs/s: transactional messages per second (ceiling: raw appends/s ÷ 2, one half + one commit record each; peers: confirmed publishes/s). " +
                      "send: until the producer holds a durable result (ceiling: append until commit covers it). e2e: publish to delivery.");
        if (ceiling is null) sb.AppendLine("× ceiling: not available (ceiling not measured).");
        if (rabbit is null) sb.AppendLine("× RabbitMQ: not available (RabbitMQ peer not measured).");
        sb.AppendLine();

        foreach (var r in run.Results)
        {
            sb.AppendLine($"### {r.Name}");
            if (r.Description is not null) sb.AppendLine(r.Description);
            if (r.Summary is not null) sb.AppendLine($"- summary: {r.Summary}");
            if (!r.Measured) sb.AppendLine($"- **not measured**: {r.NotMeasured}");
            foreach (var (k, v) in r.Metrics)
                sb.AppendLine($"- {k}: {v.ToString(Math.Abs(v) >= 100 ? "N0" : "0.###", inv)}");
            foreach (var n in r.Notes) sb.AppendLine($"- note: {n}");
            sb.AppendLine();
        }
        return sb.ToString();
    }

    private static string Escape(string s) => s.Replace("|", "\\|").Replace("\n", " ");
}
