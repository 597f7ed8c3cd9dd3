using System.Globalization;
using System.Text;
using System.Text.Json;
using ScottPlot;

namespace HalfMsg.Bench.Reporting;

/// <summary>
/// Issue 10's targets across many full runs: <c>HalfMsg.Bench runs bench/results/full-runs.tsv</c> reads the listed
/// e2e results and writes, next to the list, a Markdown table of each run's ratios at 64 and 256 in flight (broker and
/// the floor + log server against the ceiling and RabbitMQ of the same run) and a chart of those ratios against the
/// targets (½ the ceiling, 2× RabbitMQ). The list is a tab-separated file: results JSON (relative to the list), the
/// commit it ran, and an optional note ("quiet"); JSON paths may also be given directly (their commit is the one the
/// run recorded, if any).
/// </summary>
public static class RunsReport
{
    public static readonly int[] Levels = [64, 256];

    /// <summary>One run's figures; null where the run did not measure them.</summary>
    public sealed record RunFigures(string Stamp, string ResultsMd, string? Commit, string? Note, IReadOnlyDictionary<int, Level> ByLevel,
        double? HalfLoadDeliveryP99Ms, double? PendingRatio, double? StormRatio, double? Recovery1MSeconds, double? Recovery10MSeconds);

    public sealed record Level(double Ceiling, double RabbitMq, double Broker, double? FloorLog, double? BrokerCpuMsPerTx)
    {
        public double BrokerVsCeiling => Broker / Ceiling;
        public double BrokerVsRabbitMq => Broker / RabbitMq;
        public double? FloorLogVsCeiling => FloorLog / Ceiling;
        public double? FloorLogVsRabbitMq => FloorLog / RabbitMq;
    }

    /// <summary>Writes <c>&lt;stem&gt;.md</c>, <c>.png</c> and one SVG per panel; returns the written paths.</summary>
    public static IReadOnlyList<string> Write(IReadOnlyList<string> inputs)
    {
        if (inputs.Count == 0) throw new ArgumentException("runs: give a list (.tsv) or results (.json)");
        var runs = new List<RunFigures>();
        string stem;
        if (inputs is [var list] && list.EndsWith(".tsv", StringComparison.Ordinal))
        {
            stem = list[..^4];
            string dir = Path.GetDirectoryName(Path.GetFullPath(list))!;
            int n = 0;
            foreach (var raw in File.ReadAllLines(list))
            {
                n++;
                var line = raw.Trim();
                if (line.Length == 0 || line.StartsWith('#')) continue;
                var cols = line.Split('\t');
                string json = Path.Combine(dir, cols[0]);
                if (!File.Exists(json)) throw new ArgumentException($"{list}:{n}: no such results file {cols[0]}");
                runs.Add(Read(json, cols.Length > 1 && cols[1].Length > 0 ? cols[1] : null, cols.Length > 2 && cols[2].Length > 0 ? cols[2] : null));
            }
        }
        else
        {
            stem = Path.Combine(Path.GetDirectoryName(inputs[0]) ?? ".", "runs");
            foreach (var json in inputs) runs.Add(Read(json, null, null));
        }
        runs.Sort((a, b) => string.CompareOrdinal(a.Stamp, b.Stamp));
        if (runs.Count == 0) throw new ArgumentException("runs: the list names no results");

        var written = new List<string>();
        File.WriteAllText(stem + ".md", ToMarkdown(runs, Path.GetFileName(stem) + ".png"));
        written.Add(stem + ".md");
        try
        {
            written.AddRange(Chart(runs, stem));
        }
        catch (Exception ex)
        {
            Console.Error.WriteLine($"chart not written: {ex.GetType().Name}: {ex.Message}");
        }
        return written;
    }

    public static RunFigures Read(string jsonPath, string? commit, string? note)
    {
        BenchRun run;
        try
        {
            run = ResultWriter.Read(jsonPath);
        }
        catch (JsonException ex)
        {
            throw new ArgumentException($"{jsonPath}: not the results of an e2e run ({ex.Message})", ex);
        }
        if (run.Results is null) throw new ArgumentException($"{jsonPath}: not the results of an e2e run (no \"results\")");
        BenchResult? Result(Func<string, bool> name) => run.Results.FirstOrDefault(r => r.Measured && name(r.Name));

        var byLevel = new Dictionary<int, Level>();
        foreach (var s in run.Sweep)
        {
            if (s.CeilingTxPerS is not double c || s.RabbitMqMsgsPerS is not double rm || s.BrokerTxPerS is not double b) continue;
            var floorLog = Result(n => n.StartsWith("gRPC floor + log", StringComparison.Ordinal) && n.EndsWith($"@ {s.InFlight} in flight", StringComparison.Ordinal));
            byLevel[s.InFlight] = new Level(c, rm, b, floorLog?.Get(Metric.Throughput), s.BrokerCpuMsPerTx);
        }

        var halfLoad = Result(n => n.StartsWith("broker tx half-load", StringComparison.Ordinal));
        var pending = Result(n => n.StartsWith("broker tx with 1,000,000 pending", StringComparison.Ordinal));
        var storm = Result(n => n.StartsWith("broker tx during check-back storm", StringComparison.Ordinal));
        var recovery = Result(n => n == "broker recovery");
        string file = Path.GetFileNameWithoutExtension(jsonPath);
        string stamp = file.EndsWith("-e2e", StringComparison.Ordinal) ? file[..^4] : file;
        return new RunFigures(stamp, file + ".md", commit ?? run.Commit, note, byLevel,
            halfLoad?.Get("e2e_p99_ms"), pending?.Get("ratio_vs_baseline"), storm?.Get("ratio_vs_baseline"),
            recovery?.Get("1M_1024B_after_kill9_start_to_health_s"), recovery?.Get("10M_100B_after_kill9_start_to_health_s"));
    }

    /// <summary>"2026-12-04-194529" → "2026-12-04 19:45".</summary>
    public static string When(string stamp) =>
        stamp.Length >= 15 ? $"{stamp[..10]} {stamp[11..13]}:{stamp[13..15]}" : stamp;

    public static string ToMarkdown(IReadOnlyList<RunFigures> runs, string? chartFile)
    {
        var inv = CultureInfo.InvariantCulture;
        string N(double? v, string fmt) => v is double d && double.IsFinite(d) ? d.ToString(fmt, inv) : "–";
        string X(double? v) => v is double d && double.IsFinite(d) ? d.ToString("0.00", inv) + "×" : "–";
        string Rate(double? v, double? vsCeiling, double? vsRabbit) => v is null ? "–" : $"{N(v, "N0")} ({X(vsCeiling)}, {X(vsRabbit)})";
        var sb = new StringBuilder();
        if (chartFile is not null)
        {
            sb.AppendLine($"![issue 10's ratios in every listed run]({chartFile})");
            sb.AppendLine();
        }
        sb.Append("| run | commit |");
        foreach (int l in Levels) sb.Append($" ceiling @{l} | broker @{l} | floor + log @{l} |");
        sb.AppendLine(" broker CPU ms/tx @64 / @256 | half-load delivery p99 ms | 1M pending / storm (÷ 0-pending row) | recovery after kill -9 s (1 M × 1 KiB / 10 M × 100 B) |");
        sb.Append("|---|---|");
        foreach (int _ in Levels) sb.Append("---:|---:|---:|");
        sb.AppendLine("---:|---:|---:|---:|");
        foreach (var r in runs.AsEnumerable().Reverse())
        {
            sb.Append($"| [{When(r.Stamp)}]({r.ResultsMd}){(r.Note is null ? "" : $" ({r.Note})")} | {(r.Commit is null ? "–" : $"`{r.Commit}`")} |");
            foreach (int l in Levels)
            {
                if (r.ByLevel.TryGetValue(l, out var x))
                    sb.Append($" {N(x.Ceiling, "N0")} | {Rate(x.Broker, x.BrokerVsCeiling, x.BrokerVsRabbitMq)} | {Rate(x.FloorLog, x.FloorLogVsCeiling, x.FloorLogVsRabbitMq)} |");
                else sb.Append(" – | – | – |");
            }
            double? cpu64 = r.ByLevel.TryGetValue(64, out var a) ? a.BrokerCpuMsPerTx : null;
            double? cpu256 = r.ByLevel.TryGetValue(256, out var b) ? b.BrokerCpuMsPerTx : null;
            sb.AppendLine($" {N(cpu64, "0.000")} / {N(cpu256, "0.000")} | {N(r.HalfLoadDeliveryP99Ms, "0.0")} | {X(r.PendingRatio)} / {X(r.StormRatio)} | {N(r.Recovery1MSeconds, "0.00")} / {N(r.Recovery10MSeconds, "0.00")} |");
        }
        sb.AppendLine();
        sb.AppendLine("Newest first. In brackets each rate's ratios to the raw log's ceiling and to RabbitMQ of the same run and level. " +
                      "broker: our clients against the broker; floor + log: raw stubs against a server on the broker's stack and log " +
                      "that stores and waits as the broker does, with no engine.");
        return sb.ToString();
    }

    private static readonly Color BrokerColor = Color.FromHex("#1f77b4");
    private static readonly Color FloorLogColor = Color.FromHex("#9467bd");
    private static readonly Color TargetColor = Color.FromHex("#d62728");

    private static IReadOnlyList<string> Chart(IReadOnlyList<RunFigures> runs, string stem)
    {
        var vsCeiling = Panel(runs, "÷ the raw log's ceiling (same run, same level)", 0.5, "target ≥ 0.5×",
            x => x.BrokerVsCeiling, x => x.FloorLogVsCeiling);
        var vsRabbit = Panel(runs, "÷ RabbitMQ (same run, same level)", 2.0, "target ≥ 2×",
            x => x.BrokerVsRabbitMq, x => x.FloorLogVsRabbitMq);
        return SweepChart.WriteSideBySide(stem, (vsCeiling, "-vs-ceiling"), (vsRabbit, "-vs-rabbitmq"));
    }

    private static Plot Panel(IReadOnlyList<RunFigures> runs, string title, double target, string targetLabel,
        Func<Level, double?> broker, Func<Level, double?> floorLog)
    {
        var plot = new Plot();
        plot.YLabel("ratio");
        plot.XLabel("full run (oldest left)");
        plot.Axes.Title.Label.Text = title;
        plot.Axes.Title.Label.FontSize = 14;
        plot.Axes.Bottom.TickGenerator = new ScottPlot.TickGenerators.NumericManual(
            Enumerable.Range(0, runs.Count).Select(i => (double)i).ToArray(),
            runs.Select(r => r.Stamp.Length >= 15 ? $"{r.Stamp[5..10]} {r.Stamp[11..13]}:{r.Stamp[13..15]}" : r.Stamp).ToArray());
        plot.Axes.Bottom.TickLabelStyle.Rotation = -60;
        plot.Axes.Bottom.TickLabelStyle.Alignment = Alignment.MiddleRight;
        plot.Axes.Bottom.MinimumSize = 90;
        var line = plot.Add.HorizontalLine(target);
        line.Color = TargetColor;
        line.LineWidth = 2;
        line.LegendText = targetLabel;
        Series(plot, runs, 64, broker, "broker @64", BrokerColor, LinePattern.Dashed, MarkerShape.OpenCircle);
        Series(plot, runs, 256, broker, "broker @256", BrokerColor, LinePattern.Solid, MarkerShape.FilledCircle);
        Series(plot, runs, 64, floorLog, "floor + log @64", FloorLogColor, LinePattern.Dashed, MarkerShape.OpenSquare);
        Series(plot, runs, 256, floorLog, "floor + log @256", FloorLogColor, LinePattern.Solid, MarkerShape.FilledSquare);
        plot.Axes.SetLimitsY(0, Math.Max(target * 1.25, MaxOf(runs, broker, floorLog) * 1.1));
        plot.Grid.MajorLineColor = Colors.Black.WithOpacity(0.12);
        plot.ShowLegend(Edge.Bottom);
        return plot;
    }

    private static double MaxOf(IReadOnlyList<RunFigures> runs, params Func<Level, double?>[] values) =>
        runs.SelectMany(r => r.ByLevel.Values).SelectMany(l => values.Select(v => v(l) ?? 0)).DefaultIfEmpty(0).Max();

    private static void Series(Plot plot, IReadOnlyList<RunFigures> runs, int level, Func<Level, double?> value, string label,
        Color color, LinePattern pattern, MarkerShape marker)
    {
        var pts = runs.Select((r, i) => (X: (double)i, Y: r.ByLevel.TryGetValue(level, out var l) ? value(l) : null))
            .Where(p => p.Y is double y && double.IsFinite(y)).ToArray();
        if (pts.Length == 0) return;
        SweepChart.AddSeries(plot, pts.Select(p => p.X).ToArray(), pts.Select(p => p.Y!.Value).ToArray(), label, color, pattern, marker);
    }
}
