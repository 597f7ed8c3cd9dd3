using System.Globalization;
using System.Text;

namespace HalfMsg.Broker.Dashboard;

/// <summary>A line chart of per-second rates, drawn as SVG on the server (no script, no chart library).</summary>
internal static class SvgChart
{
    private static readonly string[] Colors = ["#2563eb", "#16a34a", "#dc2626", "#9333ea", "#ea580c"];

    public static string Rates(IReadOnlyList<RateSampler.Sample> samples)
    {
        (string Name, Func<RateSampler.Sample, long> Get)[] series =
        [
            ("sent", s => s.Sent), ("committed", s => s.Committed), ("rolled back", s => s.RolledBack),
            ("delivered", s => s.Delivered), ("acked", s => s.Acked),
        ];
        const int width = 760, height = 220, left = 50, right = 130, top = 10, bottom = 30;
        int plotW = width - left - right, plotH = height - top - bottom;

        // Rate of each interval = counter delta / seconds between samples.
        var rates = series.Select(s => new List<(double T, double Rate)>()).ToArray();
        for (int i = 1; i < samples.Count; i++)
        {
            double dt = (samples[i].At - samples[i - 1].At).TotalSeconds;
            if (dt <= 0.01) continue;
            double t = (samples[i].At - samples[^1].At).TotalSeconds;   // ≤ 0: seconds before now
            for (int k = 0; k < series.Length; k++)
                rates[k].Add((t, Math.Max(0, series[k].Get(samples[i]) - series[k].Get(samples[i - 1])) / dt));
        }
        double span = Math.Max(60, samples.Count > 0 ? (samples[^1].At - samples[0].At).TotalSeconds : 60);
        double max = Math.Max(1, rates.SelectMany(r => r).Select(p => p.Rate).DefaultIfEmpty(0).Max());
        max = NiceCeiling(max);

        var sb = new StringBuilder();
        sb.Append(CultureInfo.InvariantCulture, $"<svg role=\"img\" aria-label=\"Message rates per second\" width=\"{width}\" height=\"{height}\" viewBox=\"0 0 {width} {height}\" xmlns=\"http://www.w3.org/2000/svg\" font-size=\"11\">");
        for (int g = 0; g <= 4; g++)
        {
            double y = top + plotH - g * plotH / 4.0;
            sb.Append(CultureInfo.InvariantCulture, $"<line x1=\"{left}\" x2=\"{left + plotW}\" y1=\"{y:0.#}\" y2=\"{y:0.#}\" stroke=\"#e3e6ea\"/>");
            sb.Append(CultureInfo.InvariantCulture, $"<text x=\"{left - 6}\" y=\"{y + 4:0.#}\" text-anchor=\"end\" fill=\"#5b6676\">{max * g / 4:0.##}</text>");
        }
        sb.Append(CultureInfo.InvariantCulture, $"<text x=\"{left}\" y=\"{height - 8}\" fill=\"#5b6676\">-{span / 60:0.#} min</text>");
        sb.Append(CultureInfo.InvariantCulture, $"<text x=\"{left + plotW}\" y=\"{height - 8}\" text-anchor=\"end\" fill=\"#5b6676\">now (msg/s)</text>");
        for (int k = 0; k < series.Length; k++)
        {
            if (rates[k].Count > 0)
            {
                var points = string.Join(' ', rates[k].Select(p => string.Create(CultureInfo.InvariantCulture,
                    $"{left + plotW * (1 + p.T / span):0.#},{top + plotH - plotH * p.Rate / max:0.#}")));
                sb.Append(CultureInfo.InvariantCulture, $"<polyline class=\"series\" data-series=\"{series[k].Name}\" fill=\"none\" stroke=\"{Colors[k]}\" stroke-width=\"2\" points=\"{points}\"/>");
            }
            double ly = top + 12 + k * 18;
            sb.Append(CultureInfo.InvariantCulture, $"<rect x=\"{left + plotW + 14}\" y=\"{ly - 8}\" width=\"10\" height=\"10\" fill=\"{Colors[k]}\"/>");
            double last = rates[k].Count > 0 ? rates[k][^1].Rate : 0;
            sb.Append(CultureInfo.InvariantCulture, $"<text x=\"{left + plotW + 30}\" y=\"{ly + 1}\">{series[k].Name} {last:0.#}/s</text>");
        }
        sb.Append("</svg>");
        return sb.ToString();
    }

    private static double NiceCeiling(double v)
    {
        double magnitude = Math.Pow(10, Math.Floor(Math.Log10(v)));
        foreach (double m in new[] { 1, 2, 5, 10 })
            if (m * magnitude >= v) return m * magnitude;
        return 10 * magnitude;
    }
}
