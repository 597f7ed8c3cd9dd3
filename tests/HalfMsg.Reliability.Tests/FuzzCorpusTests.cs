using System.Diagnostics;
using HalfMsg.Fuzz;

namespace HalfMsg.Reliability.Tests;

/// <summary>
/// Issue 13, item 2: every file of the fuzz corpora (seeds captured from real traffic, and every crashing or hanging
/// input afl++ found, kept as <c>finding-*</c>) through the parsers, without afl. A parser may refuse an input only with
/// its documented error (<see cref="FuzzTarget.DocumentedError"/>); anything else escaping is a failure. The pure parsers
/// also get every other target's files (bytes are bytes) and a bound on what they allocate and how long they take.
/// </summary>
public sealed class FuzzCorpusTests
{
    private static readonly string CorpusRoot = Path.Combine(AppContext.BaseDirectory, "corpus");

    /// <summary>The two targets that open a whole broker engine per input get their own corpus and the record seeds.</summary>
    private static readonly HashSet<string> EngineTargets = ["replay", "checkpoint"];

    public static TheoryData<string> Targets()
    {
        var data = new TheoryData<string>();
        foreach (var t in FuzzTargets.All) data.Add(t.Name);
        return data;
    }

    private static IEnumerable<string> Files(string target)
    {
        string dir = Path.Combine(CorpusRoot, target);
        return Directory.Exists(dir) ? Directory.GetFiles(dir).Order(StringComparer.Ordinal) : [];
    }

    [Fact]
    public void Every_target_has_a_seed_corpus_captured_from_real_traffic()
    {
        foreach (var t in FuzzTargets.All)
            Assert.True(Files(t.Name).Any(f => Path.GetFileName(f).StartsWith("seed-", StringComparison.Ordinal)), $"no seeds for {t.Name} under {CorpusRoot}");
    }

    /// <summary>
    /// The checkpoint target reaches the snapshot decoder: its seed, the fixture's own chain (a whole checkpoint and its
    /// deltas), loads to the newest file and recovers the state replaying the log alone gives. Until 2026-12-05 the
    /// target wrote its input alone into an empty data dir under a name its header did not match, which every checkpoint
    /// since 2026-11-30 fails at the header: afl could not get past it.
    /// </summary>
    [Fact]
    public async Task The_checkpoint_seed_loads_its_whole_chain_and_recovers_what_replay_alone_does()
    {
        var fixture = CheckpointChainFixture.Get();
        Assert.True(fixture.Checkpoints.Count >= 3, $"{fixture.Checkpoints.Count} checkpoint files");
        // Header byte 21: 0 whole, 1 delta. The first is whole, the others deltas on it.
        Assert.Equal([0, .. Enumerable.Repeat(1, fixture.Checkpoints.Count - 1)], fixture.Checkpoints.Select(c => (int)c.Bytes[21]));
        var (loaded, state) = await CheckpointChainFixture.OpenAndDescribeAsync(CheckpointChainFixture.SeedInput());
        var (none, replayed) = await CheckpointChainFixture.OpenAndDescribeAsync([]);
        Assert.Equal(fixture.Checkpoints[^1].Covered, loaded);
        Assert.Equal(0, none);
        Assert.Equal(replayed, state);
        Assert.Contains("pending 4", state);
    }

    [Theory]
    [MemberData(nameof(Targets))]
    public void Every_corpus_file_is_accepted_or_refused_with_the_documented_error(string name)
    {
        var target = FuzzTargets.Find(name)!;
        var inputs = EngineTargets.Contains(name)
            ? Files(name).Concat(name == "replay" ? Files("record") : [])
            : FuzzTargets.All.SelectMany(t => Files(t.Name));
        var failures = new List<string>();
        int count = 0;
        foreach (var file in inputs)
        {
            byte[] input = File.ReadAllBytes(file);
            if (name == "replay" && file.Contains($"{Path.DirectorySeparatorChar}record{Path.DirectorySeparatorChar}", StringComparison.Ordinal))
                input = FuzzTargets.JoinRecords([input]);
            count++;
            long before = GC.GetAllocatedBytesForCurrentThread();
            var sw = Stopwatch.StartNew();
            try
            {
                target.Run(input);
            }
            catch (Exception ex)
            {
                failures.Add($"{Rel(file)}: {ex.GetType().Name}: {ex.Message}");
                continue;
            }
            sw.Stop();
            long allocated = GC.GetAllocatedBytesForCurrentThread() - before;
            if (!EngineTargets.Contains(name))
            {
                // Bounded allocation: a parser may copy its input a few times, never allocate by what a length field claims.
                long bound = (1 << 20) + 64L * input.Length;
                if (allocated > bound) failures.Add($"{Rel(file)}: allocated {allocated} bytes for a {input.Length}-byte input (bound {bound})");
            }
            // No hang: generous for a machine whose cores are all busy (afl's own timeout was 2 s, 10 s for the engine).
            var limit = EngineTargets.Contains(name) ? TimeSpan.FromSeconds(30) : TimeSpan.FromSeconds(5);
            if (sw.Elapsed > limit) failures.Add($"{Rel(file)}: took {sw.Elapsed.TotalSeconds:F1} s");
        }
        Assert.True(count > 0, $"no corpus files for {name}");
        Assert.True(failures.Count == 0, $"{failures.Count} of {count} inputs failed {name}:\n" + string.Join('\n', failures.Take(20)));
    }

    private static string Rel(string file) => Path.GetRelativePath(CorpusRoot, file);
}
