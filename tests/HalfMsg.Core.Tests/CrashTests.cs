using System.Diagnostics;
using HalfMsg.Broker.Core;
using HalfMsg.Broker.Core.Model;

namespace HalfMsg.Core.Tests;

/// <summary>
/// Durability is tested by SIGKILL, not by a clean dispose: a child process drives load against the core and prints every
/// acknowledged outcome; the test kills it mid-load, recovers the same data dir and checks every acknowledgement.
/// </summary>
public sealed class CrashTests
{
    [Theory]
    [InlineData(1500)]
    [InlineData(4000)]
    public async Task After_kill_9_every_acknowledged_outcome_survives_and_nothing_rolled_back_or_acked_is_delivered(int runMs)
    {
        string dataDir = Path.Combine(Path.GetTempPath(), "halfmsg-crash-" + Guid.NewGuid().ToString("N")[..12]);
        var lines = new List<string>();
        try
        {
            string driver = Path.Combine(AppContext.BaseDirectory, "HalfMsg.CrashDriver.dll");
            var psi = new ProcessStartInfo("dotnet", [driver, dataDir, "4"]) { RedirectStandardOutput = true, RedirectStandardError = true };
            using var process = Process.Start(psi)!;
            var stderr = process.StandardError.ReadToEndAsync();
            var ready = new TaskCompletionSource();
            var reader = Task.Run(async () =>
            {
                while (await process.StandardOutput.ReadLineAsync() is { } line)
                {
                    lock (lines) lines.Add(line);
                    if (line == "READY") ready.TrySetResult();
                }
            });
            await ready.Task.WaitAsync(TimeSpan.FromSeconds(60));
            await Task.Delay(runMs);
            process.Kill(entireProcessTree: true);              // SIGKILL: no dispose, no final commit, no checkpoint
            await process.WaitForExitAsync();
            await reader;
            Assert.True(process.ExitCode != 0, "the driver must have been killed, not have exited: " + await stderr);

            string[] output;
            lock (lines) output = lines.ToArray();
            var committed = Ids(output, "C");
            var rolledBack = Ids(output, "R");
            var pending = Ids(output, "P");
            var acked = Ids(output, "A");
            Assert.True(committed.Count > 10, $"too little load before the kill ({committed.Count} commits)");
            Assert.True(acked.Count > 0);

            await using var engine = await BrokerEngine.OpenAsync(new CoreOptions { DataDir = dataDir, QueuesPerTopic = 4, SegmentSizeBits = 24, MemorySizeBits = 24 },
                startBackgroundLoops: false);

            // Every pending half is still pending, with at least the check count that was durable before the kill.
            foreach (var id in pending)
                Assert.True(engine.FindTransaction(id) is not null, $"pending half {id} was lost");
            foreach (var (id, minChecks) in DurableCheckCounts(output))
                if (engine.FindTransaction(id) is { } tx) Assert.True(tx.Checks >= minChecks, $"{id}: {tx.Checks} checks recovered, at least {minChecks} were durable");

            // Drain what the group can still receive (leases from before the crash are still invisible; receive with a new group too).
            var redelivered = new List<string>();
            var freshGroup = new List<string>();
            for (int i = 0; i < 1000; i++)
            {
                var r = await engine.ReceiveAsync(new ReceiveRequest { ConsumerGroup = "g", Topic = "orders", BatchSize = 256, InvisibleDuration = TimeSpan.FromMinutes(5) });
                if (r.Messages.Count == 0) break;
                redelivered.AddRange(r.Messages.Select(m => m.Message.MessageId));
            }
            for (int i = 0; i < 1000; i++)
            {
                var r = await engine.ReceiveAsync(new ReceiveRequest { ConsumerGroup = "audit", Topic = "orders", BatchSize = 256, InvisibleDuration = TimeSpan.FromMinutes(5) });
                if (r.Messages.Count == 0) break;
                freshGroup.AddRange(r.Messages.Select(m => m.Message.MessageId));
            }

            // A fresh group sees every acknowledged commit exactly once, and never a rolled-back or pending half.
            Assert.Empty(committed.Except(freshGroup));
            Assert.Equal(freshGroup.Count, freshGroup.Distinct().Count());
            Assert.Empty(freshGroup.Intersect(rolledBack));
            Assert.Empty(freshGroup.Intersect(pending));
            // Acked messages are not redelivered to the group that acked them.
            Assert.Empty(redelivered.Intersect(acked));
            // Rolled-back transactions stay rolled back.
            foreach (var id in rolledBack.Take(20))
                Assert.Equal(BrokerStatus.TransactionConflict, (await engine.EndTransactionAsync(id, null, Broker.Core.Model.TransactionResolution.Commit, Broker.Core.Model.DecisionSource.CheckBack)).Error.Status);
        }
        finally
        {
            try { Directory.Delete(dataDir, recursive: true); } catch (IOException) { }
        }
    }

    private static HashSet<string> Ids(string[] lines, string tag)
        => lines.Where(l => l.StartsWith(tag + " ", StringComparison.Ordinal)).Select(l => l[(tag.Length + 1)..]).ToHashSet();

    /// <summary>
    /// "K id n" is printed before check n's record is appended, and check n-1's record was appended before check n was
    /// sent. An "H" line is printed only after a later record is durable, and the log is durable in order, so for every
    /// K line followed by an H line, n-1 checks are durable.
    /// </summary>
    private static Dictionary<string, int> DurableCheckCounts(string[] lines)
    {
        int lastH = Array.FindLastIndex(lines, l => l.StartsWith("H ", StringComparison.Ordinal));
        var result = new Dictionary<string, int>();
        for (int i = 0; i < lastH; i++)
        {
            if (!lines[i].StartsWith("K ", StringComparison.Ordinal)) continue;
            var parts = lines[i].Split(' ');
            int n = int.Parse(parts[2]) - 1;
            result[parts[1]] = Math.Max(result.GetValueOrDefault(parts[1]), n);
        }
        return result;
    }
}
