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
    IReadOnlyList<BenchResult> Results)
{
    /// <summary>"1m 5m 15m" load averages when the run started and ended (2 cores: above 2 = others competed for CPU).</summary>
    public string? LoadAverageAtStart { get; init; }
    public string? LoadAverageAtEnd { get; init; }
    /// <summary>The source tree the bench was built from (<c>git describe --always --dirty</c>), and the broker build the
    /// run started when <c>HALFMSG_BROKER_DLL</c> chose another; null where git was not available (and in older runs).</summary>
    public string? Commit { get; init; }
    /// <summary>The concurrency sweep, one row per in-flight level (also in <see cref="Results"/> as three rows each).</summary>
    public IReadOnlyList<SweepRow> Sweep { get; init; } = [];
}

/// <summary>What <see cref="ResultWriter.Write"/> wrote.</summary>
public sealed record WrittenResults(string JsonPath, string MarkdownPath, IReadOnlyList<string> Charts, string? ChartFileName);

/// <summary>Writes <c>&lt;out&gt;/&lt;yyyy-MM-dd-HHmmss&gt;-&lt;name&gt;.json</c> (+ .md) and renders the Markdown summary.</summary>
public static class ResultWriter
{
    private static readonly JsonSerializerOptions Json = new()
    {
        WriteIndented = true,
        PropertyNamingPolicy = JsonNamingPolicy.CamelCase,
        Converters = { new JsonStringEnumConverter(JsonNamingPolicy.CamelCase) },
        NumberHandling = JsonNumberHandling.AllowNamedFloatingPointLiterals,
        // Get-only collections (Metrics, Labels, Notes) are filled in place when a result is read back (chart verb).
        PreferredObjectCreationHandling = JsonObjectCreationHandling.Populate,
    };

    public static WrittenResults Write(BenchRun run, string outDir)
    {
        Directory.CreateDirectory(outDir);
        string stem = Path.Combine(outDir, $"{run.StartedAt.ToLocalTime():yyyy-MM-dd-HHmmss}-{run.Name}");
        string jsonPath = stem + ".json", mdPath = stem + ".md";
        File.WriteAllText(jsonPath, JsonSerializer.Serialize(run, Json));
        IReadOnlyList<string> charts = [];
        string? chartFile = null;
        if (run.Sweep.Count > 0)
        {
            try
            {
                charts = SweepChart.Write(run.Sweep, stem + "-sweep", ChartSubtitle(run));
                chartFile = charts.Count > 0 ? Path.GetFileName(charts[0]) : null;
            }
            catch (Exception ex)
            {
                // A missing native library must not lose the measurements: the table is written anyway.
                Console.Error.WriteLine($"chart not written: {ex.GetType().Name}: {ex.Message}");
            }
        }
        File.WriteAllText(mdPath, ToMarkdown(run, chartFile));
        return new WrittenResults(jsonPath, mdPath, charts, chartFile);
    }

    /// <summary>Rewrites the chart and the Markdown of an existing JSON result (after a change to the report code).</summary>
    public static WrittenResults Rewrite(string jsonPath)
    {
        var run = Read(jsonPath);
        // Re-derive the sweep rows from the stored results, so columns added since the run was made are filled where
        // the run measured them.
        var rows = new List<SweepRow>();
        foreach (var old in run.Sweep)
        {
            BenchResult? Find(Func<BenchResult, bool> what) =>
                run.Results.FirstOrDefault(r => what(r) && r.Name.EndsWith($"@ {old.InFlight} in flight", StringComparison.Ordinal));
            var c = Find(r => r.Kind == BenchKind.Ceiling);
            var p = Find(r => r.Kind == BenchKind.Peer);
            var b = Find(r => r.Kind == BenchKind.Flow && !r.Name.StartsWith(E2eRunner.RemotingPrefix, StringComparison.Ordinal));
            var rem = Find(r => r.Kind == BenchKind.Flow && r.Name.StartsWith(E2eRunner.RemotingPrefix, StringComparison.Ordinal));
            rows.Add(c is null || p is null || b is null ? old : SweepRow.From(old.InFlight, old.DecisionDurability, old.LoadAvgStart, c, p, b, rem));
        }
        run = run with { Sweep = rows };
        string stem = jsonPath.EndsWith(".json", StringComparison.Ordinal) ? jsonPath[..^5] : jsonPath;
        var charts = run.Sweep.Count > 0 ? SweepChart.Write(run.Sweep, stem + "-sweep", ChartSubtitle(run)) : [];
        string? chartFile = charts.Count > 0 ? Path.GetFileName(charts[0]) : null;
        File.WriteAllText(stem + ".md", ToMarkdown(run, chartFile));
        return new WrittenResults(jsonPath, stem + ".md", charts, chartFile);
    }

    /// <summary>Reads a run written by <see cref="Write"/> (the <c>chart</c> and <c>runs</c> verbs).</summary>
    public static BenchRun Read(string jsonPath) =>
        JsonSerializer.Deserialize<BenchRun>(File.ReadAllText(jsonPath), Json) ?? throw new InvalidDataException($"{jsonPath}: not a bench run");

    private static string ChartSubtitle(BenchRun run) =>
        $"{run.StartedAt:yyyy-MM-dd HH:mm}, {run.Machine.Cores} cores, decisions {run.Sweep[0].DecisionDurability}" +
        (run.LoadAverageAtStart is string la ? $", load avg {la.Split(' ')[0]} → {run.LoadAverageAtEnd?.Split(' ')[0]}" : "");

    public static string ToMarkdown(BenchRun run, string? chartFile = null)
    {
        var sb = new StringBuilder();
        var inv = CultureInfo.InvariantCulture;
        sb.AppendLine($"## HalfMsg bench `{run.Name}` — {run.StartedAt:yyyy-MM-dd HH:mm:ss zzz}");
        sb.AppendLine();
        sb.AppendLine($"- machine: {run.Machine}");
        sb.AppendLine($"- options: {run.Options}");
        if (run.Commit is not null) sb.AppendLine($"- commit: {run.Commit}");
        sb.AppendLine($"- run time: {run.DurationS:0.0} s");
        if (run.LoadAverageAtStart is not null)
            sb.AppendLine($"- load average (1/5/15 min): {run.LoadAverageAtStart} at start, {run.LoadAverageAtEnd} at end ({run.Machine.Cores} cores)");
        sb.AppendLine();
        if (run.Sweep.Count > 0) sb.Append(SweepRow.ToMarkdown(run.Sweep, chartFile));
        sb.AppendLine("### All rows");
        sb.AppendLine();

        // Ratios compare with the ceiling / RabbitMQ measured with the same number in flight ("inflight"), else the first.
        BenchResult? Baseline(BenchKind kind, BenchResult r)
        {
            var candidates = run.Results.Where(b => b.Kind == kind && b.Measured && b.Get(Metric.Throughput) is > 0).ToList();
            return candidates.FirstOrDefault(b => b.Get("inflight") is double l && l == r.Get("inflight")) ?? candidates.FirstOrDefault();
        }
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
                Ratio(Baseline(BenchKind.Ceiling, r)),
                Ratio(Baseline(BenchKind.Peer, r)),
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
            foreach (var (k, v) in r.Labels)
                sb.AppendLine($"- {k}: {v}");
            foreach (var (k, v) in r.Metrics)
                sb.AppendLine($"- {k}: {v.ToString(Math.Abs(v) >= 100 ? "N0" : "0.###", inv)}");
            foreach (var n in r.Notes) sb.AppendLine($"- note: {n}");
            sb.AppendLine();
        }
        return sb.ToString();
    }

    private static string Escape(string s) => s.Replace("|", "\\|").Replace("\n", " ");
}
