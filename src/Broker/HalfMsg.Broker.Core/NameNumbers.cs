namespace HalfMsg.Broker.Core;

/// <summary>
/// Small numbers for names that many entries repeat (the group a queue entry is reserved for), so an entry can hold
/// the number in padding it already has instead of a reference. Number 0 is ""; each other name gets the next number
/// the first time it is seen, for the life of the process, and keeps it: grows by one per distinct name ever numbered.
/// Numbers are this process's own; records and checkpoints carry the names. Not thread-safe: guarded by the engine
/// lock. The namespaces of decided ids, which come and go, use <see cref="HeldNameNumbers"/>, which forgets a name no
/// entry carries.
/// </summary>
internal sealed class NameNumbers
{
    private readonly List<string> _names = [""];
    private readonly Dictionary<string, int> _numbers = new(StringComparer.Ordinal) { [""] = 0 };

    /// <summary>The number of <paramref name="name"/>, given it now if it has none.</summary>
    public int NumberOf(string name)
    {
        if (!_numbers.TryGetValue(name, out int n))
        {
            n = _names.Count;
            _names.Add(name);
            _numbers[name] = n;
        }
        return n;
    }

    /// <summary>The name numbered <paramref name="number"/>.</summary>
    public string NameOf(int number) => _names[number];
}
