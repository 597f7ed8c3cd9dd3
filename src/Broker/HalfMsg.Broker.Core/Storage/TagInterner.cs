namespace HalfMsg.Broker.Core.Storage;

/// <summary>
/// Shares one string instance per distinct tag, topic or group name read back from the log or a checkpoint, so a
/// million queue entries with the same tag hold one string. Bounded: past 100,000 distinct values it stops sharing.
/// </summary>
internal sealed class TagInterner
{
    private const int MaxValues = 100_000;
    private readonly Dictionary<string, string> _values = new(StringComparer.Ordinal);

    /// <summary>Distinct values shared (at most 100,000).</summary>
    public int Count => _values.Count;

    public string? Intern(string? value)
    {
        if (value is null) return null;
        if (_values.TryGetValue(value, out var shared)) return shared;
        if (_values.Count < MaxValues) _values[value] = value;
        return value;
    }
}
