using ScottPlot;

namespace HalfMsg.Bench.Reporting;

/// <summary>
/// The sweep as a picture (ScottPlot): left, throughput against transactions in flight; right, p99 latencies. Both axes
/// logarithmic (in-flight doubles, throughput and latency span orders of magnitude). Broker blue (gRPC), broker over
/// Remoting green, RabbitMQ orange, raw log ceiling grey. Written as PNG and SVG next to the JSON.
/// </summary>
public static class SweepChart
{
    private static readonly Color BrokerColor = Color.FromHex("#1f77b4");
    private static readonly Color RabbitColor = Color.FromHex("#ff7f0e");
    private static readonly Color CeilingColor = Color.FromHex("#7f7f7f");
    private static readonly Color RemotingColor = Color.FromHex("#2ca02c");

    /// <summary>Writes <paramref name="stem"/>.png and .svg; returns the written paths (empty if nothing to draw).</summary>
    public static IReadOnlyList<string> Write(IReadOnlyList<SweepRow> rows, string stem, string subtitle)
    {
        if (rows.Count == 0) return [];
        var tp = ThroughputPlot(rows, subtitle);
        var lat = LatencyPlot(rows);
        return WriteSideBySide(stem, (tp, "-throughput"), (lat, "-p99"));
    }

    /// <summary>
    /// Two panels side by side as <paramref name="stem"/>.png, and each panel as its own SVG (the multiplot writes raster
    /// images only): <c>stem + suffix + ".svg"</c>. Returns the written paths. Shared with <see cref="RunsReport"/>.
    /// </summary>
    public static IReadOnlyList<string> WriteSideBySide(string stem, (Plot Plot, string Suffix) left, (Plot Plot, string Suffix) right)
    {
        var written = new List<string>();
        var multi = new Multiplot();
        // A new Multiplot holds one empty plot already.
        foreach (var p in multi.GetPlots().ToArray()) multi.RemovePlot(p);
        multi.AddPlot(left.Plot);
        multi.AddPlot(right.Plot);
        multi.Layout = new ScottPlot.MultiplotLayouts.Columns();
        string png = stem + ".png";
        multi.SavePng(png, 1400, 640);
        written.Add(png);
        // Skia's SVG canvas cannot draw dash patterns (it prints a warning per line), so the SVGs tell the series apart
        // by marker shape only.
        foreach (var (plot, suffix) in new[] { left, right })
        {
            foreach (var sc in plot.GetPlottables().OfType<ScottPlot.Plottables.Scatter>())
                sc.LinePattern = LinePattern.Solid;
            plot.SaveSvg(stem + suffix + ".svg", 700, 640);
            written.Add(stem + suffix + ".svg");
        }
        return written;
    }

    private static Plot ThroughputPlot(IReadOnlyList<SweepRow> rows, string subtitle)
    {
        var plot = NewPlot(rows, "Throughput (log scale)", "transactions / s", v => v.ToString("N0"));
        AddLine(plot, rows, r => r.CeilingTxPerS, "raw log ceiling (tx/s = appends/s ÷ 2)", CeilingColor, LinePattern.Dashed, MarkerShape.FilledSquare);
        AddLine(plot, rows, r => r.RabbitMqMsgsPerS, "RabbitMQ (confirmed publishes/s)", RabbitColor, LinePattern.Solid, MarkerShape.FilledCircle);
        AddLine(plot, rows, r => r.BrokerTxPerS, "broker (committed tx/s)", BrokerColor, LinePattern.Solid, MarkerShape.FilledCircle);
        AddLine(plot, rows, r => r.BrokerDeliveredPerS, "broker (delivered/s)", BrokerColor, LinePattern.Dotted, MarkerShape.OpenCircle);
        AddLine(plot, rows, r => r.RemotingTxPerS, "broker over Remoting (tx/s, one-way commit)", RemotingColor, LinePattern.Solid, MarkerShape.FilledTriangleUp);
        plot.Axes.Title.Label.Text = "Throughput vs transactions in flight\n" + subtitle;
        plot.Axes.Title.Label.FontSize = 14;
        return plot;
    }

    private static Plot LatencyPlot(IReadOnlyList<SweepRow> rows)
    {
        var plot = NewPlot(rows, "p99 latency (log scale)", "p99 ms", v => v >= 10 ? v.ToString("N0") : v.ToString("0.##"));
        AddLine(plot, rows, r => r.CeilingAppendP99Ms, "ceiling: append → durable", CeilingColor, LinePattern.Dashed, MarkerShape.FilledSquare);
        AddLine(plot, rows, r => r.RabbitMqConfirmP99Ms, "RabbitMQ: publish → confirm", RabbitColor, LinePattern.Dotted, MarkerShape.OpenCircle);
        AddLine(plot, rows, r => r.RabbitMqDeliveryP99Ms, "RabbitMQ: publish → delivery", RabbitColor, LinePattern.Solid, MarkerShape.FilledCircle);
        AddLine(plot, rows, r => r.BrokerTxP99Ms, "broker: half-send + commit", BrokerColor, LinePattern.Dotted, MarkerShape.OpenCircle);
        AddLine(plot, rows, r => r.BrokerCommitToDeliveryP99Ms, "broker: commit → first delivery", BrokerColor, LinePattern.Solid, MarkerShape.FilledCircle);
        AddLine(plot, rows, r => r.RemotingCommitToDeliveryP99Ms, "broker over Remoting: commit → first delivery", RemotingColor, LinePattern.Solid, MarkerShape.FilledTriangleUp);
        plot.Axes.Title.Label.Text = "p99 latency vs transactions in flight\n(lower is better)";
        plot.Axes.Title.Label.FontSize = 14;
        return plot;
    }

    private static Plot NewPlot(IReadOnlyList<SweepRow> rows, string what, string yLabel, Func<double, string> format)
    {
        var plot = new Plot();
        plot.XLabel("transactions in flight (log scale)");
        plot.YLabel(yLabel);
        // x: log2(in flight), ticks labelled with the levels themselves.
        var levels = rows.Select(r => r.InFlight).Distinct().Order().ToArray();
        plot.Axes.Bottom.TickGenerator = new ScottPlot.TickGenerators.NumericManual(
            levels.Select(l => Math.Log2(l)).ToArray(), levels.Select(l => l.ToString()).ToArray());
        // y: log10 with minor ticks, labelled in real units.
        var yTicks = new ScottPlot.TickGenerators.NumericAutomatic
        {
            MinorTickGenerator = new ScottPlot.TickGenerators.LogMinorTickGenerator(),
            IntegerTicksOnly = true,
            LabelFormatter = y => format(Math.Pow(10, y)),
        };
        plot.Axes.Left.TickGenerator = yTicks;
        plot.Grid.MajorLineColor = Colors.Black.WithOpacity(0.12);
        plot.Grid.MinorLineColor = Colors.Black.WithOpacity(0.05);
        plot.Grid.MinorLineWidth = 1;
        plot.ShowLegend(Edge.Bottom);
        _ = what;
        return plot;
    }

    private static void AddLine(Plot plot, IReadOnlyList<SweepRow> rows, Func<SweepRow, double?> value, string label, Color color, LinePattern pattern, MarkerShape marker)
    {
        var pts = rows.Select(r => (X: Math.Log2(r.InFlight), Y: value(r)))
            .Where(p => p.Y is double y && y > 0 && double.IsFinite(y))
            .Select(p => (p.X, Y: Math.Log10(p.Y!.Value)))
            .OrderBy(p => p.X)
            .ToArray();
        if (pts.Length == 0) return;
        AddSeries(plot, pts.Select(p => p.X).ToArray(), pts.Select(p => p.Y).ToArray(), label, color, pattern, marker);
    }

    /// <summary>One series in this file's style (line 2 px, markers 8 px). Shared with <see cref="RunsReport"/>.</summary>
    public static void AddSeries(Plot plot, double[] xs, double[] ys, string label, Color color, LinePattern pattern, MarkerShape marker)
    {
        var sc = plot.Add.Scatter(xs, ys);
        sc.LegendText = label;
        sc.Color = color;
        sc.LineWidth = 2;
        sc.MarkerSize = 8;
        sc.LinePattern = pattern;
        sc.MarkerShape = marker;
    }
}
