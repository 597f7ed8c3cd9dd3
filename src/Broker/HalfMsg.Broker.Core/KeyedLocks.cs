namespace HalfMsg.Broker.Core;

/// <summary>
/// One asynchronous lock per key (one holder at a time), kept only while someone holds or waits for it: the table holds
/// the keys in use, not every key ever locked. Each key's entry counts its holder and waiters under a small lock of the
/// table; the last to leave removes it, and a caller that comes later makes a new one. A key never has two entries at
/// once, so two holders of one key never run at once.
/// </summary>
internal sealed class KeyedLocks(IEqualityComparer<string>? comparer = null)
{
    internal sealed class Entry
    {
        public readonly SemaphoreSlim Gate = new(1, 1);
        public int Users; // the holder and the waiters; guarded by the table's lock
    }

    private readonly Dictionary<string, Entry> _entries = new(comparer ?? StringComparer.Ordinal);

    /// <summary>Keys someone holds or waits for now.</summary>
    public int Count
    {
        get { lock (_entries) return _entries.Count; }
    }

    /// <summary>Waits until <paramref name="key"/> is free and takes it; dispose the answer to let it go. A cancelled
    /// wait takes nothing (and leaves nothing behind).</summary>
    public async ValueTask<Held> TakeAsync(string key, CancellationToken ct = default)
    {
        Entry entry;
        lock (_entries)
        {
            if (!_entries.TryGetValue(key, out entry!)) _entries[key] = entry = new Entry();
            entry.Users++;
        }
        try
        {
            await entry.Gate.WaitAsync(ct).ConfigureAwait(false);
        }
        catch
        {
            Leave(key, entry);
            throw;
        }
        return new Held(this, key, entry);
    }

    private void Leave(string key, Entry entry)
    {
        lock (_entries)
        {
            if (--entry.Users == 0) _entries.Remove(key);
        }
    }

    /// <summary>A key taken by <see cref="TakeAsync"/>; disposing it (once) lets the key go.</summary>
    public readonly struct Held : IDisposable
    {
        private readonly KeyedLocks _owner;
        private readonly string _key;
        private readonly Entry _entry;

        internal Held(KeyedLocks owner, string key, Entry entry) => (_owner, _key, _entry) = (owner, key, entry);

        public void Dispose()
        {
            // Released before leaving: a waiter still counts as a user, so the entry stays for it.
            _entry.Gate.Release();
            _owner.Leave(_key, _entry);
        }
    }
}
