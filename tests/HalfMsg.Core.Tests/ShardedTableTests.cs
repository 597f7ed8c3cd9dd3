using HalfMsg.Broker.Core;

namespace HalfMsg.Core.Tests;

public sealed class ShardedTableTests
{
    // Any int: negative and large ones too (the table keeps the low bits).
    private struct Scrambled : IShardOf<int>
    {
        public static int ShardOf(int key) => key * -1640531535;
    }

    [Fact]
    public void Behaves_as_one_dictionary_under_random_adds_replaces_and_removes()
    {
        var table = new ShardedTable<int, string, Scrambled>();
        var model = new Dictionary<int, string>();
        var random = new Random(20261202);
        for (int step = 0; step < 50_000; step++)
        {
            int key = random.Next(-3_000, 3_000);
            switch (random.Next(4))
            {
                case 0:
                    table.Set(key, $"set-{step}");
                    model[key] = $"set-{step}";
                    break;
                case 1:
                    ref var slot = ref table.GetValueRefOrAddDefault(key, out bool exists);
                    Assert.Equal(model.ContainsKey(key), exists);
                    Assert.Equal(exists ? model[key] : null, slot);
                    slot = $"ref-{step}";
                    model[key] = $"ref-{step}";
                    break;
                case 2:
                    Assert.Equal(model.Remove(key, out var expected), table.Remove(key, out var removed));
                    Assert.Equal(expected, removed);
                    break;
                default:
                    Assert.Equal(model.TryGetValue(key, out var want), table.TryGetValue(key, out var got));
                    Assert.Equal(want, got);
                    Assert.Equal(model.ContainsKey(key), table.ContainsKey(key));
                    break;
            }
            Assert.Equal(model.Count, table.Count);
        }
        Assert.Equal(model.Values.Order(), table.Values.Order());
        // The tables' copies, one after another, are every value once.
        var copies = Enumerable.Range(0, ShardedTable<int, string, Scrambled>.Shards).Select(table.SnapshotShard).ToList();
        Assert.Equal(model.Values.Order(), copies.SelectMany(c => c).Order());
        Assert.Equal(model.Values.Order(), table.Snapshot().Order());
        Assert.Equal(copies.Max(c => c.Length), table.LargestShard);
        Assert.True(table.LargestShard < model.Count / 16, $"the tables fill evenly: largest {table.LargestShard} of {model.Count}");

        table.Clear();
        Assert.Equal(0, table.Count);
        Assert.Equal(0, table.LargestShard);
        Assert.Empty(table.Values);
        Assert.False(table.TryGetValue(model.Keys.First(), out _));
    }

    [Fact]
    public void Each_tables_copy_holds_the_keys_its_shard_function_names()
    {
        var table = new ShardedTable<int, int, Scrambled>();
        for (int key = 0; key < 10_000; key++) table.Set(key, key);
        for (int shard = 0; shard < ShardedTable<int, int, Scrambled>.Shards; shard++)
            Assert.All(table.SnapshotShard(shard), key => Assert.Equal(shard, Scrambled.ShardOf(key) & 63));
    }
}
