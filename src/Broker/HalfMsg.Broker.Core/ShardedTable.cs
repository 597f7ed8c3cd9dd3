using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;

namespace HalfMsg.Broker.Core;

/// <summary>Picks a key's table in a <see cref="ShardedTable{TKey, TValue, TShard}"/>: any number whose low six bits
/// spread the keys evenly (the table keeps those bits).</summary>
internal interface IShardOf<TKey>
{
    static abstract int ShardOf(TKey key);
}

/// <summary>
/// A dictionary split into <see cref="Shards"/> tables by a hash of the key, so that no table grows by copying more
/// than a sixty-fourth of the entries. The engine's large maps (pending halves, decided ids, delayed messages) live
/// under its lock, and one dictionary of a million entries took 28-150 ms to grow there; a sixty-fourth of that is a
/// fraction of a millisecond. A checkpoint copies the values one table at a time (<see cref="SnapshotShard"/>), each in
/// its own hold of the lock. Not thread-safe.
/// </summary>
/// <typeparam name="TKey">The key.</typeparam>
/// <typeparam name="TValue">The value.</typeparam>
/// <typeparam name="TShard">The table of a key (a struct, so the call is resolved when the code is compiled).</typeparam>
internal sealed class ShardedTable<TKey, TValue, TShard>
    where TKey : notnull
    where TShard : struct, IShardOf<TKey>
{
    public const int Shards = 64;

    private readonly Dictionary<TKey, TValue>[] _tables = new Dictionary<TKey, TValue>[Shards];

    public ShardedTable(IEqualityComparer<TKey>? comparer = null)
    {
        for (int i = 0; i < Shards; i++) _tables[i] = new Dictionary<TKey, TValue>(comparer);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private Dictionary<TKey, TValue> TableOf(TKey key) => _tables[TShard.ShardOf(key) & (Shards - 1)];

    /// <summary>Entries in all tables.</summary>
    public int Count { get; private set; }

    /// <summary>The most entries any one table holds (for tests: the tables fill evenly).</summary>
    internal int LargestShard => _tables.Max(t => t.Count);

    public IEnumerable<TValue> Values => _tables.SelectMany(t => t.Values);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public bool TryGetValue(TKey key, out TValue value) => TableOf(key).TryGetValue(key, out value!);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public bool ContainsKey(TKey key) => TableOf(key).ContainsKey(key);

    /// <summary>The value's slot for <paramref name="key"/>, added (default) when missing, as CollectionsMarshal's
    /// GetValueRefOrAddDefault gives it. Valid until the table is next changed.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public ref TValue? GetValueRefOrAddDefault(TKey key, out bool exists)
    {
        ref TValue? slot = ref CollectionsMarshal.GetValueRefOrAddDefault(TableOf(key), key, out exists);
        if (!exists) Count++;
        return ref slot;
    }

    /// <summary>Adds or replaces.</summary>
    public void Set(TKey key, TValue value) => GetValueRefOrAddDefault(key, out _) = value;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public bool Remove(TKey key, out TValue value)
    {
        if (!TableOf(key).Remove(key, out value!)) return false;
        Count--;
        return true;
    }

    /// <summary>The values of table <paramref name="shard"/> (0 … <see cref="Shards"/> − 1).</summary>
    public TValue[] SnapshotShard(int shard) => _tables[shard].Values.ToArray();

    /// <summary>Every table's copy, one after another (for tests).</summary>
    internal TValue[] Snapshot() => Enumerable.Range(0, Shards).SelectMany(SnapshotShard).ToArray();

    public void Clear()
    {
        foreach (var table in _tables) table.Clear();
        Count = 0;
    }
}
