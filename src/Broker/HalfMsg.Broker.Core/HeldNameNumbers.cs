namespace HalfMsg.Broker.Core;

/// <summary>
/// Small numbers for names that many entries repeat, like <see cref="NameNumbers"/>, but a name is held by the entries
/// that carry its number (<see cref="Hold"/>, <see cref="Release"/>) and forgotten when the last of them lets go: its
/// number goes to a free list and the next new name may get it. So the table holds the names some entry carries now,
/// not every name ever seen. An entry that carries a number holds it, so a number an entry carries always names what it
/// did when the entry took it. Number 0 is "" and is never forgotten; a negative number is no name (nothing to hold). The list of numbers keeps its largest length
/// (16 bytes a number, reused through the free list); the names and their map entries go.
/// Numbers are this process's own; records and checkpoints carry the names. Not thread-safe: guarded by the engine lock.
/// </summary>
internal sealed class HeldNameNumbers
{
    private readonly List<Named> _names = [new Named("", 0)];
    private readonly Dictionary<string, int> _numbers = new(StringComparer.Ordinal) { [""] = 0 };
    private readonly Stack<int> _free = new();

    private record struct Named(string? Name, long Holds);

    /// <summary>Names held now, "" included (for tests and sizes).</summary>
    public int Count => _numbers.Count;

    /// <summary>Releases of a number nobody held (a bookkeeping defect; tests assert none).</summary>
    public long UnmatchedReleases { get; private set; }

    /// <summary>The number of <paramref name="name"/>, held once more by the caller (given it now if it has none).</summary>
    public int Hold(string name)
    {
        if (name.Length == 0) return 0;
        if (!_numbers.TryGetValue(name, out int n))
        {
            if (_free.TryPop(out n)) _names[n] = new Named(name, 0);
            else
            {
                n = _names.Count;
                _names.Add(new Named(name, 0));
            }
            _numbers[name] = n;
        }
        var named = _names[n];
        _names[n] = named with { Holds = named.Holds + 1 };
        return n;
    }

    /// <summary>Lets go of one hold of <paramref name="number"/> (one <see cref="Hold"/> earlier); the last one forgets
    /// its name. 0 ("") and negative numbers are not held: nothing happens.</summary>
    public void Release(int number)
    {
        if (number <= 0) return;
        var named = _names[number];
        // A release with no hold would be a defect in the holders' bookkeeping. It is counted (tests assert none), not
        // thrown: this runs under the engine lock, in replay too, and a table of names must not stop a start.
        if (named.Name is null || named.Holds <= 0)
        {
            UnmatchedReleases++;
            return;
        }
        if (named.Holds > 1)
        {
            _names[number] = named with { Holds = named.Holds - 1 };
            return;
        }
        _numbers.Remove(named.Name);
        _names[number] = default;
        _free.Push(number);
        // The map's buckets do not shrink by themselves: after many names were let go, give the room back (costs the
        // names still held, at most a quarter of the room, so once per many releases).
        int room = _numbers.EnsureCapacity(0);
        if (room > 64 && _numbers.Count < room / 4) _numbers.TrimExcess();
    }

    /// <summary>The name numbered <paramref name="number"/> (held by someone).</summary>
    public string NameOf(int number) => _names[number].Name ?? throw new InvalidOperationException($"name number {number} is held by nobody");

    /// <summary>Forgets every name but "".</summary>
    public void Clear()
    {
        _names.Clear();
        _names.Add(new Named("", 0));
        _names.TrimExcess();
        _numbers.Clear();
        _numbers.TrimExcess();
        _numbers[""] = 0;
        _free.Clear();
        _free.TrimExcess();
    }
}
