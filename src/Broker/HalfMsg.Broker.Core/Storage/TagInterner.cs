namespace HalfMsg.Broker.Core.Storage;

/// <summary>
/// Shares one string instance per distinct tag, topic or group name read back from the log or a checkpoint, so a
/// million queue entries with the same tag hold one string. Bounded: past 100,000 distinct values it stops sharing.
/// Producer client ids (a half's origin) churn with every client restart, so they have their own table
/// (<see cref="InternClientId"/>): until 2026-12-05 they shared this one, and once client churn had filled it no new
/// tag, topic or group was shared any more.
/// </summary>
internal sealed class TagInterner
{
    private const int MaxValues = 100_000;
    /// <summary>Client ids shared at most; when full the table starts afresh, so the ids of live clients are shared again.</summary>
    internal const int MaxClientIds = 10_000;
    private readonly Dictionary<string, string> _values = new(StringComparer.Ordinal);
    private readonly Dictionary<string, string> _clientIds = new(StringComparer.Ordinal);

    /// <summary>Distinct values shared (at most 100,000).</summary>
    public int Count => _values.Count;

    /// <summary>Distinct client ids shared now (at most <see cref="MaxClientIds"/>).</summary>
    public int ClientIdCount => _clientIds.Count;

    /// <summary>
    /// Shares one instance per client id among the halves of a producer instance. Client ids come and go with client
    /// restarts, so when <see cref="MaxClientIds"/> are held the table is emptied and fills again with the ids seen
    /// since (halves keep the instances they already hold; sharing is only a saving, never compared by reference).
    /// </summary>
    public string? InternClientId(string? value)
    {
        if (value is null) return null;
        if (_clientIds.TryGetValue(value, out var shared)) return shared;
        if (_clientIds.Count >= MaxClientIds) _clientIds.Clear();
        _clientIds[value] = value;
        return value;
    }

    public string? Intern(string? value)
    {
        if (value is null) return null;
        if (_values.TryGetValue(value, out var shared)) return shared;
        if (_values.Count < MaxValues) _values[value] = value;
        return value;
    }
}
