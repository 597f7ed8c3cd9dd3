namespace HalfMsg.Cli;

/// <summary>Left-aligned text columns, numbers right-aligned; what a terminal shows by default.</summary>
internal sealed class Table(params string[] headers)
{
    private readonly List<string[]> _rows = [];

    public Table Row(params object?[] cells)
    {
        _rows.Add(cells.Select(c => c switch
        {
            null => "-",
            DateTimeOffset d => d.ToString("yyyy-MM-dd HH:mm:ss", System.Globalization.CultureInfo.InvariantCulture),
            IFormattable f => f.ToString(null, System.Globalization.CultureInfo.InvariantCulture),
            _ => c.ToString() ?? "",
        }).ToArray());
        return this;
    }

    public int Count => _rows.Count;

    public void Write(TextWriter output)
    {
        var widths = headers.Select((h, i) => Math.Max(h.Length, _rows.Select(r => r[i].Length).DefaultIfEmpty(0).Max())).ToArray();
        var numeric = headers.Select((h, i) => _rows.Count > 0 && _rows.All(r => r[i] == "-" || double.TryParse(r[i], System.Globalization.NumberStyles.Float, System.Globalization.CultureInfo.InvariantCulture, out _))).ToArray();
        void Line(string[] cells) => output.WriteLine(string.Join("  ",
            cells.Select((c, i) => numeric[i] ? c.PadLeft(widths[i]) : c.PadRight(widths[i]))).TrimEnd());
        Line(headers.Select(h => h.ToUpperInvariant()).ToArray());
        foreach (var r in _rows) Line(r);
    }
}
